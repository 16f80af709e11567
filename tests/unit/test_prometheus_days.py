"""The Prometheus source's daily peaks: what is asked when, how answers merge, what a restart keeps."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
from headroom.core import prometheus_days as days
from headroom.core.history import DaySeries
from headroom.core.prometheus_days import Ask, KeyDays, Window
from headroom.shell.history.prometheus import (
    DEFAULT_QUERIES,
    _too_big,
    daily_query,
    evaluation_timeout,
    rule_template,
)

NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
MONTH = timedelta(days=30)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def whole(day: date) -> Window:
    return Window(days.midnight(day), days.midnight(day) + days.DAY)


def answered(windows: list[Window], values: dict[date, D | None], end: datetime) -> KeyDays:
    """A key after every window was answered, each with its day's value."""
    state: KeyDays | None = None
    for window in windows:
        state = days.merge(state, window, values.get(window.day))
    assert state is not None
    return days.advance(state, end)


# --------------------------------------------------------------------------------------------- what is asked


def test_start_up_asks_every_day_of_the_lookback_whole_and_today_since_midnight() -> None:
    windows = days.windows_wanted(None, NOON, timedelta(days=3))
    assert windows == [
        whole(date(2026, 12, 1)),
        whole(date(2026, 12, 2)),
        whole(date(2026, 12, 3)),
        Window(at(4), NOON),
    ]


def test_steady_state_asks_only_the_window_since_the_last_answer() -> None:
    state = answered(days.windows_wanted(None, NOON, MONTH), {}, NOON)
    assert days.windows_wanted(state, NOON + timedelta(minutes=5), MONTH) == [Window(NOON, NOON + timedelta(minutes=5))]
    # Nothing new since the last answer: nothing asked.
    assert days.windows_wanted(state, NOON, MONTH) == []


def test_a_window_across_midnight_is_cut_so_that_each_answer_belongs_to_one_day() -> None:
    state = KeyDays({date(2026, 12, 3): D(1)}, at(3, 23, 55))
    windows = days.windows_wanted(state, at(4, 0, 5), timedelta(hours=1))
    assert windows == [Window(at(3, 23, 55), at(4)), Window(at(4), at(4, 0, 5))]
    assert [w.day for w in windows] == [date(2026, 12, 3), date(2026, 12, 4)]


def test_a_longer_lookback_asks_only_the_days_it_adds() -> None:
    state = answered(days.windows_wanted(None, NOON, timedelta(days=2)), {}, NOON)
    assert days.windows_wanted(state, NOON, timedelta(days=4)) == [whole(date(2026, 11, 30)), whole(date(2026, 12, 1))]


def test_answers_older_than_the_lookback_start_over() -> None:
    stale = KeyDays({date(2026, 10, 1): D(5)}, at(1))
    assert days.windows_wanted(stale, NOON, timedelta(days=2))[0] == whole(date(2026, 12, 2))


# --------------------------------------------------------------------------------------------- the peak


def test_lookback_peak_is_the_max_of_kept_days_and_the_newest_window() -> None:
    values = {date(2026, 12, 1): D(3), date(2026, 12, 2): D(7), date(2026, 12, 4): D(2)}
    state = answered(days.windows_wanted(None, NOON, timedelta(days=3)), values, NOON)
    assert days.peak(state, NOON, timedelta(days=3)) == (True, D(7))
    later = NOON + timedelta(minutes=5)
    state = days.advance(days.merge(state, Window(NOON, later), D(9)), later)
    assert days.peak(state, later, timedelta(days=3)) == (True, D(9))
    # A lower window never lowers its day.
    state = days.merge(state, Window(later, later + timedelta(minutes=5)), D(1))
    assert state.days[date(2026, 12, 4)] == D(9)


def test_a_day_leaves_the_lookback_without_a_query() -> None:
    lookback = timedelta(days=2)
    values = {date(2026, 12, 2): D(50), date(2026, 12, 3): D(4), date(2026, 12, 4): D(3)}
    state = answered(days.windows_wanted(None, NOON, lookback), values, NOON)
    assert days.peak(state, NOON, lookback) == (True, D(50))
    # A day later the 2nd is out: only the window since noon yesterday is asked.
    tomorrow = NOON + days.DAY
    windows = days.windows_wanted(state, tomorrow, lookback)
    assert windows == [Window(NOON, at(5)), Window(at(5), tomorrow)]
    for window in windows:
        state = days.merge(state, window, D(6) if window.day == date(2026, 12, 5) else None)
    state = days.advance(days.prune(state, tomorrow, lookback), tomorrow)
    assert days.peak(state, tomorrow, lookback) == (True, D(6))
    assert date(2026, 12, 2) not in state.days


