"""Per-party rate limits at the hub: token buckets for messages and bytes per second.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; it starts full.
A message costs one message token and its encoded size in byte tokens, and is admitted only if
both buckets hold enough; otherwise nothing is taken and the caller refuses it. Nothing sleeps:
the hub cuts off a party that sends faster than its limit instead of slowing it down.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """How fast one party may send to the hub. A burst left ``None`` is one second's worth.

    The defaults stop a flood, not a fast client. A party sends at most a few messages per step
    and waits for the hub between them, so its rate is bounded by hub round trips: the fastest
    measured here (a tiny MLP, U-shaped, loopback, 2 CPU cores) peaked at 1,250 messages/s.
    """

    messages_per_s: float = 5000.0
    bytes_per_s: float = float(1 << 30)  # 1 GiB/s
    burst_messages: float | None = None
    burst_bytes: float | None = None

    def __post_init__(self) -> None:
        for name in ("messages_per_s", "bytes_per_s", "burst_messages", "burst_bytes"):
            value = getattr(self, name)
            if value is not None or not name.startswith("burst"):
                _positive(name, value)
        if self.message_burst < 1:
            raise ValueError(f"burst_messages must be >= 1 so that one message can pass, got {self.message_burst!r}")

    @property
    def message_burst(self) -> float:
        return self.messages_per_s if self.burst_messages is None else self.burst_messages

    @property
    def byte_burst(self) -> float:
        return self.bytes_per_s if self.burst_bytes is None else self.burst_bytes


class TokenBucket:
    """Up to ``burst`` tokens, refilled continuously at ``rate`` per second of ``clock``; starts full.
    Not thread-safe on its own (see :class:`RateLimiter`)."""

    def __init__(self, *, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        _positive("rate", rate)
        _positive("burst", burst)
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()

    def available(self) -> float:
        """Tokens held now."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = max(now, self._at)  # a clock stepping back adds nothing
        return self._tokens

    def has(self, amount: float) -> bool:
        """Whether ``amount`` tokens are held now (to a relative 1e-9: clock readings are floats)."""
        return self.available() >= amount * (1 - 1e-9)

    def take(self, amount: float) -> bool:
        """Take ``amount`` tokens if there are that many; otherwise take none and return False."""
        if not self.has(amount):
            return False
        self._tokens = max(0.0, self._tokens - amount)
        return True


class RateLimiter:
    """One party's message and byte buckets, per :class:`RateLimit`. Thread-safe."""

    def __init__(self, limit: RateLimit, *, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self._messages = TokenBucket(rate=limit.messages_per_s, burst=limit.message_burst, clock=clock)
        self._bytes = TokenBucket(rate=limit.bytes_per_s, burst=limit.byte_burst, clock=clock)
        self._lock = threading.Lock()

    def admit(self, nbytes: int) -> str | None:
        """Charge one message of ``nbytes``: ``None`` if admitted, else why not (nothing is charged)."""
        limit = self.limit
        if nbytes > limit.byte_burst:
            return f"a message of {nbytes} bytes is larger than the byte burst of {limit.byte_burst:g}"
        with self._lock:
            if not self._messages.has(1):
                return f"more than {limit.messages_per_s:g} messages/s (burst {limit.message_burst:g})"
            if not self._bytes.has(nbytes):
                return f"more than {limit.bytes_per_s:g} bytes/s (burst {limit.byte_burst:g})"
            self._messages.take(1)
            self._bytes.take(nbytes)
        return None
