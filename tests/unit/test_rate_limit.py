"""The client-side write limiter (TokenBucket) and the jittered backoff, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import types

import pytest
from headroom.shell import backoff
from headroom.shell import kube as kube_io
from headroom.shell.backoff import backoff_delays
from headroom.shell.kube import TokenBucket


class FakeTime:
    """A clock that only moves when the limiter sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        # Like a real event loop, a sleep never takes less than a moment: without this, a sleep
        # shorter than the clock's float resolution (4.5e-14 s at t=1000) would not move it at all.
        self.now += max(seconds, 1e-6)
        await _real_sleep(0)  # still yield, so other takers get their turn


_real_sleep = asyncio.sleep


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    time = FakeTime()
    # Only kube_io's view of asyncio changes; the event loop itself keeps the real one.
    monkeypatch.setattr(
        kube_io, "asyncio", types.SimpleNamespace(Lock=asyncio.Lock, Event=asyncio.Event, sleep=time.sleep)
    )
    return time


def take_times(bucket: TokenBucket, fake: FakeTime, count: int) -> list[float]:
    """When (seconds after the start) each of `count` sequential takes was granted."""
    start = fake.now

    async def run() -> list[float]:
        granted = []
        for _ in range(count):
            await bucket.take()
            granted.append(round(fake.now - start, 4))
        return granted

    return asyncio.run(run())


def test_burst_is_allowed_at_once_then_rate_per_second(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=2.0, burst=3, clock=fake.clock)
    # 3 at once, then one every 1/2 s.
    assert take_times(bucket, fake, 7) == [0, 0, 0, 0.5, 1.0, 1.5, 2.0]


def test_sustained_rate_over_many_writes(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=20.0, burst=40, clock=fake.clock)
    times = take_times(bucket, fake, 240)
    # 40 at once, the other 200 at 20 per second: the last one after 10 s.
    assert times[39] == 0
    assert times[40] > 0
    assert times[-1] == pytest.approx(10.0, abs=1e-3)


def test_idle_time_refills_only_up_to_the_burst(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=1.0, burst=2, clock=fake.clock)
    take_times(bucket, fake, 2)
    fake.now += 3600  # an hour idle would be 3600 tokens without the cap
    assert take_times(bucket, fake, 4) == [0, 0, 1.0, 2.0]


def test_partial_refill_waits_only_for_the_rest(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=4.0, burst=1, clock=fake.clock)
    take_times(bucket, fake, 1)
    fake.now += 0.1  # 0.4 of a token back
    take_times(bucket, fake, 1)
    assert fake.sleeps == [pytest.approx(0.15)]  # the missing 0.6 token at 4 per second


def test_concurrent_takers_are_served_one_token_at_a_time(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=1.0, burst=1, clock=fake.clock)
    start = fake.now

    async def run() -> list[float]:
        granted: list[float] = []

        async def one() -> None:
            await bucket.take()
            granted.append(round(fake.now - start, 4))

        await asyncio.gather(*(one() for _ in range(5)))
        return granted

    assert asyncio.run(run()) == [0, 1.0, 2.0, 3.0, 4.0]


def test_real_clock_burst_does_not_wait() -> None:
    async def run() -> None:
        bucket = TokenBucket(rate=0.001, burst=5)
        await asyncio.wait_for(asyncio.gather(*(bucket.take() for _ in range(5))), timeout=1)

    asyncio.run(run())


# --------------------------------------------------------------------------------------------- backoff


