"""The capacity model, pure: exact totals and ratios, and the overcommit budget that holds a raise.

The hold is what a platform notices: a signed-off raise that would promise more than the budget
allows waits, says by how much, keeps its approval, and applies once capacity allows or a platform
approver overrides it for exactly that change. Decreases never wait.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from headroom.core.capacity import (
    CapacityView,
    Override,
    capacity_rows,
    format_ratio,
    governed_totals,
    held,
    node_resource,
    overcommit_ratio,
    override_problem,
    parse_budget,
)
from headroom.core.planning import Settings

from tests.unit.test_planning import (
    APPROVED_BY,
    APPROVED_CHANGE,
    GOV_USED,
    NAME,
    NOW,
    condition,
    counting,
    expected_id,
    governed_project,
    governed_rq,
    observed,
    plan,
    quota_in,
    reasons,
)

D = Decimal
OVERRIDE = "headroom.dev/capacity-override"
OVERRIDE_BY = "headroom.dev/capacity-override-by"
REQUESTED_BY = "headroom.dev/requested-by"
BUDGET = Settings(max_overcommit={"requests.cpu": D("1.5")})
# 10 allocatable cores; every other Project together is promised 6 of them.
VIEW = CapacityView({"cpu": D(10), "memory": D(64 * 2**30), "pods": D(110)}, {"requests.cpu": D(6)})


# --------------------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("resource", "node"),
    [
        ("requests.cpu", "cpu"),
        ("limits.cpu", "cpu"),
        ("cpu", "cpu"),
        ("limits.memory", "memory"),
        ("pods", "pods"),
        ("requests.ephemeral-storage", "ephemeral_storage"),
        ("requests.nvidia.com/gpu", "nvidia_com_gpu"),
        ("services", None),
        ("count/deployments.apps", None),
        ("requests.storage", None),
        ("gold.storageclass.storage.k8s.io/requests.storage", None),
    ],
)
def test_each_quota_resource_draws_on_its_node_resource(resource: str, node: str | None) -> None:
    assert node_resource(resource) == node


def test_totals_and_ratios_are_exact() -> None:
    totals = governed_totals(
        [{"requests.cpu": D("0.1"), "pods": D(10)}, {"requests.cpu": D("0.2")}, {"requests.cpu": D("0.3")}]
    )
    assert totals == {"requests.cpu": D("0.6"), "pods": D(10)}  # 0.1 + 0.2 is 0.3 here, not 0.30000000000000004
    assert overcommit_ratio(D(15), D(10)) == D("1.5")
    assert overcommit_ratio(D("15.001"), D(10)) == D("1.5001")  # compared unrounded: past 1.5
    assert format_ratio(overcommit_ratio(D(16), D(12))) == "1.33"
    assert format_ratio(overcommit_ratio(D("0.6"), D(1))) == "0.60"
    # Unknown or no capacity has no ratio: never a division by zero, never "infinitely overcommitted".
    assert overcommit_ratio(D(5), None) is None
    assert overcommit_ratio(D(5), D(0)) is None
    assert format_ratio(None) == "-"


def test_budget_is_parsed_exactly_and_nonsense_is_refused() -> None:
    assert parse_budget("requests.cpu=1.5, limits.memory=2") == {"requests.cpu": D("1.5"), "limits.memory": D(2)}
    assert parse_budget("") == {}
    for bad, why in [
        ("requests.cpu", "RESOURCE=RATIO"),
        ("requests.cpu=fast", "not a number"),
        ("requests.cpu=0", "above 0"),
        ("requests.cpu=-1", "above 0"),
        ("requests.cpu=inf", "above 0"),
        ("services=2", "not node capacity"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_budget(bad)


def test_capacity_rows_per_scope() -> None:
    rows = capacity_rows(
        {"cluster": {"requests.cpu": D(15), "services": D(4)}, "team payments": {"requests.cpu": D("2.5")}},
        {"cpu": D(10)},
    )
    assert rows == [
        {"scope": "cluster", "resource": "requests.cpu", "governed": "15", "allocatable": "10", "ratio": "1.50"},
        {"scope": "cluster", "resource": "services", "governed": "4", "allocatable": "-", "ratio": "-"},
        {
            "scope": "team payments",
            "resource": "requests.cpu",
            "governed": "2500m",
            "allocatable": "10",
            "ratio": "0.25",
        },
    ]


# --------------------------------------------------------------------------------------------- the hold


def test_a_raise_within_the_budget_applies() -> None:
    # 6 others + 8 here = 14 <= 1.5 x 10.
    assert (
        held(
            "id",
            {"ns": {"requests.cpu": D(8)}},
            {"ns": {"requests.cpu": D(4)}},
            VIEW,
            {"requests.cpu": D("1.5")},
            Override(None),
        )
        is None
    )


def test_a_raise_past_the_budget_is_held_and_says_by_how_much() -> None:
    hold = held(
        "sha256:abc",
        {"ns": {"requests.cpu": D("9.5")}},
        {"ns": {"requests.cpu": D(4)}},
        VIEW,
        {"requests.cpu": D("1.5")},
        Override(None),
    )
    assert hold is not None
    (excess,) = hold.excess
    # 6 + 9.5 = 15.5 cores against 15 allowed: 500m over.
    assert excess.total == D("15.5") and excess.over == D("0.5")
    assert excess.to_status() == {
        "resource": "requests.cpu",
        "total": "15500m",
        "budget": "1.5",
        "allocatable": "10",
        "over": "500m",
    }
    assert "requests.cpu to 15500m, 1.55x the allocatable 10, past the budget 1.5x (15) by 500m" in hold.reason
    assert "headroom.dev/capacity-override=sha256:abc" in hold.reason


def test_moving_quota_between_namespaces_or_lowering_it_is_never_held() -> None:
    over = dataclasses.replace(VIEW, others={"requests.cpu": D(100)})  # already far past the budget
    budget = {"requests.cpu": D("1.5")}
    governed = {"a": {"requests.cpu": D(4)}, "b": {"requests.cpu": D(4)}}
    lower = {"a": {"requests.cpu": D(2)}}
    move = {"a": {"requests.cpu": D(6)}, "b": {"requests.cpu": D(2)}}
    assert held("id", lower, governed, over, budget, Override(None)) is None
    assert held("id", move, governed, over, budget, Override(None)) is None
    # Only budgeted resources are weighed.
    assert held("id", {"a": {"pods": D(1000)}}, governed, over, budget, Override(None)) is None


def test_unknown_capacity_holds_a_budgeted_raise() -> None:
    unknown = CapacityView({}, {}, "Prometheus down")
    hold = held(
        "id",
        {"ns": {"requests.cpu": D(5)}},
        {"ns": {"requests.cpu": D(4)}},
        unknown,
        {"requests.cpu": D(2)},
        Override(None),
    )
    assert hold is not None and hold.unknown
    assert "allocatable cpu is not known" in hold.reason


def test_capacity_that_grows_releases_the_raise() -> None:
    args = ({"ns": {"requests.cpu": D("9.5")}}, {"ns": {"requests.cpu": D(4)}})
    budget = {"requests.cpu": D("1.5")}
    assert held("id", *args, VIEW, budget, Override(None)) is not None
    grown = dataclasses.replace(VIEW, allocatable={"cpu": D(11)})
    assert held("id", *args, grown, budget, Override(None)) is None


@pytest.mark.parametrize(
    ("override", "lets_through"),
    [
        (Override("sha256:abc", "pat", "dana"), True),
        (Override(" sha256:abc ", "pat", "dana"), True),
        (Override("sha256:other", "pat", "dana"), False),  # bound to another change
        (Override("sha256:abc", "dana", "dana"), False),  # four eyes: not the requester
        (Override("sha256:abc", "pat", "dana", frozenset({"sha256:abc"})), False),  # used once
        (Override(None), False),
    ],
)
def test_a_capacity_override_follows_the_sign_off_rules(override: Override, lets_through: bool) -> None:
    assert (override_problem("sha256:abc", override) is None) == lets_through
    hold = held("sha256:abc", {"ns": {"requests.cpu": D(20)}}, {}, VIEW, {"requests.cpu": D(1)}, override)
    assert hold is not None and hold.overridden == lets_through
    assert hold.overridden_by == ("pat" if lets_through else None)


# --------------------------------------------------------------------------------------------- in the plan


def _raise_to(cpu: str, **annotations: str) -> tuple[object, ...]:
    change = expected_id(NAME, {"ns": {"requests.cpu": cpu}})
    spec, body = governed_project(
        {"requests.cpu": cpu},
        annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice", REQUESTED_BY: "dana", **annotations},
    )
    return change, spec, body


def test_a_signed_off_raise_past_the_budget_waits_with_a_condition_and_one_event() -> None:
    change, spec, body = _raise_to("12")
    seen = dataclasses.replace(observed({"ns": governed_rq(used=GOV_USED)}), capacity=VIEW)
    result = plan(spec, body, seen, BUDGET)  # type: ignore[arg-type]

    assert quota_in(result).hard["requests.cpu"] == "4"  # nothing moves
    pending = result.status["pendingChange"]
    assert pending["id"] == change
    assert pending["heldForCapacity"] == [
        {"resource": "requests.cpu", "total": "18", "budget": "1.5", "allocatable": "10", "over": "3"}
    ]
    held_condition = condition(result, "CapacityHeld")
    assert (held_condition["status"], held_condition["reason"]) == ("True", "OverBudget")
    assert "by 3" in held_condition["message"]
    assert condition(result, "ChangePending")["reason"] == "HeldForCapacity"
    assert reasons(result) == ["ChangeHeld"]
    assert result.status["approved"].get("changeId") != change  # the approval is not spent

    # The next pass, with the hold already published, posts no second Event.
    again = plan(spec, {**body, "status": result.status}, seen, BUDGET)  # type: ignore[arg-type,dict-item]
    assert "ChangeHeld" not in reasons(again)
    assert again.status["pendingChange"]["heldForCapacity"] == pending["heldForCapacity"]


def test_the_held_raise_applies_with_a_capacity_override_for_that_change() -> None:
    change, spec, body = _raise_to("12")
    _, spec, body = _raise_to("12", **{OVERRIDE: change, OVERRIDE_BY: "pat"})
    seen = dataclasses.replace(observed({"ns": governed_rq(used=GOV_USED)}), capacity=VIEW)
    result = plan(spec, body, seen, BUDGET)  # type: ignore[arg-type]
    assert quota_in(result).hard["requests.cpu"] == "12"
    assert reasons(result) == ["ChangeApplied"]
    assert condition(result, "CapacityHeld")["status"] == "False"
    # The record of the change names who let it past the budget, and the Event says by how much.
    assert result.status["lastAppliedChange"]["id"] == change
    assert result.status["history"][-1]["capacityOverrideBy"] == "pat"
    assert "capacity override of pat: requests.cpu to 18, 1.80x the allocatable 10" in result.events[0].message


def test_a_decrease_is_never_held_even_past_the_budget() -> None:
    spec, body = governed_project({"requests.cpu": "3"})
    over = dataclasses.replace(VIEW, others={"requests.cpu": D(1000)})
    seen = dataclasses.replace(observed({"ns": governed_rq(used=GOV_USED)}), capacity=over)
    result = plan(spec, body, seen, BUDGET)
    assert quota_in(result).hard["requests.cpu"] == "3"
    assert "pendingChange" not in result.status


def test_a_first_quota_is_never_held() -> None:
    from tests.unit.test_planning import project

    spec, body = project(quota={"resources": ["requests.cpu", "pods"]})
    over = dataclasses.replace(VIEW, others={"requests.cpu": D(1000)})
    seen = dataclasses.replace(
        observed(
            {"ns": counting(used={"requests.cpu": "3", "pods": "2"}, resources=["requests.cpu", "pods"])},
            peaks={("ns", "requests.cpu"): D(5)},
        ),
        capacity=over,
    )
    result = plan(spec, body, seen, BUDGET)
    assert quota_in(result).annotations["headroom.dev/state"] == "governed"
    assert condition(result, "CapacityHeld")["status"] == "False"


def test_without_a_budget_nothing_is_weighed_and_no_condition_is_added() -> None:
    _, spec, body = _raise_to("12")
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))  # type: ignore[arg-type]
    assert quota_in(result).hard["requests.cpu"] == "12"
    assert not [c for c in result.status["conditions"] if c["type"] == "CapacityHeld"]


# --------------------------------------------------------------------------------------------- shell, offline


def test_prometheus_answer_is_read_exactly_and_junk_is_skipped() -> None:
    from headroom.shell.capacity import parse_allocatable

    body = {
        "status": "success",
        "data": {
            "result": [
                {"metric": {"resource": "cpu"}, "value": [1, "23.9"]},
                {"metric": {"resource": "memory"}, "value": [1, "1.34217728e+11"]},
                {"metric": {"resource": "pods"}, "value": [1, "NaN"]},
                {"metric": {}, "value": [1, "3"]},
            ]
        },
    }
    assert parse_allocatable(body) == {"cpu": D("23.9"), "memory": D(134217728000)}


def test_a_budget_needs_prometheus_and_a_sensible_ratio() -> None:
    from headroom.shell.config import ConfigError, build_parser, config_from

    parse = build_parser().parse_args
    config = config_from(parse(["--max-overcommit=requests.cpu=1.5", "--prometheus-url=http://prom:9090"]), {})
    assert config.max_overcommit == {"requests.cpu": D("1.5")}
    with pytest.raises(ConfigError, match="--max-overcommit needs --prometheus-url"):
        config_from(parse(["--max-overcommit=requests.cpu=1.5"]), {})
    with pytest.raises(ConfigError, match=r"--max-overcommit: .*above 0"):
        config_from(parse(["--max-overcommit=requests.cpu=0", "--prometheus-url=http://prom:9090"]), {})


def test_a_hold_is_one_line_of_the_audit_trail() -> None:
    from headroom.core.audit import audit_record

    change, spec, body = _raise_to("12")
    seen = dataclasses.replace(observed({"ns": governed_rq(used=GOV_USED)}), capacity=VIEW)
    result = plan(spec, body, seen, BUDGET)  # type: ignore[arg-type]
    (event,) = result.events
    record = audit_record(NAME, event.type, event.reason, event.message, result.status, {REQUESTED_BY: "dana"}, NOW)
    assert record is not None
    assert (record["action"], record["changeId"], record["requestedBy"]) == ("held-for-capacity", change, "dana")
    assert record["diff"] == [{"namespace": "ns", "resource": "requests.cpu", "from": "4", "to": "12"}]


def test_the_others_total_leaves_out_only_what_the_plan_counts_itself() -> None:
    from headroom.shell.capacity import CapacityReader

    quotas = {
        "ns": governed_rq("ns", {"requests.cpu": "4", "pods": "20"}),  # this Project's, in the plan
        "gone": governed_rq("gone", {"requests.cpu": "3", "pods": "5"}),  # released by it: still in force
        "other": governed_rq("other", {"requests.cpu": "7"}, owner="search"),
        "new": counting("new", owner="search"),  # counting: promises nothing
    }
    view = CapacityReader("http://prometheus:9090", allocatable={"cpu": D(10)}, error=None).view(quotas, NAME, ["ns"])
    assert view.others == {"requests.cpu": D(10), "pods": D(5)}
    assert view.capacity_of("limits.cpu") == D(10) and view.capacity_of("services") is None


def test_what_a_scrape_publishes() -> None:
    from headroom.shell.capacity import capacity_figures

    quotas = [
        governed_rq("a", {"requests.cpu": "1500m", "services": "4"}),
        governed_rq("b", {"requests.cpu": "1500m"}),  # the same text again: parsed once, counted twice
        counting("c"),
    ]
    assert capacity_figures(quotas, {"cpu": D(2)}) == [
        ("requests.cpu", D(3), D(2), D("1.5")),
        ("services", D(4), None, None),
    ]
