"""plan_project: what a Project's quotas, LimitRanges and status should be, from what was observed.

Inputs are built the way the operator sees them: Projects through parse_project, ResourceQuotas as
plain dicts as the API server returns them. Expected numbers are derived by hand in each test from
the README's rule: hard = max(roundUp(peak x 1.2), minimum, current use).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.planning import (
    DesiredLimitRange,
    DesiredQuota,
    Observed,
    Plan,
    Settings,
    observe_limitrange,
    observe_quota,
    plan_project,
)
from headroom.core.quantity import GI, MI, parse_quantity
from headroom.core.spec import ProjectSpec, parse_project

D = Decimal
NAME = "payments"
UID = "0f0e0d0c-uid-payments"
NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
NOW_ISO = "2026-03-10T12:00:00Z"
LATER = NOW + timedelta(hours=1)
LATER_ISO = "2026-03-10T13:00:00Z"

STATE = "headroom.dev/state"
GOVERNED_HARD = "headroom.dev/governed-hard"
APPLIED = "headroom.dev/applied-change"
APPROVED_CHANGE = "headroom.dev/approved-change"
APPROVED_BY = "headroom.dev/approved-by"
PROJECT_LABEL = "headroom.dev/project"

ALL = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods")
CPU_PODS = ["requests.cpu", "pods"]


# --------------------------------------------------------------------------------------------- builders


def project(
    namespaces: tuple[str, ...] = ("ns",),
    *,
    requested: Mapping[str, Mapping[str, str]] | None = None,
    quota: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    status: Mapping[str, Any] | None = None,
    generation: int = 1,
) -> tuple[ProjectSpec, dict[str, Any]]:
    """A Project object as the API returns it, and its parsed spec (new, unless `generation` > 1)."""
    entries: list[dict[str, Any]] = []
    for ns in namespaces:
        entry: dict[str, Any] = {"name": ns}
        if requested and ns in requested:
            entry["requested"] = dict(requested[ns])
        entries.append(entry)
    spec: dict[str, Any] = {"owner": {"team": "payments"}, "namespaces": entries}
    if quota is not None:
        spec["quota"] = dict(quota)
    if defaults is not None:
        spec["defaults"] = dict(defaults)
    metadata: dict[str, Any] = {"name": NAME, "uid": UID, "generation": generation}
    if annotations:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "Project",
        "metadata": metadata,
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return parse_project(body), body


def rq(
    namespace: str = "ns",
    *,
    hard: Mapping[str, str],
    used: Mapping[str, str] | None = None,
    state: str | None = None,
    governed: Mapping[str, str] | None = None,
    applied: Mapping[str, Any] | None = None,
    owner: str = NAME,
    owner_uid: str = UID,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ResourceQuota as the API server returns it (status only once the quota controller reported)."""
    notes: dict[str, str] = dict(annotations or {})
    if state is not None:
        notes[STATE] = state
    # Written the way Headroom writes them: compact JSON with sorted keys.
    if governed is not None:
        notes[GOVERNED_HARD] = json.dumps(governed, sort_keys=True, separators=(",", ":"))
    if applied is not None:
        notes[APPLIED] = json.dumps(applied, sort_keys=True, separators=(",", ":"))
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": "headroom",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "headroom", PROJECT_LABEL: owner},
            "annotations": notes,
            "ownerReferences": [
                {
                    "apiVersion": "headroom.dev/v1alpha1",
                    "kind": "Project",
                    "name": owner,
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {"hard": dict(hard)},
    }
    if used is not None:
        obj["status"] = {"hard": dict(hard), "used": dict(used)}
    return obj


HUGE = {"requests.cpu": "1M", "requests.memory": "1Ei", "limits.cpu": "1M", "limits.memory": "1Ei", "pods": "1M"}


def counting(
    namespace: str = "ns",
    used: Mapping[str, str] | None = None,
    resources: tuple[str, ...] | list[str] = ALL,
    **kwargs: Any,
) -> dict[str, Any]:
    return rq(namespace, hard={r: HUGE[r] for r in resources}, used=used, state="counting", **kwargs)


def governed_rq(
    namespace: str = "ns",
    governed: Mapping[str, str] | None = None,
    used: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    values = dict(governed or {"requests.cpu": "4", "pods": "20"})
    return rq(namespace, hard=values, used=used, state="governed", governed=values, **kwargs)


def observed(
    quotas: Mapping[str, dict[str, Any]] | None = None,
    *,
    present: set[str] | None = None,
    peaks: Mapping[tuple[str, str], Decimal] | None = None,
    history_error: str | None = None,
    partial: bool = False,
    claimed: Mapping[str, str] | None = None,
    extra: Mapping[str, Mapping[str, str]] | None = None,
    daily: Mapping[tuple[str, str], Mapping[date, Decimal]] | None = None,
) -> Observed:
    quotas = quotas or {}
    return Observed(
        project_uid=UID,
        namespaces_present=frozenset(present if present is not None else {"ns", *quotas}),
        quotas={ns: observe_quota(obj) for ns, obj in quotas.items()},
        limitranges={},
        claimed_by_others=dict(claimed or {}),
        peaks=dict(peaks or {}),
        history_error=history_error,
        history_partial=partial,
        extra_annotations=dict(extra or {}),
        daily=dict(daily or {}),
    )


def plan(
    spec: ProjectSpec, body: dict[str, Any], seen: Observed, settings: Settings | None = None, now: datetime = NOW
) -> Plan:
    return plan_project(spec, body, seen, settings or Settings(), now)


def quota_in(result: Plan, namespace: str = "ns") -> DesiredQuota:
    found = [q for q in result.quotas if q.namespace == namespace]
    assert len(found) == 1, f"expected one desired quota in {namespace}, got {result.quotas}"
    return found[0]


def ns_entry(result: Plan, namespace: str = "ns") -> dict[str, Any]:
    return next(e for e in result.status["namespaces"] if e["name"] == namespace)


def condition(result: Plan, kind: str) -> dict[str, Any]:
    found = [c for c in result.status["conditions"] if c["type"] == kind]
    assert len(found) == 1, f"expected one {kind} condition, got {result.status['conditions']}"
    return found[0]


def reasons(result: Plan) -> list[str]:
    return [event.reason for event in result.events]


def governed_annotation(quota: DesiredQuota) -> dict[str, Decimal]:
    return {r: parse_quantity(v) for r, v in json.loads(quota.annotations[GOVERNED_HARD]).items()}


def values(text: Mapping[str, str]) -> dict[str, Decimal]:
    return {r: parse_quantity(v) for r, v in text.items()}


def expected_id(
    project_name: str,
    request: Mapping[str, Mapping[str, str]],
    namespaces: tuple[str, ...] = ("ns",),
    resources: list[str] = CPU_PODS,
) -> str:
    """The README's definition, computed independently: sha256 of the Project's terms and request."""
    terms = {
        "project": project_name,
        "namespaces": {ns: dict(request.get(ns, {})) for ns in namespaces},
        "resources": sorted(resources),
        "headroomPercent": 20,
        "lookback": 30 * 86400,
        "minimum": {},
        "enforcement": "",
        "reason": "",
        "defaults": {"requests": {}, "limits": {}},
    }
    body = json.dumps(terms, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def assert_huge(hard: Mapping[str, str]) -> None:
    """Counting values: far above any real namespace (a million cores, a PiB, a million pods)."""
    for resource, text in hard.items():
        value = parse_quantity(text)
        if resource.endswith("memory"):
            assert value >= 1024**5, (resource, text)
        else:
            assert value >= 10**5, (resource, text)


# A namespace that has run for a while: peaks and what it uses right now.
PEAKS = {
    ("ns", "requests.cpu"): D("3.3"),  # x1.2 = 3.96 exactly -> 3960m
    ("ns", "requests.memory"): 1001 * MI,  # x1.2 = 1201.2Mi -> rounds UP to 1202Mi (above the 1Gi floor)
    ("ns", "limits.cpu"): D("1.01"),  # x1.2 = 1.212 -> the 2-core floor, but requests.cpu is 3960m -> 3960m
    ("ns", "limits.memory"): 3 * GI,  # x1.2 = 3686.4Mi -> 3687Mi, but 4Gi is in use -> 4Gi
    ("ns", "pods"): D(9),  # x1.2 = 10.8 -> rounds UP to 11 (above the 10-pod floor)
}
USED = {"requests.cpu": "2", "requests.memory": "900Mi", "limits.cpu": "1500m", "limits.memory": "4Gi", "pods": "5"}
DERIVED = {
    "requests.cpu": D("3.96"),
    "requests.memory": 1202 * MI,
    "limits.cpu": D("3.96"),
    "limits.memory": 4 * GI,
    "pods": D(11),
}


# --------------------------------------------------------------------------------------------- bootstrap


def test_new_namespace_gets_a_counting_quota_and_no_governed_values() -> None:
    spec, body = project()
    result = plan(spec, body, observed())

    quota = quota_in(result)
    assert set(quota.hard) == set(ALL)
    assert_huge(quota.hard)
    assert quota.annotations[STATE] == "counting"
    assert GOVERNED_HARD not in quota.annotations
    assert result.governed == {}
    assert ns_entry(result)["state"] == "Counting"
    assert "hard" not in ns_entry(result)
    assert result.status["phase"] == "Waiting"
    ready = condition(result, "Ready")
    assert ready["status"] == "False"
    assert "current use" in ready["message"]
    assert result.events == ()


def test_counting_quota_is_left_alone_while_use_is_not_reported() -> None:
    spec, body = project()
    seen = observed({"ns": counting()}, peaks=PEAKS)
    result = plan(spec, body, seen)
    quota = quota_in(result)
    assert quota.annotations[STATE] == "counting"
    assert result.governed == {}
    # Same values as the quota already holds (text differs, amounts do not): nothing to write.
    assert quota.matches(seen.quotas["ns"], NAME, UID)


def test_counting_stays_until_every_resource_is_counted() -> None:
    spec, body = project()
    partly = {r: v for r, v in USED.items() if r != "pods"}  # the quota controller has not counted pods yet
    result = plan(spec, body, observed({"ns": counting(used=partly)}, peaks=PEAKS))
    assert result.governed == {}
    assert quota_in(result).annotations[STATE] == "counting"


def test_counting_with_use_and_history_becomes_governed_peak_plus_20_percent() -> None:
    spec, body = project()
    result = plan(spec, body, observed({"ns": counting(used=USED)}, peaks=PEAKS))

    assert result.governed == {"ns": DERIVED}
    quota = quota_in(result)
    assert quota.hard == {
        "limits.cpu": "3960m",
        "limits.memory": "4Gi",
        "pods": "11",
        "requests.cpu": "3960m",
        "requests.memory": "1202Mi",
    }
    assert quota.annotations[STATE] == "governed"
    assert governed_annotation(quota) == DERIVED
    entry = ns_entry(result)
    assert entry["state"] == "Governed"
    assert entry["enforced"] is True
    assert values(entry["hard"]) == DERIVED
    assert values(entry["used"]) == values(USED)
    assert entry["reasons"] == {
        "limits.cpu": "at least requests.cpu",
        "limits.memory": "current use",
        "pods": "peak+20%",
        "requests.cpu": "peak+20%",
        "requests.memory": "peak+20%",
    }
    assert result.status["phase"] == "Ready"
    assert condition(result, "Ready")["status"] == "True"
    history = condition(result, "HistoryAvailable")
    assert (history["status"], history["reason"]) == ("True", "HistoryFound")
    assert result.status["observedGeneration"] == 1
    # The bootstrap needs no sign-off and is not a change.
    assert "pendingChange" not in result.status
    assert result.events == ()


def test_project_minimum_beats_a_small_peak() -> None:
    spec, body = project(quota={"resources": CPU_PODS, "minimum": {"requests.cpu": "5", "pods": "4"}})
    peaks = {("ns", "requests.cpu"): D("0.5"), ("ns", "pods"): D(10)}  # 600m < 5 cores; 12 pods > 4
    used = {"requests.cpu": "250m", "pods": "3"}
    result = plan(spec, body, observed({"ns": counting(used=used, resources=CPU_PODS)}, peaks=peaks))
    assert result.governed == {"ns": {"requests.cpu": D(5), "pods": D(12)}}


def test_headroom_percent_from_the_spec() -> None:
    spec, body = project(quota={"resources": ["requests.cpu"], "headroomPercent": 50})
    # 2.001 cores x 1.5 = 3.0015 -> rounded up to a whole millicore: 3002m
    result = plan(
        spec,
        body,
        observed(
            {"ns": counting(used={"requests.cpu": "1"}, resources=["requests.cpu"])},
            peaks={("ns", "requests.cpu"): D("2.001")},
        ),
    )
    assert quota_in(result).hard == {"requests.cpu": "3002m"}


def test_no_history_at_all_uses_the_floor_or_current_use() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    used = {"requests.cpu": "1500m", "pods": "3"}  # 1.5 cores above the 1-core floor; 3 pods below 10
    result = plan(spec, body, observed({"ns": counting(used=used, resources=CPU_PODS)}))
    assert result.governed == {"ns": {"requests.cpu": D("1.5"), "pods": D(10)}}
    history = condition(result, "HistoryAvailable")
    assert (history["status"], history["reason"]) == ("False", "NoHistory")
    assert "ns" in history["message"]


@pytest.mark.parametrize(
    ("error", "partial", "reason"),
    [
        ("connection refused", False, "HistoryUnavailable"),
        (None, True, "HistoryPartial"),
    ],
)
def test_counting_with_failed_history_never_guesses_a_small_quota(
    error: str | None, partial: bool, reason: str
) -> None:
    spec, body = project()
    # A partial answer may still hold a (misleadingly low) peak: it must not be used for a first quota.
    seen = observed(
        {"ns": counting(used=USED)}, peaks={("ns", "requests.cpu"): D("0.1")}, history_error=error, partial=partial
    )
    result = plan(spec, body, seen)

    assert result.governed == {}
    quota = quota_in(result)
    assert quota.annotations[STATE] == "counting"
    assert_huge(quota.hard)
    assert quota.matches(seen.quotas["ns"], NAME, UID)
    history = condition(result, "HistoryAvailable")
    assert (history["status"], history["reason"]) == ("False", reason)
    if error:
        assert error in history["message"]
    assert result.status["phase"] == "Waiting"


def test_governed_quota_is_kept_when_history_fails() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    seen = observed({"ns": governed_rq(used={"requests.cpu": "1", "pods": "2"})}, history_error="timeout")
    result = plan(spec, body, seen)
    assert result.governed == {"ns": {"requests.cpu": D(4), "pods": D(20)}}
    assert quota_in(result).hard == {"pods": "20", "requests.cpu": "4"}
    assert condition(result, "HistoryAvailable")["reason"] == "HistoryUnavailable"


def test_governed_values_do_not_follow_a_new_recommendation() -> None:
    """After the bootstrap the governed values change only through a change request."""
    spec, body = project(quota={"resources": CPU_PODS})
    seen = observed(
        {"ns": governed_rq(used={"requests.cpu": "3", "pods": "11"})},
        peaks={("ns", "requests.cpu"): D(10), ("ns", "pods"): D(50)},
    )
    result = plan(spec, body, seen)
    assert result.governed == {"ns": {"requests.cpu": D(4), "pods": D(20)}}
    # ...but the recommendation is published next to it: 10 x 1.2 = 12 cores, 50 x 1.2 = 60 pods.
    assert values(ns_entry(result)["recommended"]) == {"requests.cpu": D(12), "pods": D(60)}
    assert result.events == ()


# --------------------------------------------------------------------------------------------- Observe mode


@pytest.mark.parametrize(
    ("settings", "quota"),
    [
        (Settings(default_enforcement="Observe"), {}),
        (Settings(default_enforcement="Enforce"), {"enforcement": "Observe"}),
    ],
)
def test_observe_mode_writes_nothing_and_publishes_what_it_would_apply(
    settings: Settings, quota: dict[str, Any]
) -> None:
    spec, body = project(quota=quota or None)
    result = plan(spec, body, observed(present={"ns"}, peaks=PEAKS), settings)

    # No quota, no LimitRange: nothing that changes admission or what pods get.
    assert result.quotas == () and result.limitranges == () and result.delete_in == ()
    entry = ns_entry(result)
    assert entry["state"] == "Observed"
    would = entry["wouldApply"]
    assert values(would["hard"]) == {**DERIVED, "limits.memory": 3687 * MI}  # no use known: peak+20% only
    assert would["limitRange"] == {
        "default": {"cpu": "1", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
    }
    assert result.status["phase"] == "Observing"
    assert condition(result, "Ready")["reason"] == "Observing"
    assert result.status["summary"]["enforcement"] == "Observe"
    assert result.utilization == {}


def test_switching_to_observe_removes_headroom_objects_and_keeps_the_enforced_values_for_later() -> None:
    spec, body = project(quota={"resources": CPU_PODS, "enforcement": "Observe"})
    result = plan(
        spec,
        body,
        observed(
            {"ns": governed_rq(governed={"requests.cpu": "40", "pods": "20"}, used={"requests.cpu": "3", "pods": "11"})}
        ),
    )
    assert result.quotas == () and result.delete_in == ("ns",)
    assert values(ns_entry(result)["hard"]) == {"requests.cpu": D(40), "pods": D(20)}

    # Back to Enforce: counted again, then the values enforced before hold (40 cpu was signed off once).
    spec, body = project(quota={"resources": CPU_PODS, "enforcement": "Enforce"}, status=result.status)
    back = plan(spec, body, observed({"ns": counting(used={"requests.cpu": "3", "pods": "25"}, resources=CPU_PODS)}))
    assert values(quota_in(back).hard) == {"requests.cpu": D(40), "pods": D(25)}  # never below use


def test_spec_enforce_overrides_an_observing_operator() -> None:
    spec, body = project(quota={"enforcement": "Enforce"})
    result = plan(
        spec, body, observed({"ns": counting(used=USED)}, peaks=PEAKS), Settings(default_enforcement="Observe")
    )
    assert values(quota_in(result).hard) == DERIVED
    assert result.status["phase"] == "Ready"


# --------------------------------------------------------------------------------------------- changes

GOV_USED = {"requests.cpu": "3", "pods": "11"}


def governed_project(
    request: Mapping[str, str] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    status: Mapping[str, Any] | None = None,
) -> tuple[ProjectSpec, dict[str, Any]]:
    return project(
        quota={"resources": CPU_PODS},
        requested={"ns": request} if request else None,
        annotations=annotations,
        status=status,
    )


def test_raise_without_approval_waits_and_publishes_the_pending_change() -> None:
    spec, body = governed_project({"requests.cpu": "8"})
    change = expected_id(NAME, {"ns": {"requests.cpu": "8"}})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))

    assert quota_in(result).hard == {"pods": "20", "requests.cpu": "4"}
    assert result.governed["ns"]["requests.cpu"] == D(4)
    pending = result.status["pendingChange"]
    assert pending["id"] == change
    # The short form `kubectl get projects` shows: 19 characters, not 71.
    assert pending["shortId"] == change[:19] and len(pending["shortId"]) == 19
    assert pending["since"] == NOW_ISO
    assert pending["diff"] == [{"namespace": "ns", "resource": "requests.cpu", "from": "4", "to": "8"}]
    assert "sign-off" in pending["reason"]
    assert change in pending["reason"]
    assert reasons(result) == ["ChangePending"]
    assert result.status["phase"] == "Pending"
    cond = condition(result, "ChangePending")
    assert (cond["status"], cond["reason"]) == ("True", "AwaitingSignOff")
    assert "lastAppliedChange" not in result.status


def test_the_same_pending_change_is_announced_once_and_keeps_its_since() -> None:
    spec, body = governed_project({"requests.cpu": "8"})
    seen = observed({"ns": governed_rq(used=GOV_USED)})
    first = plan(spec, body, seen)
    spec, body = governed_project({"requests.cpu": "8"}, status=first.status)
    second = plan(spec, body, seen, now=LATER)

    assert second.events == ()
    assert second.status["pendingChange"]["since"] == NOW_ISO
    assert condition(second, "ChangePending")["lastTransitionTime"] == NOW_ISO


def test_a_new_request_replaces_the_pending_change_and_is_announced() -> None:
    spec, body = governed_project({"requests.cpu": "8"})
    seen = observed({"ns": governed_rq(used=GOV_USED)})
    first = plan(spec, body, seen)
    spec, body = governed_project({"requests.cpu": "9"}, status=first.status)
    second = plan(spec, body, seen, now=LATER)

    assert second.status["pendingChange"]["id"] == expected_id(NAME, {"ns": {"requests.cpu": "9"}})
    assert second.status["pendingChange"]["since"] == LATER_ISO
    assert reasons(second) == ["ChangePending"]


def test_equal_quantities_in_other_units_give_the_same_change_id() -> None:
    spec, body = governed_project({"requests.cpu": "8000m"})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))
    assert result.status["pendingChange"]["id"] == expected_id(NAME, {"ns": {"requests.cpu": "8"}})


