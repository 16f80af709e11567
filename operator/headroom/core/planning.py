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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from headroom.core.approval_rules import WITHIN_RECOMMENDATION, Rule, RuleApproval, approve_by_rule
from headroom.core.capacity import CapacityView, Hold, Override, held
from headroom.core.changes import (
    Approval,
    ChangeDecision,
    PendingChange,
    SettingChange,
    Terms,
    append_history,
    apply_change,
    approval_problem,
    change_id,
    decide,
    pending_change,
    short_id,
    tighter_terms,
)
from headroom.core.claims import Claim, judge_claim
from headroom.core.conditions import condition, merge_conditions, rfc3339
from headroom.core.derivation import Derivation, default_minimum, derive_namespace
from headroom.core.expiry import ExpiryStep, RaiseRecord, expiry_step, record_after_change, withdrawal_message
from headroom.core.forecast import Forecast, forecast, to_status
from headroom.core.names import (
    APPLIED_CHANGE_ANNOTATION,
    CAPACITY_OVERRIDE_ANNOTATION,
    CAPACITY_OVERRIDE_BY_ANNOTATION,
    FIELD_MANAGER,
    GOVERNED_ANNOTATION,
    PROJECT_LABEL,
    QUOTA_NAME,
    RAISE_EXPIRY_ANNOTATION,
    STATE_ANNOTATION,
)
from headroom.core.quantity import (
    canonical,
    format_percent,
    format_quantity,
    parse_quantity,
    resource_kind,
    utilization_percent,
)
from headroom.core.spec import DEFAULT_HEADROOM_PERCENT, DEFAULT_LOOKBACK, NamespaceSpec, ProjectSpec, is_whole

COUNTING = "counting"
GOVERNED = "governed"

# Far above any real namespace, and valid quantities for the API server.
UNBOUNDED: Mapping[str, Decimal] = {"cpu": Decimal(10**6), "memory": Decimal(2**60), "count": Decimal(10**6)}


Values = dict[str, Decimal]

DEFAULT_PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "default"})


# The API server checks a whole-unit quota value (a storage class's bytes) in thousandths held in 64
# bits: 1Ei overflows them and is refused as "must be an integer". 1Pi of one storage class is far
# above any namespace still.
_UNBOUNDED_WHOLE_BYTES = Decimal(2**50)


def unbounded(resource: str) -> Decimal:
    kind = resource_kind(resource)
    if kind == "memory" and is_whole(resource):
        return _UNBOUNDED_WHOLE_BYTES
    return UNBOUNDED[kind]


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
    return tuple(
        sorted(
            {
                str(entry.get("manager"))
                for entry in meta.get("managedFields") or []
                if entry.get("manager") != FIELD_MANAGER
                and key in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})
            }
        )
    )


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
    container: Mapping[str, Any] = next((item for item in limits if item.get("type") == "Container"), {})
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
    # (namespace, resource) -> day -> that day's peak, where the source knows them (HistoryResult.daily),
    # and where each namespace's days begin after 00:00 UTC (HistoryResult.day_offsets)
    daily: Mapping[tuple[str, str], Mapping[date, Decimal]] = field(default_factory=dict)
    day_offsets: Mapping[str, timedelta] = field(default_factory=dict)
    # the cluster's capacity and every other Project's governed total (core/capacity.py); None: not read
    capacity: CapacityView | None = None


