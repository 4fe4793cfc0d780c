"""The hub: a gRPC server that the remote parties stream to, plus the local endpoints.

Each remote party opens one ``Session`` stream, authenticated by its bearer token. The hub decodes
and checks every Envelope it receives, then delivers it to a local endpoint (coordinator, server
party) or forwards the Envelope as received to the remote party it is addressed to: messages
between remote parties (a peer relay) pass through unseen by the local endpoints.
"""

from __future__ import annotations

import hmac
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from splitlearn._text import capped
from splitlearn.split.messages import Message, ProtocolError
from splitlearn.split.plan import Plan
from splitlearn.split.routes import RouteError, Routes
from splitlearn.split.transport import PartyLost
from splitlearn.transport.grpc._inbox import END, InboxTransport, channel_options
from splitlearn.transport.grpc._ratelimit import RateLimit, RateLimiter
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.serde import Limits, WireError, message_from_proto, message_to_proto

__all__ = ["HubTransport"]


@dataclass(frozen=True, slots=True)
class _Abort:
    code: grpc.StatusCode
    details: str


@dataclass(frozen=True, slots=True)
class _Received:
    """An Envelope as parsed (None if the bytes are not one: ``error`` says why), and the number of
    bytes it arrived in (for the rate limit: upb's ``ByteSize`` would serialise it again)."""

    env: pb.Envelope | None
    nbytes: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Queued:
    """A remote party's message for a local endpoint, and the stream it came on: if that stream
    has ended (or was cut off) by the time it is delivered, the message dies with it."""

    stream: queue.SimpleQueue
    message: Message


def _parse(data: bytes) -> _Received:
    """gRPC's request deserialiser: never raises, so that bytes that are no Envelope get the same
    clear ``INVALID_ARGUMENT`` as any other malformed message (gRPC would say ``INTERNAL``)."""
    env = pb.Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as e:
        return _Received(None, len(data), f"not a splitlearn Envelope: {e}")
    return _Received(env, len(data))


MAX_REASON = 1000
"""Characters of a refusal's text kept: it may quote names a party chose, of any length."""


_SERVICE = pb.DESCRIPTOR.services_by_name["SplitLearning"].full_name


