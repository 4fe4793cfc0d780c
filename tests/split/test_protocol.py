"""Protocol checks: vertical data aligned by id, impersonation, out-of-order steps, state round trip."""

import pytest
import torch
from torch import nn

from splitlearn.split import OptimizerSpec, ProtocolError, Vertical, configs
from splitlearn.split.messages import Activation, Gradient, Labels, StartStep
from splitlearn.split.simulation import Simulation
from splitlearn.split.state import pack_state, unpack_state

from .conftest import mlp


def _vertical():
    return configs.vertical(Vertical([nn.Linear(5, 4), nn.Linear(5, 4)], nn.Linear(8, 3)), in_shape=(10,))


def _reannounce(sim, keep):
    """Every data party's shards cut to the sample ids ``keep(party)`` says, announced afresh."""
    for name in sim.coordinator.data_parties:
        party = sim.parties[name]
        for split, s in party.shards.items():
            rows = keep(name, s.sample_ids)
            party.shards[split] = type(s)(s.sample_ids[rows], None if s.features is None else s.features[rows],
                                          {t: y[rows] for t, y in s.labels.items()})
    sim.coordinator.manifests.clear()
    for name in sim.coordinator.data_parties:
        sim.parties[name].announce()
    sim.coordinator.collect_manifests()


def test_vertical_clients_train_on_the_ids_they_all_hold(tabular):
    """client1 lacks 20 samples: everyone trains on the other 140, exactly as if no party had
    held the 20, and the coordinator counts what each party dropped."""
    train, _ = tabular
    lacking = train.sample_ids[::8]
    runs = []
    for who in ("client1", None):
        torch.manual_seed(0)
        sim = Simulation(_vertical(), train=train, clients=2, batch_size=16)
        _reannounce(sim, lambda name, ids: ~torch.isin(ids, lacking) if who in (name, None) else torch.ones_like(ids, dtype=torch.bool))
        assert sim.coordinator.aligned["train"].tolist() == sorted(set(train.sample_ids.tolist()) - set(lacking.tolist()))
        runs.append((sim.coordinator.dropped, sim.fit(1)[-1]["train_loss"], sim.parties["server"].losses))
    assert runs[0][0] == {"client0": 20, "client1": 0, "server": 20} and runs[1][0] == dict.fromkeys(runs[0][0], 0)
    assert runs[0][1:] == runs[1][1:]


def test_vertical_clients_without_common_ids_are_refused(tabular):
    train, _ = tabular
    sim = Simulation(_vertical(), train=train, clients=2, batch_size=16)
    half = len(train.sample_ids) // 2
    with pytest.raises(ValueError, match=r"vertical parties hold no training sample in common \(training samples: 'client0' 80, 'client1' 80"):
        _reannounce(sim, lambda name, ids: torch.arange(len(ids)) < half if name == "client0" else torch.arange(len(ids)) >= half)


def test_vertical_rows_are_aligned_by_id_not_position(tabular):
    """Client 1 stores its rows in another order; training must still equal the aligned run."""
    train, _ = tabular
    results = []
    for permute in (False, True):
        torch.manual_seed(0)
        sim = Simulation(_vertical(), train=train, clients=2, batch_size=16)
        if permute:
            s = sim.parties["client1"].shards["train"]
            perm = torch.randperm(len(s.sample_ids))
            sim.parties["client1"].shards["train"] = type(s)(s.sample_ids[perm], s.features[perm], {})
        sim.fit(1)
        results.append(sim.parties["server"].losses)
    assert results[0] == results[1]


def test_party_refuses_impersonation_and_stray_messages(tabular):
    train, _ = tabular
    sim = Simulation(configs.vanilla(mlp(), [2]), train=train, clients=2, batch_size=16)
    server = sim.parties["server"]
    ids = torch.arange(4)
    z = torch.zeros(4, 16)
    # An activation for an edge that does not exist.
    with pytest.raises(ProtocolError, match="no edge"):
        server.handle(Activation("client0", "server", 1, mode="train", src="server", dst="server", tensor=z, sample_ids=ids))
    server._st = None
    # client1 speaks for the client role while client0 plays it in this step.
    server.handle(Activation("client0", "server", 1, mode="train", src="client", dst="server", tensor=z, sample_ids=ids))
    with pytest.raises(ProtocolError, match="client1 spoke for role 'client'"):
        server.handle(Labels("client1", "server", 1, task="y", labels=torch.zeros(4, dtype=torch.long), sample_ids=ids))
    # Messages for another step while step 1 is in progress.
    with pytest.raises(ProtocolError, match="step 7 while step 1"):
        server.handle(Labels("client0", "server", 7, task="y", labels=torch.zeros(4, dtype=torch.long), sample_ids=ids))
    # Labels for a different batch than the activations.
    with pytest.raises(ProtocolError, match="misaligned"):
        server.handle(Labels("client0", "server", 1, task="y", labels=torch.zeros(4, dtype=torch.long), sample_ids=ids + 1))
    # Only the coordinator may start steps; a gradient nobody owes is refused.
    client = sim.parties["client0"]
    with pytest.raises(ProtocolError, match="not the coordinator"):
        client.handle(StartStep("server", "client0", 2, mode="train", split="train", sample_ids=ids))
    with pytest.raises(ProtocolError, match="has not started"):
        client.handle(Gradient("server", "client0", 2, src="server", dst="client", tensor=z))
    # A client that does not hold the segments cannot be started.
    with pytest.raises(ProtocolError, match="does not hold its segments"):
        sim.parties["client1"].handle(StartStep("coordinator", "client1", 3, mode="train", split="train", sample_ids=ids,
                                                bindings={"client": "client1", "server": "server"}))
    # A party started under another party's name is refused.
    client._st = None
    with pytest.raises(ProtocolError, match="client0 was started as 'client1'"):
        client.handle(StartStep("coordinator", "client0", 4, mode="train", split="train", sample_ids=ids,
                                bindings={"client": "client1", "server": "server"}))


