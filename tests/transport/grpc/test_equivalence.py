"""Training over gRPC gives bit-identical weights to the in-process run, and the same messages."""

import threading
from collections import Counter

import pytest
import torch
from torch import nn

from splitlearn.data.dataset import ArrayDataset
from splitlearn.simulation import Simulation
from splitlearn.split import configs
from splitlearn.split.compression import Compressed, Compressor
from splitlearn.split.configs import Vertical
from splitlearn.split.coordinator import Coordinator
from splitlearn.split.transport import MessageLog
from splitlearn.transport.grpc import ClientTransport, HubTransport

from .conftest import TIMEOUT


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


SPLITS = {
    "vanilla": lambda: configs.vanilla(_mlp(), [2]),
    "ushaped": lambda: configs.ushaped(_mlp(), [1, 3]),
    "vertical": lambda: configs.vertical(_vertical(), in_shape=(10,)),
}


def _over_grpc(sim: Simulation, epochs: int) -> MessageLog:
    """Train ``sim`` with its data parties as remote clients of a hub hosting a new coordinator
    and the other parties. Simulation built the parties (here, in-process, announced once); they
    are rewired: each client to its own ClientTransport, served on its own thread, the rest to the
    hub. Returns the hub's log: manifests and training."""
    old, plan = sim.coordinator, sim.plan
    remote = [n for n, p in sim.parties.items() if p.role in plan.data_roles]
    hub = HubTransport({f"t-{n}": n for n in remote}, timeout=TIMEOUT)
    log = MessageLog()
    hub.observers.append(log)
    clients, threads, errors = [], [], []

    def serve(client: ClientTransport) -> None:
        try:
            client.serve()
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    try:
        target = f"127.0.0.1:{hub.start()}"
        for name, party in sim.parties.items():
            if name in remote:
                client = ClientTransport(timeout=TIMEOUT)
                client.connect(target, name=name, token=f"t-{name}")
                clients.append(client)
                party.connect(client)
                threads.append(threading.Thread(target=serve, args=(client,)))
            else:
                party.connect(hub)
        sim.coordinator = Coordinator(plan, hub, data_parties=old.data_parties, clients=old.clients,
                                      relay=old.relay, batch_size=old.batch_size, seed=old.seed)
        for t in threads:
            t.start()
        hub.wait_for_parties(remote, timeout=TIMEOUT)
        for name in old.data_parties:
            sim.parties[name].announce()
        sim.coordinator.collect_manifests()
        sim.fit(epochs)
    finally:
        hub.stop()
        for client in clients:
            client.close()
        for t in threads:
            t.join(TIMEOUT)
        if errors:  # a client's failure is the cause of whatever the hub raised
            raise errors[0]
    assert not any(t.is_alive() for t in threads)
    return log


@pytest.mark.parametrize(("config", "clients", "relay", "codec"), [
    ("vanilla", 2, "peer", None),
    ("vanilla", 2, "server", None),
    ("ushaped", 1, "peer", None),
    ("vertical", 2, "peer", None),
    ("ushaped", 1, "peer", "int8"),
    ("vanilla", 2, "peer", "topk"),
])
def test_grpc_training_matches_in_process_bit_for_bit(config, clients, relay, codec):
    outbox = None if codec is None else dict.fromkeys(("client", "server"), Compressor(codec, 0.3))
    kw = dict(train=_data(), clients=clients, relay=relay, batch_size=16, seed=3, outbox=outbox)
    local = Simulation(SPLITS[config](), **kw)
    remote = Simulation(SPLITS[config](), **kw)
    before = {k: v.clone() for k, v in remote.parties["server"].state()[0].items()}
    seen = []
    local.transport.observers.append(seen.append)
    local.fit(2)
    log = _over_grpc(remote, 2)
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
