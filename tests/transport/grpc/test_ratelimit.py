"""Token buckets against an injected clock: exact admissions, no sleeps."""

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitlearn.transport.grpc._ratelimit import RateLimit, RateLimiter, TokenBucket

from ..conftest import PROPERTY


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_refills_at_its_rate_and_caps_at_its_burst():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=4, clock=clock)
    assert [bucket.take(1) for _ in range(5)] == [True] * 4 + [False]
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.take(1) for _ in range(3)] == [True, True, False]
    assert bucket.available() == pytest.approx(0.5)
    clock.now += 3600  # idle for an hour: still only the burst
    assert bucket.available() == 4
    assert not bucket.take(4.5) and bucket.take(4) and not bucket.take(0.1)


def test_a_clock_stepping_back_adds_nothing():
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    assert bucket.take(2)
    clock.now -= 50
    assert bucket.available() == 0
    clock.now += 50.1  # only time after the latest reading counts
    assert bucket.available() == pytest.approx(1.0)


def test_limiter_counts_messages_and_bytes_and_charges_nothing_when_refusing():
    clock = Clock()
    limiter = RateLimiter(RateLimit(messages_per_s=5, bytes_per_s=1000, burst_messages=3, burst_bytes=1500), clock=clock)
    assert limiter.admit(1000) is None and limiter.admit(400) is None
    assert limiter.admit(200) == "more than 1000 bytes/s (burst 1500)"  # 100 bytes left
    assert limiter.admit(100) is None  # the refused one took no message token: this is the 3rd
    assert limiter.admit(0) == "more than 5 messages/s (burst 3)"
    clock.now += 0.2  # one message, 200 bytes
    assert limiter.admit(200) is None
    assert limiter.admit(0) is not None
    assert limiter.admit(1501) == "a message of 1501 bytes is larger than the byte burst of 1500"


def test_default_bursts_are_one_second_of_the_rate():
    limit = RateLimit(messages_per_s=7, bytes_per_s=300)
    assert (limit.message_burst, limit.byte_burst) == (7, 300)
    assert (RateLimit().message_burst, RateLimit().byte_burst) == (5000, 1 << 30)


@pytest.mark.parametrize(("kw", "problem"), [
    ({"messages_per_s": 0}, r"messages_per_s must be a finite number > 0, got 0"),
    ({"bytes_per_s": float("inf")}, r"bytes_per_s must be a finite number > 0, got inf"),
    ({"burst_bytes": -1}, r"burst_bytes must be a finite number > 0"),
    ({"burst_messages": float("nan")}, r"burst_messages must be a finite number > 0"),
    ({"burst_messages": 0.5}, r"burst_messages must be >= 1 so that one message can pass, got 0.5"),
    ({"messages_per_s": 0.5}, r"burst_messages must be >= 1"),  # its default burst, one second's worth
])
def test_invalid_limits_are_refused_by_name(kw, problem):
    with pytest.raises(ValueError, match=problem):
        RateLimit(**kw)


def test_concurrent_admissions_never_exceed_the_burst():
    limiter = RateLimiter(RateLimit(messages_per_s=1, burst_messages=100), clock=Clock())  # time stands still
    admitted = []

    def send():
        admitted.extend(limiter.admit(1) is None for _ in range(50))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 100 and len(admitted) == 400


traffic = st.lists(st.tuples(st.floats(0, 0.5), st.integers(0, 3000)), max_size=80)


@PROPERTY
@given(traffic, st.integers(1, 20), st.integers(1, 50), st.integers(3000, 20_000))
def test_admitted_traffic_never_exceeds_burst_plus_rate_times_elapsed(requests, burst, rate, byte_rate):
    clock = Clock()
    limiter = RateLimiter(RateLimit(messages_per_s=rate, burst_messages=burst, bytes_per_s=byte_rate), clock=clock)
    start, messages, nbytes = clock.now, 0, 0
    for gap, size in requests:
        clock.now += gap
        if limiter.admit(size) is None:
            messages, nbytes = messages + 1, nbytes + size
        elapsed = clock.now - start
        assert messages <= burst + rate * elapsed + 1e-6  # float clocks: 1e-9 relative slack per admission
        assert nbytes <= byte_rate + byte_rate * elapsed + 1e-3


@PROPERTY
@given(st.lists(st.integers(0, 1000), max_size=80), st.integers(1, 50))
def test_traffic_within_the_rate_is_never_refused(sizes, rate):
    clock = Clock()
    limiter = RateLimiter(RateLimit(messages_per_s=rate, burst_messages=1, bytes_per_s=1000 * rate), clock=clock)
    for size in sizes:
        assert limiter.admit(size) is None
        clock.now += 1 / rate
