"""The shell's fault handling, without a cluster: throttled writes, waking after an outage, history
that is partial or slow, Lease conflicts, failpoints. The same faults on a real API server are in
tests/integration/test_faults.py."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import aiohttp
import kopf
import pytest
from headroom.core.history import HistoryResult, PeakQuery
from headroom.shell import failpoints
from headroom.shell.apiclient import ApiClient, ApiException
from headroom.shell.handlers import JitteredBackoffs, _unchanged
from headroom.shell.history.cache import HistoryCache
from headroom.shell.kube import (
    KubeWriter,
    is_retryable,
    is_unreachable,
    retry_after,
)
from headroom.shell.leader import LeaderElector
from headroom.shell.metrics import Metrics
from headroom.shell.reconcile import Reconciler
from headroom.shell.store import Store


def api_error(status: int, retry: str | None = None) -> ApiException:
    return ApiException(status, "test", headers={"Retry-After": retry} if retry else {})


def unconnected() -> ApiClient:
    """A client that is never asked anything: nothing listens on port 1."""
    return ApiClient(lambda: kopf.ConnectionInfo(server="https://127.0.0.1:1"))


# ------------------------------------------------------------------------------------- kube_io


def test_unreachable_is_a_failure_to_reach_not_a_refusal() -> None:
    refused = aiohttp.ClientConnectorError(SimpleNamespace(ssl=None, host="h", port=1), ConnectionRefusedError())  # type: ignore[arg-type]
    assert is_unreachable(refused) and is_retryable(refused)
    assert is_unreachable(aiohttp.ServerDisconnectedError()) and is_retryable(aiohttp.ServerDisconnectedError())
    assert is_unreachable(aiohttp.ServerTimeoutError("timed out")) and is_unreachable(TimeoutError())
    assert is_unreachable(ConnectionResetError()) and is_unreachable(api_error(503))
    assert not is_unreachable(api_error(429)) and is_retryable(api_error(429))
    assert not is_unreachable(api_error(409)) and not is_unreachable(api_error(422))


def test_retry_after_is_read_bounded_and_defaults_to_a_second() -> None:
    assert retry_after(api_error(429, "3")) == 3
    assert retry_after(api_error(429)) == 1
    assert retry_after(api_error(429, "soon")) == 1
    assert retry_after(api_error(429, "86400")) == 60


def _writer(monkeypatch: pytest.MonkeyPatch) -> tuple[KubeWriter, list[float]]:
    writer = KubeWriter(unconnected(), qps=1000, burst=1000)
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("headroom.shell.kube.asyncio.sleep", no_sleep)
    return writer, slept


def test_a_throttled_write_is_retried_after_retry_after_plus_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    writer, slept = _writer(monkeypatch)
    answers: list[Any] = [api_error(429, "2"), api_error(429, "2"), None]

    async def call() -> None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer

    asyncio.run(writer._call("patch", call))
    assert answers == []
    retries = [s for s in slept if s >= 1]  # the rest are the rate limiter's own sub-second waits
    assert len(retries) == 2 and all(s >= 2 for s in retries)
    assert writer.limiter.rate < 1000  # and the pushback slowed every later write down
    assert writer.writes.counts["patch"] == 3


def test_a_refused_write_is_not_retried_here(monkeypatch: pytest.MonkeyPatch) -> None:
    writer, slept = _writer(monkeypatch)

    async def call() -> None:
        raise api_error(422)

    with pytest.raises(ApiException):
        asyncio.run(writer._call("patch", call))
    assert slept == []


def test_a_write_that_stays_throttled_fails_the_reconcile_in_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    writer, slept = _writer(monkeypatch)

    async def call() -> None:
        raise api_error(429)

    with pytest.raises(ApiException):
        asyncio.run(writer._call("patch", call))
    assert len([s for s in slept if s >= 1]) == 5


# ------------------------------------------------------------------------------------- runtime


def test_kopf_backoffs_are_jittered_capped_and_iterable_again() -> None:
    backoffs = JitteredBackoffs()
    first, second = list(backoffs), list(backoffs)
    assert len(first) == len(second) == 12
    assert first != second  # jittered
    assert all(0 < d <= 10 for d in first)
    assert first[0] <= 0.5


def test_an_object_seen_again_at_the_same_version_is_unchanged() -> None:
    body = {"metadata": {"resourceVersion": "7"}}
    assert _unchanged({"metadata": {"resourceVersion": "7"}}, body)
    assert not _unchanged({"metadata": {"resourceVersion": "6"}}, body)
    assert not _unchanged(None, body)
    assert not _unchanged({"metadata": {}}, {"metadata": {}})


# ------------------------------------------------------------------------------------- history


class Source:
    name = "fake"

    def __init__(self) -> None:
        self.answers: list[HistoryResult] = []
        self.delay = 0.0
        self.calls = 0

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


LOOKBACK = timedelta(days=30)


def test_a_partial_answer_keeps_the_last_good_peaks_and_reports_an_error() -> None:
    source = Source()
    good = HistoryResult(peaks={("a", "pods"): Decimal(5), ("b", "pods"): Decimal(3)}, queries=1)
    partial = HistoryResult(peaks={("a", "pods"): Decimal(1)}, partial=True, queries=1)
    source.answers = [good, partial]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0)

    async def run() -> tuple[HistoryResult, HistoryResult]:
        first = await cache.get({"a", "b"}, {"pods"}, LOOKBACK)
        await cache.refresh_all({LOOKBACK: {("a", "pods"), ("b", "pods")}})
        return first, cache._answer({("a", "pods"), ("b", "pods")}, LOOKBACK)

    first, after = asyncio.run(run())
    assert first.error is None and first.peaks[("b", "pods")] == 3
    assert after.peaks == good.peaks  # nothing forgotten, nothing replaced by the partial answer
    assert after.error is not None and "partial" in after.error


def test_daily_peaks_are_cached_like_peaks_and_a_failed_answer_never_shrinks_them() -> None:
    source = Source()
    days = {date(2026, 3, 8): Decimal(4), date(2026, 3, 9): Decimal(5)}
    good = HistoryResult(
        peaks={("a", "pods"): Decimal(5)},
        daily={("a", "pods"): days},
        day_offsets={"a": timedelta(hours=3)},
        queries=1,
    )
    failures = [
        HistoryResult(error="connection refused", queries=1),
        HistoryResult(peaks={("a", "pods"): Decimal(1)}, daily={("a", "pods"): {}}, partial=True, queries=1),
    ]
    source.answers = [good, *failures]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0)

    async def run() -> list[HistoryResult]:
        seen = [await cache.get({"a"}, {"pods"}, LOOKBACK)]
        for _ in failures:
            await cache.refresh_all({LOOKBACK: {("a", "pods")}})
            seen.append(cache._answer({("a", "pods")}, LOOKBACK))
        return seen

    for result in asyncio.run(run()):
        assert result.daily == {("a", "pods"): days}
        assert result.day_offsets == {"a": timedelta(hours=3)}


def test_a_slow_source_does_not_hold_up_a_reconcile_that_has_answers() -> None:
    source = Source()
    source.answers = [HistoryResult(peaks={("a", "pods"): Decimal(5)}, queries=1)]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0, stale_wait=0.05)
    refreshed: list[str] = []

    async def run() -> tuple[HistoryResult, float]:
        await cache.get({"a"}, {"pods"}, LOOKBACK)  # the first answer: waited for
        source.delay = 0.5
        source.answers = [HistoryResult(error="timed out", queries=1)]
        started = time.monotonic()
        stale = await cache.get({"a"}, {"pods"}, LOOKBACK, on_refresh=lambda: refreshed.append("again"))
        waited = time.monotonic() - started
        await asyncio.sleep(0.7)
        return stale, waited

    stale, waited = asyncio.run(run())
    assert waited < 0.4
    assert stale.peaks == {("a", "pods"): Decimal(5)} and stale.error is None
    assert refreshed == ["again"]  # the refresh had news (an error): reconcile again


def test_without_any_answer_the_first_reconcile_waits_for_history() -> None:
    source = Source()
    source.delay = 0.2
    source.answers = [HistoryResult(peaks={("a", "pods"): Decimal(5)}, queries=1)]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0, stale_wait=0.01)
    result = asyncio.run(cache.get({"a"}, {"pods"}, LOOKBACK))
    assert result.peaks == {("a", "pods"): Decimal(5)}


def test_a_namespace_wanted_while_a_batch_is_being_fetched_gets_its_own_answer() -> None:
    # Projects keep arriving while the first batch is fetched (1000 at once after a restart): the
    # late ones must get their peaks from a next batch, not the first batch's answer without them.
    class Echo:
        name = "echo"

        def __init__(self) -> None:
            self.queries: list[frozenset[str]] = []

        async def peaks(self, query: PeakQuery) -> HistoryResult:
            self.queries.append(query.namespaces)
            await asyncio.sleep(0.2)
            return HistoryResult(
                peaks={(ns, r): Decimal(7) for ns in query.namespaces for r in query.resources}, queries=1
            )

    source = Echo()
    cache = HistoryCache(source, max_age=timedelta(minutes=5), metrics=Metrics(), batch_window=0.05)

    async def run() -> tuple[HistoryResult, HistoryResult]:
        first = asyncio.ensure_future(cache.get({"a"}, {"pods"}, LOOKBACK))
        await asyncio.sleep(0.1)  # the first batch is being fetched now
        late = await cache.get({"b"}, {"pods"}, LOOKBACK)
        return await first, late

    first, late = asyncio.run(run())
    assert first.peaks == {("a", "pods"): Decimal(7)}
    assert late.peaks == {("b", "pods"): Decimal(7)} and late.error is None
    assert source.queries == [frozenset({"a"}), frozenset({"b"})]


def test_a_refresh_that_completes_an_open_batch_early_does_not_stall_a_waiter() -> None:
    # A derivation cycle's refresh completes the event of a batch still in its window; a namespace
    # asked for during that refresh must get a batch of its own, not spin on the completed event
    # (which froze the whole operator: Prometheus back up, quota never governed).
    class Slow:
        name = "slow"

        async def peaks(self, query: PeakQuery) -> HistoryResult:
            await asyncio.sleep(0.2)
            return HistoryResult(
                peaks={(ns, r): Decimal(3) for ns in query.namespaces for r in query.resources}, queries=1
            )

    cache = HistoryCache(Slow(), max_age=timedelta(minutes=5), metrics=Metrics(), batch_window=1.0)
    outcome: list[HistoryResult] = []

    async def run() -> None:
        first = asyncio.ensure_future(cache.get({"x"}, {"pods"}, LOOKBACK))  # opens a batch (1 s window)
        await asyncio.sleep(0)
        refresh = asyncio.ensure_future(cache.refresh_all({LOOKBACK: {("y", "pods")}}))
        await asyncio.sleep(0.1)
        outcome.append(await cache.get({"r"}, {"pods"}, LOOKBACK))
        await asyncio.gather(first, refresh)

    # A spinning loop cannot be timed out from inside it: run it in a thread and give up on it.
    worker = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the history cache spun on a completed event"
    assert outcome[0].peaks == {("r", "pods"): Decimal(3)}


def test_a_failing_source_answers_the_waiters_with_its_error() -> None:
    source = Source()
    source.answers = [HistoryResult(error="connection refused", queries=1)]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0)
    result = asyncio.run(asyncio.wait_for(cache.get({"a"}, {"pods"}, LOOKBACK), 5))
    assert result.peaks == {} and result.error == "connection refused"
    assert source.calls == 1


# ------------------------------------------------------------------------------------- reconciler


def _reconciler() -> Reconciler:
    writer = KubeWriter(unconnected())
    cache = HistoryCache(Source(), max_age=timedelta(minutes=5), metrics=Metrics())
    from headroom.core.planning import Settings

    return Reconciler(store=Store(), writer=writer, history=cache, settings=Settings(), metrics=Metrics())


def test_a_retry_after_an_unreachable_api_server_wakes_when_it_answers_again() -> None:
    reconciler = _reconciler()

    async def run() -> float:
        started = time.monotonic()
        backoff = asyncio.create_task(reconciler._backoff("p", 30.0, ConnectionRefusedError()))
        await asyncio.sleep(0.05)
        reconciler.api_reachable()
        await backoff
        return time.monotonic() - started

    assert asyncio.run(run()) < 2.0


def test_a_refusal_waits_out_its_backoff() -> None:
    reconciler = _reconciler()

    async def run() -> bool:
        backoff = asyncio.create_task(reconciler._backoff("p", 0.5, api_error(429)))
        await asyncio.sleep(0.05)
        reconciler.api_reachable()
        await asyncio.sleep(0.1)
        return backoff.done()

    assert asyncio.run(run()) is False


# ------------------------------------------------------------------------------------- leader


class Coordination:
    """A Lease API that answers like the API server, optimistic concurrency included."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.conflict_next = False
        self.timeouts: list[Any] = []

    def _copy(self) -> dict[str, Any]:
        assert self.lease is not None
        return copy.deepcopy(self.lease)

    async def request(self, method: str, path: str, *, body: Any = None, **kwargs: Any) -> Any:
        assert path.startswith("/apis/coordination.k8s.io/v1/namespaces/ns/leases")
        if method == "GET":
            if self.lease is None:
                raise ApiException(404, "Not Found")
            return self._copy()
        body = copy.deepcopy(body)
        if method == "POST":
            if self.lease is not None:
                raise ApiException(409, "AlreadyExists")
        elif self.conflict_next or body["metadata"].get("resourceVersion") != str(self.version):
            self.conflict_next = False
            raise ApiException(409, "Conflict")
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        return self._copy()


