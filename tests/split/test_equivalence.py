"""Split training through messages equals centralised training of the unsplit model."""

import copy

import pytest
import torch
from torch import nn

from splitlearn.split import MultiHead, OptimizerSpec, Vertical, configs
from splitlearn.split.simulation import Simulation

from .conftest import centralised, mlp

TOL = 1e-6
EPOCHS = 3  # 160 samples / batch 8 = 20 steps an epoch: 60 steps


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _run(split, train, test, spec, reference, x, ref_targets, **kw):
    sim = Simulation(split, train=train, test=test, optimizer=spec, batch_size=8, **kw)
    batches = [b.sample_ids for e in range(1, EPOCHS + 1) for b in sim.coordinator.schedule(e)]
    sim.fit(EPOCHS)
    ref, ref_losses = centralised(reference, spec, batches, x, ref_targets)
    split_losses = [loss for p in sim.parties.values() for _, loss in sorted(p.losses)]
    return sim, ref, ref_losses, split_losses, len(batches)


def _full(train, test):
    return torch.cat([train.features, test.features]), torch.cat([train.labels, test.labels])


@pytest.mark.parametrize(
    "config,cut",
    [("vanilla", [2]), ("vanilla", "2"), ("ushaped", [1, 3]), ("multihop", [1, 2, 4])],
)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_chain_configurations_match_centralised(tabular, config, cut, opt):
    train, test = tabular
    x, y = _full(train, test)
    model = mlp()
    reference = copy.deepcopy(model)
    spec = OptimizerSpec(opt, lr=0.05 if opt == "sgd" else 0.01)
    sim, ref, ref_losses, losses, steps = _run(
        configs.CONFIGURATIONS[config](model, cut, in_shape=(10,)), train, test, spec, reference, x, [(1.0, lambda i: y[i])]
    )
    assert steps >= 50
    assert _max_diff(model, ref) <= TOL  # the segments share the parameters of `model`
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=TOL, rtol=0)
    assert ref_losses[-1] < ref_losses[0]  # it really trained


def test_vertical_matches_unsplit_merged_model(tabular):
    train, test = tabular
    x, y = _full(train, test)
    torch.manual_seed(3)
    model = Vertical(
        [nn.Sequential(nn.Linear(5, 8), nn.ReLU()), nn.Sequential(nn.Linear(5, 8), nn.ReLU())],
        nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)),
        dim=1,
    )
    reference = copy.deepcopy(model)
    spec = OptimizerSpec("sgd", lr=0.05, momentum=0.9)
    sim, ref, ref_losses, losses, steps = _run(
        configs.vertical(model, in_shape=(10,)), train, test, spec, reference, x, [(1.0, lambda i: y[i])], clients=2
    )
    assert set(sim.parties) == {"client0", "client1", "server"}
    assert sim.parties["client0"].shards["train"].features.shape[1] == 5
    assert sim.parties["server"].shards["train"].features is None  # labels only
    assert _max_diff(model, ref) <= TOL
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=TOL, rtol=0)


@pytest.mark.parametrize("merge", ["sum", "mean"])
def test_vertical_sum_and_mean_merges(tabular, merge):
    train, test = tabular
    x, y = _full(train, test)
    torch.manual_seed(4)
    model = Vertical(
        [nn.Linear(4, 8), nn.Linear(3, 8), nn.Linear(3, 8)], nn.Sequential(nn.ReLU(), nn.Linear(8, 3)), merge=merge
    )
    reference = copy.deepcopy(model)
    spec = OptimizerSpec("adam", lr=0.01)
    _, ref, ref_losses, losses, _ = _run(
        configs.vertical(model, in_shape=(10,)), train, test, spec, reference, x, [(1.0, lambda i: y[i])], clients=3
    )
    assert _max_diff(model, ref) <= TOL
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=TOL, rtol=0)


def test_multitask_matches_unsplit_multihead_model(tabular):
    train, test = tabular
    x, y = _full(train, test)
    torch.manual_seed(5)
    trunk = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    model = MultiHead(trunk, {"label": nn.Linear(16, 3), "parity": nn.Linear(16, 2)})
    reference = copy.deepcopy(model)
    spec = OptimizerSpec("sgd", lr=0.05)
    weights = {"label": 1.0, "parity": 0.5}
    split = configs.multitask(model, [2], in_shape=(10,), weights=weights)
    targets = {"label": lambda t: t, "parity": lambda t: t % 2}
    sim, ref, ref_losses, losses, _ = _run(
        split, train, test, spec, reference, x,
        [(1.0, lambda i: y[i]), (0.5, lambda i: y[i] % 2)], targets=targets,
    )
    assert _max_diff(model, ref) <= TOL
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=TOL, rtol=0)
    metrics = sim.history[-1]
    assert {"test_accuracy_label", "test_accuracy_parity"} <= set(metrics)


