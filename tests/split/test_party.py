"""Nothing non-finite is ever committed: a party refuses NaN or Inf in what it receives and checks
what it computes from it (outputs, loss, gradients, the state after its optimiser step). A step
that fails a check is rolled back (parameters, optimiser state and batch-norm buffers bit for bit
as before it), the party whose input caused it is named, and no checkpoint holds NaN or Inf."""

import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from splitlearn.checkpoint import CheckpointError, FolderCheckpoints
from splitlearn.data.dataset import ArrayDataset
from splitlearn.split import OptimizerSpec, configs
from splitlearn.split.compression import compress
from splitlearn.split.configs import Vertical
from splitlearn.split.messages import Activation, Labels, NonFinite, ProtocolError, StartStep
from splitlearn.split.simulation import Simulation

from .conftest import mlp

POISONED_STEP = 4  # client0's fourth training step: the server has committed three


def _int8_huge_scale(message):
    """The activation as int8, with a finite scale (1e300) that decodes to Inf in float32."""
    c = compress(message.tensor, "int8")
    object.__setattr__(c, "scale", 1e300)  # what a hostile sender writes on the wire; Compressed itself refuses it
    return dataclasses.replace(message, tensor=c)


def _huge(value):
    return lambda message: dataclasses.replace(message, tensor=torch.full_like(message.tensor, value))


def _nan_soft_labels(message):
    soft = torch.full((len(message.labels), 3), 1 / 3)
    soft[0, 0] = math.nan
    return dataclasses.replace(message, labels=soft)


ATTACKS = {  # name: (kind of message poisoned, how, what the server's error says, batch norm at the server)
    "int8 huge scale": (Activation, _int8_huge_scale, r"Activation of step \d+ from client0 refused: int8 data decodes to NaN or Inf", True),
    "NaN soft labels": (Labels, _nan_soft_labels, r"labels for task 'y' of step \d+ from client0 holds NaN or Inf", True),
    "3e38 activations": (Activation, _huge(3e38), r"step \d+ would make the output of server NaN or Inf", True),
    # The batch norm's output stays finite, but its running variance overflows in the forward pass:
    # caught at commit, and the buffers are restored.
    "1e30 activations": (Activation, _huge(1e30), r"step \d+ would make its buffers \(e\.g\. batch-norm statistics\) NaN", True),
    # Finite loss and gradients, but so large that Adam's second moment (g**2) would overflow:
    # refused before the optimiser steps.
    "1e25 activations": (Activation, _huge(1e25), r"step \d+ would make its optimiser state \(gradients of norm over 1.15e\+18\) NaN or Inf", False),
}


def _split(batch_norm: bool = True):
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(16)] if batch_norm else []
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), *norm, nn.ReLU(), nn.Linear(16, 3))
    return configs.vanilla(model, [2], in_shape=(10,))


def _server_state(server) -> dict[str, torch.Tensor]:
    """Parameters, buffers (batch-norm statistics) and optimiser state, copied."""
    return {k: v.detach().clone() for k, v in server.state()[0].items()}


