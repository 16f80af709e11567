"""Rules for routine approvals, pure: parsing, evaluation with its evidence, and the planner's use of them.

The figures compared are the approved recommendation and the history source's daily peaks; each test is
a raise a rule should or should not let through without a person.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.approval_rules import Rule, RulesError, approve_by_rule, parse_rules
from headroom.core.changes import PendingChange, ResourceChange, SettingChange, change_id
from headroom.core.planning import Settings
from headroom.core.quantity import parse_quantity

from tests.unit.test_planning import (
    APPLIED,
    APPROVED_BY,
    APPROVED_CHANGE,
    CPU_PODS,
    NOW,
    governed_rq,
    observed,
    plan,
    project,
    quota_in,
    reasons,
)

D = Decimal
USED = {"requests.cpu": "3", "pods": "11"}


def raise_of(to: str, frm: str = "4", resource: str = "requests.cpu", ns: str = "ns") -> PendingChange:
    return PendingChange("sha256:x", (ResourceChange(ns, resource, parse_quantity(frm), parse_quantity(to)),))


def days(*values: str) -> dict[date, Decimal]:
    """Daily peaks, the last one today."""
    return {NOW.date() - timedelta(days=i): D(v) for i, v in enumerate(reversed(values))}


RULES = parse_rules(
    {
        "rules": [
            {
                "name": "busy-small-steps",
                "projects": ["payments"],
                "resources": ["requests.cpu"],
                "maxStep": {"requests.cpu": "2"},
                "minUtilizationPercent": 35,
                "utilizationDays": 14,
            },
            {"name": "near-recommendation", "projects": ["*"], "maxAboveRecommendationPercent": 20},
        ]
    }
)


def test_a_busy_namespace_gets_a_small_step_with_the_figures_as_evidence() -> None:
    found, _ = approve_by_rule("payments", raise_of("6"), RULES, {}, {("ns", "requests.cpu"): days("1.2", "1.6")}, NOW)
    assert found is not None and found.rule == "busy-small-steps"
    assert found.evidence == (
        "ns requests.cpu: step 2 <= 2",
        "ns requests.cpu: average daily peak over 14 days is 35.0% of the quota >= 35%",
    )


@pytest.mark.parametrize(
    ("pending", "daily", "says"),
    [
        (raise_of("7"), days("2", "2"), "a step of 3 is more than 2"),
        (raise_of("6"), days("1", "1"), "average use 25.0% is below 35%"),
        (raise_of("6"), {}, "no daily peaks over the last 14 days"),
        (raise_of("20", "10", resource="pods"), days("9"), "does not cover pods"),
    ],
)
def test_outside_the_busy_rule(pending: PendingChange, daily: dict[date, Decimal], says: str) -> None:
    found, why_not = approve_by_rule(
        "payments", pending, RULES[:1], {}, {("ns", pending.changes[0].resource): daily}, NOW
    )
    assert found is None
    assert any(says in w for w in why_not), why_not


def test_old_peaks_do_not_count_and_other_projects_are_not_covered() -> None:
    stale = {NOW.date() - timedelta(days=30): D(4)}
    assert approve_by_rule("payments", raise_of("6"), RULES[:1], {}, {("ns", "requests.cpu"): stale}, NOW)[0] is None
    busy = {("ns", "requests.cpu"): days("4")}
    assert approve_by_rule("search", raise_of("6"), RULES[:1], {}, busy, NOW) == (None, [])


def test_the_recommendation_bound_is_exact() -> None:
    recommended = {"ns": {"requests.cpu": D(5)}}
    found, _ = approve_by_rule("search", raise_of("6"), RULES, recommended, {}, NOW)
    assert found is not None and found.evidence == ("ns requests.cpu: 6 <= recommendation 5 + 20% = 6",)
    found, why_not = approve_by_rule("search", raise_of("6001m"), RULES, recommended, {}, NOW)
    assert found is None and "6001m is above the recommendation 5000m + 20%" in why_not[0]


def test_claims_and_loosened_settings_never_go_to_a_rule() -> None:
    pending = PendingChange(
        "sha256:x", raise_of("5").changes, (SettingChange("spec.quota.headroomPercent", "20", "50"),)
    )
    found, why_not = approve_by_rule("payments", pending, RULES, {"ns": {"requests.cpu": D(100)}}, {}, NOW)
    assert found is None and why_not == ["spec.quota.headroomPercent needs sign-off"]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"rules": [{"name": "any", "projects": ["*"], "minUtilizationPercent": 10}]}, "a bound on the size"),
        ({"rules": [{"name": "x", "maxStep": {"pods": "1"}}]}, "projects must list"),
        ({"rules": [{"name": "x", "projects": ["*"], "maxStep": {"pods": "lots"}}]}, "maxStep must map"),
        ({"rules": [{"name": "x", "projects": ["*"], "maxAboveRecommendationPercent": -5}]}, "whole percentage"),
        ({"rules": [{"name": "x", "projects": ["*"], "maxStep": {"pods": "1"}, "team": "a"}]}, "unknown field"),
        (
            {"rules": [{"name": "x", "projects": ["*"], "maxStep": {"pods": "1"}}] * 2},
            "same name",
        ),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(raw: Any, says: str) -> None:
    with pytest.raises(RulesError, match=says):
        parse_rules(raw)


# --------------------------------------------------------------------------------------------- planner


def payments(request: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    return project(quota={"resources": CPU_PODS}, requested={"ns": {"requests.cpu": request}}, **kwargs)


def test_a_rule_approved_raise_is_applied_with_the_rule_and_evidence_everywhere() -> None:
    spec, body = payments("6")
    seen = observed({"ns": governed_rq(used=USED)}, daily={("ns", "requests.cpu"): days("2", "1.5")})
    result = plan(spec, body, seen, Settings(approval_rules=RULES))
    assert quota_in(result).hard["requests.cpu"] == "6"
    record = json.loads(quota_in(result).annotations[APPLIED])
    assert record["approvedBy"] == "rule busy-small-steps"
    assert record["rule"]["rule"] == "busy-small-steps"
    assert "43.8% of the quota >= 35%" in record["rule"]["evidence"][1]
    assert result.status["history"][-1]["rule"] == record["rule"]
    assert reasons(result) == ["ChangeApplied"]
    assert "approved by rule busy-small-steps" in result.events[0].message
    assert "evidence: ns requests.cpu: step 2 <= 2" in result.events[0].message


def test_a_raise_outside_every_rule_waits_and_says_why() -> None:
    spec, body = payments("9")
    seen = observed({"ns": governed_rq(used=USED)}, daily={("ns", "requests.cpu"): days("2")})
    result = plan(spec, body, seen, Settings(approval_rules=RULES))
    assert quota_in(result).hard["requests.cpu"] == "4"
    reason = result.status["pendingChange"]["reason"]
    assert "needs sign-off" in reason and "rule busy-small-steps" in reason and "a step of 5 is more than 2" in reason


def test_a_rule_approved_change_is_used_once() -> None:
    spec, _ = payments("6")
    spec, body = payments("6", status={"history": [{"id": change_id(spec), "approvedBy": "rule busy-small-steps"}]})
    seen = observed({"ns": governed_rq(used=USED)}, daily={("ns", "requests.cpu"): days("2")})
    result = plan(spec, body, seen, Settings(approval_rules=RULES))
    assert quota_in(result).hard["requests.cpu"] == "4"
    assert "pendingChange" in result.status


def test_a_person_still_signs_off_what_no_rule_covers() -> None:
    spec, _ = payments("9")
    spec, body = payments("9", annotations={APPROVED_CHANGE: change_id(spec), APPROVED_BY: "bob"})
    result = plan(spec, body, observed({"ns": governed_rq(used=USED)}), Settings(approval_rules=RULES))
    assert json.loads(quota_in(result).annotations[APPLIED])["approvedBy"] == "bob"


def test_the_built_in_rule_is_the_flag() -> None:
    assert (
        Rule("within-recommendation", max_above_recommendation_percent=D(0))
        == parse_rules(
            {"rules": [{"name": "within-recommendation", "projects": ["*"], "maxAboveRecommendationPercent": 0}]}
        )[0]
    )
