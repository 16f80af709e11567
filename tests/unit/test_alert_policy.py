import itertools
import json
import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.alert_policy import (
    FIRING,
    RESOLVED,
    AlertKey,
    AlertPolicy,
    AlertState,
    Notification,
    Usage,
    alert_conditions,
    evaluate,
    firing_alerts,
    mark_delivered,
    next_wakeup,
    pending_notifications,
    state_from_status,
    state_to_status,
    undelivered_sinks,
)
from headroom.core.business_hours import BusinessHours, is_open, parse_business_hours
from headroom.core.quantity import utilization_percent

D = Decimal
OFFICE = parse_business_hours("Mon-Fri 09:00-17:00 UTC")
ALWAYS = parse_business_hours("Mon-Sun 00:00-24:00 UTC")
WEBHOOK = frozenset({"webhook"})
BOTH = frozenset({"webhook", "alertmanager"})
CPU = ("team-a", "requests.cpu")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# 2026-03-02 is a Monday.
MON_10 = utc(2026, 3, 2, 10)
SAT_12 = utc(2026, 3, 7, 12)
MON_9 = utc(2026, 3, 9, 9)


def run(
    state: AlertState,
    values: Mapping[tuple[str, str], Decimal | int | Usage],
    now: datetime,
    *,
    policy: AlertPolicy | None = None,
    hours: BusinessHours = ALWAYS,
    sinks: frozenset[str] = WEBHOOK,
) -> tuple[AlertState, list[Notification]]:
    return evaluate(state, values, policy or AlertPolicy(), hours, now, sinks)


def deliver(
    state: AlertState, notifications: Iterable[Notification], now: datetime, sinks: Iterable[str] = WEBHOOK
) -> AlertState:
    for notification in notifications:
        for sink in sinks:
            state = mark_delivered(state, notification.id, sink, now)
    return state


def summary(notifications: Iterable[Notification]) -> list[tuple[int, str]]:
    return [(n.threshold, n.state) for n in notifications]


# ------------------------------------------------------------------------------------- inputs and policy


def test_utilization_percent_is_exact() -> None:
    assert utilization_percent(D(8), D(10)) == D(80)
    assert str(utilization_percent(D(8), D(10))) == "80"
    assert utilization_percent(D("0.5"), D(2)) == D(25)
    assert utilization_percent(3, 4) == D(75)
    assert utilization_percent(D(1), D(3)) == D("33.3")  # one rounding, to 0.1 %, for status, metrics and alerts
    assert utilization_percent(D("7.996"), D(10)) == D(80)  # so an 80 % alert fires where the status says 80 %
    assert utilization_percent(D(12), D(10)) == D(120)
    assert Usage(D(9), D(10)).utilization == D(90)


@pytest.mark.parametrize(
    ("used", "hard", "text"),
    [
        (D(4), D(4), "100"),
        (D("4.00"), D(4), "100"),
        (D("3.4"), D(4), "85"),
        (D(1), D(8), "12.5"),
        (D(0), D(4), "0"),
    ],
)
def test_utilization_reads_naturally(used: Decimal, hard: Decimal, text: str) -> None:
    assert str(utilization_percent(used, hard)) == text


@pytest.mark.parametrize("hard", [D(0), D(-1), 0])
def test_utilization_without_positive_hard_limit_is_none(hard: Decimal | int) -> None:
    assert utilization_percent(D(5), hard) is None
    assert Usage(D(5), D(hard)).utilization is None


