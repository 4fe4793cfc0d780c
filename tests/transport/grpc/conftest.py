import threading
from collections.abc import Callable

import pytest
import torch

from splitlearn.split.coordinator import Coordinator
from splitlearn.split.messages import StartStep
from splitlearn.split.plan import Head, Node, Plan
from splitlearn.split.simulation import Simulation
from splitlearn.split.transport import MessageLog
from splitlearn.transport.grpc import ClientTransport, HubTransport

TIMEOUT = 10.0  # bounds every wait, so a failing test fails instead of hanging


# The hub fixture's plan: alice's node feeds bob's, which feeds the server's; alice holds the labels.
CHAIN = Plan((Node("a", "alice"), Node("b", "bob", inputs=("a",)),
              Node("s", "server", inputs=("b",), heads=(Head("y", label_role="alice"),))))
BINDINGS = {"alice": "alice", "bob": "bob", "server": "server"}


def start_step(hub, step: int, mode: str = "train") -> None:
    """The coordinator starts ``step`` at alice (so the hub lets the plan's messages of that step through)."""
    hub.send(StartStep("coordinator", "alice", step, mode=mode, split="train", sample_ids=torch.arange(2), bindings=BINDINGS))


@pytest.fixture
def hub(request):
    """A started hub for :data:`CHAIN` admitting alice and bob (token ``t-<name>``) with a local
    ``coordinator`` endpoint whose messages land in ``hub.received``. Parametrize it indirectly
    with a dict of further HubTransport arguments."""
    hub = HubTransport({"t-alice": "alice", "t-bob": "bob"}, plan=CHAIN, timeout=TIMEOUT, **getattr(request, "param", {}))
    hub.received = []
    hub.register("coordinator", hub.received.append)
    hub.target = f"127.0.0.1:{hub.start('127.0.0.1:0')}"
    yield hub
    hub.stop()


@pytest.fixture
def connect(hub):
    """Open a ClientTransport to ``hub`` as ``name``; every one is closed at teardown."""
    opened = []

    def connect(name: str, token: str | None = None) -> ClientTransport:
        client = ClientTransport(timeout=TIMEOUT)
        client.connect(hub.target, name=name, token=f"t-{name}" if token is None else token)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


def train_over_grpc(sim: Simulation, epochs: int, *, on_epoch: Callable[[dict], None] | None = None, **hub_options) -> MessageLog:
    """Train ``sim`` with its data parties as remote clients of a hub hosting a new coordinator
    and the other parties. Simulation built the parties (here, in-process, announced once); they
    are rewired: each client to its own ClientTransport, served on its own thread, the rest to the
    hub (made with ``hub_options``). ``on_epoch`` goes to ``sim.fit``. Returns the hub's log: manifests and training."""
    old, plan = sim.coordinator, sim.plan
    remote = [n for n, p in sim.parties.items() if p.role in plan.data_roles]
    hub = HubTransport({f"t-{n}": n for n in remote}, plan=plan, timeout=TIMEOUT, **hub_options)
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
        sim.fit(epochs, on_epoch=on_epoch)
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


def run_until_hearing(hub, done, *, timeout: float = TIMEOUT) -> list[str]:
    """``hub.run_until(done)``, noting the parties it reports lost (PartyLost) on the way."""
    from splitlearn.split.transport import PartyLost

    lost = []
    while True:
        try:
            hub.run_until(done, timeout=timeout)
            return lost
        except PartyLost as e:
            lost.append(e.party)
