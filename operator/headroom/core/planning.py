"""What a Project's quotas, LimitRanges and status should be: one pure function, `plan_project`.

The reconciler gathers what it has seen (through watches) and what history says, calls
`plan_project`, and writes only the differences. Everything that decides lives here or below:
derivation (`derivation.py`), change ids and approvals (`changes.py`).

Life of a namespace's quota:
1. *counting*: the first ResourceQuota has hard values far above any real use. The API server's
   quota controller then reports the namespace's current use in `status.used` without blocking
   anything, so Headroom never lists pods to learn it.
2. *governed*: once use is known (and history has answered), the derived values (peak plus
   headroom, floors, never below use) become the governed hard values. They are kept in the
   annotation `headroom.dev/governed-hard` of the quota, and enforced in `spec.hard` in Enforce
   mode. After this bootstrap they change only through a change request (`requested`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from headroom.core.changes import (
    Approval,
    ChangeDecision,
    Terms,
    append_history,
    approval_problem,
    change_id,
    decide,
    pending_change,
    tighter_terms,
)
from headroom.core.claims import Claim, judge_claim
from headroom.core.conditions import condition, merge_conditions, rfc3339
from headroom.core.derivation import Derivation, default_minimum, derive_namespace
from headroom.core.names import (
    APPLIED_CHANGE_ANNOTATION,
    FIELD_MANAGER,
    GOVERNED_ANNOTATION,
    PROJECT_LABEL,
    QUOTA_NAME,
    STATE_ANNOTATION,
)
from headroom.core.quantity import canonical, format_quantity, parse_quantity, resource_kind, utilization_percent
from headroom.core.spec import DEFAULT_HEADROOM_PERCENT, DEFAULT_LOOKBACK, ProjectSpec

COUNTING = "counting"
GOVERNED = "governed"

# Far above any real namespace, and valid quantities for the API server.
UNBOUNDED: Mapping[str, Decimal] = {"cpu": Decimal(10**6), "memory": Decimal(2**60), "count": Decimal(10**6)}


Values = dict[str, Decimal]

DEFAULT_PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "default"})


def unbounded(resource: str) -> Decimal:
    return UNBOUNDED[resource_kind(resource)]


# --------------------------------------------------------------------------------------------- observed


@dataclass(frozen=True)
class ObservedQuota:
    """Headroom's ResourceQuota in a namespace, as last seen through the watch."""

    project: str | None
    state: str | None
    spec_hard: Values
    governed: Values
    used: Values | None  # None until the quota controller has reported every resource
    applied_change: Mapping[str, Any] | None
    annotations: Mapping[str, str]
    labels: Mapping[str, str]
    owner_uids: frozenset[str]
    governed_edited_by: tuple[str, ...] = ()  # field managers other than Headroom that wrote the governed values


def _edited_by_others(meta: Mapping[str, Any], annotation: str) -> tuple[str, ...]:
    """Who, besides Headroom, owns an annotation of ours (server-side apply's field ownership)."""
    key = f"f:{annotation}"
    return tuple(sorted({
        str(entry.get("manager")) for entry in meta.get("managedFields") or []
        if entry.get("manager") != FIELD_MANAGER
        and key in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})}))