@pytest.mark.parametrize("relay", ["peer", "server"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_round_robin_matches_centralised(tabular, relay, opt):
    train, test = tabular
    x, y = _full(train, test)
    model = mlp()
    reference = copy.deepcopy(model)
    spec = OptimizerSpec(opt, lr=0.05 if opt == "sgd" else 0.01, momentum=0.9 if opt == "sgd" else 0.0)
    sim, ref, ref_losses, losses, steps = _run(
        configs.vanilla(model, [2], in_shape=(10,)), train, test, spec, reference, x, [(1.0, lambda i: y[i])],
        clients=4, relay=relay,
    )
    assert steps >= 50
    holder = sim.parties[sim.coordinator.holder]
    client_now = holder.modules["client"]
    server_now = sim.parties["server"].modules["server"]
    assert _max_diff(nn.Sequential(*client_now, *server_now), ref) <= TOL
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=TOL, rtol=0)
    # Only the current holder keeps the client segment; the others hold nothing.
    assert [p.holds_weights for n, p in sim.parties.items() if n != "server"].count(True) == 1
    # Shards are disjoint and cover the training set.
    ids = torch.cat([p.shards["train"].sample_ids for n, p in sim.parties.items() if n != "server"])
    assert sorted(ids.tolist()) == list(range(160))


@pytest.mark.parametrize("relay", ["peer", "server"])
def test_ushaped_round_robin_matches_centralised(tabular, relay):
    """U-shaped: the clients hold the loss, so relaying "via the server" goes through the middle party."""
    train, test = tabular
    x, y = _full(train, test)
    model = mlp()
    reference = copy.deepcopy(model)
    spec = OptimizerSpec("adam", lr=0.01)
    sim, ref, ref_losses, losses, steps = _run(
        configs.ushaped(model, [1, 3], in_shape=(10,)), train, test, spec, reference, x, [(1.0, lambda i: y[i])],
        clients=3, relay=relay,
    )
    assert steps >= 50
    losses = [loss for _, loss in sorted(s for p in sim.parties.values() for s in p.losses)]  # scored by 3 clients
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=TOL, rtol=0)
    weights = [r for r in sim.log.records if r.kind == "Weights"]
    assert {r.receiver for r in weights} >= ({"server"} if relay == "server" else {"client1", "client2"})


def test_relay_modes_report_bytes(tabular):
    train, test = tabular
    moved = {}
    for relay in ("peer", "server"):
        sim = Simulation(configs.vanilla(mlp(), [2]), train=train, clients=3, relay=relay, batch_size=16)
        sim.fit(1)
        weights = [r for r in sim.log.records if r.kind == "Weights"]
        moved[relay] = sum(r.payload_bytes for r in weights)
        if relay == "peer":
            assert all(r.sender != "server" and r.receiver != "server" for r in weights)
        else:
            assert {r.receiver for r in weights[::2]} == {"server"}
            assert {r.sender for r in weights[1::2]} == {"server"}
    # Via the server every relay crosses the wire twice.
    assert moved["server"] == 2 * moved["peer"] > 0
    assert not sim.parties["server"].shards  # the server never stored a client's segment


def test_local_penalty_joins_the_backward_pass(tabular):
    """A data node's local penalty (the hook NoPeek uses) equals adding it to the centralised loss."""
    train, test = tabular
    x, y = _full(train, test)
    model = mlp()
    reference = copy.deepcopy(model)
    spec = OptimizerSpec("sgd", lr=0.05)
    a = 0.3
    sim = Simulation(
        configs.vanilla(model, [2], in_shape=(10,)), train=train, optimizer=spec, batch_size=8,
        penalties={"client": lambda inp, z: a * (z - inp[:, :1]).pow(2).mean()},
    )
    batches = [b.sample_ids for e in (1, 2, 3) for b in sim.coordinator.schedule(e)]
    sim.fit(3)
    opt = spec.build(reference.parameters())
    for ids in batches:
        z = reference[:2](x[ids])
        loss = torch.nn.functional.cross_entropy(reference[2:](z), y[ids]) + a * (z - x[ids][:, :1]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert _max_diff(model, reference) <= TOL
    logged = [v for p in sim.parties.values() for _, _, v in p.penalty_log]
    assert len(logged) == len(batches) and all(v > 0 for v in logged)
    # The penalty stays local: the server's log has no trace of it.
    assert not sim.parties["server"].penalty_log
