"""Load: 50 clients stream to one hub at once. The hub stays up, every client does all its work
(none starves: each gets every message it is owed, so the weights equal the in-process run bit
for bit), and memory stays flat from epoch to epoch."""

from collections import Counter
from pathlib import Path

import torch
from torch import nn

from splitlearn.data.dataset import ArrayDataset
from splitlearn.split import configs
from splitlearn.split.configs import Vertical
from splitlearn.split.simulation import Simulation

from .conftest import train_over_grpc

CLIENTS = 50
EPOCHS = 4  # the first warms up (threads, arenas, caches); the others must not grow memory
WIDTH = 256  # vertical: 16 x 256 float32 = 16 KiB per activation and per gradient, 1.6 MiB a step
RSS_GROWTH_BOUND = 12 << 20  # over EPOCHS - 1 epochs; measured: under 4 MiB, or 38 MiB if the hub kept every vertical message


def _rss() -> int:
    """Resident memory of this process, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line in /proc/self/status")


def _data(n: int, features: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    return ArrayDataset(x, (x[:, : features // 2].sum(1) > 0).long(), torch.arange(n))


def _check_load(local: Simulation, remote: Simulation) -> dict[str, Counter]:
    """Train both; the gRPC run must match bit for bit and keep memory flat. Returns, per party,
    the hub's count of messages it sent, by kind."""
    local.fit(EPOCHS)
    rss: list[int] = []
    log = train_over_grpc(remote, EPOCHS, on_epoch=lambda record: rss.append(_rss()))
    for name, party in local.parties.items():
        mine, theirs = party.state()[0], remote.parties[name].state()[0]
        assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine), f"{name}: weights differ"
    assert [h["train_loss"] for h in remote.history] == [h["train_loss"] for h in local.history]
    growth = rss[-1] - rss[0]
    print(f"RSS by epoch (MiB): {[round(r / 2**20, 1) for r in rss]}")
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB over {EPOCHS - 1} epochs"
    sent: dict[str, Counter] = {}
    for r in log.records:
        sent.setdefault(r.sender, Counter())[r.kind] += 1
    return sent


def _vertical() -> configs.Split:
    torch.manual_seed(4)
    bottoms = [nn.Sequential(nn.Linear(1, WIDTH), nn.ReLU()) for _ in range(CLIENTS)]
    top = nn.Sequential(nn.Linear(CLIENTS * WIDTH, 16), nn.ReLU(), nn.Linear(16, 2))
    return configs.vertical(Vertical(bottoms, top), in_shape=(CLIENTS,))


def test_fifty_vertical_clients_all_active_every_step():
    """Every step, all 50 clients send their activations at once and each waits for its gradient."""
    kw = dict(train=_data(96, CLIENTS), batch_size=16, seed=5)
    local, remote = Simulation(_vertical(), **kw), Simulation(_vertical(), **kw)
    sent = _check_load(local, remote)
    steps = EPOCHS * 96 // 16
    for k in range(CLIENTS):
        assert sent[f"client{k}"] == Counter({"Activation": steps, "StepDone": steps, "Manifest": 1}), f"client{k}"
    assert sent["server"]["Gradient"] == CLIENTS * steps


def test_fifty_round_robin_clients_each_take_their_turn():
    """50 clients wait on open streams while each in turn trains on its shard and relays the
    segment to the next, through the server."""
    kw = dict(train=_data(CLIENTS * 4, 8), clients=CLIENTS, relay="server", batch_size=4, seed=6)
    local = Simulation(configs.vanilla(_mlp(), [2]), **kw)
    remote = Simulation(configs.vanilla(_mlp(), [2]), **kw)
    sent = _check_load(local, remote)
    for k in range(CLIENTS):
        name = f"client{k}"
        assert sent[name]["Activation"] == EPOCHS * len(remote.parties[name].shards["train"].sample_ids) // 4 > 0, name
        assert sent[name]["Weights"] == EPOCHS - (k == CLIENTS - 1), name  # hands the segment on after each turn


def _mlp() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))

