"""Forecast alerts: told in business hours, once per crossing into the horizon, and safe over restarts;
their text says the trend, the date and the `headroom request` that covers the horizon."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from headroom.core.alert_policy import (
    AlertState,
    Notification,
    evaluate,
    forecast_due_at,
    forecast_inputs,
    forecast_policy,
    mark_delivered,
    next_wakeup,
    state_from_status,
    state_to_status,
)
from headroom.core.business_hours import parse_business_hours
from headroom.core.forecast import Forecast, ForecastAlert, alert_text, covering

D = Decimal
OFFICE = parse_business_hours("Mon-Fri 09:00-17:00 UTC")
SINKS = frozenset({"webhook", "alertmanager", "event"})
KEY = ("payments", "requests.cpu")
MON_10 = datetime(2026, 3, 2, 10, tzinfo=UTC)  # a Monday


def step(
    state: AlertState, full_at: Mapping[tuple[str, str], datetime], now: datetime, horizon: int = 14
) -> tuple[AlertState, list[Notification]]:
    return evaluate(state, forecast_inputs(full_at, horizon, now), forecast_policy(), OFFICE, now, SINKS)


def delivered(state: AlertState, owed: list[Notification], now: datetime) -> AlertState:
    for notification in owed:
        for sink in SINKS:
            state = mark_delivered(state, notification.id, sink, now)
    return state


def test_the_crossing_into_the_horizon_is_told_once_and_not_repeated() -> None:
    state, owed = step(AlertState(), {KEY: MON_10 + timedelta(days=20)}, MON_10)
    assert owed == []  # 20 days away: outside the 14-day horizon
    state, owed = step(state, {KEY: MON_10 + timedelta(days=14)}, MON_10)
    assert [(n.id, n.state) for n in owed] == [
        ("forecast/payments/requests.cpu/100/firing/2026-03-02T10:00:00Z", "firing")
    ]
    state = delivered(state, owed, MON_10)
    # Days and weeks later, the date still inside the horizon (and nearer every day): nothing more.
    for days in (1, 3, 7, 10, 13, 20):
        now = MON_10 + timedelta(days=days, hours=1)
        state, owed = step(state, {KEY: MON_10 + timedelta(days=14)}, now)
        assert owed == [], days
        state = delivered(state, owed, now)


def test_the_clock_alone_brings_a_date_into_the_horizon_and_the_wake_up_is_that_moment() -> None:
    """Nothing but time changes: the moment to evaluate again is when the nearest date still beyond the
    horizon enters it, and an evaluation then (not a second earlier) tells it."""
    dates = {KEY: MON_10 + timedelta(days=20, hours=3), ("web", "pods"): MON_10 + timedelta(days=17)}
    state, owed = step(AlertState(), dates, MON_10)
    assert owed == []
    due = forecast_due_at(dates, 14, MON_10)
    assert due == MON_10 + timedelta(days=3)  # web's date, 17 days away, is the first to come within 14
    assert step(state, dates, due - timedelta(seconds=1))[1] == []
    state, owed = step(state, dates, due)
    assert [(n.key.namespace, n.state) for n in owed] == [("web", "firing")]
    # Once inside, a date asks for no wake-up of its own; the other one is next, and then none is left.
    assert forecast_due_at(dates, 14, due) == MON_10 + timedelta(days=6, hours=3)
    assert forecast_due_at(dates, 14, MON_10 + timedelta(days=7)) is None
    assert forecast_due_at({}, 14, MON_10) is None


def test_a_date_that_wobbles_at_the_edge_is_not_told_twice_but_a_new_crossing_is() -> None:
    edge = MON_10 + timedelta(days=14)
    state, owed = step(AlertState(), {KEY: edge}, MON_10)
    state = delivered(state, owed, MON_10)
    # Half a day past the horizon (14.5 days: 96.6 % of the horizon is still above 95): still firing.
    state, owed = step(state, {KEY: edge + timedelta(hours=12)}, MON_10)
    assert owed == []
    # The quota was raised: the date leaves the horizon (or there is none); resolved is told, once.
    later = MON_10 + timedelta(days=1)
    state, owed = step(state, {}, later)
    assert [n.state for n in owed] == ["resolved"]
    state = delivered(state, owed, later)
    assert step(state, {}, later + timedelta(hours=1))[1] == []
    # Growth picks up again: a new crossing, a new notification with its own id.
    again = MON_10 + timedelta(days=2)
    state, owed = step(state, {KEY: again + timedelta(days=5)}, again)
    assert [(n.state, n.id.endswith("2026-03-04T10:00:00Z")) for n in owed] == [("firing", True)]


def test_a_firing_forecast_holds_still_in_status_as_the_clock_moves() -> None:
    """Its measure (horizon over time left) grows every second; kept as it was when it crossed, the
    status written at each resync is the same, so nothing is written."""
    full = MON_10 + timedelta(days=10)
    state, owed = step(AlertState(), {KEY: full}, MON_10)
    state = delivered(state, owed, MON_10)
    kept = state_to_status(state)
    for minutes in (5, 10, 60, 600):
        state, owed = step(state, {KEY: full}, MON_10 + timedelta(minutes=minutes))
        assert owed == [] and state_to_status(state) == kept


def test_outside_business_hours_it_waits_for_the_opening() -> None:
    friday_night = datetime(2026, 3, 6, 22, tzinfo=UTC)
    state, owed = step(AlertState(), {KEY: friday_night + timedelta(days=5)}, friday_night)
    assert owed == []
    monday_9 = datetime(2026, 3, 9, 9, tzinfo=UTC)
    assert next_wakeup(state) == monday_9
    state, owed = step(state, {KEY: friday_night + timedelta(days=5)}, datetime(2026, 3, 8, 12, tzinfo=UTC))
    assert owed == []  # Sunday
    state, owed = step(state, {KEY: friday_night + timedelta(days=5)}, monday_9)
    assert [n.state for n in owed] == ["firing"]


def test_a_restart_redelivers_the_outbox_to_the_sinks_that_missed_it_and_nothing_else() -> None:
    state, owed = step(AlertState(), {KEY: MON_10 + timedelta(days=3)}, MON_10)
    (notification,) = owed
    state = mark_delivered(state, notification.id, "webhook", MON_10)  # then the operator dies
    restored = state_from_status(state_to_status(state))  # what the status held
    state, owed = step(restored, {KEY: MON_10 + timedelta(days=3)}, MON_10 + timedelta(minutes=1))
    assert [n.id for n in owed] == [notification.id]  # the same id: receivers de-duplicate on it
    assert restored.get((*KEY, 100)).delivered_sinks == {"webhook"}  # type: ignore[union-attr]
    state = delivered(state, owed, MON_10 + timedelta(minutes=1))
    restored = state_from_status(state_to_status(state))
    assert step(restored, {KEY: MON_10 + timedelta(days=3)}, MON_10 + timedelta(minutes=2))[1] == []


def test_a_date_already_past_is_inside_the_horizon() -> None:
    assert forecast_inputs({KEY: MON_10 - timedelta(days=1)}, 14, MON_10)[KEY] > 100
    assert forecast_inputs({KEY: MON_10 + timedelta(days=7)}, 14, MON_10)[KEY] == 200
    assert forecast_inputs({KEY: MON_10 + timedelta(days=28)}, 14, MON_10)[KEY] == 50
    with pytest.raises(ValueError, match="at least a day"):
        forecast_inputs({}, 0, MON_10)


def test_covering_is_the_trend_at_the_horizon_plus_headroom() -> None:
    # 8 cores reached on Mar 11 06:00 at +400m/day; the horizon ends Mar 16 09:00 (5.125 days later):
    # 8 + 0.4 x 5.125 = 10.05 cores, + 20 % = 12.06 -> 12060m.
    trend = Forecast(D("0.4"), datetime(2026, 3, 11, 6, tzinfo=UTC), 14, D(8))
    assert covering(trend, datetime(2026, 3, 16, 9, tzinfo=UTC), 20, "requests.cpu") == D("12.06")
    # Memory rounds up to whole Mi.
    mem = Forecast(D(100 * 1024**2), datetime(2026, 3, 11, tzinfo=UTC), 14, D(4 * 1024**3))
    assert covering(mem, datetime(2026, 3, 12, 12, tzinfo=UTC), 0, "requests.memory") == D((4096 + 150) * 1024**2)
    assert covering(Forecast(D("0.4"), None, 14, D(8)), MON_10, 20, "requests.cpu") is None


def test_the_alert_text_says_the_trend_the_date_and_the_request() -> None:
    now = datetime(2026, 12, 2, 9, tzinfo=UTC)
    trend = Forecast(D("0.4"), datetime(2026, 12, 11, 6, tzinfo=UTC), 14, D(8))
    alert = ForecastAlert("payments", "payments", "payments", "requests.cpu", 14, 20)
    assert alert_text(alert, trend, now, firing=True) == (
        ":crystal_ball: Project payments (team payments): payments requests.cpu will be full in ~9 days: "
        "growing at +400m/day, the trend of its daily peaks reaches the quota of 8 on 2026-12-11. To cover the "
        "next 14 days (to 2026-12-16, with 20% headroom), ask for a raise: "
        "headroom request payments payments requests.cpu=12060m"
    )
    raised = Forecast(D("0.4"), datetime(2027, 1, 20, tzinfo=UTC), 14, D(24))
    assert alert_text(alert, raised, now, firing=False) == (
        ":white_check_mark: Project payments (team payments): payments requests.cpu is no longer forecast to "
        "reach its quota within 14 days (full in ~49 days (2027-01-20) at +400m/day)."
    )


def test_only_governed_quotas_are_watched() -> None:
    """Observe mode (or a namespace not governed yet) enforces nothing that could fill up: its date is
    in status, but the owners are not alerted about it."""
    from types import SimpleNamespace

    from headroom.shell.alerting import _full_at

    soon = Forecast(D("0.4"), datetime(2026, 3, 5, tzinfo=UTC), 14, D(8))
    plan = SimpleNamespace(
        forecasts={"governed": {"requests.cpu": soon, "pods": soon}, "observed": {"requests.cpu": soon}},
        governed={"governed": {"requests.cpu": D(8)}},
    )
    assert _full_at(plan) == {("governed", "requests.cpu"): soon.full_at}  # type: ignore[arg-type]