def test_approved_raise_is_applied_and_recorded() -> None:
    change = expected_id(NAME, {"ns": {"requests.cpu": "8"}})
    spec, body = governed_project({"requests.cpu": "8"}, annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice"})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))

    quota = quota_in(result)
    assert quota.hard == {"pods": "20", "requests.cpu": "8"}
    assert governed_annotation(quota) == {"requests.cpu": D(8), "pods": D(20)}
    record = {
        "id": change,
        "approvedBy": "alice",
        "appliedAt": NOW_ISO,
        "diff": [{"namespace": "ns", "resource": "requests.cpu", "from": "4", "to": "8"}],
    }
    assert json.loads(quota.annotations[APPLIED]) == record
    assert reasons(result) == ["ChangeApplied"]
    assert change in result.events[0].message
    assert "alice" in result.events[0].message
    assert result.status["lastAppliedChange"] == {"id": change, "approvedBy": "alice", "appliedAt": NOW_ISO}
    assert result.status["history"] == [record]
    assert "pendingChange" not in result.status
    assert condition(result, "ChangePending")["status"] == "False"
    assert result.status["phase"] == "Ready"
    # 3 of 8 cores in use now.
    assert result.utilization[("ns", "requests.cpu")] == D("37.5")


def test_approved_change_only_touches_the_namespaces_it_changes() -> None:
    change = expected_id(NAME, {"a": {"requests.cpu": "8"}}, namespaces=("a", "b"))
    spec, body = project(
        ("a", "b"),
        quota={"resources": CPU_PODS},
        requested={"a": {"requests.cpu": "8"}},
        annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice"},
    )
    seen = observed({"a": governed_rq("a", used=GOV_USED), "b": governed_rq("b", used=GOV_USED)})
    result = plan(spec, body, seen)
    assert quota_in(result, "a").hard["requests.cpu"] == "8"
    assert APPLIED in quota_in(result, "a").annotations
    assert quota_in(result, "b").hard["requests.cpu"] == "4"
    assert APPLIED not in quota_in(result, "b").annotations
    assert quota_in(result, "b").matches(seen.quotas["b"], NAME, UID)


def test_applied_record_on_the_quota_recovers_a_lost_status_write() -> None:
    """Crash after the quota write, before the status write: the next pass records it, once."""
    change = expected_id(NAME, {"ns": {"requests.cpu": "8"}})
    record = {
        "id": change,
        "approvedBy": "alice",
        "appliedAt": "2026-03-10T11:59:00Z",
        "diff": [{"namespace": "ns", "resource": "requests.cpu", "from": "4", "to": "8"}],
    }
    quota = governed_rq(governed={"requests.cpu": "8", "pods": "20"}, used=GOV_USED, applied=record)
    spec, body = governed_project(
        {"requests.cpu": "8"}, annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice"}, status={"phase": "Pending"}
    )
    seen = observed({"ns": quota})
    result = plan(spec, body, seen)

    # The Event was lost with the status write; it is posted now, once.
    assert reasons(result) == ["ChangeApplied"]
    assert result.status["history"] == [record]
    assert result.status["lastAppliedChange"] == {
        "id": change,
        "approvedBy": "alice",
        "appliedAt": "2026-03-10T11:59:00Z",
    }
    assert "pendingChange" not in result.status
    # The quota already says so: nothing to write there.
    assert quota_in(result).matches(seen.quotas["ns"], NAME, UID)

    # Once the status holds it, another pass adds no second entry.
    older = {"id": "sha256:" + "0" * 64, "approvedBy": "bob", "appliedAt": "2026-03-01T00:00:00Z", "diff": []}
    spec, body = governed_project(
        {"requests.cpu": "8"},
        annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice"},
        status={**result.status, "history": [older, record]},
    )
    again = plan(spec, body, seen, now=LATER)
    assert again.events == ()
    assert again.status["history"] == [older, record]


def test_stale_approval_approves_nothing() -> None:
    stale = expected_id(NAME, {"ns": {"requests.cpu": "6"}})
    current = expected_id(NAME, {"ns": {"requests.cpu": "8"}})
    spec, body = governed_project({"requests.cpu": "8"}, annotations={APPROVED_CHANGE: stale, APPROVED_BY: "alice"})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))

    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert quota_in(result).hard["requests.cpu"] == "4"
    pending = result.status["pendingChange"]
    assert pending["id"] == current
    assert "different change" in pending["reason"]
    assert stale in pending["reason"]
    assert reasons(result) == ["ChangePending"]