def test_a_conflict_while_renewing_is_not_a_lost_lease() -> None:
    api = Coordination()
    elector = LeaderElector(api, "ns", "headroom", "me")  # type: ignore[arg-type]
    assert asyncio.run(elector.try_acquire_or_renew())
    api.conflict_next = True
    with pytest.raises(ApiException) as raised:
        asyncio.run(elector.try_acquire_or_renew())  # the holder reads again and retries, it does not step down
    assert raised.value.status == 409
    assert asyncio.run(elector.try_acquire_or_renew())


def test_a_conflict_while_acquiring_means_another_candidate_won() -> None:
    api = Coordination()
    holder = LeaderElector(api, "ns", "headroom", "first")  # type: ignore[arg-type]
    assert asyncio.run(holder.try_acquire_or_renew())
    clock = [0.0]
    other = LeaderElector(api, "ns", "headroom", "second", clock=lambda: clock[0])  # type: ignore[arg-type]
    assert not asyncio.run(other.try_acquire_or_renew())  # held, not expired
    clock[0] = 31.0
    api.conflict_next = True
    assert not asyncio.run(other.try_acquire_or_renew())  # expired, but the race is lost: no exception


def test_a_lease_is_released_on_shutdown_and_taken_over_at_once() -> None:
    api = Coordination()
    holder = LeaderElector(api, "ns", "headroom", "first")  # type: ignore[arg-type]
    assert asyncio.run(holder.try_acquire_or_renew())
    asyncio.run(holder.release())
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] is None
    other = LeaderElector(api, "ns", "headroom", "second")  # type: ignore[arg-type]
    assert asyncio.run(other.try_acquire_or_renew())
    assert api.lease["spec"]["holderIdentity"] == "second" and api.lease["spec"]["leaseTransitions"] == 1


