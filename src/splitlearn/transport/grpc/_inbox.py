"""What the hub and the client transport share: channel limits, the stream status, the inbox."""

from __future__ import annotations

import queue
from collections.abc import Callable

import grpc

from splitlearn.split.messages import Message, ProtocolError
from splitlearn.split.transport import Handler, PartyLost, Transport
from splitlearn.transport.serde import Limits

END = object()
"""Sentinel that closes a queue."""


def channel_options(limits: Limits) -> list[tuple[str, int]]:
    """gRPC options that let messages up to ``limits.max_message_bytes`` through, and no larger."""
    return [("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes)]


class StreamClosed(ConnectionError):
    """The stream to the hub ended; ``code`` is its gRPC status (``OK`` when the hub ended it)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class InboxTransport(Transport):
    """Local endpoints fed from a thread-safe inbox and run on the thread that calls :meth:`run_until`.

    The inbox holds messages, exceptions to raise there, and :data:`END` (stop serving).
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self._handlers: dict[str, Handler] = {}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._last: Message | None = None

    def register(self, name: str, handler: Handler) -> None:
        if name in self._handlers:
            raise ValueError(f"endpoint {name!r} is already registered")
        self._handlers[name] = handler

    def run_until(self, done: Callable[[], bool], *, timeout: float | None = None) -> None:
        """Deliver messages until ``done()``; ``TimeoutError`` after ``timeout`` seconds (default
        :attr:`timeout`) without one. Errors of handlers propagate."""
        timeout = self.timeout if timeout is None else timeout
        while not done():
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                m = self._last
                last = "none" if m is None else f"{m.kind} {m.sender} -> {m.receiver} (step {m.step})"
                raise TimeoutError(
                    f"{', '.join(self._handlers)}: no message for {timeout:g} s while waiting for "
                    f"{getattr(done, '__qualname__', done)}; last delivered: {last}"
                ) from None
            if item is END:
                raise StreamClosed(grpc.StatusCode.CANCELLED, "stopped while waiting for messages")
            self._dispatch(item)

    def _dispatch(self, item: Message | BaseException) -> None:
        if isinstance(item, PartyLost):
            raise item  # the coordinator recovers, and later waits go on
        if isinstance(item, BaseException):
            self._inbox.put(item)  # a failed stream stays failed for every later wait
            raise item
        handler = self._handlers.get(item.receiver)
        if handler is None:
            raise ProtocolError(f"{item.sender} sent {item.kind} to {item.receiver!r}, which is not served here")
        self._last = item
        handler(item)