def test_approval_of_another_project_does_not_carry_over() -> None:
    other = expected_id("billing", {"ns": {"requests.cpu": "8"}})
    spec, body = governed_project({"requests.cpu": "8"}, annotations={APPROVED_CHANGE: other})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert result.status["pendingChange"]["id"] != other


def test_pure_decrease_applies_without_sign_off_but_not_below_use() -> None:
    spec, body = governed_project({"requests.cpu": "2"})  # 3 cores are in use
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))

    assert result.governed["ns"]["requests.cpu"] == D(3)
    assert quota_in(result).hard["requests.cpu"] == "3"
    assert reasons(result) == ["ChangeApplied", "DecreaseClamped"]
    assert result.events[1].type == "Warning"
    assert "below current use 3" in result.events[1].message
    record = json.loads(quota_in(result).annotations[APPLIED])
    assert record["approvedBy"] == "no sign-off needed (decrease)"
    assert record["diff"] == [{"namespace": "ns", "resource": "requests.cpu", "from": "4", "to": "2"}]


def test_clamped_decrease_stays_visible_as_pending_without_new_events() -> None:
    spec, body = governed_project({"requests.cpu": "2"})
    first = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))
    # The next pass sees the quota at 3 cores (use is still 3).
    applied = json.loads(quota_in(first).annotations[APPLIED])
    seen = observed({"ns": governed_rq(governed={"requests.cpu": "3", "pods": "20"}, used=GOV_USED, applied=applied)})
    spec, body = governed_project({"requests.cpu": "2"}, status=first.status)
    second = plan(spec, body, seen, now=LATER)

    assert second.events == ()
    assert second.governed["ns"]["requests.cpu"] == D(3)
    assert "below current use" in second.status["pendingChange"]["reason"]
    cond = condition(second, "ChangePending")
    assert (cond["status"], cond["reason"]) == ("True", "Clamped")