def test_hold_retries_a_conflict_and_keeps_the_lease() -> None:
    api = Coordination()
    elector = LeaderElector(
        api,  # type: ignore[arg-type]
        "ns",
        "headroom",
        "me",
        renew_seconds=0.05,
        retry_seconds=0.05,
        lease_seconds=2,
    )
    assert asyncio.run(elector.try_acquire_or_renew())
    api.conflict_next = True

    async def run() -> bool:
        holding = asyncio.create_task(elector.hold())
        await asyncio.sleep(0.5)
        lost = holding.done()
        holding.cancel()
        return lost

    assert asyncio.run(run()) is False
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "me"


# ------------------------------------------------------------------------------------- failpoints


def test_failpoint_actions_are_parsed() -> None:
    assert failpoints._parse("a, b=pause:2.5 ,c=kill,") == {"a": "kill", "b": "pause:2.5", "c": "kill"}
    assert failpoints._parse("") == {}


def test_a_pause_point_pauses_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failpoints, "_ARMED", {"here": "pause:0.2"})
    monkeypatch.setattr(failpoints, "_FIRED", set())

    async def run() -> tuple[float, float]:
        started = time.monotonic()
        await failpoints.async_failpoint("here")
        first = time.monotonic() - started
        started = time.monotonic()
        await failpoints.async_failpoint("here")
        await failpoints.async_failpoint("elsewhere")
        return first, time.monotonic() - started

    first, second = asyncio.run(run())
    assert first >= 0.2 and second < 0.1