def test_unknown_sample_ids_are_named(tabular):
    train, _ = tabular
    sim = Simulation(configs.vanilla(mlp(), [2]), train=train, batch_size=16)
    with pytest.raises(ProtocolError, match=r"2 sample ids this party does not hold, e\.g\. \[500, 501\]"):
        sim.parties["client"].handle(
            StartStep("coordinator", "client", 1, mode="train", split="train", sample_ids=torch.tensor([0, 500, 501]),
                      bindings={"client": "client", "server": "server"})
        )


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_state_round_trip_continues_identically(opt):
    torch.manual_seed(0)
    a = {"n": nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))}
    spec = OptimizerSpec(opt, lr=0.1, momentum=0.9 if opt == "sgd" else 0.0)
    oa = spec.build(a["n"].parameters())
    x = torch.randn(8, 4)
    for _ in range(3):
        oa.zero_grad(); a["n"](x).pow(2).sum().backward(); oa.step()
    tensors, meta = pack_state(a, oa)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    b = {"n": nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))}
    ob = spec.build(b["n"].parameters())
    unpack_state(tensors, meta, b, ob)
    for m, o in ((a, oa), (b, ob)):
        o.zero_grad(); m["n"](x).pow(2).sum().backward(); o.step()
    for p, q in zip(a["n"].state_dict().values(), b["n"].state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="state is for nodes"):
        unpack_state(tensors, meta, {"other": b["n"]})


def test_bad_simulation_arguments(tabular):
    train, _ = tabular
    with pytest.raises(ValueError, match="clients must be >= 1"):
        Simulation(configs.vanilla(mlp(), [2]), train=train, clients=0)
    with pytest.raises(ValueError, match="a vertical split has 2 clients, not 3"):
        Simulation(_vertical(), train=train, clients=3)
    with pytest.raises(ValueError, match="partition must be"):
        Simulation(configs.vanilla(mlp(), [2]), train=train, partition="sorted")
    with pytest.raises(ValueError, match="unknown optimizer"):
        OptimizerSpec("lbfgs")
    with pytest.raises(ValueError, match="relay must be"):
        Simulation(configs.vanilla(mlp(), [2]), train=train, relay="carrier-pigeon")


def test_duplicate_labels_and_stray_outputs_are_refused(tabular):
    from splitlearn.split.messages import Output

    train, _ = tabular
    sim = Simulation(configs.vanilla(mlp(), [2]), train=train, batch_size=16)
    server, client = sim.parties["server"], sim.parties["client"]
    ids = torch.arange(4)
    y = torch.zeros(4, dtype=torch.long)
    server.handle(Labels("client", "server", 1, task="y", labels=y, sample_ids=ids))
    with pytest.raises(ProtocolError, match="arrived twice"):
        server.handle(Labels("client", "server", 1, task="y", labels=y, sample_ids=ids))
    # The client expects no outputs in a training step, nor for a task it does not own.
    client.handle(StartStep("coordinator", "client", 1, mode="train", split="train", sample_ids=ids,
                            bindings={"client": "client", "server": "server"}))
    with pytest.raises(ProtocolError, match="eval message in a train step"):
        client.handle(Output("server", "client", 1, task="y", tensor=torch.zeros(4, 3), sample_ids=ids))
    client._st = None
    client.handle(StartStep("coordinator", "client", 2, mode="eval", split="train", sample_ids=ids,
                            bindings={"client": "client", "server": "server"}))
    with pytest.raises(ProtocolError, match="unexpected output for task 'other'"):
        client.handle(Output("server", "client", 2, task="other", tensor=torch.zeros(4, 3), sample_ids=ids))


def test_gradient_of_wrong_shape_or_dtype_is_refused(tabular):
    train, _ = tabular
    sim = Simulation(configs.vanilla(mlp(), [2]), train=train, batch_size=4)
    client = sim.parties["client"]
    ids = torch.arange(4)
    client.send = lambda m: None  # keep the step open: nothing leaves the client
    client.handle(StartStep("coordinator", "client", 1, mode="train", split="train", sample_ids=ids,
                            bindings={"client": "client", "server": "server"}))
    for bad in (torch.zeros(4, 15), torch.zeros(4, 16, dtype=torch.float64)):
        client._st.grad_from["client"] = "server"
        with pytest.raises(ProtocolError, match="gradient for client is"):
            client.handle(Gradient("server", "client", 1, src="server", dst="client", tensor=bad))
