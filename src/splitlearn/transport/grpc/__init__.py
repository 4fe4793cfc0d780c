"""gRPC transport: a hub (the server process) relaying between remote parties, one stream each.

:class:`HubTransport` hosts the coordinator and the server party and routes every message;
:class:`ClientTransport` connects one remote party (a client or a hop) to the hub.
"""

from splitlearn.transport.grpc._inbox import Stalled, StreamClosed
from splitlearn.transport.grpc._ratelimit import RateLimit
from splitlearn.transport.grpc.client import ClientTransport
from splitlearn.transport.grpc.hub import HubTransport

__all__ = ["ClientTransport", "HubTransport", "RateLimit", "Stalled", "StreamClosed"]