def test_a_burst_of_new_projects_costs_one_question_and_each_gets_its_own_answer() -> None:
    class Counting:
        name, remote = "counting", True

        def __init__(self) -> None:
            self.queries: list[frozenset[str]] = []

        async def peaks(self, query: PeakQuery) -> HistoryResult:
            self.queries.append(query.namespaces)
            await asyncio.sleep(0.01)
            return HistoryResult(peaks={(ns, "pods"): Decimal(len(ns)) for ns in query.namespaces}, queries=1)

    source = Counting()
    cache = HistoryCache(source, max_age=timedelta(minutes=5), metrics=Metrics(), batch_window=0.05)

    async def run() -> list[HistoryResult]:
        return list(await asyncio.gather(*(cache.get({f"ns-{'x' * i}"}, {"pods"}, LOOKBACK) for i in range(50))))

    answers = asyncio.run(run())
    assert len(source.queries) == 1 and len(source.queries[0]) == 50  # single flight
    assert all(a.peaks == {(f"ns-{'x' * i}", "pods"): Decimal(3 + i)} for i, a in enumerate(answers))


def test_a_derivation_cycle_says_which_namespaces_got_a_different_answer() -> None:
    source = Source()
    keys = {("a", "pods"), ("b", "pods")}
    first = HistoryResult(peaks={("a", "pods"): Decimal(5), ("b", "pods"): Decimal(3)}, queries=1)
    b_grew = HistoryResult(peaks={("a", "pods"): Decimal(5), ("b", "pods"): Decimal(4)}, queries=1)
    a_new_day = HistoryResult(
        peaks={("a", "pods"): Decimal(5), ("b", "pods"): Decimal(4)},
        daily={("a", "pods"): {date(2026, 3, 9): Decimal(5)}},
        queries=1,
    )
    down = HistoryResult(error="connection refused", queries=1)
    source.answers = [first, first, b_grew, a_new_day, down, down, a_new_day]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0)

    async def run() -> list[set[str]]:
        return [await cache.refresh_all({LOOKBACK: keys}) for _ in range(7)]

    assert asyncio.run(run()) == [
        {"a", "b"},  # nothing known before
        set(),  # the same answer: no Project needs re-planning for it
        {"b"},
        {"a"},
        {"a", "b"},  # the source fails: every status says so
        set(),
        {"a", "b"},  # and recovers
    ]