def test_decrease_above_use_is_applied_exactly() -> None:
    spec, body = governed_project({"requests.cpu": "3500m"})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))
    assert quota_in(result).hard["requests.cpu"] == "3500m"
    assert reasons(result) == ["ChangeApplied"]


def test_decrease_waits_while_use_is_unknown() -> None:
    spec, body = governed_project({"requests.cpu": "2"})
    result = plan(spec, body, observed({"ns": governed_rq(used=None)}))
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert "not known" in result.status["pendingChange"]["reason"]


@pytest.mark.parametrize(("request_cpu", "applied"), [("6", True), ("5", True), ("6001m", False)])
def test_auto_approval_up_to_the_recommendation(request_cpu: str, applied: bool) -> None:
    # Peak 5 cores -> recommendation 6 cores.
    spec, body = governed_project({"requests.cpu": request_cpu})
    seen = observed({"ns": governed_rq(used=GOV_USED)}, peaks={("ns", "requests.cpu"): D(5), ("ns", "pods"): D(1)})
    result = plan(spec, body, seen, Settings(auto_approve_within_recommendation=True))
    target = parse_quantity(request_cpu)
    if applied:
        assert result.governed["ns"]["requests.cpu"] == target
        record = json.loads(quota_in(result).annotations[APPLIED])
        assert record["approvedBy"] == "rule within-recommendation"
        assert record["rule"]["evidence"] == [f"ns requests.cpu: {request_cpu} <= recommendation 6 + 0% = 6"]
        assert reasons(result) == ["ChangeApplied"]
    else:
        assert result.governed["ns"]["requests.cpu"] == D(4)
        assert "not auto-approved" in result.status["pendingChange"]["reason"]
        assert reasons(result) == ["ChangePending"]


