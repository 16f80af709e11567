"""What a team reads in an alert: one unit on both sides of "X of Y", a percentage to 0.1."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from headroom.core.alert_policy import AlertKey, Notification
from headroom.shell.alerting import AlertmanagerSink, Delivery

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)


def delivery(resource: str, used: D, hard: D, utilization: D, state: str = "firing") -> Delivery:
    key = AlertKey("payments", resource, 80)
    notification = Notification(f"payments/{resource}/80/{state}", key, state, NOW, utilization, used, hard)  # type: ignore[arg-type]
    return Delivery(notification, "payments", "payments", ("#payments",), NOW)


def test_cpu_used_and_hard_are_in_the_same_unit() -> None:
    text = delivery("requests.cpu", D(4), D("4.8"), D("83.3")).text()
    assert "at 83.3% of its quota (4000m of 4800m), past 80%" in text
    resolved = delivery("limits.cpu", D("0.7"), D(1), D(70), "resolved").text()
    assert "(700m of 1000m)" in resolved


def test_memory_is_in_a_binary_unit_not_bytes() -> None:
    text = delivery("requests.memory", D(2160) * 1024**2, D(2516582400), D(90)).text()
    assert "at 90% of its quota (2160Mi of 2400Mi)" in text


def test_a_percentage_stored_long_is_shown_short() -> None:
    # An outbox written before utilization was rounded may still carry the long form.
    long = D("83.33333333333333333333333333")
    d = delivery("requests.cpu", D(5), D(6), long)
    assert "at 83.3% of its quota" in d.text()
    assert AlertmanagerSink("http://am").alert(d)["annotations"]["utilization"] == "83.3%"
