"""Training over gRPC gives bit-identical weights to the in-process run, and the same messages."""

from collections import Counter

import pytest
import torch
from torch import nn

from splitlearn.data.dataset import ArrayDataset
from splitlearn.split import configs
from splitlearn.split.compression import Compressed, Compressor
from splitlearn.split.configs import MultiHead, Vertical
from splitlearn.split.simulation import Simulation

from .conftest import train_over_grpc


def _data() -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    return ArrayDataset(x, x[:, :3].argmax(1), torch.arange(64))


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def _vertical() -> Vertical:
    torch.manual_seed(2)
    bottoms = [nn.Sequential(nn.Linear(5, 8), nn.ReLU()) for _ in range(2)]
    return Vertical(bottoms, nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)))


def _multihead() -> MultiHead:
    torch.manual_seed(5)
    trunk = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    return MultiHead(trunk, {"label": nn.Linear(16, 3), "parity": nn.Linear(16, 2)})


SPLITS = {
    "vanilla": lambda: configs.vanilla(_mlp(), [2]),
    "ushaped": lambda: configs.ushaped(_mlp(), [1, 3]),
    "vertical": lambda: configs.vertical(_vertical(), in_shape=(10,)),
    "multihop": lambda: configs.multihop(_mlp(), [1, 2, 4]),
    "multitask": lambda: configs.multitask(_multihead(), [2], weights={"label": 1.0, "parity": 0.5}),
}
TARGETS = {"multitask": {"label": lambda t: t, "parity": lambda t: t % 2}}


@pytest.mark.parametrize(("config", "clients", "relay", "codec"), [
    ("vanilla", 2, "peer", None),
    ("vanilla", 2, "server", None),
    ("ushaped", 1, "peer", None),
    ("ushaped", 2, "server", None),
    ("vertical", 2, "peer", None),
    ("multihop", 2, "peer", None),
    ("multitask", 2, "server", None),
    ("ushaped", 1, "peer", "int8"),
    ("vanilla", 2, "peer", "topk"),
])
def test_grpc_training_matches_in_process_bit_for_bit(config, clients, relay, codec, device):
    outbox = None if codec is None else dict.fromkeys(("client", "server"), Compressor(codec, 0.3))
    kw = dict(train=_data(), clients=clients, relay=relay, batch_size=16, seed=3, targets=TARGETS.get(config), device=device,
              outbox=outbox)
    local = Simulation(SPLITS[config](), **kw)
    remote = Simulation(SPLITS[config](), **kw)
    before = {k: v.clone() for k, v in remote.parties["server"].state()[0].items()}
    seen = []
    local.transport.observers.append(seen.append)
    local.fit(2)
    log = train_over_grpc(remote, 2)
    assert Counter(log.records) == Counter(local.log.records)  # same messages, same sizes (compressed ones too)
    if codec is not None:  # so the cut tensors crossed the wire compressed, both ways
        cut = [m for m in seen if m.kind in ("Activation", "Gradient")]
        assert cut and all(isinstance(m.tensor, Compressed) for m in cut)
        assert {m.kind for m in cut if m.sender == "server"} == ({"Activation", "Gradient"} if config == "ushaped" else {"Gradient"})
    assert [h["train_loss"] for h in remote.history] == [h["train_loss"] for h in local.history]
    for name, party in local.parties.items():
        mine, theirs = party.state()[0], remote.parties[name].state()[0]
        assert list(mine) == list(theirs)
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), f"{name}: weights differ"
    after = remote.parties["server"].state()[0]
    assert not all(torch.equal(before[k], after[k]) for k in before)  # it did train