class HubTransport(InboxTransport):
    """Hub side of the gRPC transport for the parties of ``plan``. ``tokens`` maps each bearer
    token to the party it admits.

    A stream that sends a malformed message (``INVALID_ARGUMENT``), a message under another
    party's name or one the plan does not let it send to that receiver at that step (see
    :class:`~splitlearn.split.routes.Routes`; ``PERMISSION_DENIED``), one to an unknown party (``NOT_FOUND``), or more messages
    or bytes per second than ``rate`` allows that party (``RESOURCE_EXHAUSTED``; ``None``: no
    limit) is aborted; the other streams go on. So is a stream whose message a local endpoint
    refuses (a protocol violation: a replayed step, a wrong shape): the endpoint's state is left to
    the coordinator's roll back. What a stream sent that has not been delivered when it ends or
    is cut off is dropped, so it is never blamed on the party's next connection. Either way, and when a stream ends before :meth:`stop`,
    :meth:`run_until` raises :class:`~splitlearn.split.transport.PartyLost` once for that party;
    messages to a party that is not connected are dropped meanwhile. ``max_parties`` bounds the
    concurrent streams (one server thread each). Observers see every message once, one at a time,
    on the thread that sends or receives it. ``timeout`` and ``progress_timeout`` bound waits
    (see :class:`~splitlearn.transport.grpc._inbox.InboxTransport`).
    """

    def __init__(self, tokens: Mapping[str, str], *, plan: Plan, limits: Limits = Limits(), timeout: float = 300.0,
                 progress_timeout: float | None = None, max_parties: int = 64, rate: RateLimit | None = RateLimit()) -> None:
        super().__init__(timeout, progress_timeout=progress_timeout)
        self._routes = Routes(plan)
        self.limits = limits
        self._rate = rate
        self._limiters: dict[str, RateLimiter] = {}  # party -> its buckets, kept across reconnects
        self._tokens = [(token.encode(), name) for token, name in tokens.items()]
        self._max_parties = max_parties
        self._streams: dict[str, queue.SimpleQueue] = {}  # party -> Envelopes to send it
        self._remote = {name for _, name in self._tokens}
        self._lock = threading.Condition()
        self._server: grpc.Server | None = None
        self._stopping = False
        self.connects: dict[str, int] = {}  # party -> streams it opened (for status)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, address: str = "127.0.0.1:0", credentials: grpc.ServerCredentials | None = None) -> int:
        """Serve on ``address`` (TLS with ``credentials``, else insecure); return the bound port."""
        server = grpc.server(ThreadPoolExecutor(self._max_parties, thread_name_prefix="hub"),
                             options=channel_options(self.limits), maximum_concurrent_rpcs=self._max_parties)
        # The generated add_SplitLearningServicer_to_server, with a request deserialiser that keeps the size.
        handlers = {"Session": grpc.stream_stream_rpc_method_handler(
            self._session, request_deserializer=_parse, response_serializer=pb.Envelope.SerializeToString)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
        server.add_registered_method_handlers(_SERVICE, handlers)
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        server.start()
        self._server = server
        return port

    def stop(self, grace: float = 1.0, *, resume: bool = False) -> None:
        """End every stream (status ``OK``: the session is over; with ``resume``, ``UNAVAILABLE``:
        clients should reconnect to the restarted server) and shut the server down."""
        with self._lock:
            self._stopping = True
            streams = list(self._streams.values())
        for out in streams:
            out.put(_Abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down and will resume") if resume else END)
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def wait_for_parties(self, names: Iterable[str], timeout: float | None = None) -> None:
        """Block until every party in ``names`` is connected; ``TimeoutError`` after ``timeout`` s."""
        names = set(names)
        with self._lock:
            if not self._lock.wait_for(lambda: names <= self._streams.keys(), timeout):
                raise TimeoutError(f"parties {sorted(names - self._streams.keys())} did not connect within {timeout} s")

    # -- sending -------------------------------------------------------------------------------

    def connected(self) -> list[str]:
        """The remote parties connected now (none once :meth:`stop` has begun ending the streams)."""
        with self._lock:
            return [] if self._stopping else sorted(self._streams)

    def send(self, message: Message) -> None:
        with self._lock:
            if message.sender == self._routes.coordinator:
                self._routes.coordinator_sent(message)  # what it starts, even at a party that is gone
            local = message.receiver in self._handlers
            out = self._inbox if local else self._streams.get(message.receiver)
        if out is None:
            if message.receiver in self._remote:
                return  # lost: the coordinator hears of it (PartyLost) and rolls the step back
            raise ProtocolError(f"{message.sender} sent {message.kind} to {message.receiver!r}, neither local nor connected")
        item = message if local else message_to_proto(message)
        with self._lock:
            self._observe(message)
        out.put(item)

    # -- streams -------------------------------------------------------------------------------

    def _session(self, requests: Iterator[_Received], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
        name = self._authenticate(context)
        out: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if name in self._streams or name in self._handlers:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} is already connected")
            self._streams[name] = out
            self.connects[name] = self.connects.get(name, 0) + 1
            self._lock.notify_all()
        context.add_callback(lambda: out.put(END))
        threading.Thread(target=self._pump, args=(name, requests, out), name=f"hub-{name}", daemon=True).start()
        try:
            while (item := out.get()) is not END:
                if isinstance(item, _Abort):
                    context.abort(item.code, item.details)
                yield item
        finally:
            self._lost(name, out, "its connection ended")

    def _lost(self, name: str, out: queue.SimpleQueue, reason: str, *, expelled: bool = False, report: bool = True) -> None:
        """Forget ``name``'s stream ``out`` (if still current) and tell the coordinator, once
        (unless not ``report``: the caller raises the :class:`PartyLost` itself)."""
        with self._lock:
            if self._streams.get(name) is not out:
                return
            del self._streams[name]
            if self._stopping or not report:
                return
        self._inbox.put(PartyLost(name, reason, expelled=expelled))

    def _dispatch(self, item) -> None:
        """Deliver to a local endpoint; if it refuses a remote party's message, expel that party,
        or the remote party the endpoint blames (``ProtocolError.party``: e.g. the one whose
        smashed data made the step non-finite, whichever message completed it)."""
        if not isinstance(item, _Queued):
            return super()._dispatch(item)
        with self._lock:
            if self._streams.get(item.message.sender) is not item.stream:
                return  # its stream has ended: the coordinator hears of that, and rolls back
        item = item.message
        try:
            super()._dispatch(item)
        except (ProtocolError, ValueError, TypeError, IndexError, RuntimeError) as e:  # a PartyLost passes through
            blamed = getattr(e, "party", None)
            offender = blamed if blamed in self._remote else item.sender
            if offender not in self._remote:
                raise
            reason = capped(f"{item.kind} of step {item.step} refused: {e}", MAX_REASON)
            self._expel(offender, reason)
            raise PartyLost(offender, reason, expelled=True) from None

    def _expel(self, name: str, reason: str) -> None:
        """End ``name``'s stream with ``INVALID_ARGUMENT`` and ``reason``, if it is connected."""
        with self._lock:
            out = self._streams.get(name)
        if out is not None:
            self._lost(name, out, reason, expelled=True, report=False)
            out.put(_Abort(grpc.StatusCode.INVALID_ARGUMENT, reason))

    def _authenticate(self, context: grpc.ServicerContext) -> str:
        scheme, _, token = dict(context.invocation_metadata()).get("authorization", "").partition(" ")
        given = token.encode()
        name = next((n for t, n in self._tokens if hmac.compare_digest(t, given)), None) if scheme == "Bearer" else None
        if name is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        return name

    def _pump(self, name: str, requests: Iterator[_Received], out: queue.SimpleQueue) -> None:
        """Route what ``name`` sends until its stream ends or breaks a rule."""
        try:
            for received in requests:
                if (abort := self._route(name, out, received)) is not None:
                    abort = _Abort(abort.code, capped(abort.details, MAX_REASON))  # it may quote what the party sent
                    self._lost(name, out, abort.details, expelled=True)  # before the stream's end reports no reason
                    out.put(abort)
                    return
        except grpc.RpcError:  # the client cancelled
            pass
        out.put(END)

    def _route(self, name: str, stream: queue.SimpleQueue, received: _Received) -> _Abort | None:
        if self._rate is not None:
            if (limiter := self._limiters.get(name)) is None:
                limiter = self._limiters.setdefault(name, RateLimiter(self._rate))
            if (why := limiter.admit(received.nbytes)) is not None:
                return _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{name} exceeded its rate limit: {why}")
        if (env := received.env) is None:
            return _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed message from {name}: {received.error}")
        try:
            message = message_from_proto(env, limits=self.limits)
        except WireError as e:
            return _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed message from {name}: {e}")
        if message.sender != name:
            return _Abort(grpc.StatusCode.PERMISSION_DENIED, f"{name} may not send as {message.sender!r}")
        with self._lock:
            if message.receiver in self._handlers:
                item, target = _Queued(stream, message), self._inbox
            elif (target := self._streams.get(message.receiver)) is not None:
                item = env
            elif message.receiver in self._remote:
                target = None  # not connected now: the coordinator rolls the step back
            else:
                return _Abort(grpc.StatusCode.NOT_FOUND, f"{name} sent {message.kind} to unknown party {message.receiver!r}")
            try:
                if not self._routes.admit(message) or target is None:
                    return None  # of an attempt that is over, or for a party that is gone
            except RouteError as e:
                return _Abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
            self._observe(message)
        target.put(item)
        return None