@pytest.mark.parametrize("bad", [0.5, True, "80", D("NaN"), D("Infinity")])
def test_inexact_or_non_numeric_inputs_are_refused(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        utilization_percent(bad, D(10))
    with pytest.raises((TypeError, ValueError)):
        run(AlertState(), {CPU: bad}, MON_10)


def test_policy_defaults_and_normalization() -> None:
    policy = AlertPolicy()
    assert policy.thresholds == (80, 90, 100)
    assert policy.hysteresis == D(5)
    assert isinstance(AlertPolicy(hysteresis=3).hysteresis, Decimal)  # type: ignore[arg-type]
    assert AlertPolicy(thresholds=(100, 80, 80)).thresholds == (80, 100)
    assert AlertPolicy(thresholds=[90, 80]).thresholds == (80, 90)  # type: ignore[arg-type]
    assert AlertPolicy(urgent_when_full=True).is_urgent(100)
    assert AlertPolicy(urgent_when_full=True).is_urgent(120)
    assert not AlertPolicy(urgent_when_full=True).is_urgent(90)
    assert not AlertPolicy().is_urgent(100)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thresholds": (0,)},
        {"thresholds": (-5,)},
        {"thresholds": (80.5,)},
        {"thresholds": (True,)},
        {"hysteresis": D(-1)},
        {"hysteresis": 1.5},
        {"cooldown": timedelta(0)},
        {"cooldown": timedelta(minutes=-1)},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        AlertPolicy(**kwargs)


# ------------------------------------------------------------------------------------------ hysteresis


def test_below_every_threshold_nothing_is_tracked() -> None:
    state, sent = run(AlertState(), {CPU: D("79.99")}, MON_10)
    assert sent == []
    assert state == AlertState()


def test_crossing_fires_exactly_one_notification() -> None:
    state, sent = run(AlertState(), {CPU: D("80")}, MON_10)
    (notification,) = sent
    assert notification.key == AlertKey("team-a", "requests.cpu", 80)
    assert (notification.namespace, notification.resource, notification.threshold) == (*CPU, 80)
    assert notification.state == FIRING
    assert notification.utilization == D(80)
    assert notification.since == MON_10
    assert notification.repeat == 0
    assert not notification.urgent
    assert notification.id == "team-a/requests.cpu/80/firing/2026-03-02T10:00:00Z"
    state = deliver(state, sent, MON_10)
    for minutes in (1, 30, 60, 300):
        state, sent = run(state, {CPU: D("85")}, MON_10 + timedelta(minutes=minutes))
        assert sent == []


def test_no_flapping_around_the_threshold() -> None:
    state = AlertState()
    fired: list[Notification] = []
    now = MON_10
    for value in ["80", "79", "81", "79", "80", "76", "75", "79.5", "80", "81"]:
        state, sent = run(state, {CPU: D(value)}, now)
        fired += sent
        state = deliver(state, sent, now)
        now += timedelta(minutes=1)
    assert summary(fired) == [(80, FIRING)]
    record = state.get((*CPU, 80))
    assert record is not None and record.firing


def test_resolves_only_below_threshold_minus_hysteresis_then_fires_again() -> None:
    state, sent = run(AlertState(), {CPU: D(80)}, MON_10)
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {CPU: D(75)}, MON_10 + timedelta(minutes=1))
    assert sent == []  # 75 is not < 80 - 5
    state, sent = run(state, {CPU: D("74.99")}, MON_10 + timedelta(minutes=2))
    (resolved,) = sent
    assert resolved.state == RESOLVED
    assert resolved.utilization == D("74.99")
    assert resolved.since == MON_10 + timedelta(minutes=2)
    assert resolved.id == "team-a/requests.cpu/80/resolved/2026-03-02T10:02:00Z"
    state = deliver(state, sent, MON_10 + timedelta(minutes=2))
    assert state == AlertState()  # nothing left to remember
    state, sent = run(state, {CPU: D(79)}, MON_10 + timedelta(minutes=3))
    assert sent == []
    state, sent = run(state, {CPU: D(80)}, MON_10 + timedelta(minutes=4))
    (again,) = sent
    assert again.state == FIRING
    assert again.id == "team-a/requests.cpu/80/firing/2026-03-02T10:04:00Z"


def test_custom_hysteresis() -> None:
    policy = AlertPolicy(thresholds=(50,), hysteresis=D(0))
    state, sent = run(AlertState(), {CPU: D(50)}, MON_10, policy=policy)
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {CPU: D("49.9")}, MON_10 + timedelta(minutes=1), policy=policy)
    assert summary(sent) == [(50, RESOLVED)]


def test_several_thresholds_crossed_at_once_each_notify_once() -> None:
    state, sent = run(AlertState(), {CPU: D(95)}, MON_10)
    assert summary(sent) == [(80, FIRING), (90, FIRING)]
    assert len({n.id for n in sent}) == 2
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {CPU: D(100)}, MON_10 + timedelta(minutes=1))
    assert summary(sent) == [(100, FIRING)]
    state = deliver(state, sent, MON_10 + timedelta(minutes=1))
    state, sent = run(state, {CPU: D(50)}, MON_10 + timedelta(minutes=2))
    assert summary(sent) == [(80, RESOLVED), (90, RESOLVED), (100, RESOLVED)]


def test_resources_and_namespaces_are_independent() -> None:
    memory = ("team-a", "limits.memory")
    other = ("team-b", "requests.cpu")
    _, sent = run(AlertState(), {CPU: D(81), memory: D(10), other: D(91)}, MON_10)
    assert sorted((n.namespace, n.resource, n.threshold) for n in sent) == [
        ("team-a", "requests.cpu", 80),
        ("team-b", "requests.cpu", 80),
        ("team-b", "requests.cpu", 90),
    ]


def test_usage_input_carries_used_and_hard() -> None:
    _, sent = run(AlertState(), {CPU: Usage(D("3.4"), D(4))}, MON_10)
    (notification,) = sent
    assert notification.utilization == D(85)
    assert str(notification.utilization) == "85"
    assert (notification.used, notification.hard) == (D("3.4"), D(4))
    _, sent = run(AlertState(), {CPU: Usage(D("3.6"), D(4))}, MON_10)
    assert [(n.threshold, n.utilization, n.used, n.hard) for n in sent] == [
        (80, D(90), D("3.6"), D(4)),
        (90, D(90), D("3.6"), D(4)),
    ]


def test_hard_limit_zero_is_skipped_and_resolves_a_firing_alert() -> None:
    state, sent = run(AlertState(), {CPU: Usage(D(1), D(0))}, MON_10)
    assert (state, sent) == (AlertState(), [])
    state, sent = run(AlertState(), {CPU: Usage(D(9), D(10))}, MON_10)
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {CPU: Usage(D(9), D(0))}, MON_10 + timedelta(minutes=1))
    assert summary(sent) == [(80, RESOLVED), (90, RESOLVED)]