def test_no_series_is_unknown_never_zero() -> None:
    state = answered(days.windows_wanted(None, NOON, timedelta(days=2)), {}, NOON)
    assert days.peak(state, NOON, timedelta(days=2)) == (True, None)


def test_a_day_never_answered_makes_the_peak_unknown() -> None:
    state = KeyDays({date(2026, 12, 2): D(1), date(2026, 12, 4): D(1)}, NOON)  # the 3rd is missing
    assert days.peak(state, NOON, timedelta(days=2)) == (False, None)
    # Answers that do not reach now are not an answer either (Prometheus failed this cycle).
    full = KeyDays({date(2026, 12, d): D(1) for d in (2, 3, 4)}, NOON)
    assert days.peak(full, NOON + timedelta(minutes=5), timedelta(days=2)) == (False, None)


def test_align_to_the_subquery_step() -> None:
    assert days.align(at(4, 12, 7), timedelta(minutes=5)) == at(4, 12, 5)


# --------------------------------------------------------------------------------------------- batching


def test_steady_state_is_one_question_per_resource_for_every_namespace() -> None:
    window = Window(NOON, NOON + timedelta(minutes=5))
    wanted = {(f"ns-{i}", r): [window] for i in range(100) for r in ("pods", "requests.cpu")}
    asks = days.plan_asks(wanted, max_days=7, max_namespaces=500, max_pattern=16_000)
    assert [(a.resource, len(a.namespaces), a.window) for a in asks] == [
        ("pods", 100, window),
        ("requests.cpu", 100, window),
    ]


def test_start_up_days_are_range_questions_cut_by_days_and_by_namespaces() -> None:
    windows = days.windows_wanted(None, NOON, timedelta(days=20))
    wanted = {(f"ns-{i:04d}", "pods"): windows for i in range(1200)}
    asks = days.plan_asks(wanted, max_days=7, max_namespaces=500, max_pattern=16_000)
    ranges = sorted({(a.first, a.last) for a in asks if a.window is None})
    assert ranges == [
        (date(2026, 11, 14), date(2026, 11, 20)),
        (date(2026, 11, 21), date(2026, 11, 27)),
        (date(2026, 11, 28), date(2026, 12, 3)),
    ]
    # 1 200 namespaces in chunks of at most 500: three questions per range, and the partial day.
    assert len(asks) == 3 * 3 + 3
    assert max(len(a.namespaces) for a in asks) == 500
    covered = {ns for a in asks if a.first == date(2026, 11, 14) for ns in a.namespaces}
    assert len(covered) == 1200


def test_namespace_chunks_keep_the_regex_short() -> None:
    names = [f"{'n' * 60}-{i:02d}" for i in range(40)]  # 63 characters each
    chunks = days.chunks(names, max_namespaces=1000, max_pattern=1000)
    assert all(len("|".join(sorted(c))) <= 1000 for c in chunks)
    assert sorted(ns for c in chunks for ns in c) == sorted(names)
    assert len(chunks) == 3


def test_a_refused_question_is_cut_in_halves_by_days_then_by_namespaces() -> None:
    ask = Ask("pods", frozenset({"a", "b", "c"}), first=date(2026, 12, 1), last=date(2026, 12, 4))
    first, second = days.halves(ask)
    assert (first.first, first.last, second.first, second.last) == (
        date(2026, 12, 1),
        date(2026, 12, 2),
        date(2026, 12, 3),
        date(2026, 12, 4),
    )
    one_day = Ask("pods", frozenset({"a", "b", "c"}), first=date(2026, 12, 1), last=date(2026, 12, 1))
    assert sorted(sorted(h.namespaces) for h in days.halves(one_day)) == [["a"], ["b", "c"]]
    assert days.halves(Ask("pods", frozenset({"a"}), window=Window(NOON, NOON + timedelta(minutes=5)))) == []


# --------------------------------------------------------------------------------------------- persistence


