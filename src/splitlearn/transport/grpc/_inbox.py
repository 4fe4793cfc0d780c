"""What the hub and the client transport share: channel limits, the stream status, the inbox."""

from __future__ import annotations

import queue
import time
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


class Stalled(TimeoutError):
    """Messages may still arrive, but the session has not progressed for ``progress_timeout`` s."""


class InboxTransport(Transport):
    """Local endpoints fed from a thread-safe inbox and run on the thread that calls :meth:`run_until`.

    The inbox holds messages, exceptions to raise there, and :data:`END` (stop serving).

    Two clocks bound a wait: ``timeout``, seconds without any message; and, once
    :meth:`progressed` has been called, ``progress_timeout``, seconds since it was last called
    (a party sending messages that move nothing on, a manifest again and again, say, cannot hold
    the session): :class:`Stalled` when it runs out.
    """

    def __init__(self, timeout: float, *, progress_timeout: float | None = None) -> None:
        super().__init__()
        if progress_timeout is not None and not progress_timeout > 0:
            raise ValueError(f"progress_timeout must be > 0 seconds, got {progress_timeout}")
        self.timeout, self.progress_timeout = timeout, progress_timeout
        self._deadline: float | None = None
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
            wait = timeout
            if self._deadline is not None:
                wait = min(wait, self._deadline - time.monotonic())
                if wait <= 0:
                    raise Stalled(f"no progress for {self.progress_timeout:g} s (last delivered: {self._last_text()})")
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                if wait < timeout:
                    continue  # the progress deadline, checked above
                raise TimeoutError(
                    f"{', '.join(self._handlers)}: no message for {timeout:g} s while waiting for "
                    f"{getattr(done, '__qualname__', done)}; last delivered: {self._last_text()}"
                ) from None
            if item is END:
                raise StreamClosed(grpc.StatusCode.CANCELLED, "stopped while waiting for messages")
            self._dispatch(item)

    def progressed(self) -> None:
        """The session moved on (a step finished, a party is back): the progress clock restarts."""
        if self.progress_timeout is not None:
            self._deadline = time.monotonic() + self.progress_timeout

    def _last_text(self) -> str:
        m = self._last
        return "none" if m is None else f"{m.kind} {m.sender} -> {m.receiver} (step {m.step})"

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