def test_key_removed_from_input_resolves() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10)
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {}, MON_10 + timedelta(minutes=5))
    (resolved,) = sent
    assert resolved.state == RESOLVED
    assert resolved.utilization is None
    state = deliver(state, sent, MON_10 + timedelta(minutes=5))
    assert state == AlertState()


def test_threshold_removed_from_policy_resolves() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10)
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {CPU: D(85)}, MON_10 + timedelta(minutes=1), policy=AlertPolicy(thresholds=(90,)))
    assert summary(sent) == [(80, RESOLVED)]


# -------------------------------------------------------------------------------------------- cooldown


def test_cooldown_repeats_a_still_firing_alert() -> None:
    policy = AlertPolicy(thresholds=(80,), cooldown=timedelta(hours=1))
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10, policy=policy)
    first = sent[0]
    state = deliver(state, sent, MON_10 + timedelta(minutes=30))  # cooldown counts from delivery
    state, sent = run(state, {CPU: D(85)}, MON_10 + timedelta(minutes=89), policy=policy)
    assert sent == []
    record = state.get((*CPU, 80))
    assert record is not None and record.not_before == MON_10 + timedelta(minutes=90)
    assert next_wakeup(state) == MON_10 + timedelta(minutes=90)
    state, sent = run(state, {CPU: D(86)}, MON_10 + timedelta(minutes=90), policy=policy)
    (repeat,) = sent
    assert repeat.state == FIRING
    assert repeat.repeat == 1
    assert repeat.since == first.since
    assert repeat.utilization == D(86)
    assert repeat.id == first.id + "/repeat-1"
    state = deliver(state, sent, MON_10 + timedelta(minutes=90))
    state, sent = run(state, {CPU: D(86)}, MON_10 + timedelta(minutes=150), policy=policy)
    assert [n.id for n in sent] == [first.id + "/repeat-2"]


def test_default_cooldown_is_one_business_day() -> None:
    policy = AlertPolicy(thresholds=(80,))
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10, hours=OFFICE, policy=policy)
    state = deliver(state, sent, MON_10)
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 3, 9, 59), hours=OFFICE, policy=policy)
    assert sent == []
    assert next_wakeup(state) == utc(2026, 3, 3, 10)
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 3, 10), hours=OFFICE, policy=policy)
    assert [n.repeat for n in sent] == [1]


def test_default_cooldown_skips_the_weekend() -> None:
    friday = utc(2026, 3, 6, 16)
    state, sent = run(AlertState(), {CPU: D(85)}, friday, hours=OFFICE)
    state = deliver(state, sent, friday)
    for now in (utc(2026, 3, 7, 16), utc(2026, 3, 8, 16), utc(2026, 3, 9, 15, 59)):
        state, sent = run(state, {CPU: D(85)}, now, hours=OFFICE)
        assert sent == []
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 9, 16), hours=OFFICE)
    assert [n.repeat for n in sent] == [1]


def test_repeat_falling_outside_business_hours_waits_for_opening() -> None:
    policy = AlertPolicy(thresholds=(80,), cooldown=timedelta(hours=4))
    start = utc(2026, 3, 2, 15)
    state, sent = run(AlertState(), {CPU: D(85)}, start, hours=OFFICE, policy=policy)
    state = deliver(state, sent, start)
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 2, 19), hours=OFFICE, policy=policy)
    assert sent == []
    assert next_wakeup(state) == utc(2026, 3, 3, 9)
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 3, 9), hours=OFFICE, policy=policy)
    assert [n.repeat for n in sent] == [1]


def test_no_repeat_while_a_notification_is_undelivered() -> None:
    policy = AlertPolicy(thresholds=(80,), cooldown=timedelta(hours=1))
    state, first = run(AlertState(), {CPU: D(85)}, MON_10, policy=policy)
    state, again = run(state, {CPU: D(87)}, MON_10 + timedelta(hours=5), policy=policy)
    assert again == first


# -------------------------------------------------------------------------------------- business hours


def test_firing_outside_business_hours_is_deferred_then_sent_at_opening() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, SAT_12, hours=OFFICE)
    assert sent == []
    record = state.get((*CPU, 80))
    assert record is not None
    assert record.firing and not record.announced
    assert record.not_before == MON_9
    assert next_wakeup(state) == MON_9
    assert [r.key.threshold for r in firing_alerts(state)] == [80]
    state, sent = run(state, {CPU: D(86)}, utc(2026, 3, 8, 12), hours=OFFICE)
    assert sent == []
    state, sent = run(state, {CPU: D(87)}, MON_9, hours=OFFICE)
    (notification,) = sent
    assert notification.state == FIRING
    assert notification.since == SAT_12  # when it crossed, not when it was sent
    assert notification.utilization == D(87)
    assert next_wakeup(state) is None


def test_deferred_firing_that_resolves_before_opening_sends_nothing() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, SAT_12, hours=OFFICE)
    state, sent = run(state, {CPU: D(50)}, utc(2026, 3, 8, 12), hours=OFFICE)
    assert sent == []
    assert state == AlertState()
    state, sent = run(state, {CPU: D(50)}, MON_9, hours=OFFICE)
    assert sent == []