def test_closed_days_survive_a_restart_and_only_the_days_since_are_asked() -> None:
    values = {date(2026, 12, 1): D("2.5"), date(2026, 12, 2): None, date(2026, 12, 3): D(4), date(2026, 12, 4): D(9)}
    windows = days.windows_wanted(None, NOON, timedelta(days=3))
    cpu = answered(windows, values, NOON)
    pods = answered(windows, {d: D(3) for d in values}, NOON)
    text = days.encode_days({"requests.cpu": cpu, "pods": pods})
    assert text is not None
    restored = days.decode_days(text)
    # Today is open: it is not kept, and is asked again from midnight after the restart.
    assert restored["requests.cpu"].days == {d: v for d, v in values.items() if d < date(2026, 12, 4)}
    assert restored["pods"].through == at(4)
    assert days.windows_wanted(restored["requests.cpu"], NOON, timedelta(days=3)) == [Window(at(4), NOON)]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        '{"from":"2026-12-01","to":"2026-12-02","resources":["pods"],"peaks":{"2026-12-01":{"pods":"NaN"}}}',
        '{"from":"2026-12-01","to":"2026-12-02","resources":["pods"],"peaks":{"2026-12-01":{"pods":"-1"}}}',
        '{"from":"yesterday","to":"2026-12-02","resources":["pods"],"peaks":{}}',
    ],
)
def test_a_damaged_annotation_is_worth_nothing(text: str) -> None:
    assert days.decode_days(text) == {}


def test_the_annotation_is_rewritten_once_a_day_in_the_hour_after_the_namespaces_own_moment() -> None:
    offset = timedelta(hours=7)
    kept = '{"from":"2026-12-01","to":"2026-12-03","resources":["pods"],"peaks":{}}'
    # Holds the 3rd: not due on the 4th (it holds the day before), nor on the 5th before 07:00.
    assert not days.write_due(kept, at(4, 7, 30), offset)
    assert not days.write_due(kept, at(5, 6, 59), offset)
    assert days.write_due(kept, at(5, 7), offset)
    assert days.write_due(kept, at(5, 7, 59), offset)
    # Past the hour it waits for the next day's moment: writes never pile up in a burst.
    assert not days.write_due(kept, at(5, 8), offset)
    assert not days.write_due(None, at(4, 12), offset)
    assert days.write_due(None, at(4, 7, 10), offset)


# --------------------------------------------------------------------------------------------- PromQL


def test_daily_query_is_a_one_day_subquery_for_a_range_query_stepped_by_days() -> None:
    promql = daily_query(DEFAULT_QUERIES["pods"], frozenset({"b", "a"}), "5m")
    assert promql.startswith("max_over_time((count by (namespace) (")
    assert 'namespace=~"a|b"' in promql
    assert promql.endswith("[86400s:5m])")


def test_recording_rule_template_reads_one_series_per_namespace() -> None:
    template = rule_template("namespace_cpu:kube_pod_container_resource_requests:sum")
    assert template.format(namespaces="a|b") == (
        'sum by (namespace) (namespace_cpu:kube_pod_container_resource_requests:sum{namespace=~"a|b"})'
    )


def test_daily_peaks_for_forecasts_are_the_days_the_peak_is_made_of() -> None:
    lookback = timedelta(days=2)
    values = {date(2026, 12, 1): D(99), date(2026, 12, 2): D(4), date(2026, 12, 3): None, date(2026, 12, 4): D(3)}
    state = KeyDays(values, NOON)
    daily = days.lookback_days(state, NOON, lookback)
    assert daily == {date(2026, 12, 2): D(4), date(2026, 12, 4): D(3)}
    assert days.peak(state, NOON, lookback) == (True, max(daily.values()))