def test_without_auto_approval_a_raise_within_recommendation_waits() -> None:
    spec, body = governed_project({"requests.cpu": "6"})
    seen = observed({"ns": governed_rq(used=GOV_USED)}, peaks={("ns", "requests.cpu"): D(5), ("ns", "pods"): D(1)})
    result = plan(spec, body, seen)
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert "pendingChange" in result.status


def test_request_for_a_namespace_not_governed_yet_waits_under_the_full_id() -> None:
    change = expected_id(NAME, {"ns": {"requests.cpu": "8"}})
    # Even an approval of exactly this change waits: the namespace has no governed quota yet.
    spec, body = project(
        quota={"resources": CPU_PODS},
        requested={"ns": {"requests.cpu": "8"}},
        annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice"},
    )
    result = plan(spec, body, observed({"ns": counting(resources=CPU_PODS)}))
    assert result.governed == {}
    assert quota_in(result).annotations[STATE] == "counting"
    pending = result.status["pendingChange"]
    assert pending["id"] == change
    assert pending["diff"] == [{"namespace": "ns", "resource": "requests.cpu", "from": None, "to": "8"}]
    assert "ns" in pending["reason"]
    assert "ChangeApplied" not in reasons(result)
    blocked = condition(result, "ChangeBlocked")
    assert blocked["status"] == "True"
    assert "ns" in blocked["message"]


