import pytest

from splitlearn.transport.grpc import ClientTransport, HubTransport

TIMEOUT = 10.0  # bounds every wait, so a failing test fails instead of hanging


@pytest.fixture
def hub(request):
    """A started hub admitting alice and bob (token ``t-<name>``) with a local ``coordinator``
    endpoint whose messages land in ``hub.received``. Parametrize it indirectly with a dict of
    further HubTransport arguments."""
    hub = HubTransport({"t-alice": "alice", "t-bob": "bob"}, timeout=TIMEOUT, **getattr(request, "param", {}))
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