def test_kept_peaks_are_exact_to_a_thousandth_and_never_rounded_down() -> None:
    kept = days.DayPeaks({date(2026, 12, 1): D("3.3"), date(2026, 12, 3): D("1073741824"), date(2026, 12, 4): None})
    assert kept[date(2026, 12, 1)] == D("3.3")
    assert kept[date(2026, 12, 3)] == D(1073741824)
    assert kept[date(2026, 12, 4)] is None
    assert date(2026, 12, 2) not in kept and len(kept) == 3
    # Below a millicore: up to the next thousandth, never down to a lower peak.
    assert days.DayPeaks({date(2026, 12, 1): D("0.1234561")})[date(2026, 12, 1)] == D("0.124")
    # A day before the first one, and pruning, keep the others as they were.
    earlier = kept.replaced(date(2026, 11, 29), D(7))
    assert list(earlier) == [date(2026, 11, 29), date(2026, 12, 1), date(2026, 12, 3), date(2026, 12, 4)]
    assert dict(earlier.since(date(2026, 12, 2))) == {date(2026, 12, 3): D(1073741824), date(2026, 12, 4): None}
    assert list(kept) == [date(2026, 12, 1), date(2026, 12, 3), date(2026, 12, 4)]  # unchanged


def test_peak_days_and_gaps_agree_with_their_definition_on_the_days_kept() -> None:
    # peak, lookback_days and windows_wanted read the stored array directly (a cycle asks them for
    # every key of the cluster); what they answer must be what the definitions say, day by day.
    rng = random.Random(7)
    for _ in range(400):
        end = NOON + timedelta(minutes=5 * rng.randrange(0, 288))
        lookback = timedelta(days=rng.randrange(2, 9))
        values: dict[date, D | None] = {}
        for offset in range(12):
            roll = rng.random()
            if roll < 0.1:
                continue  # never answered
            values[date(2026, 11, 26) + timedelta(days=offset)] = (
                None if roll < 0.25 else D(rng.randrange(0, 5000)) / 1000
            )
        state = KeyDays(values, end if rng.random() < 0.9 else end - timedelta(minutes=5))
        oldest, newest = days.first_day(end, lookback), days.utc_day(end - timedelta(microseconds=1))
        wanted = [oldest + timedelta(days=i) for i in range((newest - oldest).days + 1)]
        stored = dict(state.days)  # the Mapping view: per-day reads
        known = state.through is not None and state.through >= end and all(d in stored for d in wanted)
        present = {d: v for d in wanted if (v := stored.get(d)) is not None}
        assert days.peak(state, end, lookback) == (
            (True, max(present.values(), default=None)) if known else (False, None)
        )
        if known:
            assert days.lookback_days(state, end, lookback) == present
            assert dict(days.lookback_days(state, end, lookback)) == present
        gaps = (
            [whole(d) for d in wanted if d < days.utc_day(state.through) and d not in stored] if state.through else []
        )
        assert [
            w
            for w in days.windows_wanted(state, end, lookback)
            if w.whole_day and w.end <= days.midnight(days.utc_day(state.through))
        ] == gaps


def test_day_series_compare_by_their_days_however_they_were_made() -> None:
    a = DaySeries({date(2026, 12, 2): D(4), date(2026, 12, 4): D(3)})
    b = DaySeries.of_thousandths(date(2026, 12, 1).toordinal(), [-1, 4000, -1, 3000, -1])
    assert a == b and dict(b) == {date(2026, 12, 2): D(4), date(2026, 12, 4): D(3)} and len(b) == 2
    assert a != DaySeries({date(2026, 12, 2): D(4)}) and a != DaySeries.of_thousandths(1, [])
    assert DaySeries({}) == DaySeries.of_thousandths(5, [-1, -1]) == {}


@pytest.mark.parametrize(
    ("body", "too_big"),
    [
        # Prometheus 2.x's own words for --query.max-samples and --query.timeout.
        ({"errorType": "execution", "error": "query processing would load too many samples into memory"}, True),
        ({"errorType": "timeout", "error": "query timed out in expression evaluation"}, True),
        ({"errorType": "bad_data", "error": "1:10: parse error"}, False),
        ({"errorType": "execution", "error": "many-to-many matching not allowed"}, False),
    ],
)
def test_only_a_question_too_big_for_prometheus_is_asked_again_in_halves(body: dict[str, str], too_big: bool) -> None:
    assert _too_big(body) is too_big


@pytest.mark.parametrize("client", [1.0, 5.0, 30.0, 120.0])
def test_prometheus_gives_up_on_a_question_before_headroom_does(client: float) -> None:
    # Prometheus then answers "timeout" (a question too big: asked again in halves) instead of the
    # client giving up and retrying the same question whole. Prometheus reads the value as seconds.
    given = float(evaluation_timeout(client))
    assert 0.8 * client <= given < client