def test_the_end_of_a_day_with_a_peak_replans_its_namespace_though_the_answer_is_the_same() -> None:
    # A forecast counts ended days only: when the day in progress ends, the trend gains a day with no
    # new answer from the source (the file source's days never change). The cycle after the day's
    # end names the namespace, once; a namespace without a peak that day, or an offset day not yet
    # over, is not named.
    source = Source()
    keys = {("utc", "pods"), ("late", "pods"), ("quiet", "pods")}
    today = date(2026, 3, 10)
    days = {date(2026, 3, 9): Decimal(4), today: Decimal(5)}
    source.answers = [
        HistoryResult(
            peaks={key: Decimal(5) for key in keys},
            daily={("utc", "pods"): days, ("late", "pods"): days, ("quiet", "pods"): {date(2026, 3, 9): Decimal(4)}},
            day_offsets={"late": timedelta(hours=6)},
            queries=1,
        )
    ]
    clock = [datetime(2026, 3, 10, 23, 50, tzinfo=UTC)]
    cache = HistoryCache(source, max_age=timedelta(0), metrics=Metrics(), batch_window=0, clock=lambda: clock[0])

    async def run() -> list[set[str]]:
        changed = [await cache.refresh_all({LOOKBACK: keys})]
        for minutes in (5, 10, 5, 6 * 60):  # 23:55, 00:05 (UTC day over), 00:10, 06:10 (late's day over)
            clock[0] += timedelta(minutes=minutes)
            changed.append(await cache.refresh_all({LOOKBACK: keys}))
        return changed

    assert asyncio.run(run()) == [{"utc", "late", "quiet"}, set(), {"utc"}, set(), {"late"}]