def test_backoff_bounds_double_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(backoff.random, "uniform", uniform)
    delays = list(itertools.islice(backoff_delays(base=0.5, cap=10.0), 8))
    # base x 2^n: 0.5, 1, 2, 4, 8, then the cap of 10.
    assert bounds == [(0, 0.5), (0, 1.0), (0, 2.0), (0, 4.0), (0, 8.0), (0, 10.0), (0, 10.0), (0, 10.0)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_delays_are_jittered_within_bounds() -> None:
    for _ in range(50):
        delays = list(itertools.islice(backoff_delays(base=0.5, cap=60.0), 12))
        for attempt, delay in enumerate(delays):
            assert 0 <= delay <= min(60.0, 0.5 * 2**attempt)
    # Replicas starting together do not retry in step.
    first = [next(backoff_delays(base=1.0, cap=60.0)) for _ in range(100)]
    assert len(set(first)) > 90
    assert min(first) < 0.25 and max(first) > 0.75  # spread over [0, 1], not clustered
    capped = list(itertools.islice(backoff_delays(base=1.0, cap=5.0), 200))[10:]
    assert len(set(capped)) > 1
    assert max(capped) <= 5.0


def test_backoff_never_ends() -> None:
    delays = backoff_delays(base=0.01, cap=0.02)
    assert len(list(itertools.islice(delays, 1000))) == 1000


# --------------------------------------------------------------------------------------------- priority


def grant_order(bucket: TokenBucket, priorities: list[float], cancel: set[int] = frozenset()) -> list[int]:
    """The order (indexes into `priorities`) in which concurrent takers were served."""

    async def run() -> list[int]:
        await bucket.take()  # the bucket is now empty: everyone below has to queue
        served: list[int] = []

        async def one(index: int, priority: float) -> None:
            await bucket.take(priority)
            served.append(index)

        tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(priorities)]
        await _real_sleep(0)
        for index in cancel:
            tasks[index].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return served

    return asyncio.run(run())


def test_queued_writes_are_served_by_priority_then_arrival(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=1.0, burst=1, clock=fake.clock)
    # The first Project seen (priority 1) gets both of its writes through before the later ones;
    # writes without a Project (infinite priority) come last, in arrival order.
    order = grant_order(bucket, [5, 1, float("inf"), 1, 3, float("inf")])
    assert order == [1, 3, 4, 0, 2, 5]


def test_priority_does_not_change_the_rate(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=2.0, burst=1, clock=fake.clock)
    start = fake.now
    grant_order(bucket, [3, 2, 1, 0])
    assert fake.now - start == pytest.approx(2.0, abs=1e-3)  # 4 tokens at 2 per second


def test_a_cancelled_waiter_does_not_hold_up_the_line(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=1.0, burst=1, clock=fake.clock)
    start = fake.now
    order = grant_order(bucket, [0, 1, 2, 3], cancel={0, 2})
    assert order == [1, 3]
    assert fake.now - start == pytest.approx(2.0, abs=1e-3)  # no token spent on the cancelled ones


# --- the adaptive rate (AIMD): the API server's pushback sets the pace, --api-qps only caps it


def test_a_429_halves_the_rate_and_leaves_no_saved_burst(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=8.0, burst=8, clock=fake.clock)
    bucket.throttled()
    assert bucket.rate == 4.0
    # No burst of 8 right after the refusal: one token, then 4 per second.
    assert take_times(bucket, fake, 3) == [0, 0.25, 0.5]


def test_refusals_of_one_burst_count_once_and_the_rate_never_drops_below_the_floor(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=40.0, burst=40, clock=fake.clock, floor=2.0)
    for _ in range(10):  # ten writes refused together
        bucket.throttled()
    assert bucket.rate == 20.0
    for _ in range(10):
        fake.now += 1.0
        bucket.throttled()
    assert bucket.rate == 2.0


def test_a_slow_answer_slows_down_like_a_429(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=10.0, burst=10, clock=fake.clock)
    bucket.answered(kube_io.SLOW_WRITE_SECONDS + 0.5)
    assert bucket.rate == 5.0


def test_quick_answers_raise_the_rate_back_to_the_ceiling_and_not_beyond(fake: FakeTime) -> None:
    bucket = TokenBucket(rate=50.0, burst=10, clock=fake.clock)
    bucket.throttled()
    assert bucket.rate == 25.0
    rates = []
    for _ in range(2000):
        bucket.answered(0.02)
        rates.append(bucket.rate)
    assert rates == sorted(rates)  # only up
    assert bucket.rate == 50.0
    # Additive: the first 25 quick answers (one second at 25/s) add about RATE_INCREASE writes/s.
    assert 25.0 + 1.5 < rates[24] < 25.0 + 2.5