def test_deferred_firing_that_disappears_before_opening_sends_nothing() -> None:
    state, _ = run(AlertState(), {CPU: D(85)}, SAT_12, hours=OFFICE)
    state, sent = run(state, {}, MON_9, hours=OFFICE)
    assert (state, sent) == (AlertState(), [])


def test_resolved_notification_is_deferred_too() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, utc(2026, 3, 6, 16), hours=OFFICE)
    state = deliver(state, sent, utc(2026, 3, 6, 16))
    state, sent = run(state, {CPU: D(10)}, SAT_12, hours=OFFICE)
    assert sent == []
    assert next_wakeup(state) == MON_9
    state, sent = run(state, {CPU: D(10)}, MON_9, hours=OFFICE)
    (resolved,) = sent
    assert resolved.state == RESOLVED
    assert resolved.since == SAT_12


def test_deferred_resolved_that_fires_again_before_opening_sends_nothing() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, utc(2026, 3, 6, 16), hours=OFFICE)
    state = deliver(state, sent, utc(2026, 3, 6, 16))
    state, sent = run(state, {CPU: D(10)}, SAT_12, hours=OFFICE)
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 8, 12), hours=OFFICE)
    assert sent == []
    state, sent = run(state, {CPU: D(85)}, MON_9, hours=OFFICE)
    assert sent == []  # the receivers still (correctly) believe it fires
    record = state.get((*CPU, 80))
    assert record is not None and record.firing and record.announced
    # The reminder schedule still runs from the delivered Friday notification: one business day later.
    assert next_wakeup(state) == utc(2026, 3, 9, 16)


def test_operator_down_through_an_opening_waits_for_the_next_one() -> None:
    state, _ = run(AlertState(), {CPU: D(85)}, SAT_12, hours=OFFICE)
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 9, 18), hours=OFFICE)
    assert sent == []
    assert next_wakeup(state) == utc(2026, 3, 10, 9)


def test_urgent_when_full_bypasses_business_hours() -> None:
    policy = AlertPolicy(urgent_when_full=True)
    state, sent = run(AlertState(), {CPU: D(100)}, SAT_12, hours=OFFICE, policy=policy)
    (urgent,) = sent
    assert (urgent.threshold, urgent.state, urgent.urgent) == (100, FIRING, True)
    assert next_wakeup(state) == MON_9  # 80 and 90 wait for business hours
    state = deliver(state, sent, SAT_12)
    state, sent = run(state, {CPU: D(50)}, utc(2026, 3, 7, 13), hours=OFFICE, policy=policy)
    assert summary(sent) == [(100, RESOLVED)]
    assert sent[0].urgent
    state = deliver(state, sent, utc(2026, 3, 7, 13))
    assert state == AlertState()  # 80 and 90 were never sent, so nothing else is owed


def test_full_without_urgent_flag_is_deferred() -> None:
    state, sent = run(AlertState(), {CPU: D(100)}, SAT_12, hours=OFFICE)
    assert sent == []
    state, sent = run(state, {CPU: D(100)}, MON_9, hours=OFFICE)
    assert summary(sent) == [(80, FIRING), (90, FIRING), (100, FIRING)]
    assert not any(n.urgent for n in sent)


def test_urgent_repeats_ignore_business_hours() -> None:
    policy = AlertPolicy(thresholds=(100,), urgent_when_full=True, cooldown=timedelta(hours=2))
    state, sent = run(AlertState(), {CPU: D(100)}, SAT_12, hours=OFFICE, policy=policy)
    state = deliver(state, sent, SAT_12)
    state, sent = run(state, {CPU: D(100)}, utc(2026, 3, 7, 14), hours=OFFICE, policy=policy)
    assert [(n.repeat, n.urgent) for n in sent] == [(1, True)]


# ---------------------------------------------------------------------------------- two-phase delivery


def test_undelivered_outbox_is_returned_again_not_duplicated() -> None:
    state, first = run(AlertState(), {CPU: D(85)}, MON_10)
    state2, again = run(state, {CPU: D(85)}, MON_10)
    assert again == first
    assert state2 == state
    state3, later = run(state2, {CPU: D(88)}, MON_10 + timedelta(days=3))
    assert later == first  # same id, same content: the caller simply retries it
    assert pending_notifications(state3) == first


def test_mark_delivered_per_sink() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10, sinks=BOTH)
    (notification,) = sent
    assert undelivered_sinks(state, notification.id) == BOTH
    state = mark_delivered(state, notification.id, "webhook", MON_10)
    assert undelivered_sinks(state, notification.id) == {"alertmanager"}
    state = mark_delivered(state, notification.id, "webhook", MON_10)  # idempotent
    assert undelivered_sinks(state, notification.id) == {"alertmanager"}
    state, again = run(state, {CPU: D(85)}, MON_10 + timedelta(minutes=1), sinks=BOTH)
    assert again == [notification]
    assert undelivered_sinks(state, notification.id) == {"alertmanager"}  # survives evaluation
    state = mark_delivered(state, notification.id, "alertmanager", MON_10 + timedelta(minutes=2))
    assert undelivered_sinks(state, notification.id) == frozenset()
    record = state.get((*CPU, 80))
    assert record is not None
    assert record.outbox is None
    assert record.last_sent == MON_10 + timedelta(minutes=2)
    state, sent = run(state, {CPU: D(85)}, MON_10 + timedelta(minutes=3), sinks=BOTH)
    assert sent == []


