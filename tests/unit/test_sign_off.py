"""The sign-off rules, pure: what loosens a Project's terms, who may confirm a claim, when an approval is valid.

Each test is a move a team could make to get more than it was given, and what the planner does with it.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.changes import Approval, Terms, approval_problem, change_id, tighter_terms
from headroom.core.claims import judge_claim
from headroom.core.planning import Observed, Settings
from headroom.core.quantity import GI, parse_quantity

from tests.unit.test_planning import (
    APPROVED_BY,
    APPROVED_CHANGE,
    CPU_PODS,
    GOV_USED,
    NAME,
    counting,
    governed_rq,
    ns_entry,
    observed,
    plan,
    project,
    quota_in,
    reasons,
    rq,
)

D = Decimal
REQUESTED_BY = "headroom.dev/requested-by"
FLOORS = {"requests.cpu": "2", "pods": "10"}


# What one container gets from the built-in LimitRange defaults.
BUILT_IN_CONTAINER = {
    "requests.cpu": D("0.1"),
    "requests.memory": D(128 * 2**20),
    "limits.cpu": D(1),
    "limits.memory": D(512 * 2**20),
}


def terms(**overrides: Any) -> Terms:
    base = Terms(
        ("requests.cpu", "pods"),
        20,
        timedelta(days=30),
        {"requests.cpu": D(2), "pods": D(10)},
        None,
        BUILT_IN_CONTAINER,
    )
    return dataclasses.replace(base, **overrides)


def approved_status(**overrides: Any) -> dict[str, Any]:
    """A status as Headroom leaves it once the Project was governed with floors 2 cpu / 10 pods."""
    record = {"terms": terms(**overrides).to_status(), "namespaces": ["ns"]}
    return {"observedGeneration": 1, "approved": record}


def with_labels(
    seen: Observed, labels: dict[str, str] | None = None, released: frozenset[str] = frozenset()
) -> Observed:
    return dataclasses.replace(seen, namespace_labels=labels or {}, released_by_others=released)


# --------------------------------------------------------------------------------------------- terms


@pytest.mark.parametrize(
    ("asked", "field", "held"),
    [
        (terms(headroom_percent=50), "spec.quota.headroomPercent", {"headroom_percent": 20}),
        (terms(lookback=timedelta(days=90)), "spec.quota.lookback", {"lookback": timedelta(days=30)}),
        (
            terms(minimum={"requests.cpu": D(500), "pods": D(10)}),
            "spec.quota.minimum[requests.cpu]",
            {"minimum": {"requests.cpu": D(2), "pods": D(10)}},
        ),
        (terms(enforcement="Observe"), "spec.quota.enforcement", {"enforcement": None}),
        (terms(resources=("pods",)), "spec.quota.resources", {"resources": ("pods", "requests.cpu")}),
    ],
)
def test_each_loosened_term_is_held_at_the_approved_value(asked: Terms, field: str, held: dict[str, Any]) -> None:
    in_force, loosened = tighter_terms(asked, terms(), "Enforce")
    assert [change.subject for change in loosened] == [field]
    for name, value in held.items():
        assert getattr(in_force, name) == value


def test_tightening_applies_at_once_and_needs_nobody() -> None:
    asked = terms(
        headroom_percent=10,
        lookback=timedelta(days=7),
        minimum={"requests.cpu": D(1), "pods": D(5)},
        enforcement="Enforce",
        resources=("requests.cpu", "pods", "limits.cpu"),
    )
    in_force, loosened = tighter_terms(asked, terms(), "Enforce")
    assert loosened == ()
    assert in_force.headroom_percent == 10 and in_force.lookback == timedelta(days=7)
    assert in_force.minimum["requests.cpu"] == D(1) and in_force.enforcement == "Enforce"


def test_a_floor_left_out_falls_back_to_the_built_in_one_and_that_can_loosen_too() -> None:
    # Removing an explicit floor of 0 pods brings back the built-in 10: more room, so a raise.
    _, loosened = tighter_terms(
        terms(minimum={"requests.cpu": D(2)}), terms(minimum={"requests.cpu": D(2), "pods": D(0)}), "Enforce"
    )
    assert [(c.subject, c.from_text, c.to_text) for c in loosened] == [("spec.quota.minimum[pods]", "0", "10")]


def test_observe_is_a_loosening_only_when_it_lifts_enforcement() -> None:
    # The platform running the operator in observe mode is the platform's decision, not the team's.
    assert tighter_terms(terms(), terms(), "Observe")[1] == ()
    assert [c.subject for c in tighter_terms(terms(), terms(enforcement="Enforce"), "Observe")[1]] == [
        "spec.quota.enforcement"
    ]


def test_terms_round_trip_through_status() -> None:
    original = terms(minimum={"requests.cpu": D("0.5"), "pods": D(10)}, enforcement="Enforce")
    assert Terms.from_status(original.to_status()) == original
    assert Terms.from_status({"lookback": "forever"}) is None
    assert Terms.from_status("garbage") is None


# --------------------------------------------------------------------------------------------- approvals


def test_a_valid_sign_off_names_the_change_and_another_person() -> None:
    assert approval_problem("sha256:a", Approval("sha256:a", "bob", "alice")) is None
    assert approval_problem("sha256:a", Approval("sha256:a")) is None  # GitOps: names are optional


@pytest.mark.parametrize(
    ("approval", "says"),
    [
        (Approval(None), "no approval yet"),
        (Approval("sha256:b", "bob", "alice"), "names a different change"),
        (Approval("sha256:a", "lee", "lee"), "same person (lee)"),
        (Approval("sha256:a", "bob", "alice", frozenset({"sha256:a"})), "used once"),
    ],
)
def test_what_a_sign_off_is_not(approval: Approval, says: str) -> None:
    problem = approval_problem("sha256:a", approval)
    assert problem is not None and says in problem


# --------------------------------------------------------------------------------------------- claims


@pytest.mark.parametrize(
    ("kwargs", "state"),
    [
        ({"label": "payments"}, "confirmed"),
        ({"label": "billing"}, "refused"),
        ({"quota_project": "payments"}, "confirmed"),
        ({"approved_namespaces": ["ns"]}, "confirmed"),
        ({"listed_at_creation": True}, "confirmed"),
        ({"signed_off": True}, "confirmed"),
        ({}, "unconfirmed"),
        ({"quota_project": "billing"}, "unconfirmed"),
    ],
)
def test_judge_claim(kwargs: dict[str, Any], state: str) -> None:
    args: dict[str, Any] = {
        "label": None,
        "quota_project": None,
        "approved_namespaces": (),
        "listed_at_creation": False,
        "protected": frozenset({"kube-system"}),
        "signed_off": False,
    }
    assert judge_claim("payments", "ns", **{**args, **kwargs}).state == state


@pytest.mark.parametrize(
    "how",
    [
        {"listed_at_creation": True},
        {"signed_off": True},
        {"quota_project": "payments"},
        {"approved_namespaces": ["kube-system"]},
    ],
)
def test_a_protected_namespace_needs_the_label_whatever_else(how: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "label": None,
        "quota_project": None,
        "approved_namespaces": (),
        "listed_at_creation": False,
        "protected": frozenset({"kube-system"}),
        "signed_off": False,
    }
    assert judge_claim("payments", "kube-system", **{**args, **how}).state == "refused"
    assert judge_claim("payments", "kube-system", **{**args, **how, "label": "payments"}).state == "confirmed"


# --------------------------------------------------------------------------------------------- planning


def test_a_namespace_added_later_is_not_governed_and_joins_the_pending_change() -> None:
    spec, body = project(
        ("ns", "extra"), quota={"resources": CPU_PODS, "minimum": FLOORS}, status=approved_status(), generation=2
    )
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)}, present={"ns", "extra"})))
    assert ns_entry(result, "extra")["state"] == "Unconfirmed"
    assert [q.namespace for q in result.quotas] == ["ns"]
    pending = result.status["pendingChange"]
    assert pending["loosens"] == [
        {"field": "spec.namespaces[extra]", "from": "not governed by this Project", "to": f"governed by Project {NAME}"}
    ]
    assert pending["id"] == change_id(spec)
    assert result.status["phase"] == "Waiting"


def test_the_platform_label_confirms_a_claim_and_the_bootstrap_uses_the_approved_floor() -> None:
    floors = {"requests.cpu": "500", "pods": "10"}
    spec, body = project(
        ("ns", "extra"), quota={"resources": CPU_PODS, "minimum": floors}, status=approved_status(), generation=2
    )
    fresh = counting("extra", used={"requests.cpu": "0", "pods": "0"}, resources=CPU_PODS)
    seen = observed({"ns": governed_rq(used=GOV_USED), "extra": fresh})
    result = plan(spec, body, with_labels(seen, {"extra": NAME}))
    assert quota_in(result, "extra").hard == {"requests.cpu": "2", "pods": "10"}  # not 500
    assert [c["field"] for c in result.status["pendingChange"]["loosens"]] == ["spec.quota.minimum[requests.cpu]"]
    assert result.status["approved"]["namespaces"] == ["extra", "ns"]


def test_a_signed_off_claim_is_governed_and_the_approval_is_used() -> None:
    spec, body = project(
        ("ns", "extra"), quota={"resources": CPU_PODS, "minimum": FLOORS}, status=approved_status(), generation=2
    )
    change = change_id(spec)
    spec, body = project(
        ("ns", "extra"),
        quota={"resources": CPU_PODS, "minimum": FLOORS},
        status=approved_status(),
        generation=2,
        annotations={APPROVED_CHANGE: change, APPROVED_BY: "bob", REQUESTED_BY: "dana"},
    )
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)}, present={"ns", "extra"})))
    assert quota_in(result, "extra").annotations["headroom.dev/state"] == "counting"
    assert result.status["approved"]["changeId"] == change
    assert "ChangeApplied" in reasons(result)
    # Once used, the same annotation approves nothing more, but the claim stays confirmed.
    again = plan(
        spec,
        {**body, "status": result.status},
        with_labels(observed({"ns": governed_rq(used=GOV_USED)}, present={"ns", "extra"})),
    )
    assert "pendingChange" not in again.status
    assert [q.namespace for q in again.quotas] == ["ns", "extra"]


def test_kube_system_is_refused_and_a_quota_there_is_removed() -> None:
    spec, body = project(
        ("ns", "kube-system"), quota={"resources": CPU_PODS, "minimum": FLOORS}, status=approved_status(), generation=2
    )
    seen = observed({"ns": governed_rq(used=GOV_USED), "kube-system": governed_rq("kube-system", used=GOV_USED)})
    result = plan(spec, body, with_labels(seen))
    assert ns_entry(result, "kube-system")["state"] == "Refused"
    assert [q.namespace for q in result.quotas] == ["ns"]
    assert result.delete_in == ("kube-system",)
    assert "pendingChange" not in result.status  # nothing a reviewer could sign off
    labelled = plan(spec, body, with_labels(seen, {"kube-system": NAME}), settings=Settings())
    assert labelled.delete_in == ()


def test_the_operators_own_namespace_can_be_protected() -> None:
    spec, body = project(("ns", "headroom-system"), quota={"resources": CPU_PODS, "minimum": FLOORS})
    settings = Settings(protected_namespaces=frozenset({"headroom-system"}))
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)})), settings=settings)
    assert ns_entry(result, "headroom-system")["state"] == "Refused"


def test_a_released_namespace_is_taken_over_by_the_project_that_now_governs_it() -> None:
    spec, body = project(("ns",), quota={"resources": CPU_PODS, "minimum": FLOORS})
    theirs = governed_rq(governed={"requests.cpu": "7", "pods": "20"}, used=GOV_USED, owner="billing", owner_uid="x")
    held = plan(spec, body, with_labels(observed({"ns": theirs})))
    assert ns_entry(held)["state"] == "Conflict"
    adopted = plan(spec, body, with_labels(observed({"ns": theirs}), released=frozenset({"ns"})))
    assert quota_in(adopted).hard == {"requests.cpu": "7", "pods": "20"}  # its governed values, not a re-derivation


def test_a_second_request_for_values_applied_before_needs_a_new_change() -> None:
    request = {"ns": {"requests.cpu": "8"}}
    spec, _ = project(quota={"resources": CPU_PODS, "minimum": FLOORS}, requested=request)
    used_once = change_id(spec)
    status = {**approved_status(), "history": [{"id": used_once, "approvedBy": "bob"}]}
    spec, body = project(
        quota={"resources": CPU_PODS, "minimum": FLOORS},
        requested=request,
        status=status,
        generation=5,
        annotations={APPROVED_CHANGE: used_once, APPROVED_BY: "bob"},
    )
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)})))
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert "used once" in result.status["pendingChange"]["reason"]


def test_the_requester_cannot_be_the_approver() -> None:
    request = {"ns": {"requests.cpu": "8"}}
    spec, _ = project(quota={"resources": CPU_PODS, "minimum": FLOORS}, requested=request)
    spec, body = project(
        quota={"resources": CPU_PODS, "minimum": FLOORS},
        requested=request,
        generation=2,
        status=approved_status(),
        annotations={APPROVED_CHANGE: change_id(spec), APPROVED_BY: "lee", REQUESTED_BY: "lee"},
    )
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)})))
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert "same person (lee)" in result.status["pendingChange"]["reason"]


def test_auto_approval_bound_comes_from_the_approved_terms() -> None:
    # With the team's floor of 50 the recommendation would be 50; the approved floor (2) decides.
    request = {"ns": {"requests.cpu": "40"}}
    spec, body = project(
        quota={"resources": CPU_PODS, "minimum": {"requests.cpu": "50", "pods": "10"}},
        requested=request,
        status=approved_status(),
        generation=2,
    )
    auto = Settings(auto_approve_within_recommendation=True)
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)})), settings=auto)
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert "spec.quota.minimum[requests.cpu] needs sign-off" in result.status["pendingChange"]["reason"]


def test_an_edit_before_headroom_recorded_anything_gets_only_the_built_in_terms() -> None:
    # Edited (generation 2) before any status was written: the team's floor of 500 is not approved.
    spec, body = project(quota={"resources": CPU_PODS, "minimum": {"requests.cpu": "500", "pods": "10"}}, generation=2)
    seen = observed({"ns": counting(used={"requests.cpu": "0", "pods": "0"}, resources=CPU_PODS)})
    result = plan(spec, body, with_labels(seen))
    assert quota_in(result).hard == {"requests.cpu": "1", "pods": "10"}  # the built-in floors
    assert "spec.quota.minimum[requests.cpu]" in {c["field"] for c in result.status["pendingChange"]["loosens"]}


# --------------------------------------------------------------------------------------------- floors, defaults


def test_a_resource_without_history_is_reported_as_such() -> None:
    spec, body = project(quota={"resources": ["requests.cpu", "requests.ephemeral-storage"]})
    seen = observed(
        {"ns": counting(used={"requests.cpu": "0", "requests.ephemeral-storage": "0"}, resources=["requests.cpu"])},
        peaks={("ns", "requests.cpu"): D(1)},
    )
    history = next(c for c in plan(spec, body, seen).status["conditions"] if c["type"] == "HistoryAvailable")
    assert (history["status"], history["reason"]) == ("False", "NoHistory")
    assert "ns (requests.ephemeral-storage)" in history["message"]


def test_the_search_sample_enforced_admits_a_pod_that_relies_on_its_defaults() -> None:
    # No history, no minimum for ephemeral storage; the LimitRange gives each container 1Gi of it.
    quota = {
        "resources": ["requests.cpu", "requests.memory", "limits.memory", "requests.ephemeral-storage"],
        "enforcement": "Enforce",
    }
    defaults = {
        "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "1Gi", "ephemeral-storage": "4Gi"},
    }
    spec, body = project(quota=quota, defaults=defaults)
    used = {"requests.cpu": "0", "requests.memory": "52Gi", "limits.memory": "0", "requests.ephemeral-storage": "0"}
    big = {"requests.cpu": "1M", "requests.memory": "1Ei", "limits.memory": "1Ei", "requests.ephemeral-storage": "1Ei"}
    seen = observed({"ns": rq(hard=big, used=used, state="counting")})
    hard = quota_in(plan(spec, body, seen)).hard
    assert parse_quantity(hard["requests.ephemeral-storage"]) >= GI  # at least one default container
    assert hard["limits.memory"] == "52Gi"  # never below requests.memory


def test_raising_the_container_defaults_is_a_raise() -> None:
    spec, body = project(
        quota={"resources": CPU_PODS, "minimum": FLOORS},
        status=approved_status(),
        generation=2,
        defaults={"requests": {"cpu": "500"}, "limits": {"cpu": "500"}},
    )
    result = plan(spec, body, with_labels(observed({"ns": governed_rq(used=GOV_USED)})))
    fields = {c["field"] for c in result.status["pendingChange"]["loosens"]}
    assert {"spec.defaults.requests.cpu", "spec.defaults.limits.cpu"} <= fields
    # The LimitRange keeps the approved defaults meanwhile.
    limitrange = next(lr for lr in result.limitranges if lr.namespace == "ns")
    assert limitrange.default_request["cpu"] == "100m" and limitrange.default["cpu"] == "1"