def test_a_cycle_whose_answer_did_not_change_keeps_the_answers_it_had_and_stays_fresh() -> None:
    # New copies of thousands of equal answers every cycle, made among the source's parsing
    # garbage, fragment the heap; the cache keeps the ones it has, and only their time moves on.
    source = Source()
    keys = {("a", "pods")}
    days = {date(2026, 3, 9): Decimal(5)}
    source.answers = [
        HistoryResult(peaks={("a", "pods"): Decimal("5.0")}, daily={("a", "pods"): dict(days)}, queries=1),
        HistoryResult(peaks={("a", "pods"): Decimal("5.00")}, daily={("a", "pods"): dict(days)}, queries=1),
    ]
    clock = [datetime(2026, 3, 10, tzinfo=UTC)]
    cache = HistoryCache(
        source, max_age=timedelta(minutes=5), metrics=Metrics(), batch_window=0, clock=lambda: clock[0]
    )

    async def run() -> tuple[HistoryResult, set[str], HistoryResult]:
        await cache.refresh_all({LOOKBACK: keys})
        first = await cache.get({"a"}, {"pods"}, LOOKBACK)
        clock[0] += timedelta(minutes=4)
        changed = await cache.refresh_all({LOOKBACK: keys})
        clock[0] += timedelta(minutes=4)  # 8 minutes after the first answer, 4 after the second
        return first, changed, await cache.get({"a"}, {"pods"}, LOOKBACK)

    first, changed, second = asyncio.run(run())
    assert changed == set()
    assert source.calls == 2  # the second answer counts as fresh: no third question
    assert second.peaks[("a", "pods")] is first.peaks[("a", "pods")]
    assert second.daily[("a", "pods")] is first.daily[("a", "pods")]