def test_evaluating_again_right_after_delivery_reaches_a_fixed_point() -> None:
    # The operator re-evaluates right after delivering, so that what it writes to the Project's
    # status is what every later evaluation computes until something changes: no second write.
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10, hours=OFFICE)
    state = deliver(state, sent, MON_10)
    settled, owed = run(state, {CPU: D(85)}, MON_10, hours=OFFICE)
    assert owed == []
    record = settled.get((*CPU, 80))
    assert record is not None and record.not_before == utc(2026, 3, 3, 10)  # the reminder, a business day on
    for later in (MON_10 + timedelta(minutes=1), MON_10 + timedelta(hours=5), utc(2026, 3, 3, 9, 59)):
        again, owed = run(settled, {CPU: D(85)}, later, hours=OFFICE)
        assert owed == []
        assert state_to_status(again) == state_to_status(settled), later


def test_mark_delivered_for_unknown_id_is_a_no_op() -> None:
    state, _ = run(AlertState(), {CPU: D(85)}, MON_10)
    assert mark_delivered(state, "nope", "webhook", MON_10) is state
    with pytest.raises(ValueError, match="timezone-aware"):
        mark_delivered(state, "nope", "webhook", datetime(2026, 3, 2, 10))


def test_removing_a_sink_from_configuration_completes_delivery() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10, sinks=BOTH)
    state = mark_delivered(state, sent[0].id, "webhook", MON_10)
    state, sent = run(state, {CPU: D(85)}, MON_10 + timedelta(minutes=1), sinks=WEBHOOK)
    assert sent == []
    record = state.get((*CPU, 80))
    assert record is not None and record.last_sent == MON_10 + timedelta(minutes=1)


def test_without_sinks_notifications_count_as_delivered() -> None:
    state, sent = run(AlertState(), {CPU: D(85)}, MON_10, sinks=frozenset())
    assert sent == []
    record = state.get((*CPU, 80))
    assert record is not None and record.announced and record.last_sent == MON_10


def test_newer_notification_replaces_an_undelivered_one() -> None:
    state, fired = run(AlertState(), {CPU: D(85)}, MON_10)
    state, sent = run(state, {CPU: D(10)}, MON_10 + timedelta(minutes=5))
    (resolved,) = sent
    assert resolved.state == RESOLVED
    assert mark_delivered(state, fired[0].id, "webhook", MON_10) is state  # superseded
    state = deliver(state, sent, MON_10 + timedelta(minutes=6))
    assert state == AlertState()


def test_undelivered_firing_keeps_retrying_while_its_resolution_waits_for_hours() -> None:
    state, fired = run(AlertState(), {CPU: D(85)}, utc(2026, 3, 2, 16, 55), hours=OFFICE)
    state, sent = run(state, {CPU: D(10)}, utc(2026, 3, 2, 17, 30), hours=OFFICE)
    assert sent == fired  # it may already have reached someone: keep it, resolve at opening
    assert next_wakeup(state) == utc(2026, 3, 3, 9)
    state, sent = run(state, {CPU: D(10)}, utc(2026, 3, 3, 9), hours=OFFICE)
    assert summary(sent) == [(80, RESOLVED)]


def test_resolution_is_sent_for_a_handed_out_but_unconfirmed_firing() -> None:
    # Handing out counts as possibly sent (the caller may have crashed before confirming).
    state, _ = run(AlertState(), {CPU: D(85)}, MON_10)
    state, sent = run(state, {}, MON_10 + timedelta(minutes=1))
    assert summary(sent) == [(80, RESOLVED)]


# -------------------------------------------------------------------------------------- status round trip


def restarting(state: AlertState) -> AlertState:
    """What an operator restart sees: the state as persisted in the Project status, via JSON."""
    return state_from_status(json.loads(json.dumps(state_to_status(state))))


def test_status_round_trip_of_a_rich_state() -> None:
    policy = AlertPolicy(urgent_when_full=True)
    values: dict[tuple[str, str], Decimal | Usage] = {
        CPU: Usage(D("3.8"), D(4)),
        ("team-b", "limits.memory"): D("100.5"),
        ("team-c", "pods"): D(1) / D(3) * 300,
    }
    state, sent = run(AlertState(), values, SAT_12, hours=OFFICE, policy=policy, sinks=BOTH)
    state = mark_delivered(state, sent[0].id, "webhook", SAT_12)
    assert any(r.outbox is not None for r in state.records)
    assert any(r.not_before is not None for r in state.records)
    assert any(r.delivered_sinks for r in state.records)
    assert restarting(state) == state


