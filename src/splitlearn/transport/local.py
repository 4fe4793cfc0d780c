"""In-process transport: a FIFO queue delivered on the caller's thread, deterministically."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from splitlearn.split.messages import Message, ProtocolError
from splitlearn.split.transport import Handler, Transport

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    """Delivers messages in the order they were sent. Tensors are passed by reference, not copied."""

    def __init__(self) -> None:
        super().__init__()
        self._handlers: dict[str, Handler] = {}
        self._queue: deque[Message] = deque()

    def register(self, name: str, handler: Handler) -> None:
        if name in self._handlers:
            raise ValueError(f"endpoint {name!r} is already registered")
        self._handlers[name] = handler

    def send(self, message: Message) -> None:
        if message.receiver not in self._handlers:
            raise ProtocolError(f"{message.sender} sent {message.kind} to unknown party {message.receiver!r}")
        self._observe(message)
        self._queue.append(message)

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            if not self._queue:
                raise ProtocolError("no message in flight, yet the awaited step has not completed")
            message = self._queue.popleft()
            self._handlers[message.receiver](message)
