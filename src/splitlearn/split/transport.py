"""The port the protocol core needs from a transport, and the message log every run keeps.

The core never imports a concrete transport: in-process, gRPC and anything else implement
:class:`Transport`. Observers (the message log, accounting, tests) see every message sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from splitlearn.split.messages import Message

__all__ = ["MessageLog", "MessageRecord", "PartyLost", "Transport"]

Handler = Callable[[Message], None]


class PartyLost(ConnectionError):
    """Raised by :meth:`Transport.run_until` when a remote party's connection ended, or when one
    of its messages broke the protocol (its connection is then closed: ``expelled``). The step in
    progress cannot finish; the coordinator may roll it back and go on once the party is back."""

    def __init__(self, party: str, reason: str, *, expelled: bool = False) -> None:
        super().__init__(f"{party}: {reason}")
        self.party, self.reason, self.expelled = party, reason, expelled


class Transport(ABC):
    """Delivers messages between named endpoints (parties and the coordinator)."""

    def __init__(self) -> None:
        self.observers: list[Callable[[Message], None]] = []

    @abstractmethod
    def register(self, name: str, handler: Handler) -> None:
        """Make ``handler`` receive every message addressed to ``name``."""

    @abstractmethod
    def send(self, message: Message) -> None:
        """Queue ``message`` for its receiver. Implementations call :meth:`_observe` once."""

    @abstractmethod
    def run_until(self, done: Callable[[], bool]) -> None:
        """Deliver messages until ``done()`` holds; raise if that can no longer happen."""

    def _observe(self, message: Message) -> None:
        for observe in self.observers:
            observe(message)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    kind: str
    sender: str
    receiver: str
    step: int
    payload_bytes: int


class MessageLog:
    """Observer that records the header and size of every message (not its tensors)."""

    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    def __call__(self, message: Message) -> None:
        self.records.append(
            MessageRecord(message.kind, message.sender, message.receiver, message.step, message.payload_bytes)
        )

    @property
    def messages(self) -> int:
        """How many messages were sent."""
        return len(self.records)

    def bytes_by(self, key: str = "sender") -> dict[str, int]:
        """Total payload bytes grouped by ``sender``, ``receiver`` or ``kind``."""
        totals: dict[str, int] = defaultdict(int)
        for r in self.records:
            totals[getattr(r, key)] += r.payload_bytes
        return dict(totals)

    def total_bytes(self, *, kind: str | None = None) -> int:
        return sum(r.payload_bytes for r in self.records if kind is None or r.kind == kind)


class ByteTotals:
    """Observer that keeps running totals of payload bytes by sender, receiver and kind, and the
    message count, in constant memory (a long deployment sends millions of messages). Same
    queries as :class:`MessageLog`; :meth:`state` and :meth:`carry` take the totals across a
    restart."""

    KEYS = ("sender", "receiver", "kind")

    def __init__(self) -> None:
        self._totals: dict[str, dict[str, int]] = {key: defaultdict(int) for key in self.KEYS}
        self.messages = 0

    def __call__(self, message: Message) -> None:
        self.messages += 1
        for key in self.KEYS:
            self._totals[key][getattr(message, key)] += message.payload_bytes

    def bytes_by(self, key: str = "sender") -> dict[str, int]:
        """Total payload bytes grouped by ``sender``, ``receiver`` or ``kind``."""
        return dict(self._totals[key])

    def total_bytes(self, *, kind: str | None = None) -> int:
        return sum(self._totals["kind"].values()) if kind is None else self._totals["kind"].get(kind, 0)

    def state(self) -> dict:
        """The totals as JSON."""
        return {"messages": self.messages} | {key: dict(t) for key, t in self._totals.items()}

    def carry(self, state: dict) -> None:
        """Add the totals of :meth:`state` (of an earlier process) to these."""
        self.messages += int(state["messages"])
        for key in self.KEYS:
            for name, n in state[key].items():
                self._totals[key][name] += int(n)