def _scan(folder) -> list[str]:
    """``file: key`` of every tensor holding NaN or Inf in every checkpoint under ``folder``."""
    return [f"{p}: {k}" for p in sorted(folder.rglob("*.safetensors")) for k, t in load_file(p).items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_poisoned_step_is_refused_rolled_back_and_blamed(tabular, tmp_path, attack):
    kind, poison, why, batch_norm = ATTACKS[attack]
    train, test = tabular
    seen, before = [], {}

    def hostile(message):
        if isinstance(message, kind) and message.sender == "client0" and getattr(message, "mode", "train") == "train":
            seen.append(message.step)
            if len(seen) == POISONED_STEP:
                before.update(_server_state(sim.parties["server"]))
                return poison(message)
        return message

    sim = Simulation(_split(batch_norm), train=train, test=test, clients=2, batch_size=16,
                     optimizer=OptimizerSpec("adam", lr=0.01), outbox={"client": hostile})
    for p in sim.parties.values():
        p.checkpoints = FolderCheckpoints(tmp_path / p.name)
        p.resume()
    with pytest.raises(NonFinite, match=why) as refused:
        sim.fit(1)
    assert refused.value.party == "client0" and "client0" in str(refused.value) and "\n" not in str(refused.value)
    server = sim.parties["server"]
    after = _server_state(server)
    assert before and sorted(after) == sorted(before)
    assert all(torch.equal(after[k], before[k]) for k in before), "the refused step changed the server's state"
    assert any(k.endswith("running_var") for k in before) == batch_norm and any(k.startswith("optim/") for k in before)
    assert all(p.grad is None for m in server.modules.values() for p in m.parameters())
    assert server._st is None  # the step is forgotten: the next one (or an Abort) starts clean
    assert FolderCheckpoints(tmp_path / "server").steps()[-1] == seen[-2]  # the last committed step, not the poisoned one
    assert _scan(tmp_path) == []


def test_the_party_whose_input_overflows_is_blamed_not_the_one_that_completes_the_step(tmp_path):
    """Vertical: client0's smashed data is huge, client1's arrives last and triggers the forward pass."""
    torch.manual_seed(0)
    split = configs.vertical(Vertical([nn.Linear(5, 4), nn.Linear(5, 4)], nn.Linear(8, 3)), in_shape=(10,))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    data = ArrayDataset(x, (x[:, 0] > 0).long(), torch.arange(64))
    poison = lambda m: dataclasses.replace(m, tensor=torch.full_like(m.tensor, 3e38)) if isinstance(m, Activation) and m.step == 3 else m  # noqa: E731
    sim = Simulation(split, train=data, batch_size=16, outbox={"client0": poison})
    order = []
    sim.transport.observers.append(lambda m: order.append(m.sender) if isinstance(m, Activation) else None)
    with pytest.raises(NonFinite, match=r"server: step 3 would make its loss NaN or Inf; refused and rolled back \(caused by the input of client0\)"):
        sim.fit(1)
    assert order[-2:] == ["client0", "client1"]  # client1's activation completed the step


def test_a_partys_own_nonfinite_data_is_its_own_fault(tabular):
    train, test = tabular
    train.features[5, 0] = math.nan
    sim = Simulation(_split(), train=train, clients=1, batch_size=16)
    with pytest.raises(NonFinite, match=r"client: step \d+ would make the output of client NaN or Inf.*its own data") as e:
        sim.fit(1)
    assert e.value.party == "client"


def _labels_then(server, labels):
    """Hand the server a step's labels (from ``client``), then a fine activation."""
    ids = torch.arange(4)
    server.handle(StartStep("coordinator", "server", 1, mode="train", split="train", sample_ids=ids,
                            bindings={"client": "client", "server": "server"}))
    server.handle(Labels("client", "server", 1, task="y", labels=labels, sample_ids=ids))
    server.handle(Activation("client", "server", 1, mode="train", src="client", dst="server",
                             tensor=torch.randn(4, 16), sample_ids=ids))


@pytest.mark.parametrize(("labels", "problem"), [
    (torch.tensor([0, 1, 2, 3]), r"labels for task 'y' of step 1 are not classes in \[0, 3\)"),
    (torch.full((4,), -100), r"are not classes in \[0, 3\)"),  # cross_entropy's ignore_index: a NaN loss
    (torch.tensor([[1.5, -0.5, 0.0]] * 4), r"soft labels for task 'y' of step 1 from client are not probabilities"),
    (torch.tensor([[math.inf, 0.0, 0.0]] * 4), r"labels for task 'y' of step 1 from client holds NaN or Inf"),
])
def test_labels_that_are_not_classes_or_probabilities_are_refused_and_blamed(tabular, labels, problem):
    train, _ = tabular
    sim = Simulation(_split(), train=train, clients=1, batch_size=16)
    server = sim.parties["server"]
    with pytest.raises(ProtocolError, match=problem) as e:
        _labels_then(server, labels)
    assert e.value.party == "client"


def test_soft_labels_that_are_probabilities_train(tabular):
    train, _ = tabular
    sim = Simulation(_split(), train=train, clients=1, batch_size=16)
    server = sim.parties["server"]
    server.send = lambda m: None
    _labels_then(server, torch.softmax(torch.randn(4, 3), 1))
    assert len(server.losses) == 1 and math.isfinite(server.losses[0][1])


def test_a_large_but_finite_buffer_is_not_refused(tabular):
    """Gradients and buffers share one norm; past the gradient bound each is looked at on its own,
    and a buffer (read afresh each step: this one is registered after the party was built) may be
    large. 1e30 in float32 squares to Inf, so the shared norm overflows."""
    train, _ = tabular
    sim = Simulation(_split(), train=train, clients=1, batch_size=16)
    server = sim.parties["server"]
    norm = next(m for seg in server.modules.values() for m in seg.modules() if isinstance(m, nn.BatchNorm1d))
    norm.register_buffer("unused", torch.full((4,), 1e30))
    sim.fit(1)
    assert len(server.losses) == len(train) // 16 and all(math.isfinite(v) for _, v in server.losses)
    assert torch.equal(norm.unused, torch.full((4,), 1e30))


def _overflowing_optimiser(party):
    """Make ``party``'s next optimiser step leave Inf in a parameter (as a faulty optimiser, or a
    learning rate that carries the weights past float32's range, would) although the gradients
    it applies are finite and small."""
    step = party.optimizer.step

    def overflow(*args, **kwargs):
        step(*args, **kwargs)
        with torch.no_grad():
            next(p for m in party.modules.values() for p in m.parameters()).view(-1)[0] = math.inf

    party.optimizer.step = overflow


def test_a_step_that_overflows_the_parameters_goes_back_to_the_last_checkpoint(tabular, tmp_path):
    """The optimiser has stepped already, so the party goes back to its last checkpoint (step 0)."""
    train, _ = tabular
    sim = Simulation(_split(), train=train, clients=1, batch_size=16, optimizer=OptimizerSpec("adam", lr=0.01))
    for p in sim.parties.values():
        p.checkpoints = FolderCheckpoints(tmp_path / p.name)
        p.resume()
    server = sim.parties["server"]
    before = _server_state(server)
    _overflowing_optimiser(server)
    with pytest.raises(NonFinite, match=r"server: step 1 would make its parameters NaN or Inf; "
                                        r"refused and rolled back \(caused by the input of client\)"):
        sim.fit(1)
    after = _server_state(server)
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in after)
    assert server._st is None and FolderCheckpoints(tmp_path / "server").steps() == [0]
    assert _scan(tmp_path) == []


