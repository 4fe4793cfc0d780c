"""In U-shaped training nothing label- or loss-derived reaches the server but its output gradient."""

import torch

from splitlearn.split import configs
from splitlearn.split.messages import Activation, Gradient, Output
from splitlearn.split.simulation import Simulation

from .conftest import mlp


def test_server_never_sees_labels_or_loss(tabular):
    train, test = tabular
    split = configs.ushaped(mlp(), [1, 3], in_shape=(10,))
    sim = Simulation(split, train=train, test=test, batch_size=16)
    seen = []
    sim.transport.observers.append(seen.append)
    sim.fit(2)
    sim.predict()
    to_server = [m for m in seen if m.receiver == "server"]
    assert to_server, "the server received nothing"
    kinds = {m.kind for m in to_server}
    assert kinds <= {"StartStep", "Activation", "Gradient"}, kinds
    # The coordinator's StartStep tells the server only who plays each role and the batch's ids.
    starts = [m for m in to_server if m.kind == "StartStep"]
    assert starts and all(set(m.tensors()) == {"sample_ids"} for m in starts)
    # Activations come from the client head only; gradients only for the server's own output.
    assert {(m.src, m.dst) for m in to_server if isinstance(m, Activation)} == {("client/head", "server/body")}
    grads = [m for m in to_server if isinstance(m, Gradient)]
    assert {(m.src, m.dst) for m in grads} == {("client/tail", "server/body")}
    # The gradient has the shape of the server's output, not of anything label-sized.
    assert all(m.tensor.shape[1:] == (16,) for m in grads)
    labels = torch.cat([train.labels, test.labels])
    for m in to_server:
        for name, t in m.tensors().items():
            if name == "sample_ids":
                continue
            assert t.dtype.is_floating_point, (m.kind, name)
            assert not (t.dim() == 1 and len(t) == len(labels)), (m.kind, name)
    # Outputs (predictions) stay with the client too.
    assert not any(isinstance(m, Output) for m in seen)
    # The loss was computed and kept at the client only.
    assert sim.parties["client"].losses and not sim.parties["server"].losses
    assert 0.0 <= sim.history[-1]["test_accuracy"] <= 1.0