def _values(raw: Mapping[str, Any] | None) -> Values:
    out: Values = {}
    for resource, text in (raw or {}).items():
        try:
            out[str(resource)] = parse_quantity(str(text))
        except ValueError:
            continue
    return out


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def observe_quota(obj: Mapping[str, Any]) -> ObservedQuota:
    meta = obj.get("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    labels = dict(meta.get("labels") or {})
    spec_hard = _values((obj.get("spec") or {}).get("hard"))
    status = obj.get("status") or {}
    status_hard = _values(status.get("hard"))
    used_raw = _values(status.get("used"))
    # Until the quota controller has counted every resource of spec.hard, use is unknown.
    used = used_raw if status_hard and all(r in used_raw for r in spec_hard) else None
    governed = _values(_json_object(annotations.get(GOVERNED_ANNOTATION)))
    return ObservedQuota(
        project=labels.get(PROJECT_LABEL),
        state=annotations.get(STATE_ANNOTATION),
        spec_hard=spec_hard,
        governed=governed,
        used=used,
        applied_change=_json_object(annotations.get(APPLIED_CHANGE_ANNOTATION)),
        annotations=annotations,
        labels=labels,
        owner_uids=frozenset(ref.get("uid", "") for ref in meta.get("ownerReferences") or []),
        governed_edited_by=_edited_by_others(meta, GOVERNED_ANNOTATION),
    )


@dataclass(frozen=True)
class ObservedLimitRange:
    default: Values
    default_request: Values
    owner_uids: frozenset[str]
    labels: Mapping[str, str]


def observe_limitrange(obj: Mapping[str, Any]) -> ObservedLimitRange:
    meta = obj.get("metadata", {})
    limits = (obj.get("spec") or {}).get("limits") or []
    container = next((item for item in limits if item.get("type") == "Container"), {})
    return ObservedLimitRange(
        default=_values(container.get("default")),
        default_request=_values(container.get("defaultRequest")),
        owner_uids=frozenset(ref.get("uid", "") for ref in meta.get("ownerReferences") or []),
        labels=dict(meta.get("labels") or {}),
    )


@dataclass(frozen=True)
class Observed:
    """Everything the planner needs to know about the cluster, for one Project."""

    project_uid: str
    namespaces_present: frozenset[str]
    quotas: Mapping[str, ObservedQuota]  # namespace -> Headroom's quota there (any project)
    limitranges: Mapping[str, ObservedLimitRange]
    claimed_by_others: Mapping[str, str]  # namespace -> earlier Project that governs it
    peaks: Mapping[tuple[str, str], Decimal]
    history_error: str | None
    history_partial: bool = False
    extra_annotations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # e.g. sampler peaks
    # namespace -> the Project its headroom.dev/project label names (set by the platform only)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    # namespaces whose Headroom quota belongs to a Project that no longer lists them (or is gone)
    released_by_others: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Settings:
    default_enforcement: str = "Enforce"
    auto_approve_within_recommendation: bool = False
    # Never governed unless the platform labels the Namespace for a Project (see claims.py).
    protected_namespaces: frozenset[str] = DEFAULT_PROTECTED_NAMESPACES


# --------------------------------------------------------------------------------------------- desired


@dataclass(frozen=True)
class DesiredQuota:
    namespace: str
    hard: Mapping[str, str]
    annotations: Mapping[str, str]

    def matches(self, seen: ObservedQuota | None, project: str, project_uid: str) -> bool:
        if seen is None or seen.project != project or project_uid not in seen.owner_uids:
            return False
        if _values(self.hard) != seen.spec_hard:
            return False
        return all(seen.annotations.get(k) == v for k, v in self.annotations.items())


@dataclass(frozen=True)
class DesiredLimitRange:
    namespace: str
    default: Mapping[str, str]
    default_request: Mapping[str, str]

    def matches(self, seen: ObservedLimitRange | None, project: str, project_uid: str) -> bool:
        return (seen is not None and project_uid in seen.owner_uids
                and seen.labels.get(PROJECT_LABEL) == project
                and _values(self.default) == seen.default
                and _values(self.default_request) == seen.default_request)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    quotas: tuple[DesiredQuota, ...]
    limitranges: tuple[DesiredLimitRange, ...]
    delete_in: tuple[str, ...]  # protected namespaces where a Headroom object must not be
    status: dict[str, Any]
    events: tuple[Event, ...]
    utilization: Mapping[tuple[str, str], Decimal]  # percent of the governed hard value
    used: Mapping[str, Values]
    governed: Mapping[str, Values]
    released: tuple[str, ...] = ()  # namespaces that left the Project: their quota stays as it is
    # namespace -> resource -> how its recommendation came about (what `headroom plan` shows)
    derivations: Mapping[str, Mapping[str, Derivation]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers


def _text(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {r: format_quantity(v, r) for r, v in sorted(values.items())}


def _json(values: Mapping[str, Decimal]) -> str:
    return json.dumps({r: canonical(v) for r, v in sorted(values.items())}, separators=(",", ":"))


# --------------------------------------------------------------------------------------------- planner


def plan_project(spec: ProjectSpec, body: Mapping[str, Any], observed: Observed, settings: Settings,
                 now: datetime) -> Plan:
    """Decide the desired objects and status of one Project. Pure: no I/O, `now` is given."""
    meta = body.get("metadata", {})
    generation = meta.get("generation")
    old_status = dict(body.get("status") or {})
    old_conditions = old_status.get("conditions") or []

    # Pass 0: the terms. What was approved (or set when the Project was created) holds until a
    # loosening is signed off; tightening holds at once. See changes.py and claims.py.
    identifier = change_id(spec)
    approved_before = _approved_record(old_status)
    asked = Terms.of(spec)
    in_force, loosened_terms = tighter_terms(asked, approved_terms(spec, body), settings.default_enforcement)
    history_ids = {str(h.get("id")) for h in old_status.get("history") or [] if isinstance(h, Mapping)}
    used_ids = history_ids | {str(q.applied_change["id"]) for q in observed.quotas.values()
                              if q.project == spec.name and q.applied_change and "id" in q.applied_change}
    if approved_before.get("changeId"):
        used_ids.add(str(approved_before["changeId"]))
    approval = Approval(spec.approved_change, spec.approved_by, spec.requested_by, frozenset(used_ids))
    problem = approval_problem(identifier, approval)
    signed_off = problem is None
    if signed_off:
        in_force = asked
    claims = {ns.name: judge_claim(
        spec.name, ns.name, label=observed.namespace_labels.get(ns.name),
        quota_project=observed.quotas[ns.name].project if ns.name in observed.quotas else None,
        approved_namespaces=approved_before.get("namespaces") or (), listed_at_creation=generation == 1,
        protected=settings.protected_namespaces, signed_off=False) for ns in spec.namespaces}
    loosened = (*(c.as_loosening(spec.name) for c in claims.values() if c.state == "unconfirmed"),
                *loosened_terms)
    if signed_off:
        claims = {name: Claim(name, "confirmed", "its addition was signed off") if c.state == "unconfirmed" else c
                  for name, c in claims.items()}

    enforcement = in_force.enforcement or settings.default_enforcement
    enforced = enforcement == "Enforce"
    resources = tuple(in_force.resources)
    # A partial answer is as good as none for a first quota: a guess could be far too small.
    history_failed = observed.history_error is not None or observed.history_partial

    quotas: list[DesiredQuota] = []
    limitranges: list[DesiredLimitRange] = []
    events: list[Event] = []
    ns_status: list[dict[str, Any]] = []
    waiting: list[str] = []
    governed_all: dict[str, Values] = {}
    used_all: dict[str, Values] = {}
    recommended_all: dict[str, Values] = {}
    derivations_all: dict[str, dict[str, Derivation]] = {}
    ready_namespaces: list[str] = []
    no_history: list[str] = []

    # Pass 1: per namespace, what is governed now (before any change request).
    for ns in spec.namespaces:
        name = ns.name
        entry: dict[str, Any] = {"name": name}
        claim = claims[name]
        if claim.state != "confirmed":
            entry["state"] = "Refused" if claim.state == "refused" else "Unconfirmed"
            entry["message"] = claim.why
            waiting.append(claim.why)
            ns_status.append(entry)
            continue
        if name in observed.claimed_by_others:
            entry["state"] = "Conflict"
            entry["message"] = (f"namespace {name} is already governed by Project "
                                f"{observed.claimed_by_others[name]}; remove it from one of the two")
            waiting.append(entry["message"])
            ns_status.append(entry)
            continue
        if name not in observed.namespaces_present:
            entry["state"] = "Missing"
            entry["message"] = f"namespace {name} does not exist yet; its quota is applied when it appears"
            waiting.append(entry["message"])
            ns_status.append(entry)
            continue
        seen = observed.quotas.get(name)
        if seen is not None and seen.project not in (None, spec.name) and name not in observed.released_by_others:
            entry["state"] = "Conflict"
            entry["message"] = f"namespace {name} holds a Headroom quota of Project {seen.project}"
            waiting.append(entry["message"])
            ns_status.append(entry)
            continue
        used = seen.used if seen is not None else None
        peaks = {r: observed.peaks.get((name, r)) for r in resources}
        unknown = [r for r, v in peaks.items() if v is None]
        if unknown:
            no_history.append(name if len(unknown) == len(resources) else f"{name} ({', '.join(unknown)})")
        derivations = derive_namespace(resources, peaks, used or {}, in_force.headroom_percent,
                                       in_force.minimum, in_force.container)
        recommended = {r: d.recommended for r, d in derivations.items()}
        recommended_all[name] = recommended
        derivations_all[name] = derivations
        entry["peak"] = _text({r: p for r, p in peaks.items() if p is not None})
        entry["recommended"] = _text(recommended)
        entry["reasons"] = {r: d.reason for r, d in sorted(derivations.items())}
        if used is not None:
            used_all[name] = used
            entry["used"] = _text(used)

        previous = next((e for e in old_status.get("namespaces") or [] if e.get("name") == name), {})
        if not enforced:
            # Observe writes nothing that affects admission or what pods get: what it would apply is
            # published instead. The values last enforced are kept in status for a return to Enforce.
            entry["state"] = "Observed"
            entry["wouldApply"] = {"hard": _text(recommended), "limitRange": {
                "default": _text(in_force.limitrange_defaults()[0]),
                "defaultRequest": _text(in_force.limitrange_defaults()[1])}}
            kept = seen.governed if seen is not None and seen.state == GOVERNED and seen.project == spec.name \
                else _values(previous.get("hard"))
            if kept:
                entry["hard"] = _text(kept)
            ns_status.append(entry)
            continue
        governed: Values = {}
        if seen is not None and seen.state == GOVERNED:
            base = seen.governed
            published = _values(next((e.get("hard") for e in old_status.get("namespaces") or []
                                      if e.get("name") == name), None))
            if seen.governed_edited_by and published:
                # The governed values changed by hand, not through a signed-off change: what this
                # Project last published is restored.
                base = published
                events.append(Event("Warning", "GovernedValuesRestored",
                                    f"annotation {GOVERNED_ANNOTATION} of ResourceQuota {QUOTA_NAME} in {name} was "
                                    f"changed by {', '.join(seen.governed_edited_by)}; restored (change quotas "
                                    "through the Project's requested values instead)"))
            # Resources that left spec.quota.resources leave the quota; new ones are bootstrapped.
            governed = {r: v for r, v in base.items() if r in resources or r in ns.requested}
            # Only once the quota controller has counted it: never below what runs now.
            missing = [r for r in resources if r not in governed and used is not None and r in used]
            if missing and used is not None and not history_failed:
                governed.update({r: _bootstrap_value(derivations[r], used) for r in missing})
        elif used is not None and not history_failed and all(r in used for r in resources):
            governed = {r: _bootstrap_value(derivations[r], used) for r in resources}
            if previous.get("hard"):
                # Back from Observe, or the quota was deleted: what was governed before (approved
                # raises included, as this Project last published it) holds again, never below use.
                governed.update({r: max(v, used.get(r, v)) for r, v in _values(previous["hard"]).items()
                                 if r in resources})
        if governed:
            governed_all[name] = governed
            ready_namespaces.append(name)
        ns_status.append(entry)

    # Pass 2: the change request, as one unit over all namespaces.
    # The id always covers the whole request, so it equals what `headroom change-id` computes offline.
    blocked = sorted(ns for ns in spec.requested if ns not in governed_all)
    pending = pending_change(identifier, spec.requested, governed_all, loosened)
    if pending is not None and blocked:
        why = f"change {pending.id} waits until {', '.join(blocked)} is governed (its first quota is not in place yet)"
        if not signed_off and (pending.raises or pending.loosened):
            why += f"; it raises {pending.describe_raises()} and needs sign-off: {problem}"
        decision = ChangeDecision("wait", why, {})
    else:
        decision = decide(pending, approval, used_all, recommended_all,
                          settings.auto_approve_within_recommendation)
    applied_record: dict[str, Any] | None = None
    consumed = False  # the sign-off was used: it approves nothing more
    if decision.action == "apply" and pending is not None:
        changed = {ns: targets for ns, targets in decision.targets.items()
                   if any(governed_all[ns].get(r) != v for r, v in targets.items())}
        if changed or pending.loosened:
            consumed = signed_off
            if signed_off:
                approved_by = spec.approved_by or "unknown"
            elif pending.raises:
                approved_by = "auto-approval"
            else:
                approved_by = "no sign-off needed (decrease)"
            applied_record = {"id": pending.id, "approvedBy": approved_by, "appliedAt": rfc3339(now),
                              "diff": [c.to_status() for c in pending.changes]}
            if pending.loosened:
                applied_record["loosens"] = [c.to_status() for c in pending.loosened]
            for ns, targets in changed.items():
                governed_all[ns] = {**governed_all[ns], **targets}
            described = "; ".join([*(c.describe() for c in pending.changes),
                                   *(c.describe() for c in pending.loosened)])
            events.append(Event("Normal", "ChangeApplied",
                                f"applied change {pending.id} (approved by {approved_by}): {described}"))
        if changed:
            events.extend(Event("Warning", "DecreaseClamped", clamp.message) for clamp in decision.clamped)

    # Pass 3: desired objects. The LimitRange gives what the floors were made to fit (the approved
    # defaults, or lower ones the Project asks for).
    default_limits, default_requests = in_force.limitrange_defaults()
    for ns in spec.namespaces:
        name = ns.name
        entry = next(e for e in ns_status if e["name"] == name)
        if entry.get("state") in ("Conflict", "Missing", "Unconfirmed", "Refused", "Observed"):
            continue
        seen = observed.quotas.get(name)
        governed = governed_all.get(name)
        annotations = dict(observed.extra_annotations.get(name, {}))
        if governed is None:
            entry["state"] = "Counting"
            hard = {r: unbounded(r) for r in resources}
            annotations[STATE_ANNOTATION] = COUNTING
            if seen is not None and seen.state == COUNTING:
                # Keep what is there (no write while we wait), counting any resource added meanwhile.
                hard = {r: seen.spec_hard.get(r, unbounded(r)) for r in resources}
        else:
            entry["state"] = "Governed"
            entry["hard"] = _text(governed)
            entry["enforced"] = enforced
            hard = dict(governed) if enforced else {r: unbounded(r) for r in governed}
            # A resource new to the Project is counted first, then bootstrapped from its real use.
            hard.update({r: unbounded(r) for r in resources if r not in governed})
            annotations[STATE_ANNOTATION] = GOVERNED
            annotations[GOVERNED_ANNOTATION] = _json(governed)
            record = applied_record if applied_record and name in {
                c["namespace"] for c in applied_record["diff"]} else (seen.applied_change if seen else None)
            if record:
                annotations[APPLIED_CHANGE_ANNOTATION] = json.dumps(record, sort_keys=True,
                                                                    separators=(",", ":"))
        quotas.append(DesiredQuota(name, _text(hard), annotations))
        limitranges.append(DesiredLimitRange(name, _text(default_limits), _text(default_requests)))

    # A namespace that leaves the Project keeps its quota as last governed: taking it out must not
    # unbound it. Only a protected namespace loses a quota it should never have had.
    ours = {ns for ns, q in observed.quotas.items() if q.project == spec.name}
    observing = {e["name"] for e in ns_status if e.get("state") == "Observed"
                 and (e["name"] in ours or (e["name"] in observed.limitranges
                                            and observed.project_uid in observed.limitranges[e["name"]].owner_uids))}
    delete_in = tuple(sorted(observing | {ns for ns in ours if ns in settings.protected_namespaces
                                          and claims.get(ns, Claim(ns, "refused", "")).state != "confirmed"}))
    released = tuple(sorted(ns for ns in ours if ns not in spec.namespace_names and ns not in delete_in))
    approved_now: dict[str, Any] = {
        "terms": in_force.to_status(),
        "namespaces": sorted(name for name, c in claims.items() if c.state == "confirmed"),
    }
    spent = pending.id if consumed and pending is not None else approved_before.get("changeId")
    if spent:
        approved_now["changeId"] = spent

    # Utilization against the governed values (what would be enforced, also in Observe mode).
    utilization: dict[tuple[str, str], Decimal] = {}
    for name, governed in governed_all.items():
        for resource, hard_value in governed.items():
            value = used_all.get(name, {}).get(resource)
            pct = utilization_percent(value, hard_value) if value is not None else None
            if pct is not None:
                utilization[(name, resource)] = pct

    status = _status(spec, observed, old_status, old_conditions, generation, now, enforced, ns_status,
                     waiting, pending, decision, applied_record, history_failed, no_history, utilization,
                     blocked, events)
    status["approved"] = approved_now
    if released:
        status["released"] = [{"name": ns, "message": (
            f"namespace {ns} left the Project; its quota stays in force as last governed. The platform lifts "
            f"it by deleting ResourceQuota {QUOTA_NAME} there, or a Project that governs {ns} takes it over")}
            for ns in released]
    return Plan(tuple(quotas), tuple(limitranges), delete_in, status, tuple(events), utilization,
                used_all, governed_all, released, derivations_all)


def _approved_record(old_status: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = old_status.get("approved")
    return raw if isinstance(raw, Mapping) else {}


def approved_terms(spec: ProjectSpec, body: Mapping[str, Any]) -> Terms:
    """The terms last approved, as Headroom recorded them in status.

    Without that record, a Project just created (creation is a platform act) or governed by a
    Headroom that kept none has its terms taken as they stand; one edited before Headroom wrote
    anything has only the built-in terms approved.
    """
    old_status = body.get("status") or {}
    recorded = Terms.from_status(_approved_record(old_status).get("terms"))
    if recorded is not None:
        return recorded
    if body.get("metadata", {}).get("generation") == 1 or "observedGeneration" in old_status:
        return Terms.of(spec)
    return Terms(tuple(spec.quota.resources), DEFAULT_HEADROOM_PERCENT, DEFAULT_LOOKBACK,
                 {r: default_minimum(r) for r in spec.quota.resources}, None)


def terms_in_force(spec: ProjectSpec, body: Mapping[str, Any], settings: Settings) -> Terms:
    """The tighter of the asked and the approved terms: what history is asked for (lookback, resources)."""
    return tighter_terms(Terms.of(spec), approved_terms(spec, body), settings.default_enforcement)[0]


def _bootstrap_value(derivation: Derivation, used: Values) -> Decimal:
    return max(derivation.recommended, used.get(derivation.resource, Decimal(0)))


def _status(spec: ProjectSpec, observed: Observed, old_status: Mapping[str, Any],
            old_conditions: Sequence[Mapping[str, Any]], generation: int | None, now: datetime,
            enforced: bool, ns_status: list[dict[str, Any]], waiting: list[str], pending: Any,
            decision: Any, applied_record: dict[str, Any] | None, history_failed: bool,
            no_history: list[str], utilization: Mapping[tuple[str, str], Decimal], blocked: list[str],
            events: list[Event]) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": generation, "namespaces": ns_status}
    history = list(old_status.get("history") or [])
    last_applied = old_status.get("lastAppliedChange")
    # The applied record on the quotas is the source of truth: a status write lost to a crash is
    # recovered from it, and append_history ignores an id it already holds.
    records = [applied_record] if applied_record else [
        q.applied_change for q in observed.quotas.values()
        if q.project == spec.name and q.applied_change and "id" in q.applied_change]
    for record in sorted(records, key=lambda r: str(r.get("appliedAt", ""))):
        if not any(h.get("id") == record["id"] for h in history):
            history = append_history(history, dict(record))
            if record is not applied_record:
                # The Event is posted after the status write; a crash before it lost the Event too.
                events.append(Event("Normal", "ChangeApplied", f"applied change {record['id']} (approved by "
                                    f"{record.get('approvedBy', 'unknown')}), recorded after a restart"))
        last_applied = {k: record[k] for k in ("id", "approvedBy", "appliedAt") if k in record}
    if history:
        status["history"] = history
    if last_applied:
        status["lastAppliedChange"] = last_applied

    # A decrease held at current use stays visible as pending (reason: clamped) until use allows it.
    still_pending = pending is not None and applied_record is None
    if still_pending:
        before = old_status.get("pendingChange") or {}
        since = before.get("since") if before.get("id") == pending.id else None
        status["pendingChange"] = {"id": pending.id, "since": since or rfc3339(now), **pending.to_status(),
                                   "reason": decision.reason}
        if not since and decision.action == "wait":
            events.append(Event("Normal", "ChangePending", decision.reason))
    def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(kind, ok, reason, message, generation=generation, previous=old_conditions, now=now)

    conditions = []
    done = sum(1 for e in ns_status if e.get("state") in ("Governed", "Observed"))
    all_governed = done == len(spec.namespaces)
    if all_governed and not enforced:
        ready_reason, ready_message = "Observing", ("observe mode: nothing is written; what would be applied is in "
                                                    "status.namespaces[].wouldApply")
    elif all_governed:
        ready_reason, ready_message = "Governed", "all namespaces are governed"
    else:
        ready_reason = "Waiting"
        ready_message = "; ".join(waiting) or "waiting for the quota controller to report current use"
    conditions.append(cond("Ready", all_governed, ready_reason, ready_message))
    if observed.history_error is not None:
        history_message = (f"history is unavailable ({observed.history_error}); quotas are left as they "
                           "are and no quota is lowered until it answers")
        conditions.append(cond("HistoryAvailable", False, "HistoryUnavailable", history_message))
    elif history_failed:
        conditions.append(cond("HistoryAvailable", False, "HistoryPartial",
                                     "history answered only in part (missing or unusable series); quotas are "
                                     "left as they are and new ones wait for a complete answer"))
    elif no_history:
        conditions.append(cond("HistoryAvailable", False, "NoHistory",
                                     "no usage history for " + ", ".join(no_history)
                                     + ": the minimum (or current use, if higher) applies"))
    else:
        conditions.append(cond("HistoryAvailable", True, "HistoryFound",
                                     "peaks known for every namespace and resource"))
    if still_pending:
        conditions.append(cond("ChangePending", True, "AwaitingSignOff" if decision.action == "wait"
                                     else "Clamped", decision.reason))
    else:
        conditions.append(cond("ChangePending", False, "NoChange", "no change is pending"))
    if blocked:
        message = f"requested values for {', '.join(blocked)} wait until the namespace is governed"
        conditions.append(cond("ChangeBlocked", True, "NamespaceNotGoverned", message))
    status["conditions"] = conditions
    status["phase"] = ("Observing" if not enforced and all_governed else
                       "Pending" if still_pending and all_governed else
                       "Ready" if all_governed else "Waiting")
    # Ties go to the first (namespace, resource) by name: the order in which the quota listed its
    # resources must not change the status, or every reconcile would rewrite it.
    top = max(sorted(utilization.items()), key=lambda kv: kv[1], default=None)
    status["summary"] = {
        "namespaces": ",".join(spec.namespace_names)[:256],
        "highestUtilization": f"{top[1]:.0f}% {top[0][0]}/{top[0][1]}" if top else "",
        "enforcement": "Enforce" if enforced else "Observe",
    }
    return status


def with_alerts(status: Mapping[str, Any], records: list[dict[str, Any]],
                conditions: list[dict[str, Any]]) -> dict[str, Any]:
    """The Project's status with what alerting decided: composed once, here, from values."""
    return {**status, "alerts": records, "conditions": merge_conditions(status.get("conditions") or [], conditions)}


def invalid_status(body: Mapping[str, Any], error: Exception, now: datetime) -> dict[str, Any]:
    """The status of a Project the operator cannot read: the rest of its status kept, Ready=False naming
    the field (the schema normally refuses such a Project first)."""
    generation = body.get("metadata", {}).get("generation")
    old = dict(body.get("status") or {})
    ready = condition("Ready", False, "InvalidSpec", str(error), generation=generation,
                      previous=old.get("conditions") or [], now=now)
    return {**{k: v for k, v in old.items() if k != "conditions"}, "phase": "Invalid",
            "observedGeneration": generation, "conditions": [ready]}