def test_an_optimiser_state_gone_wrong_never_reaches_a_checkpoint(tabular, tmp_path):
    """The state gets no pass of its own after each step; saving it checks every tensor."""
    train, _ = tabular
    sim = Simulation(_split(), train=train, clients=1, batch_size=16, optimizer=OptimizerSpec("sgd", lr=0.01, momentum=0.9))
    for p in sim.parties.values():
        p.checkpoints = FolderCheckpoints(tmp_path / p.name)
        p.resume()
    server = sim.parties["server"]
    step = server.optimizer.step

    def faulty(*args, **kwargs):
        step(*args, **kwargs)
        next(iter(server.optimizer.state.values()))["momentum_buffer"].view(-1)[0] = math.nan

    server.optimizer.step = faulty
    with pytest.raises(CheckpointError, match=r"refused to save a state whose tensor 'optim/\d+/momentum_buffer' holds NaN or Inf"):
        sim.fit(1)
    assert FolderCheckpoints(tmp_path / "server").steps() == [0] and _scan(tmp_path) == []


def test_without_a_checkpoint_an_overflowing_step_says_it_cannot_be_rolled_back(tabular):
    train, _ = tabular
    sim = Simulation(_split(), train=train, clients=1, batch_size=16)
    _overflowing_optimiser(sim.parties["server"])
    with pytest.raises(NonFinite, match=r"step 1 made its parameters NaN or Inf and cannot be rolled back"):
        sim.fit(1)


def _splits():
    torch.manual_seed(0)
    vertical = Vertical([nn.Sequential(nn.Linear(5, 8), nn.ReLU()), nn.Sequential(nn.Linear(5, 6), nn.ReLU())],
                        nn.Sequential(nn.Linear(14, 3)), dim=1)
    return {"vanilla": configs.vanilla(mlp(), [2]), "ushaped": configs.ushaped(mlp(), [1, 3]),
            "multihop": configs.multihop(mlp(), [1, 3]), "vertical": configs.vertical(vertical)}


@pytest.mark.parametrize("name", ["vanilla", "ushaped", "multihop", "vertical"])
def test_each_party_knows_the_shape_of_what_reaches_it_before_any_step(tabular, name):
    """The split's probe gives every receiving party the per-sample shape of each edge into it:
    exactly what the edge then carries in training."""
    train, _ = tabular
    sim = Simulation(_splits()[name], train=train, batch_size=16)
    expected = {k: v for p in sim.parties.values() for k, v in p._shapes.items()}
    assert expected and set(expected) == {(n.name, sim.plan.consumer(n.name).name) for n in sim.plan.nodes if n is not sim.plan.root}
    seen = {}
    sim.transport.observers.append(lambda m: m.kind == "Activation" and seen.setdefault((m.src, m.dst), tuple(m.tensor.shape[1:])))
    sim.fit(1)
    assert seen == expected


@pytest.mark.parametrize("count", [1, 3, 40])
def test_all_finite_finds_one_bad_element_among_few_or_many_tensors(count):
    """Few tensors are summed one by one, many share one multi-tensor norm: either way one NaN or
    Inf anywhere is found, and finite values whose sum or norm overflows are not mistaken for it."""
    from splitlearn.split.party.checks import all_finite

    tensors = [torch.randn(5, 7) for _ in range(count)]
    assert all_finite(tensors)
    for bad in (math.nan, math.inf, -math.inf):
        poisoned = [t.clone() for t in tensors]
        poisoned[-1][4, 6] = bad
        assert not all_finite(poisoned), bad
    huge = [torch.full((5, 7), 3e38) for _ in range(count)]  # finite, but their sum and norm overflow float32
    assert all_finite(huge)
    assert all_finite([t.half() for t in tensors] + [t.double() for t in tensors])