def test_status_shape_is_json_friendly() -> None:
    state, sent = run(AlertState(), {CPU: Usage(D("3.4"), D(4))}, MON_10, sinks=BOTH)
    state = mark_delivered(state, sent[0].id, "webhook", MON_10)
    (item,) = state_to_status(state)
    assert item == {
        "namespace": "team-a",
        "resource": "requests.cpu",
        "threshold": 80,
        "state": "firing",
        "since": "2026-03-02T10:00:00Z",
        "utilization": "85",
        "used": "3400m",
        "hard": "4",
        "announced": True,
        "repeats": 0,
        "outbox": {
            "id": "team-a/requests.cpu/80/firing/2026-03-02T10:00:00Z",
            "state": "firing",
            "since": "2026-03-02T10:00:00Z",
            "utilization": "85",
            "used": "3400m",
            "hard": "4",
            "repeat": 0,
            "urgent": False,
        },
        "sinks": ["alertmanager", "webhook"],
        "deliveredSinks": ["webhook"],
    }
    assert json.loads(json.dumps(state_to_status(state))) == state_to_status(state)


def test_restart_between_every_step_changes_nothing() -> None:
    policy = AlertPolicy(cooldown=timedelta(hours=2), urgent_when_full=True)
    script: list[tuple[datetime, dict[tuple[str, str], Decimal]]] = [
        (utc(2026, 3, 6, 16), {CPU: D(85)}),
        (utc(2026, 3, 6, 16, 5), {CPU: D(92)}),
        (utc(2026, 3, 6, 18), {CPU: D(100)}),
        (SAT_12, {CPU: D(100)}),
        (utc(2026, 3, 8, 12), {CPU: D(60)}),
        (MON_9, {CPU: D(60)}),
        (utc(2026, 3, 9, 12), {CPU: D(85)}),
        (utc(2026, 3, 9, 15), {CPU: D(85)}),
    ]

    def play(restart: bool) -> list[list[str]]:
        state = AlertState()
        log = []
        for now, values in script:
            if restart:
                state = restarting(state)
            state, sent = run(state, values, now, hours=OFFICE, policy=policy)
            log.append([n.id for n in sent])
            if restart:
                state = restarting(state)
            state = deliver(state, sent, now)
            if restart:
                # A restart right after delivering must neither re-send nor lose anything.
                state = restarting(state)
                state, resent = run(state, values, now, hours=OFFICE, policy=policy)
                assert resent == []
        return log

    with_restarts = play(restart=True)
    assert with_restarts == play(restart=False)
    assert with_restarts == [
        ["team-a/requests.cpu/80/firing/2026-03-06T16:00:00Z"],
        ["team-a/requests.cpu/90/firing/2026-03-06T16:05:00Z"],
        ["team-a/requests.cpu/100/firing/2026-03-06T18:00:00Z"],  # urgent, out of hours
        ["team-a/requests.cpu/100/firing/2026-03-06T18:00:00Z/repeat-1"],  # urgent reminder
        ["team-a/requests.cpu/100/resolved/2026-03-08T12:00:00Z"],  # urgent resolution
        [
            "team-a/requests.cpu/80/resolved/2026-03-08T12:00:00Z",
            "team-a/requests.cpu/90/resolved/2026-03-08T12:00:00Z",
        ],
        ["team-a/requests.cpu/80/firing/2026-03-09T12:00:00Z"],
        ["team-a/requests.cpu/80/firing/2026-03-09T12:00:00Z/repeat-1"],
    ]


def test_restart_with_undelivered_outbox_returns_the_same_notification() -> None:
    state, first = run(AlertState(), {CPU: D(85)}, MON_10, sinks=BOTH)
    state = mark_delivered(state, first[0].id, "webhook", MON_10)
    state, again = run(restarting(state), {CPU: D(85)}, MON_10 + timedelta(minutes=1), sinks=BOTH)
    assert again == first
    assert undelivered_sinks(state, first[0].id) == {"alertmanager"}


def test_restart_keeps_deferred_notifications() -> None:
    state, _ = run(AlertState(), {CPU: D(85)}, SAT_12, hours=OFFICE)
    state, sent = run(restarting(state), {CPU: D(85)}, MON_9, hours=OFFICE)
    assert [n.since for n in sent] == [SAT_12]


@pytest.mark.parametrize("items", [None, [], "garbage", 42, {"namespace": "x"}])
def test_state_from_status_tolerates_absent_or_wrong_container(items: Any) -> None:
    assert state_from_status(items) == AlertState()