@dataclass(frozen=True)
class Settings:
    default_enforcement: str = "Enforce"
    auto_approve_within_recommendation: bool = False
    # Never governed unless the platform labels the Namespace for a Project (see claims.py).
    protected_namespaces: frozenset[str] = DEFAULT_PROTECTED_NAMESPACES
    # resource -> the most its cluster-wide governed total may be, as a multiple of allocatable capacity
    max_overcommit: Mapping[str, Decimal] = field(default_factory=dict)
    # The platform's rules for routine approvals (approval_rules.py), in order.
    approval_rules: tuple[Rule, ...] = ()


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
        return (
            seen is not None
            and project_uid in seen.owner_uids
            and seen.labels.get(PROJECT_LABEL) == project
            and _values(self.default) == seen.default
            and _values(self.default_request) == seen.default_request
        )


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
    # namespace -> resource -> the trend of its daily peaks against its hard value (status .forecast)
    forecasts: Mapping[str, Mapping[str, Forecast]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- helpers


def _text(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {r: format_quantity(v, r) for r, v in sorted(values.items())}


def _json(values: Mapping[str, Decimal]) -> str:
    return json.dumps({r: canonical(v) for r, v in sorted(values.items())}, separators=(",", ":"))


# --------------------------------------------------------------------------------------------- planner


@dataclass
class _Pass:
    """One planning pass over one Project: its inputs, the terms in force, and what is decided so far.

    plan_project runs the steps below in order; each reads what earlier steps decided and adds its own.
    """

    spec: ProjectSpec
    body: Mapping[str, Any]
    observed: Observed
    settings: Settings
    now: datetime
    terms: _TermsInForce
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # namespace -> status entry
    waiting: list[str] = field(default_factory=list)
    no_history: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    governed: dict[str, Values] = field(default_factory=dict)
    used: dict[str, Values] = field(default_factory=dict)
    recommended: dict[str, Values] = field(default_factory=dict)
    derivations: dict[str, dict[str, Derivation]] = field(default_factory=dict)
    pending: PendingChange | None = None
    decision: ChangeDecision = field(default_factory=lambda: ChangeDecision("none", "", {}))
    applied: dict[str, Any] | None = None  # the record of a change applied in this pass
    consumed: bool = False  # the sign-off was used: it approves nothing more
    blocked: list[str] = field(default_factory=list)
    hold: Hold | None = None  # a signed-off raise held by the overcommit budget
    expiry: ExpiryStep = field(default_factory=ExpiryStep)  # raises that end (expiry.py)
    rule: RuleApproval | None = None  # the platform rule that approved the change, with its evidence

    @property
    def old_status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def generation(self) -> int | None:
        generation = self.body.get("metadata", {}).get("generation")
        return generation if isinstance(generation, int) else None

    def wait(self, name: str, state: str, message: str) -> None:
        self.entries[name].update(state=state, message=message)
        self.waiting.append(message)


@dataclass(frozen=True)
class _TermsInForce:
    """What bounds the Project in this pass (changes.py and claims.py decide; this gathers their answers)."""

    identifier: str
    in_force: Terms
    enforced: bool  # in force, with the operator's --mode where the Project names none
    approval: Approval
    problem: str | None  # why the approval signs nothing off; None: it signs off `identifier`
    claims: Mapping[str, Claim]
    loosened: tuple[SettingChange, ...]
    changed_before: str | None  # the last approval used

    @property
    def signed_off(self) -> bool:
        return self.problem is None


def plan_project(
    spec: ProjectSpec, body: Mapping[str, Any], observed: Observed, settings: Settings, now: datetime
) -> Plan:
    """Decide the desired objects and status of one Project. Pure: no I/O, `now` is given."""
    work = _Pass(spec, body, observed, settings, now, _terms_in_force(spec, body, observed, settings))
    for ns in spec.namespaces:
        _plan_namespace(work, ns)
    _expire(work)
    _decide_change(work)
    forecasts = _forecasts(work)
    quotas, limitranges = _desired_objects(work)
    delete_in, released = _leaving(work)
    utilization = {
        (name, r): pct
        for name, values in work.governed.items()
        for r, hard in values.items()
        if r in work.used.get(name, {}) and (pct := utilization_percent(work.used[name][r], hard)) is not None
    }
    status = _status(work, utilization, released)
    status["summary"].update(_soonest_full(forecasts))
    return Plan(
        quotas,
        limitranges,
        delete_in,
        status,
        tuple(work.events),
        utilization,
        work.used,
        work.governed,
        released,
        work.derivations,
        forecasts,
    )


def _terms_in_force(
    spec: ProjectSpec, body: Mapping[str, Any], observed: Observed, settings: Settings
) -> _TermsInForce:
    """Pass 0: what was approved (or set when the Project was created) holds until a loosening is
    signed off; tightening holds at once."""
    old_status = body.get("status") or {}
    identifier = change_id(spec)
    approved_before = _approved_record(old_status)
    asked = Terms.of(spec)
    in_force, loosened_terms = tighter_terms(asked, approved_terms(spec, body), settings.default_enforcement)
    used_ids = {str(h.get("id")) for h in old_status.get("history") or [] if isinstance(h, Mapping)}
    used_ids |= {
        str(q.applied_change["id"])
        for q in observed.quotas.values()
        if q.project == spec.name and q.applied_change and "id" in q.applied_change
    }
    if approved_before.get("changeId"):
        used_ids.add(str(approved_before["changeId"]))
    approval = Approval(spec.approved_change, spec.approved_by, spec.requested_by, frozenset(used_ids))
    problem = approval_problem(identifier, approval)
    claims = {
        ns.name: judge_claim(
            spec.name,
            ns.name,
            label=observed.namespace_labels.get(ns.name),
            quota_project=observed.quotas[ns.name].project if ns.name in observed.quotas else None,
            approved_namespaces=approved_before.get("namespaces") or (),
            listed_at_creation=body.get("metadata", {}).get("generation") == 1,
            protected=settings.protected_namespaces,
            signed_off=False,
        )
        for ns in spec.namespaces
    }
    loosened = (*(c.as_loosening(spec.name) for c in claims.values() if c.state == "unconfirmed"), *loosened_terms)
    if problem is None:  # signed off: the loosening holds, and the claims it adds are confirmed
        in_force = asked
        claims = {
            name: Claim(name, "confirmed", "its addition was signed off") if c.state == "unconfirmed" else c
            for name, c in claims.items()
        }
    enforced = (in_force.enforcement or settings.default_enforcement) == "Enforce"
    return _TermsInForce(
        identifier, in_force, enforced, approval, problem, claims, loosened, approved_before.get("changeId")
    )


def _plan_namespace(work: _Pass, ns: NamespaceSpec) -> None:
    """Pass 1, one namespace: may it be governed, what history recommends, what is governed now."""
    name, observed = ns.name, work.observed
    work.entries[name] = {"name": name}
    claim = work.terms.claims[name]
    seen = observed.quotas.get(name)
    if claim.state != "confirmed":
        work.wait(name, "Refused" if claim.state == "refused" else "Unconfirmed", claim.why)
    elif name in observed.claimed_by_others:
        work.wait(
            name,
            "Conflict",
            f"namespace {name} is already governed by Project "
            f"{observed.claimed_by_others[name]}; remove it from one of the two",
        )
    elif name not in observed.namespaces_present:
        work.wait(name, "Missing", f"namespace {name} does not exist yet; its quota is applied when it appears")
    elif seen is not None and seen.project not in (None, work.spec.name) and name not in observed.released_by_others:
        work.wait(name, "Conflict", f"namespace {name} holds a Headroom quota of Project {seen.project}")
    else:
        derivations = _derive(work, name, seen)
        if work.terms.enforced:
            _govern(work, ns, seen, derivations)
        else:
            _observe_only(work, name, seen)


def _derive(work: _Pass, name: str, seen: ObservedQuota | None) -> dict[str, Derivation]:
    """What history recommends for one namespace, published in its status entry."""
    terms, entry = work.terms.in_force, work.entries[name]
    used = seen.used if seen is not None else None
    peaks = {r: work.observed.peaks.get((name, r)) for r in terms.resources}
    unknown = [r for r, v in peaks.items() if v is None]
    if unknown:
        work.no_history.append(name if len(unknown) == len(peaks) else f"{name} ({', '.join(unknown)})")
    derivations = derive_namespace(
        terms.resources, peaks, used or {}, terms.headroom_percent, terms.minimum, terms.container
    )
    work.derivations[name] = derivations
    work.recommended[name] = {r: d.recommended for r, d in derivations.items()}
    entry["peak"] = _text({r: p for r, p in peaks.items() if p is not None})
    entry["recommended"] = _text(work.recommended[name])
    entry["reasons"] = {r: d.reason for r, d in sorted(derivations.items())}
    if used is not None:
        work.used[name] = used
        entry["used"] = _text(used)
    return derivations


def _previous_entry(work: _Pass, name: str) -> Mapping[str, Any]:
    return next((e for e in work.old_status.get("namespaces") or [] if e.get("name") == name), {})


def _observe_only(work: _Pass, name: str, seen: ObservedQuota | None) -> None:
    """Observe writes nothing that affects admission or what pods get: what it would apply is published
    instead, and the values last enforced are kept in status for a return to Enforce."""
    entry = work.entries[name]
    limits, requests = work.terms.in_force.limitrange_defaults()
    entry["state"] = "Observed"
    entry["wouldApply"] = {
        "hard": _text(work.recommended[name]),
        "limitRange": {"default": _text(limits), "defaultRequest": _text(requests)},
    }
    mine = seen is not None and seen.state == GOVERNED and seen.project == work.spec.name
    kept = seen.governed if seen is not None and mine else _values(_previous_entry(work, name).get("hard"))
    if kept:
        entry["hard"] = _text(kept)


def _govern(work: _Pass, ns: NamespaceSpec, seen: ObservedQuota | None, derivations: Mapping[str, Derivation]) -> None:
    """What is governed in one namespace before any change request: kept, restored or bootstrapped."""
    name, resources = ns.name, work.terms.in_force.resources
    used = work.used.get(name)
    # A partial answer is as good as none for a first quota: a guess could be far too small.
    history_ok = work.observed.history_error is None and not work.observed.history_partial
    previous = _values(_previous_entry(work, name).get("hard"))
    governed: Values = {}
    if seen is not None and seen.state == GOVERNED:
        base = seen.governed
        if seen.governed_edited_by and previous:
            # Changed by hand, not through a signed-off change: what this Project last published holds.
            base = previous
            work.events.append(
                Event(
                    "Warning",
                    "GovernedValuesRestored",
                    f"annotation {GOVERNED_ANNOTATION} of ResourceQuota {QUOTA_NAME} in {name} was "
                    f"changed by {', '.join(seen.governed_edited_by)}; restored (change quotas "
                    "through the Project's requested values instead)",
                )
            )
        # Resources that left the terms leave the quota; new ones are bootstrapped once counted.
        governed = {r: v for r, v in base.items() if r in resources or r in ns.requested}
        missing = [r for r in resources if r not in governed and used is not None and r in used]
        if missing and used is not None and history_ok:
            governed.update({r: _bootstrap_value(derivations[r], used) for r in missing})
    elif used is not None and history_ok and all(r in used for r in resources):
        governed = {r: _bootstrap_value(derivations[r], used) for r in resources}
        # Back from Observe, or the quota was deleted: what was governed before (approved raises
        # included, as this Project last published it) holds again, never below use.
        governed.update({r: max(v, used.get(r, v)) for r, v in previous.items() if r in resources})
    if governed:
        work.governed[name] = governed


def _decide_change(work: _Pass) -> None:
    """Pass 2: the change request, as one unit over all namespaces. Its id always covers the whole
    request, so it equals what `headroom change-id` computes offline."""
    spec, terms = work.spec, work.terms
    # A request whose `until` has passed is never applied, however often the file in Git still asks it.
    requested = {ns: values for ns, values in spec.requested.items() if ns not in work.expiry.expired}
    work.blocked = sorted(ns for ns in requested if ns not in work.governed)
    loosened = (*terms.loosened, *work.expiry.loosened)
    pending = work.pending = pending_change(terms.identifier, requested, work.governed, loosened)
    if pending is not None and work.blocked:
        why = (
            f"change {pending.id} waits until {', '.join(work.blocked)} is governed (its first quota is not in "
            "place yet)"
        )
        if not terms.signed_off and (pending.raises or pending.loosened):
            why += f"; it raises {pending.describe_raises()} and needs sign-off: {terms.problem}"
        work.decision = ChangeDecision("wait", why, {})
        return
    # --auto-approve-within-recommendation is the built-in rule WITHIN_RECOMMENDATION (_by_rule).
    work.decision = decide(pending, terms.approval, work.used, work.recommended, False)
    if work.decision.action == "wait" and pending is not None:
        _by_rule(work, pending)
    if work.decision.action != "apply" or pending is None:
        return
    hold = _capacity_hold(work, pending)
    if hold is not None and not hold.overridden:
        work.hold = hold
        work.decision = ChangeDecision("wait", hold.reason, {})
        return
    changed = {
        ns: targets
        for ns, targets in work.decision.targets.items()
        if any(work.governed[ns].get(r) != v for r, v in targets.items())
    }
    if changed or pending.loosened:
        _record_applied(work, pending, changed, hold)
    if changed:
        work.events.extend(Event("Warning", "DecreaseClamped", c.message) for c in work.decision.clamped)


def _by_rule(work: _Pass, pending: PendingChange) -> None:
    """A raise waiting for a person is applied if a platform rule covers it (never one used before)."""
    settings = work.settings
    rules = (
        *((WITHIN_RECOMMENDATION,) if settings.auto_approve_within_recommendation else ()),
        *settings.approval_rules,
    )
    if not rules or pending.id in work.terms.approval.used:
        return
    found, why_not = approve_by_rule(work.spec.name, pending, rules, work.recommended, work.observed.daily, work.now)
    if found is None:
        if why_not:
            reason = f"{work.decision.reason}; not auto-approved because {'; '.join(why_not)}"
            work.decision = ChangeDecision("wait", reason, {})
        return
    work.rule = found
    why = f"change {pending.id} is approved by rule {found.rule}: {'; '.join(found.evidence)}"
    work.decision = apply_change(pending, work.used, why)


def _capacity_hold(work: _Pass, pending: PendingChange) -> Hold | None:
    """Whether the overcommit budget holds a change that is otherwise ready to apply."""
    if not work.settings.max_overcommit:
        return None
    annotations = work.body.get("metadata", {}).get("annotations") or {}
    override = Override(
        annotations.get(CAPACITY_OVERRIDE_ANNOTATION),
        annotations.get(CAPACITY_OVERRIDE_BY_ANNOTATION),
        work.spec.requested_by,
        work.terms.approval.used,
    )
    targets = work.decision.targets
    return held(pending.id, targets, work.governed, work.observed.capacity, work.settings.max_overcommit, override)


def _record_applied(
    work: _Pass, pending: PendingChange, changed: Mapping[str, Mapping[str, Decimal]], overridden: Hold | None = None
) -> None:
    spec, terms = work.spec, work.terms
    work.consumed = terms.signed_off
    approved_by = (
        spec.approved_by or "unknown"
        if terms.signed_off
        else f"rule {work.rule.rule}"
        if work.rule is not None
        else "auto-approval"
        if pending.raises
        else "no sign-off needed (decrease)"
    )
    work.applied = {
        "id": pending.id,
        "approvedBy": approved_by,
        "appliedAt": rfc3339(work.now),
        "diff": [c.to_status() for c in pending.changes],
    }
    if pending.loosened:
        work.applied["loosens"] = [c.to_status() for c in pending.loosened]
    if work.rule is not None:
        work.applied["rule"] = work.rule.to_status()  # the rule's name and the figures it compared
    for ns, targets in changed.items():
        work.governed[ns] = {**work.governed[ns], **targets}
    for entry in spec.namespaces:  # a raise with `until` gets its record; a signed-off end moves it
        if entry.name in work.governed and entry.name not in work.expiry.expired:
            before = work.expiry.records.pop(entry.name, None)
            record = record_after_change(
                before, entry, pending.id, pending.changes, work.recommended.get(entry.name, {})
            )
            if record is not None:
                work.expiry.records[entry.name] = record
    described = "; ".join([*(c.describe() for c in pending.changes), *(c.describe() for c in pending.loosened)])
    if overridden is not None:
        # Who let it past the overcommit budget, and by how much, stays with the change.
        work.applied["capacityOverrideBy"] = overridden.overridden_by or "unknown"
        described += f"; past the overcommit budget by capacity override of {work.applied['capacityOverrideBy']}: "
        described += "; ".join(e.describe() for e in overridden.excess)
    if work.rule is not None:
        described += f"; evidence: {'; '.join(work.rule.evidence)}"
    work.events.append(
        Event("Normal", "ChangeApplied", f"applied change {pending.id} (approved by {approved_by}): {described}")
    )


def _desired_objects(work: _Pass) -> tuple[tuple[DesiredQuota, ...], tuple[DesiredLimitRange, ...]]:
    """Pass 3: the quota and LimitRange of each namespace that is counted or governed. The LimitRange
    gives what the floors were made to fit (the approved defaults, or lower ones the Project asks for)."""
    default_limits, default_requests = work.terms.in_force.limitrange_defaults()
    resources, enforced = work.terms.in_force.resources, work.terms.enforced
    quotas, limitranges = [], []
    for name, entry in work.entries.items():
        if "state" in entry:  # refused, unconfirmed, in conflict, missing or observed: nothing to write
            continue
        seen = work.observed.quotas.get(name)
        governed = work.governed.get(name)
        annotations = dict(work.observed.extra_annotations.get(name, {}))
        if governed is None:
            entry["state"] = "Counting"
            annotations[STATE_ANNOTATION] = COUNTING
            # Keep what is there (no write while we wait), counting any resource added meanwhile.
            counted = seen.spec_hard if seen is not None and seen.state == COUNTING else {}
            hard = {r: counted.get(r, unbounded(r)) for r in resources}
        else:
            entry.update(state="Governed", hard=_text(governed), enforced=enforced)
            hard = dict(governed) if enforced else {r: unbounded(r) for r in governed}
            # A resource new to the Project is counted first, then bootstrapped from its real use.
            hard.update({r: unbounded(r) for r in resources if r not in governed})
            annotations[STATE_ANNOTATION] = GOVERNED
            annotations[GOVERNED_ANNOTATION] = _json(governed)
            here = work.applied is not None and name in {c["namespace"] for c in work.applied["diff"]}
            record = work.applied if here else (seen.applied_change if seen else None)
            if record:
                annotations[APPLIED_CHANGE_ANNOTATION] = json.dumps(record, sort_keys=True, separators=(",", ":"))
            annotations.update(_expiry_annotation(work, name, seen))
        quotas.append(DesiredQuota(name, _text(hard), annotations))
        limitranges.append(DesiredLimitRange(name, _text(default_limits), _text(default_requests)))
    return tuple(quotas), tuple(limitranges)


def _expire(work: _Pass) -> None:
    """Pass 1b: raises whose `until` has come are withdrawn (no sign-off: it tightens), with an Event."""
    mine = {
        ns: record
        for ns, q in work.observed.quotas.items()
        if q.project == work.spec.name
        and (record := RaiseRecord.from_annotation(q.annotations.get(RAISE_EXPIRY_ANNOTATION)))
    }
    step = work.expiry = expiry_step(work.spec.namespaces, mine, work.governed, work.used, work.now)
    for name, targets in step.withdrawn.items():
        message = withdrawal_message(name, mine[name], work.governed[name], targets)
        work.governed[name] = {**work.governed[name], **targets}
        work.events.append(Event("Normal", "RaiseWithdrawn", message))
    work.waiting.extend(step.waiting)
    for name, until in step.expired.items():
        if name in work.entries:
            work.entries[name]["expiredRequest"] = {
                "until": rfc3339(until),
                "message": f"the request for {name} ended at {rfc3339(until)} and is not applied; a later "
                "until (or new values) is a new change that needs sign-off",
            }


def _expiry_annotation(work: _Pass, name: str, seen: ObservedQuota | None) -> dict[str, str]:
    """The raise record on the quota, written with the values it bounds; emptied once it is gone."""
    record = work.expiry.records.get(name)
    if record is not None:
        if record.active:
            work.entries[name]["expiresAt"] = rfc3339(record.until)
        work.entries[name]["raise"] = record.to_status()
        return {RAISE_EXPIRY_ANNOTATION: record.to_annotation()}
    return {RAISE_EXPIRY_ANNOTATION: ""} if seen is not None and seen.annotations.get(RAISE_EXPIRY_ANNOTATION) else {}


def _withdrawals(work: _Pass, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A history record per withdrawn raise; from the record on the quota, so a lost status write is
    recovered (and its Event posted then)."""
    for name, record in sorted(work.expiry.records.items()):
        ident = f"withdrawn:{record.change_id}"
        if record.active or record.withdrawn_at is None or any(h.get("id") == ident for h in history):
            continue
        history = append_history(
            history,
            {
                "id": ident,
                "changeId": record.change_id,
                "approvedBy": "expiry (no sign-off needed)",
                "appliedAt": rfc3339(record.withdrawn_at),
                "until": rfc3339(record.until),
                "diff": [
                    {"namespace": name, "resource": r, "to": v}
                    for r, v in sorted(_text(work.governed.get(name, {})).items())
                    if r in record.before
                ],
            },
        )
        if name not in work.expiry.withdrawn:
            work.events.append(
                Event(
                    "Normal",
                    "RaiseWithdrawn",
                    f"the raise of {name} by change {record.change_id} ended at "
                    f"{rfc3339(record.until)} and was withdrawn, recorded after a restart",
                )
            )
    return history


def _leaving(work: _Pass) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(namespaces where Headroom's objects go, namespaces released). A namespace that leaves the
    Project keeps its quota as last governed: taking it out must not unbound it. Objects go only
    where the Project observes, or from a protected namespace that should never have had them."""
    observed, claims = work.observed, work.terms.claims
    ours = {ns for ns, q in observed.quotas.items() if q.project == work.spec.name}
    mine_lr = {ns for ns, lr in observed.limitranges.items() if observed.project_uid in lr.owner_uids}
    observing = {n for n, e in work.entries.items() if e.get("state") == "Observed" and n in ours | mine_lr}
    protected = {
        ns
        for ns in ours
        if ns in work.settings.protected_namespaces and (ns not in claims or claims[ns].state != "confirmed")
    }
    delete_in = tuple(sorted(observing | protected))
    released = tuple(sorted(ns for ns in ours if ns not in work.spec.namespace_names and ns not in delete_in))
    return delete_in, released


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
    return Terms(
        tuple(spec.quota.resources),
        DEFAULT_HEADROOM_PERCENT,
        DEFAULT_LOOKBACK,
        {r: default_minimum(r) for r in spec.quota.resources},
        None,
    )


def terms_in_force(spec: ProjectSpec, body: Mapping[str, Any], settings: Settings) -> Terms:
    """The tighter of the asked and the approved terms: what history is asked for (lookback, resources)."""
    return tighter_terms(Terms.of(spec), approved_terms(spec, body), settings.default_enforcement)[0]


def _bootstrap_value(derivation: Derivation, used: Values) -> Decimal:
    return max(derivation.recommended, used.get(derivation.resource, Decimal(0)))


def _forecasts(work: _Pass) -> dict[str, dict[str, Forecast]]:
    """Where the daily peaks of each namespace are heading, against the hard value that binds it (the
    governed one; before it is governed, or in Observe mode, the one that would apply)."""
    found: dict[str, dict[str, Forecast]] = {}
    for name, derivations in work.derivations.items():
        bound = work.governed.get(name) or work.recommended.get(name) or {}
        offset = work.observed.day_offsets.get(name, timedelta(0))
        mine = {
            resource: trend
            for resource in derivations
            if (daily := work.observed.daily.get((name, resource)))
            and (trend := forecast(daily, bound.get(resource), work.now, offset)) is not None
        }
        if mine:
            found[name] = mine
            work.entries[name]["forecast"] = {resource: to_status(resource, t) for resource, t in sorted(mine.items())}
    return found


def _soonest_full(forecasts: Mapping[str, Mapping[str, Forecast]]) -> dict[str, str]:
    """summary.soonestFull (the printer column): the earliest date a trend reaches its quota."""
    dates = sorted((f.full_at, ns, r) for ns, by in forecasts.items() for r, f in by.items() if f.full_at is not None)
    return {"soonestFull": f"{dates[0][0].date().isoformat()} {dates[0][1]}/{dates[0][2]}"} if dates else {}


def _status(work: _Pass, utilization: Mapping[tuple[str, str], Decimal], released: tuple[str, ...]) -> dict[str, Any]:
    """The status, rendered once from what the pass decided."""
    spec = work.spec
    status: dict[str, Any] = {"observedGeneration": work.generation, "namespaces": list(work.entries.values())}
    status.update(_history(work))
    still_pending = work.pending is not None and work.applied is None
    if work.pending is not None and still_pending:
        # A decrease held at current use stays visible as pending (reason: clamped) until use allows it.
        before = work.old_status.get("pendingChange") or {}
        since = before.get("since") if before.get("id") == work.pending.id else None
        # shortId: what `kubectl get projects` shows and `headroom approve --id` accepts.
        status["pendingChange"] = {
            "id": work.pending.id,
            "shortId": short_id(work.pending.id),
            "since": since or rfc3339(work.now),
            **work.pending.to_status(),
            "reason": work.decision.reason,
        }
        if not since and work.decision.action == "wait" and work.hold is None:  # a hold posts its own
            work.events.append(Event("Normal", "ChangePending", work.decision.reason))
        _note_hold(work, status["pendingChange"], before)
    all_done = all(e.get("state") in ("Governed", "Observed") for e in work.entries.values())
    status["conditions"] = _conditions(work, all_done, still_pending)
    enforced = work.terms.enforced
    status["phase"] = (
        "Observing"
        if not enforced and all_done
        else "Pending"
        if still_pending and all_done
        else "Ready"
        if all_done
        else "Waiting"
    )
    # Ties go to the first (namespace, resource) by name: the order in which the quota listed its
    # resources must not change the status, or every reconcile would rewrite it.
    top = max(sorted(utilization.items()), key=lambda kv: kv[1], default=None)
    status["summary"] = {
        "namespaces": ",".join(spec.namespace_names)[:256],
        "highestUtilization": f"{format_percent(top[1])} {top[0][0]}/{top[0][1]}" if top else "",
        "enforcement": "Enforce" if enforced else "Observe",
    }
    spent = work.pending.id if work.consumed and work.pending is not None else work.terms.changed_before
    status["approved"] = {
        "terms": work.terms.in_force.to_status(),
        "namespaces": sorted(n for n, c in work.terms.claims.items() if c.state == "confirmed"),
        **({"changeId": spent} if spent else {}),
    }
    if released:
        status["released"] = [
            {
                "name": ns,
                "message": (
                    f"namespace {ns} left the Project; its quota stays in force as last governed. The platform lifts "
                    f"it by deleting ResourceQuota {QUOTA_NAME} there, or a Project that governs {ns} takes it over"
                ),
            }
            for ns in released
        ]
    return status


def _note_hold(work: _Pass, pending: dict[str, Any], before: Mapping[str, Any]) -> None:
    """A held change says by how much in its status; the Event is posted once, when the hold begins."""
    if work.hold is None:
        return
    pending["heldForCapacity"] = [e.to_status() for e in work.hold.excess]
    if not (before.get("id") == pending["id"] and before.get("heldForCapacity")):
        work.events.append(Event("Warning", "ChangeHeld", work.hold.reason))


def _history(work: _Pass) -> dict[str, Any]:
    """status.history and lastAppliedChange. The applied record on the quotas is the source of truth:
    a status write lost to a crash is recovered from it, and append_history ignores an id it holds."""
    history = list(work.old_status.get("history") or [])
    last_applied = work.old_status.get("lastAppliedChange")
    records = (
        [work.applied]
        if work.applied
        else [
            q.applied_change
            for q in work.observed.quotas.values()
            if q.project == work.spec.name and q.applied_change and "id" in q.applied_change
        ]
    )
    for record in sorted(records, key=lambda r: str(r.get("appliedAt", ""))):
        if not any(h.get("id") == record["id"] for h in history):
            history = append_history(history, dict(record))
            if record is not work.applied:
                # The Event is posted after the status write; a crash before it lost the Event too.
                work.events.append(
                    Event(
                        "Normal",
                        "ChangeApplied",
                        f"applied change {record['id']} (approved by "
                        f"{record.get('approvedBy', 'unknown')}), recorded after a restart",
                    )
                )
        last_applied = {k: record[k] for k in ("id", "approvedBy", "appliedAt") if k in record}
    history = _withdrawals(work, history)
    out: dict[str, Any] = {"history": history} if history else {}
    if last_applied:
        out["lastAppliedChange"] = last_applied
    return out


def _conditions(work: _Pass, all_done: bool, still_pending: bool) -> list[dict[str, Any]]:
    """The Project's conditions: (type, ok, reason, message) each, decided here, stamped by condition()."""
    decided = [_ready(work, all_done), _history_available(work.observed, work.no_history)]
    if still_pending:
        kind = (
            "HeldForCapacity"
            if work.hold is not None
            else "AwaitingSignOff"
            if work.decision.action == "wait"
            else "Clamped"
        )
        decided.append(("ChangePending", True, kind, work.decision.reason))
    else:
        decided.append(("ChangePending", False, "NoChange", "no change is pending"))
    if work.blocked:
        blocked = ", ".join(work.blocked)
        decided.append(
            (
                "ChangeBlocked",
                True,
                "NamespaceNotGoverned",
                f"requested values for {blocked} wait until the namespace is governed",
            )
        )
    if work.settings.max_overcommit:
        decided.append(_capacity_held(work.hold))
    previous = work.old_status.get("conditions") or []
    return [condition(*c, generation=work.generation, previous=previous, now=work.now) for c in decided]


_Decided = tuple[str, bool, str, str]


def _ready(work: _Pass, all_done: bool) -> _Decided:
    if all_done and not work.terms.enforced:
        return (
            "Ready",
            True,
            "Observing",
            "observe mode: nothing is written; what would be applied is in status.namespaces[].wouldApply",
        )
    if all_done:
        return ("Ready", True, "Governed", "all namespaces are governed")
    waiting = "; ".join(work.waiting) or "waiting for the quota controller to report current use"
    return ("Ready", False, "Waiting", waiting)


def _capacity_held(hold: Hold | None) -> _Decided:
    if hold is None:
        return ("CapacityHeld", False, "WithinBudget", "no change is held by the overcommit budget")
    return ("CapacityHeld", True, "CapacityUnknown" if hold.unknown else "OverBudget", hold.reason)


def _history_available(observed: Observed, no_history: list[str]) -> _Decided:
    if observed.history_error is not None:
        return (
            "HistoryAvailable",
            False,
            "HistoryUnavailable",
            f"history is unavailable ({observed.history_error}); quotas are left as they are and no "
            "quota is lowered until it answers",
        )
    if observed.history_partial:
        return (
            "HistoryAvailable",
            False,
            "HistoryPartial",
            "history answered only in part (missing or unusable series); quotas are left as they are "
            "and new ones wait for a complete answer",
        )
    if no_history:
        return (
            "HistoryAvailable",
            False,
            "NoHistory",
            f"no usage history for {', '.join(no_history)}: the minimum (or current use, if higher) applies",
        )
    return ("HistoryAvailable", True, "HistoryFound", "peaks known for every namespace and resource")


def with_alerts(
    status: Mapping[str, Any], records: list[dict[str, Any]], conditions: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Project's status with what alerting decided: composed once, here, from values."""
    return {**status, "alerts": records, "conditions": merge_conditions(status.get("conditions") or [], conditions)}


def invalid_status(body: Mapping[str, Any], error: Exception, now: datetime) -> dict[str, Any]:
    """The status of a Project the operator cannot read: the rest of its status kept, Ready=False naming
    the field (the schema normally refuses such a Project first)."""
    generation = body.get("metadata", {}).get("generation")
    old = dict(body.get("status") or {})
    ready = condition(
        "Ready", False, "InvalidSpec", str(error), generation=generation, previous=old.get("conditions") or [], now=now
    )
    return {
        **{k: v for k, v in old.items() if k != "conditions"},
        "phase": "Invalid",
        "observedGeneration": generation,
        "conditions": [ready],
    }