def test_change_id_covers_the_whole_request_while_a_namespace_is_missing() -> None:
    """The published id equals `headroom change-id` (the whole request), and nothing is applied in part."""
    request = {"ns": {"requests.cpu": "8"}, "later": {"pods": "30"}}
    change = expected_id(NAME, request, namespaces=("ns", "later"))
    spec, body = project(
        ("ns", "later"),
        quota={"resources": CPU_PODS},
        requested=request,
        annotations={APPROVED_CHANGE: change, APPROVED_BY: "alice"},
    )
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}, present={"ns"}))
    assert result.status["pendingChange"]["id"] == change
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert quota_in(result).hard["requests.cpu"] == "4"
    assert "later" in condition(result, "ChangeBlocked")["message"]


# --------------------------------------------------------------------------------------------- namespaces


def test_missing_namespace_waits_with_a_message() -> None:
    spec, body = project(("ns", "later"), quota={"resources": CPU_PODS})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}, present={"ns"}))

    assert ns_entry(result, "later")["state"] == "Missing"
    assert [q.namespace for q in result.quotas] == ["ns"]
    assert [lr.namespace for lr in result.limitranges] == ["ns"]
    assert result.status["phase"] == "Waiting"
    ready = condition(result, "Ready")
    assert ready["status"] == "False"
    assert "later" in ready["message"]
    assert "does not exist" in ready["message"]


def test_namespace_claimed_by_an_older_project_is_a_conflict() -> None:
    spec, body = project(("ns", "shared"), quota={"resources": CPU_PODS})
    result = plan(
        spec,
        body,
        observed({"ns": governed_rq(used=GOV_USED)}, present={"ns", "shared"}, claimed={"shared": "billing"}),
    )
    entry = ns_entry(result, "shared")
    assert entry["state"] == "Conflict"
    assert "billing" in entry["message"]
    assert "shared" not in {q.namespace for q in result.quotas}
    assert "shared" not in {lr.namespace for lr in result.limitranges}
    assert "shared" not in result.governed
    assert condition(result, "Ready")["status"] == "False"
    assert "billing" in condition(result, "Ready")["message"]


def test_quota_labelled_with_another_project_is_a_conflict() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED, owner="billing", owner_uid="x")}))
    entry = ns_entry(result)
    assert entry["state"] == "Conflict"
    assert "billing" in entry["message"]
    assert result.quotas == ()
    assert result.delete_in == ()


def test_namespace_removed_from_the_spec_keeps_its_quota() -> None:
    # Taking a namespace out of a Project must not unbound it: its quota stays as last governed.
    spec, body = project(quota={"resources": CPU_PODS}, generation=4)
    seen = observed(
        {
            "ns": governed_rq(used=GOV_USED),
            "old": governed_rq("old", used=GOV_USED),
            "theirs": governed_rq("theirs", owner="billing", owner_uid="x"),
        }
    )
    result = plan(spec, body, seen)
    assert result.delete_in == ()
    assert result.released == ("old",)
    assert {q.namespace for q in result.quotas} == {"ns"}
    assert [r["name"] for r in result.status["released"]] == ["old"]
    assert "stays in force" in result.status["released"][0]["message"]


def test_all_namespaces_governed_makes_the_project_ready() -> None:
    spec, body = project(("a", "b"), quota={"resources": CPU_PODS})
    result = plan(spec, body, observed({"a": governed_rq("a", used=GOV_USED), "b": governed_rq("b", used=GOV_USED)}))
    assert result.status["phase"] == "Ready"
    assert condition(result, "Ready")["message"] == "all namespaces are governed"
    assert result.status["summary"]["namespaces"] == "a,b"


# --------------------------------------------------------------------------------------------- resources


def test_added_resource_is_bootstrapped_and_existing_values_are_kept() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    # Governed before with requests.cpu only; the quota now also counts pods (12 in use).
    quota = rq(
        hard={"requests.cpu": "4", "pods": "1M"},
        used={"requests.cpu": "3", "pods": "12"},
        state="governed",
        governed={"requests.cpu": "4"},
    )
    peaks = {("ns", "requests.cpu"): D(10), ("ns", "pods"): D(20)}  # pods: 20 x 1.2 = 24
    result = plan(spec, body, observed({"ns": quota}, peaks=peaks))
    # requests.cpu stays 4 although 10 x 1.2 = 12 is recommended: it changes only by request.
    assert result.governed == {"ns": {"requests.cpu": D(4), "pods": D(24)}}
    assert quota_in(result).hard == {"pods": "24", "requests.cpu": "4"}
    assert result.events == ()


def test_added_resource_is_counted_before_it_is_bootstrapped() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    # The quota governed requests.cpu only, so the quota controller has never counted pods, and the
    # sampler (which records status.used) has no pods history either. 50 pods may well be running.
    quota = governed_rq(governed={"requests.cpu": "4"}, used={"requests.cpu": "3"})
    result = plan(spec, body, observed({"ns": quota}, peaks={("ns", "requests.cpu"): D(3)}))
    assert "pods" not in result.governed["ns"], "pods bootstrapped without knowing how many run"
    assert_huge({"pods": quota_in(result).hard["pods"]})  # counted first, like a new namespace


def test_removed_resource_is_dropped() -> None:
    spec, body = project(quota={"resources": ["requests.cpu"]})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))
    assert result.governed == {"ns": {"requests.cpu": D(4)}}
    assert quota_in(result).hard == {"requests.cpu": "4"}
    assert governed_annotation(quota_in(result)) == {"requests.cpu": D(4)}


def test_removed_resource_that_is_still_requested_stays() -> None:
    spec, body = project(quota={"resources": ["requests.cpu"]}, requested={"ns": {"pods": "20"}})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}))
    assert result.governed == {"ns": {"requests.cpu": D(4), "pods": D(20)}}
    assert "pendingChange" not in result.status


# --------------------------------------------------------------------------------------------- conditions


