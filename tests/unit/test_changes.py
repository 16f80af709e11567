import re
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.changes import (
    Approval,
    ChangeDecision,
    ClampedTarget,
    PendingChange,
    ResourceChange,
    append_history,
    change_id,
    decide,
    pending_change,
)
from headroom.core.quantity import GI, MI
from headroom.core.spec import ProjectSpec, SpecError, parse_project

D = Decimal

ID_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")


# --- change_id ---


def project(requested: dict[str, Any] | None = None, name: str = "payments", **quota: Any) -> ProjectSpec:
    namespaces = [{"name": ns, "requested": values} for ns, values in (requested or {"ns": {}}).items()]
    return parse_project(
        {"metadata": {"name": name}, "spec": {"owner": {"team": "t"}, "namespaces": namespaces, "quota": quota}}
    )


def cid(requested: dict[str, Any] | None = None, name: str = "payments", **quota: Any) -> str:
    return change_id(project(requested, name, **quota))


def test_change_id_shape_and_determinism() -> None:
    requested = {"payments": {"requests.cpu": "40", "requests.memory": "64Gi"}}
    first = cid(requested)
    assert ID_PATTERN.fullmatch(first)
    assert cid(requested) == first


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"ns": {"requests.cpu": "1"}}, {"ns": {"requests.cpu": "1000m"}}),
        ({"ns": {"requests.memory": "1Gi"}}, {"ns": {"requests.memory": "1024Mi"}}),
        ({"ns": {"pods": "1e1"}}, {"ns": {"pods": 10}}),
        ({"ns": {"pods": "10", "requests.cpu": "2"}}, {"ns": {"requests.cpu": "2", "pods": "10"}}),
        ({"a": {"pods": "1"}, "b": {"pods": "2"}}, {"b": {"pods": "2"}, "a": {"pods": "1"}}),
    ],
)
def test_equivalent_requests_share_an_id(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert cid(a) == cid(b)


@pytest.mark.parametrize(
    ("project_b", "b"),
    [
        ("payments", {"ns": {"requests.cpu": "2"}}),
        ("payments", {"ns": {"requests.cpu": "1001m"}}),
        ("payments", {"ns": {"limits.cpu": "1"}}),
        ("payments", {"other": {"requests.cpu": "1"}}),
        ("payments", {"ns": {"requests.cpu": "1", "pods": "10"}}),
        # A namespace added to the Project is a claim: a different change, even requesting nothing.
        ("payments", {"ns": {"requests.cpu": "1"}, "more": {}}),
        ("billing", {"ns": {"requests.cpu": "1"}}),
    ],
)
def test_different_requests_or_projects_differ(project_b: str, b: dict[str, Any]) -> None:
    assert cid({"ns": {"requests.cpu": "1"}}) != cid(b, project_b)


@pytest.mark.parametrize(
    "quota",
    [
        {"headroomPercent": 50},
        {"lookback": "90d"},
        {"minimum": {"requests.cpu": "500"}},
        {"enforcement": "Observe"},
        {"resources": ["pods"]},
    ],
)
def test_every_term_that_bounds_the_project_is_part_of_the_id(quota: dict[str, Any]) -> None:
    assert cid({"ns": {"requests.cpu": "1"}}, **quota) != cid({"ns": {"requests.cpu": "1"}})


def test_defaults_written_out_give_the_same_id_and_so_does_the_rest_of_the_spec() -> None:
    explicit = project({"ns": {"requests.cpu": "1"}}, headroomPercent=20, lookback="30d")
    assert change_id(explicit) == cid({"ns": {"requests.cpu": "1"}})
    plain = project({"ns": {"requests.cpu": "1"}})
    relabelled = parse_project(
        {
            "metadata": {"name": "payments"},
            "spec": {
                "owner": {"team": "other", "contacts": ["a@example.com"]},
                "namespaces": [{"name": "ns", "requested": {"requests.cpu": "1"}}],
            },
        }
    )
    assert change_id(relabelled) == change_id(plain)


def test_a_new_reason_makes_a_new_change() -> None:
    base = {
        "metadata": {"name": "payments"},
        "spec": {"owner": {"team": "t"}, "namespaces": [{"name": "ns", "requested": {"pods": "4"}}]},
    }
    again = {**base, "spec": {**base["spec"], "reason": "TICKET-2: the sale again"}}
    assert change_id(parse_project(again)) != change_id(parse_project(base))


def test_change_id_rejects_bad_quantities() -> None:
    with pytest.raises(SpecError, match="40 cores"):
        cid({"ns": {"requests.cpu": "40 cores"}})


# --- ResourceChange / PendingChange ---


@pytest.mark.parametrize(
    ("from_value", "to_value", "is_raise", "is_decrease"),
    [
        (None, D(1), True, False),
        (D(1), D(2), True, False),
        (D(2), D(1), False, True),
        (D(2), D(2), False, False),
    ],
)
def test_resource_change_direction(
    from_value: Decimal | None, to_value: Decimal, is_raise: bool, is_decrease: bool
) -> None:
    change = ResourceChange("ns", "requests.cpu", from_value, to_value)
    assert change.is_raise is is_raise
    assert change.is_decrease is is_decrease


def test_to_status_formats_quantities() -> None:
    assert ResourceChange("ns", "requests.memory", 1000 * MI, 1200 * MI).to_status() == {
        "namespace": "ns",
        "resource": "requests.memory",
        "from": "1000Mi",
        "to": "1200Mi",
    }
    assert ResourceChange("ns", "limits.cpu", None, D("3.96")).to_status() == {
        "namespace": "ns",
        "resource": "limits.cpu",
        "from": None,
        "to": "3960m",
    }


def test_pending_change_diffs_request_against_applied() -> None:
    requested = {
        "web": {"requests.cpu": D(8), "pods": D(20), "requests.memory": 16 * GI},
        "batch": {"requests.cpu": D(1)},
        "idle": {},
    }
    applied = {"web": {"requests.cpu": D(4), "pods": D("20"), "requests.memory": 32 * GI}, "batch": {}}
    pending = pending_change("sha256:x", requested, applied)
    assert pending is not None
    assert pending.id == "sha256:x"
    assert pending.changes == (
        ResourceChange("batch", "requests.cpu", None, D(1)),
        ResourceChange("web", "requests.cpu", D(4), D(8)),
        ResourceChange("web", "requests.memory", 32 * GI, 16 * GI),
    )
    assert pending.raises == pending.changes[:2]
    assert pending.decreases == pending.changes[2:]
    assert not pending.is_pure_decrease


def test_equal_values_are_no_change_whatever_the_spelling() -> None:
    requested = {"web": {"requests.cpu": D("1.000")}}
    assert pending_change("payments", requested, {"web": {"requests.cpu": D(1)}}) is None


@pytest.mark.parametrize("requested", [{}, {"web": {}}])
def test_no_request_is_no_pending_change(requested: dict[str, Any]) -> None:
    assert pending_change("payments", requested, {"web": {"requests.cpu": D(1)}}) is None


def test_pure_decrease() -> None:
    pending = pending_change("p", {"web": {"pods": D(5)}}, {"web": {"pods": D(10)}})
    assert pending is not None
    assert pending.is_pure_decrease
    assert pending.raises == ()


def test_empty_pending_change_is_not_a_pure_decrease() -> None:
    assert not PendingChange("sha256:x", ()).is_pure_decrease


# --- decide ---


def make_pending(requested: dict[str, dict[str, Decimal]], applied: dict[str, dict[str, Decimal]]) -> PendingChange:
    pending = pending_change(cid(requested), requested, applied)
    assert pending is not None
    return pending


RAISE = make_pending({"web": {"requests.cpu": D(8)}}, {"web": {"requests.cpu": D(4)}})
DECREASE = make_pending({"web": {"requests.cpu": D(2), "pods": D(10)}}, {"web": {"requests.cpu": D(4), "pods": D(30)}})
MIXED = make_pending({"web": {"requests.cpu": D(8), "pods": D(10)}}, {"web": {"requests.cpu": D(4), "pods": D(30)}})
USED = {"web": {"requests.cpu": D(3), "pods": D(12)}}


def test_no_pending_change() -> None:
    decision = decide(None, Approval("sha256:whatever"), USED, {}, True)
    assert decision.action == "none"
    assert decision.targets == {}
    assert decision.clamped == ()


def test_pure_decrease_applies_without_sign_off_clamped_at_use() -> None:
    decision = decide(DECREASE, Approval(None), USED, {}, False)
    assert decision.action == "apply"
    assert decision.targets == {"web": {"requests.cpu": D(3), "pods": D(12)}}
    assert decision.clamped == (
        ClampedTarget("web", "pods", requested=D(10), used=D(12)),
        ClampedTarget("web", "requests.cpu", requested=D(2), used=D(3)),
    )
    assert "needs no sign-off" in decision.reason
    assert "web requests.cpu: requested 2 is below current use 3, so it was set to 3" in decision.reason


def test_decrease_above_use_is_not_clamped() -> None:
    decision = decide(DECREASE, Approval(None), {"web": {"requests.cpu": D(1), "pods": D(10)}}, {}, False)
    assert decision.action == "apply"
    assert decision.targets == {"web": {"requests.cpu": D(2), "pods": D(10)}}
    assert decision.clamped == ()


def test_clamped_message_formats_quantities() -> None:
    clamp = ClampedTarget("web", "requests.memory", requested=GI, used=1536 * MI)
    assert clamp.message == "web requests.memory: requested 1024Mi is below current use 1536Mi, so it was set to 1536Mi"


def test_a_change_is_described_in_one_unit() -> None:
    # "from 4800m to 6" made a reviewer compare millicores with cores.
    change = ResourceChange("web", "requests.cpu", D("4.8"), D(6))
    assert change.describe() == "web requests.cpu from 4800m to 6000m"
    assert ResourceChange("web", "limits.memory", 2 * GI, 2560 * MI).describe() == (
        "web limits.memory from 2048Mi to 2560Mi"
    )
    assert ResourceChange("web", "pods", None, D(20)).describe() == "web pods to 20 (currently unlimited)"


@pytest.mark.parametrize("used", [{}, {"web": {"pods": D(1)}}])
def test_decrease_with_unknown_use_waits(used: dict[str, dict[str, Decimal]]) -> None:
    decision = decide(DECREASE, Approval(None), used, {}, False)
    assert decision.action == "wait"
    assert decision.targets == {}
    assert "web requests.cpu" in decision.reason
    assert "current use there is not known" in decision.reason


def test_raise_without_approval_waits() -> None:
    decision = decide(RAISE, Approval(None), USED, {}, False)
    assert decision.action == "wait"
    assert decision.targets == {}
    assert "no approval yet" in decision.reason
    assert RAISE.id in decision.reason
    assert "web requests.cpu from 4 to 8" in decision.reason
    assert f"headroom.dev/approved-change={RAISE.id}" in decision.reason


def test_raise_with_matching_approval_applies() -> None:
    decision = decide(RAISE, Approval(RAISE.id), USED, {}, False)
    assert decision == ChangeDecision("apply", f"change {RAISE.id} is approved", {"web": {"requests.cpu": D(8)}}, ())


def test_approval_with_surrounding_whitespace_still_matches() -> None:
    assert decide(RAISE, Approval(f" {RAISE.id}\n"), USED, {}, False).action == "apply"


def test_stale_approval_waits_and_says_so() -> None:
    stale = cid({"web": {"requests.cpu": D(6)}})
    decision = decide(RAISE, Approval(stale), USED, {}, False)
    assert decision.action == "wait"
    assert decision.targets == {}
    assert f"names a different change ({stale}), so it approves nothing" in decision.reason
    assert f"headroom.dev/approved-change={RAISE.id}" in decision.reason
    assert "no approval yet" not in decision.reason


def test_approval_for_another_project_does_not_carry_over() -> None:
    other = cid({"web": {"requests.cpu": D(8)}}, "billing")
    assert decide(RAISE, Approval(other), USED, {}, False).action == "wait"


@pytest.mark.parametrize(
    ("recommended", "action"),
    [
        ({"web": {"requests.cpu": D(8)}}, "apply"),
        ({"web": {"requests.cpu": D(10)}}, "apply"),
        ({"web": {"requests.cpu": D("7.999")}}, "wait"),
        ({"web": {}}, "wait"),
        ({}, "wait"),
    ],
)
def test_auto_approval_within_recommendation(recommended: dict[str, dict[str, Decimal]], action: str) -> None:
    decision = decide(RAISE, Approval(None), USED, recommended, True)
    assert decision.action == action
    if action == "apply":
        assert "up to the current recommendation" in decision.reason
        assert decision.targets == {"web": {"requests.cpu": D(8)}}
    else:
        assert "not auto-approved because web requests.cpu" in decision.reason


def test_auto_approval_off_ignores_recommendation() -> None:
    assert decide(RAISE, Approval(None), USED, {"web": {"requests.cpu": D(100)}}, False).action == "wait"


def test_auto_approval_explains_which_raise_exceeds() -> None:
    decision = decide(RAISE, Approval(None), USED, {"web": {"requests.cpu": D("7.5")}}, True)
    assert "web requests.cpu 8000m is above the recommendation 7500m" in decision.reason


def test_new_resource_counts_as_a_raise() -> None:
    pending = make_pending({"web": {"count/secrets": D(5)}}, {"web": {}})
    decision = decide(pending, Approval(None), {}, {}, False)
    assert decision.action == "wait"
    assert "web count/secrets to 5 (currently unlimited)" in decision.reason


def test_mixed_change_waits_as_one_unit() -> None:
    decision = decide(MIXED, Approval(None), USED, {}, False)
    assert decision.action == "wait"
    assert decision.targets == {}  # not even the decrease goes ahead alone
    assert "web requests.cpu from 4 to 8" in decision.reason
    assert "pods" not in decision.reason


def test_approved_mixed_change_still_clamps_decreases() -> None:
    decision = decide(MIXED, Approval(MIXED.id), USED, {}, False)
    assert decision.action == "apply"
    assert decision.targets == {"web": {"requests.cpu": D(8), "pods": D(12)}}
    assert decision.clamped == (ClampedTarget("web", "pods", requested=D(10), used=D(12)),)


def test_approved_raise_is_not_raised_further_to_use() -> None:
    # An approval covers the requested value, never more than that.
    pending = make_pending({"web": {"pods": D(11)}}, {"web": {"pods": D(10)}})
    decision = decide(pending, Approval(pending.id), {"web": {"pods": D(15)}}, {}, False)
    assert decision.targets == {"web": {"pods": D(11)}}
    assert decision.clamped == ()


def test_auto_approved_mixed_change_clamps_decreases() -> None:
    decision = decide(MIXED, Approval(None), USED, {"web": {"requests.cpu": D(9), "pods": D(1)}}, True)
    assert decision.action == "apply"
    assert decision.targets == {"web": {"requests.cpu": D(8), "pods": D(12)}}


# --- append_history ---


def entry(identifier: str) -> dict[str, Any]:
    return {"id": identifier, "approvedBy": "alice"}


def test_append_history_appends() -> None:
    history = [entry("a")]
    result = append_history(history, entry("b"))
    assert result == [entry("a"), entry("b")]
    assert history == [entry("a")]  # the input is left alone


def test_append_history_is_idempotent_for_the_last_entry() -> None:
    history = [entry("a"), entry("b")]
    assert append_history(history, entry("b")) == history
    assert append_history(history, entry("b")) is not history


def test_append_history_allows_returning_to_an_earlier_change() -> None:
    assert [e["id"] for e in append_history([entry("a"), entry("b")], entry("a"))] == ["a", "b", "a"]


@pytest.mark.parametrize(("size", "limit", "expected_first"), [(20, 20, "1"), (25, 20, "6"), (3, 2, "2")])
def test_append_history_is_bounded(size: int, limit: int, expected_first: str) -> None:
    history = [entry(str(index)) for index in range(size)]
    result = append_history(history, entry("new"), limit=limit)
    assert len(result) == limit
    assert result[0]["id"] == expected_first
    assert result[-1]["id"] == "new"


def test_append_history_trims_even_when_entry_is_a_repeat() -> None:
    history = [entry(str(index)) for index in range(5)]
    assert [e["id"] for e in append_history(history, entry("4"), limit=2)] == ["3", "4"]


def test_append_history_to_empty() -> None:
    assert append_history([], entry("a")) == [entry("a")]


@pytest.mark.parametrize("limit", [0, -1])
def test_append_history_rejects_bad_limit(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        append_history([], entry("a"), limit=limit)


def test_append_history_requires_an_id() -> None:
    with pytest.raises(ValueError, match="needs an id"):
        append_history([], {"approvedBy": "alice"})