def test_state_from_status_skips_garbled_entries() -> None:
    state, _ = run(AlertState(), {CPU: D(85), ("team-b", "pods"): D(95)}, MON_10)
    good = state_to_status(state)

    def broken(**changes: Any) -> dict[str, Any]:
        item = dict(good[0])
        for name, value in changes.items():
            if value is ...:
                item.pop(name)
            else:
                item[name] = value
        return item

    garbage: list[Any] = [
        "not a dict",
        None,
        {},
        broken(namespace=...),
        broken(namespace=""),
        broken(threshold="80"),
        broken(threshold=True),
        broken(threshold=0),
        broken(state="burning"),
        broken(since="yesterday"),
        broken(since="2026-03-02T10:00:00"),  # no zone
        broken(since=1700000000),
        broken(utilization="eighty"),
        broken(utilization="NaN"),
        broken(utilization=85.0),
        broken(announced="yes"),
        broken(repeats=-1),
        broken(lastSent="soon"),
        broken(notBefore=[]),
        broken(outbox="pending"),
        broken(outbox={"id": "x"}),
        broken(outbox={**good[0]["outbox"], "since": "later"}),
        broken(sinks="webhook"),
        broken(deliveredSinks=[1, 2]),
    ]
    restored = state_from_status([*garbage, *good, *garbage])
    assert restored == state
    # Later duplicates of a key do not override the first valid entry.
    duplicate = dict(good[0], utilization="1")
    assert state_from_status([*good, duplicate]) == state


def test_missing_optional_fields_default_sensibly() -> None:
    restored = state_from_status(
        [
            {
                "namespace": "ns",
                "resource": "pods",
                "threshold": 90,
                "state": "firing",
                "since": "2026-03-02T10:00:00Z",
            }
        ]
    )
    (record,) = restored.records
    assert record.firing and not record.announced
    assert record.since == MON_10
    assert record.outbox is None and record.last_sent is None and record.sinks == frozenset()
    # Such a record (firing, never announced) is owed a notification.
    _, sent = run(restored, {("ns", "pods"): D(91)}, MON_10 + timedelta(minutes=1))
    assert [n.id for n in sent] == [
        "ns/pods/80/firing/2026-03-02T10:01:00Z",
        "ns/pods/90/firing/2026-03-02T10:00:00Z",
    ]


def test_timestamps_in_other_offsets_are_normalized_to_utc() -> None:
    restored = state_from_status(
        [
            {
                "namespace": "ns",
                "resource": "pods",
                "threshold": 90,
                "state": "firing",
                "since": "2026-03-02T11:00:00+01:00",
            }
        ]
    )
    assert restored.records[0].since == MON_10
    assert restored.records[0].since.utcoffset() == timedelta(0)
    assert state_to_status(restored)[0]["since"] == "2026-03-02T10:00:00Z"


# ------------------------------------------------------------------------------------------- summaries


def test_firing_alerts_follow_hysteresis_state() -> None:
    state, sent = run(AlertState(), {CPU: D(95), ("team-b", "pods"): D(81)}, MON_10)
    state = deliver(state, sent, MON_10)
    assert [r.key for r in firing_alerts(state)] == [
        AlertKey("team-a", "requests.cpu", 80),
        AlertKey("team-a", "requests.cpu", 90),
        AlertKey("team-b", "pods", 80),
    ]
    state, sent = run(state, {CPU: D(88), ("team-b", "pods"): D(81)}, MON_10 + timedelta(minutes=1))
    assert len(firing_alerts(state)) == 3  # 88 is within 90's hysteresis band
    state, sent = run(state, {CPU: D(84), ("team-b", "pods"): D(81)}, MON_10 + timedelta(minutes=2))
    assert [r.key.threshold for r in firing_alerts(state)] == [80, 80]
    assert all(r.state == FIRING for r in firing_alerts(state))


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(AlertState(), {CPU: D(85)}, AlertPolicy(), ALWAYS, datetime(2026, 3, 2, 10), WEBHOOK)


def test_state_is_an_immutable_value() -> None:
    state, _ = run(AlertState(), {CPU: D(85)}, MON_10)
    before = state_to_status(state)
    run(state, {CPU: D(10)}, MON_10 + timedelta(minutes=1))
    assert state_to_status(state) == before
    assert AlertState(tuple(reversed(state.records))) == state  # order-insensitive construction


# ------------------------------------------------------------------------------------ DST and schedules


def test_deferral_lands_on_local_opening_across_dst() -> None:
    berlin = parse_business_hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    saturday = utc(2026, 3, 28, 12)  # the weekend Berlin springs forward
    state, sent = run(AlertState(), {CPU: D(85)}, saturday, hours=berlin)
    assert sent == []
    assert next_wakeup(state) == utc(2026, 3, 30, 7)  # 09:00 CEST
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 30, 6, 59), hours=berlin)
    assert sent == []
    state, sent = run(state, {CPU: D(85)}, utc(2026, 3, 30, 7), hours=berlin)
    assert summary(sent) == [(80, FIRING)]
    la = parse_business_hours("Mon-Fri 09:00-17:00 America/Los_Angeles")
    state, _ = run(AlertState(), {CPU: D(85)}, utc(2026, 10, 31, 12), hours=la)
    assert next_wakeup(state) == utc(2026, 11, 2, 17)  # 09:00 PST


def test_overnight_hours_deliver_on_saturday_morning() -> None:
    nights = parse_business_hours("Mon-Fri 22:00-06:00 UTC")
    state, sent = run(AlertState(), {CPU: D(85)}, utc(2026, 3, 7, 5), hours=nights)
    assert summary(sent) == [(80, FIRING)]  # still Friday's shift
    state, sent = run(AlertState(), {CPU: D(85)}, utc(2026, 3, 7, 6), hours=nights)
    assert sent == []
    assert next_wakeup(state) == utc(2026, 3, 9, 22)