def test_condition_transition_times_move_only_when_the_status_flips() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    peaks = {("ns", "requests.cpu"): D(1), ("ns", "pods"): D(1)}
    first = plan(spec, body, observed({"ns": counting(resources=CPU_PODS)}, peaks=peaks))
    assert condition(first, "Ready")["lastTransitionTime"] == NOW_ISO
    assert condition(first, "Ready")["status"] == "False"

    # Still counting an hour later: Ready stays False since NOW.
    spec, body = project(quota={"resources": CPU_PODS}, status=first.status)
    second = plan(spec, body, observed({"ns": counting(resources=CPU_PODS)}, peaks=peaks), now=LATER)
    assert condition(second, "Ready")["lastTransitionTime"] == NOW_ISO

    # Use reported two hours later: Ready flips to True and its time moves; history stays found.
    spec, body = project(quota={"resources": CPU_PODS}, status=second.status)
    flip_at = NOW + timedelta(hours=2)
    third = plan(
        spec,
        body,
        observed({"ns": counting(used={"requests.cpu": "1", "pods": "1"}, resources=CPU_PODS)}, peaks=peaks),
        now=flip_at,
    )
    ready = condition(third, "Ready")
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "2026-03-10T14:00:00Z")
    history = condition(third, "HistoryAvailable")
    assert (history["status"], history["lastTransitionTime"]) == ("True", NOW_ISO)
    assert ready["observedGeneration"] == 1


# --------------------------------------------------------------------------------------------- utilization


def test_utilization_is_used_over_governed() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    # 3 of 4 cores = 75.0 %; 11 of 12 pods = 91.666.. -> 91.7 %
    quota = governed_rq(governed={"requests.cpu": "4", "pods": "12"}, used={"requests.cpu": "3", "pods": "11"})
    result = plan(spec, body, observed({"ns": quota}))
    assert result.utilization == {("ns", "requests.cpu"): D("75.0"), ("ns", "pods"): D("91.7")}
    # The same 0.1 % as everywhere else, not rounded again to "92%".
    assert result.status["summary"]["highestUtilization"] == "91.7% ns/pods"


def test_the_status_written_at_bootstrap_is_the_one_the_next_reconcile_computes() -> None:
    # requests.cpu and limits.cpu at the same utilization. The first plan governs from the counting
    # quota (resources in the Project's order), the next one from the governed annotation (sorted):
    # had the tie followed that order, every new namespace would cost a second status write.
    spec, body = project()
    used = {"requests.cpu": "1", "limits.cpu": "2", "requests.memory": "1Gi", "limits.memory": "2Gi", "pods": "1"}
    peaks = {
        ("ns", "requests.cpu"): D(1),
        ("ns", "limits.cpu"): D(2),
        ("ns", "requests.memory"): D(GI),
        ("ns", "limits.memory"): D(2 * GI),
        ("ns", "pods"): D(1),
    }
    first = plan(spec, body, observed({"ns": counting(used=used)}, peaks=peaks))
    written = json.loads(quota_in(first).annotations[GOVERNED_HARD])
    body["status"] = first.status
    second = plan(spec, body, observed({"ns": governed_rq(governed=written, used=used)}, peaks=peaks))
    assert first.status["summary"]["highestUtilization"].startswith("83.3% ns/")
    assert second.status == first.status


def test_utilization_is_empty_before_use_is_known() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    result = plan(spec, body, observed({"ns": governed_rq(used=None)}))
    assert result.utilization == {}
    assert result.status["summary"]["highestUtilization"] == ""


# --------------------------------------------------------------------------------------------- LimitRange


def test_limitrange_from_spec_defaults() -> None:
    spec, body = project(
        defaults={"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    )
    result = plan(spec, body, observed())
    assert result.limitranges == (
        DesiredLimitRange("ns", {"cpu": "2", "memory": "1Gi"}, {"cpu": "250m", "memory": "256Mi"}),
    )


def test_limitrange_built_in_defaults() -> None:
    spec, body = project()
    (limitrange,) = plan(spec, body, observed()).limitranges
    assert limitrange.default == {"cpu": "1", "memory": "512Mi"}
    assert limitrange.default_request == {"cpu": "100m", "memory": "128Mi"}


@pytest.mark.parametrize(
    "defaults",
    [
        {"requests": {"cpu": "2", "memory": "1Gi"}},  # above the built-in limits 1 cpu / 512Mi
        {"limits": {"cpu": "50m", "memory": "64Mi"}},  # below the built-in requests 100m / 128Mi
    ],
)
def test_limitrange_default_request_never_exceeds_default_limit(defaults: dict[str, Any]) -> None:
    spec, body = project(defaults=defaults)
    (limitrange,) = plan(spec, body, observed()).limitranges
    limits = values(limitrange.default)
    for resource, request in values(limitrange.default_request).items():
        assert resource not in limits or request <= limits[resource], (resource, limitrange)


def test_limitrange_matches_what_the_api_returns() -> None:
    spec, body = project()
    (desired,) = plan(spec, body, observed()).limitranges
    obj = {
        "metadata": {"name": "headroom-defaults", "labels": {PROJECT_LABEL: NAME}, "ownerReferences": [{"uid": UID}]},
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {"cpu": "1000m", "memory": "512Mi"},
                    "defaultRequest": {"cpu": "0.1", "memory": "128Mi"},
                }
            ]
        },
    }
    assert desired.matches(observe_limitrange(obj), NAME, UID)
    obj["spec"]["limits"][0]["default"]["cpu"] = "2"
    assert not desired.matches(observe_limitrange(obj), NAME, UID)
    assert not desired.matches(None, NAME, UID)


# --------------------------------------------------------------------------------------------- extra annotations


def test_extra_annotations_ride_along_on_every_quota() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    extra = {"ns": {"headroom.dev/daily-peaks": '{"2026-03-10":{"pods":"3"}}'}}
    counting_plan = plan(spec, body, observed(extra=extra))
    governed_plan = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}, extra=extra))
    for result in (counting_plan, governed_plan):
        assert quota_in(result).annotations["headroom.dev/daily-peaks"] == '{"2026-03-10":{"pods":"3"}}'


# --------------------------------------------------------------------------------------------- observe_quota / matches