def test_headroom_registers_event_handlers_only_so_kopf_needs_no_diff_base() -> None:
    import kopf
    from headroom.shell.handlers import NoDiffBase, register

    registry = kopf.OperatorRegistry()
    register(registry, SimpleNamespace(store=None))  # type: ignore[arg-type]  # read only when handling
    assert len(registry._watching.get_all_handlers()) == 4  # Projects, quotas, LimitRanges, namespaces
    # No change handler (and no daemon, timer or index): nothing would ever read a diff base.
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert not registry._indexing.get_all_handlers()
    assert NoDiffBase().build(body=kopf.Body({"spec": {"a": 1}, "status": {"b": 2}})) == {}


def test_kopf_keeps_nothing_per_watched_object_between_events() -> None:
    import tracemalloc

    from headroom.shell.handlers import NoMemories
    from kopf._core.reactor.inventory import ResourceMemories

    bodies = [
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"namespace": f"team-{i:04d}", "uid": f"u-{i}"}}
        for i in range(500)
    ]

    def kept_per_object(memories: ResourceMemories) -> float:
        async def see_all() -> None:
            for body in bodies:
                memory = await memories.recall(body, noticed_by_listing=True)  # type: ignore[arg-type]
                assert memory.noticed_by_listing  # what this event's handling reads is there

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(see_all())
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return kept / len(bodies)

    assert kept_per_object(ResourceMemories()) > 500  # Kopf's default: a memory per object, for good
    assert kept_per_object(NoMemories()) < 50


def test_a_lone_question_is_sent_at_once_and_a_burst_waits_for_the_window() -> None:
    class Timed:
        name = "timed"

        def __init__(self) -> None:
            self.sent: list[tuple[float, frozenset[str]]] = []

        async def peaks(self, query: PeakQuery) -> HistoryResult:
            self.sent.append((asyncio.get_running_loop().time(), query.namespaces))
            return HistoryResult(peaks={(ns, "pods"): Decimal(1) for ns in query.namespaces}, queries=1)

    source = Timed()
    cache = HistoryCache(source, max_age=timedelta(minutes=5), metrics=Metrics(), batch_window=0.5)

    async def run() -> float:
        start = asyncio.get_running_loop().time()
        await cache.get({"lone"}, {"pods"}, LOOKBACK)  # one new Project after a quiet spell
        await asyncio.gather(*(cache.get({f"burst-{i}"}, {"pods"}, LOOKBACK) for i in range(5)))
        return start

    start = asyncio.run(run())
    (first_at, first), (second_at, second) = source.sent
    assert first == {"lone"} and first_at - start < 0.2
    assert second == {f"burst-{i}" for i in range(5)} and second_at - first_at >= 0.45  # coalesced


def test_a_new_projects_question_during_a_cycle_is_not_held_until_every_namespace_is_answered() -> None:
    # The cycle's refresh asks about every namespace of the cluster and takes its time; a Project
    # created meanwhile asks about its own namespace, and gets its answer without waiting for it.
    class Source:
        name = "slow for many"

        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.asked: list[frozenset[str]] = []

        async def peaks(self, query: PeakQuery) -> HistoryResult:
            self.asked.append(query.namespaces)
            if len(query.namespaces) > 1:
                await self.release.wait()  # the cycle's answer comes only once the new one is in
            return HistoryResult(
                peaks={(ns, r): Decimal(3) for ns in query.namespaces for r in query.resources}, queries=1
            )

    source = Source()
    cache = HistoryCache(source, max_age=timedelta(minutes=5), metrics=Metrics(), batch_window=0.05)

    async def run() -> HistoryResult:
        single = asyncio.ensure_future(cache.get({"new"}, {"pods"}, LOOKBACK))  # opens a batch
        await asyncio.sleep(0)
        cycle = asyncio.ensure_future(cache.refresh_all({LOOKBACK: {(f"ns{i}", "pods") for i in range(50)}}))
        answer = await asyncio.wait_for(single, 5)
        source.release.set()
        await cycle
        return answer

    answer = asyncio.run(run())
    assert answer.peaks == {("new", "pods"): Decimal(3)}
    assert frozenset({"new"}) in source.asked  # asked on its own, not folded into the cycle's question