def test_holiday_defers_to_the_next_business_day() -> None:
    office = parse_business_hours("Mon-Fri 09:00-17:00 UTC", ["2026-12-25"])
    state, sent = run(AlertState(), {CPU: D(85)}, utc(2026, 12, 25, 10), hours=office)
    assert sent == []
    assert next_wakeup(state) == utc(2026, 12, 28, 9)


@pytest.mark.parametrize("seed", range(6))
def test_random_walk_invariants_and_restart_equivalence(seed: int) -> None:
    hours = parse_business_hours("Mon-Fri 09:00-12:00 Europe/Berlin, Mon-Fri 13:00-17:00 Europe/Berlin")
    policy = AlertPolicy(cooldown=None if seed % 2 else timedelta(hours=3), urgent_when_full=seed % 3 == 0)
    keys = [CPU, ("team-b", "pods")]

    def play(restart: bool) -> list[tuple[datetime, Notification]]:
        rng = random.Random(seed)
        state = AlertState()
        now = utc(2026, 3, 20, 6)  # two weeks spanning the spring-forward weekend
        level = {key: D(70) for key in keys}
        handed_out: list[tuple[datetime, Notification]] = []
        seen: set[str] = set()
        for _ in range(300):
            now += timedelta(minutes=rng.randint(7, 97))
            values: dict[tuple[str, str], Decimal] = {}
            for key in keys:
                level[key] = max(D(0), min(D(110), level[key] + D(rng.randint(-40, 40)) / 4))
                if rng.random() > 0.05:  # sometimes a key vanishes for a while
                    values[key] = level[key]
            if restart:
                state = restarting(state)
            state, sent = run(state, values, now, policy=policy, hours=hours, sinks=BOTH)
            for notification in sent:
                if notification.id not in seen:
                    seen.add(notification.id)
                    handed_out.append((now, notification))
            if restart:
                state = restarting(state)
            for notification in sent:
                for sink in sorted(BOTH):
                    if rng.random() < 0.8:  # flaky sinks
                        state = mark_delivered(state, notification.id, sink, now)
        return handed_out

    log = play(restart=False)
    assert log == play(restart=True)
    assert len(log) > 5
    assert len({n.id for _, n in log}) == len(log)
    per_key: dict[AlertKey, list[Notification]] = {}
    for at, notification in log:
        assert notification.urgent or is_open(hours, at)
        assert notification.urgent == policy.is_urgent(notification.threshold)
        if notification.state == FIRING:
            assert notification.utilization is not None
            assert notification.utilization >= notification.threshold - policy.hysteresis
        else:
            assert notification.utilization is None or notification.utilization < notification.threshold
        per_key.setdefault(notification.key, []).append(notification)
    for sequence in per_key.values():
        transitions = [n.state for n in sequence if n.repeat == 0]
        assert transitions[0] == FIRING  # never a resolved without a firing before it
        assert all(a != b for a, b in itertools.pairwise(transitions))
        for before, after in itertools.pairwise(sequence):
            if after.repeat:
                assert before.state == FIRING
                assert after.repeat == (before.repeat + 1 if before.since == after.since else 1)


def test_status_amounts_read_like_the_quota_and_survive_a_restart() -> None:
    memory = ("team-a", "requests.memory")
    state, _ = run(
        AlertState(),
        {memory: Usage(D(2400) * 1024**2 * 9 // 10, D(2516582400))},
        MON_10,
        policy=AlertPolicy(thresholds=(80,)),
    )
    (item,) = state_to_status(state)
    # "2400Mi", as the quota's own spec.hard says, not the byte count "2516582400".
    assert (item["used"], item["hard"], item["outbox"]["hard"]) == ("2160Mi", "2400Mi", "2400Mi")
    assert state_from_status(json.loads(json.dumps(state_to_status(state)))) == state


def test_status_written_by_earlier_versions_as_plain_numbers_still_reads() -> None:
    state, _ = run(AlertState(), {CPU: Usage(D("3.4"), D(4))}, MON_10)
    (item,) = state_to_status(state)
    old = {**item, "used": "3.4", "outbox": {**item["outbox"], "used": "3.4"}}
    assert state_from_status([old]) == state


def test_near_limit_condition_gives_amounts_in_one_unit_and_where_the_alert_clears() -> None:
    state, _ = run(AlertState(), {CPU: Usage(D("4.5"), D(5))}, MON_10, policy=AlertPolicy(thresholds=(90,)))
    # Hysteresis keeps it firing at 89.74 %: the message must not claim ">= 90%" next to that.
    state, _ = run(state, {CPU: Usage(D("4.487"), D(5))}, MON_10, policy=AlertPolicy(thresholds=(90,)))
    near = alert_conditions(
        state,
        hours="Mon-Fri 09:00-17:00 UTC",
        hours_problem=None,
        delivery=None,
        previous=[],
        generation=1,
        now=MON_10,
        hysteresis=D(5),
    )[0]
    assert near["message"] == "team-a requests.cpu at 89.7% (4487m of 5000m; alert at 90%, until below 85%)"