def test_observe_quota_reads_what_the_api_returns() -> None:
    seen = observe_quota(
        governed_rq(governed={"requests.cpu": "4", "pods": "20"}, used={"requests.cpu": "500m", "pods": "3"})
    )
    assert seen.project == NAME
    assert seen.state == "governed"
    assert seen.governed == {"requests.cpu": D(4), "pods": D(20)}
    assert seen.used == {"requests.cpu": D("0.5"), "pods": D(3)}
    assert seen.owner_uids == frozenset({UID})


def test_observe_quota_tolerates_a_damaged_annotation() -> None:
    obj = rq(hard={"pods": "5"}, state="governed", annotations={GOVERNED_HARD: "{not json", APPLIED: "[1, 2]"})
    seen = observe_quota(obj)
    assert seen.governed == {}
    assert seen.applied_change is None
    assert seen.used is None


DESIRED = DesiredQuota("ns", {"requests.cpu": "1", "pods": "10"}, {STATE: "governed"})


def test_desired_quota_matches_the_same_amounts_in_other_units() -> None:
    seen = observe_quota(
        rq(
            hard={"requests.cpu": "1000m", "pods": "1e1"},
            state="governed",
            annotations={"headroom.dev/daily-peaks": "{}"},
        )
    )
    assert DESIRED.matches(seen, NAME, UID)


@pytest.mark.parametrize(
    "change", ["hard", "missing resource", "annotation", "no annotation", "owner uid", "project label"]
)
def test_desired_quota_does_not_match_when_something_differs(change: str) -> None:
    hard = {"requests.cpu": "1000m", "pods": "10"}
    kwargs: dict[str, Any] = {"state": "governed"}
    if change == "hard":
        hard["requests.cpu"] = "1001m"
    elif change == "missing resource":
        del hard["pods"]
    elif change == "annotation":
        kwargs["state"] = "counting"
    elif change == "no annotation":
        kwargs["state"] = None
    elif change == "owner uid":
        kwargs["owner_uid"] = "some-other-uid"
    elif change == "project label":
        kwargs["owner"] = "billing"
    assert not DESIRED.matches(observe_quota(rq(hard=hard, **kwargs)), NAME, UID)


def test_desired_quota_does_not_match_nothing() -> None:
    assert not DESIRED.matches(None, NAME, UID)


def _edited_by(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    obj["metadata"]["managedFields"] = [
        {"manager": "headroom", "operation": "Apply", "fieldsV1": {"f:spec": {"f:hard": {}}}},
        {
            "manager": manager,
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{GOVERNED_HARD}": {}}}},
        },
    ]
    return obj


def test_governed_values_edited_by_hand_are_restored_from_what_the_project_published() -> None:
    spec, body = governed_project()
    body["status"] = {"namespaces": [{"name": "ns", "hard": {"requests.cpu": "4", "pods": "20"}}]}
    tampered = _edited_by(
        governed_rq(governed={"requests.cpu": "100m", "pods": "1"}, used={"requests.cpu": "0", "pods": "0"}),
        "kubectl-edit",
    )
    result = plan(spec, body, observed({"ns": tampered}))
    assert values(quota_in(result).hard) == {"requests.cpu": Decimal(4), "pods": Decimal(20)}
    assert governed_annotation(quota_in(result)) == {"requests.cpu": Decimal(4), "pods": Decimal(20)}
    assert "GovernedValuesRestored" in reasons(result)


def test_governed_values_written_by_headroom_itself_are_trusted() -> None:
    spec, body = governed_project()
    body["status"] = {"namespaces": [{"name": "ns", "hard": {"requests.cpu": "4", "pods": "20"}}]}
    # A decrease applied just before a crash: the quota is ahead of the status, and that is fine.
    quota = governed_rq(governed={"requests.cpu": "3", "pods": "20"}, used={"requests.cpu": "0", "pods": "0"})
    result = plan(spec, body, observed({"ns": quota}))
    assert values(quota_in(result).hard)["requests.cpu"] == Decimal(3)
    assert "GovernedValuesRestored" not in reasons(result)


# --------------------------------------------------------------------------------------------- forecasts


def test_status_publishes_the_forecast_of_each_resource_against_the_governed_hard() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    # requests.cpu: 1 core on Mar 1, +250m a day; governed at 4 cores: 3 / 0.25 = 12 days after the
    # first day ended (Mar 2 00:00 UTC): Mar 14 00:00. pods: flat at 6.
    daily = {
        ("ns", "requests.cpu"): {date(2026, 3, 1) + timedelta(days=i): D(1) + D("0.25") * i for i in range(10)},
        ("ns", "pods"): {date(2026, 3, 1) + timedelta(days=i): D(6) for i in range(10)},
    }
    seen = observed({"ns": governed_rq(used=GOV_USED)}, daily=daily)
    result = plan(spec, body, seen)
    assert ns_entry(result)["forecast"] == {
        "requests.cpu": {"growthPerDay": "250m", "fullAt": "2026-03-14T00:00:00Z", "days": 9},
        "pods": {"growthPerDay": "0", "days": 9},
    }
    assert result.status["summary"]["soonestFull"] == "2026-03-14 ns/requests.cpu"
    assert result.forecasts["ns"]["requests.cpu"].full_at == datetime(2026, 3, 14, tzinfo=UTC)
    # The same days on a later reconcile of the same day: the same status (nothing to write).
    assert plan(spec, body, seen, now=LATER).status["namespaces"] == result.status["namespaces"]


def test_no_daily_peaks_no_forecast() -> None:
    spec, body = project(quota={"resources": CPU_PODS})
    result = plan(spec, body, observed({"ns": governed_rq(used=GOV_USED)}, peaks={("ns", "pods"): D(3)}))
    assert "forecast" not in ns_entry(result)
    assert "soonestFull" not in result.status["summary"]


def test_a_counting_quota_is_valid_for_whole_unit_bytes() -> None:
    """The API server refuses 1Ei for a storage class's bytes (checked in thousandths of 64 bits):
    the counting value stays within what it accepts, and far above any namespace."""
    from headroom.core.planning import unbounded

    gold = "gold.storageclass.storage.k8s.io/requests.storage"
    assert unbounded(gold) * 1000 < 2**63
    assert unbounded(gold) >= 2**50
    assert unbounded("requests.storage") == 2**60
