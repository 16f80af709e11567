"""One utilization rule: the status, the metric and the alerts read the same figure.

At 7.996 used of 10, the status and the metric said 80 % while the alert policy computed 79.96 % and
the 80 % alert stayed silent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from headroom.core.alert_policy import AlertPolicy, AlertState, Usage, evaluate
from headroom.core.business_hours import parse_business_hours

from tests.unit.test_planning import governed_rq, observed, plan, project

D = Decimal
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC)


def test_status_metric_and_alert_agree_at_80_percent() -> None:
    spec, body = project(quota={"resources": ["requests.cpu", "pods"]})
    seen = observed(
        {"ns": governed_rq(governed={"requests.cpu": "10", "pods": "20"}, used={"requests.cpu": "7996m", "pods": "1"})}
    )
    result = plan(spec, body, seen)
    assert result.utilization[("ns", "requests.cpu")] == D(80)  # what the metric exports
    assert result.status["summary"]["highestUtilization"] == "80% ns/requests.cpu"

    usage = {("ns", "requests.cpu"): Usage(result.used["ns"]["requests.cpu"], result.governed["ns"]["requests.cpu"])}
    hours = parse_business_hours("Mon-Sun 00:00-24:00 UTC")
    _, owed = evaluate(AlertState(), usage, AlertPolicy(thresholds=(80,)), hours, NOON, {"webhook"})
    assert [(n.key.threshold, n.state, n.utilization) for n in owed] == [(80, "firing", D(80))]


def test_alert_conditions_reach_the_status_as_values_not_through_a_shared_list() -> None:
    from headroom.core.alert_policy import alert_conditions
    from headroom.core.planning import with_alerts

    spec, body = project(quota={"resources": ["requests.cpu", "pods"]})
    seen = observed(
        {"ns": governed_rq(governed={"requests.cpu": "10", "pods": "20"}, used={"requests.cpu": "9", "pods": "1"})}
    )
    result = plan(spec, body, seen)
    before = [dict(c) for c in result.status["conditions"]]
    usage = {("ns", "requests.cpu"): Usage(D(9), D(10))}
    hours = parse_business_hours("Mon-Sun 00:00-24:00 UTC")
    state, _ = evaluate(AlertState(), usage, AlertPolicy(thresholds=(80,)), hours, NOON, {"webhook"})
    added = alert_conditions(
        state,
        hours=str(hours),
        hours_problem=None,
        delivery=(True, "Delivered", "ok"),
        previous=[],
        generation=1,
        now=NOON,
    )
    status = with_alerts(result.status, [], added)
    kinds = {c["type"]: c for c in status["conditions"]}
    assert kinds["QuotaNearLimit"]["status"] == "True" and kinds["QuotaNearLimit"]["reason"] == "Above80Percent"
    assert kinds["BusinessHoursValid"]["status"] == "True" and kinds["AlertsDelivered"]["status"] == "True"
    assert {"Ready", "HistoryAvailable", "ChangePending"} <= set(kinds)
    assert result.status["conditions"] == before  # the plan is left as it was: a value, not a shared list
