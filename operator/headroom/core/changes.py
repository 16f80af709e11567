"""Change ids, pending changes, and the one place that decides whether an approval is valid.

What a Project may have is bounded by its *terms*: the values it requests, the namespaces it
governs, the resources it limits, whether it is enforced, and the inputs of its recommendations
(headroom, lookback, minimum). Any edit that loosens them, through whichever field, hands the team
more of the shared cluster, so it is a raise and waits for sign-off: the Project's approved-change
annotation must name exactly the change that is pending, must come from someone other than the
person who asked for it, and is used once. Tightening needs no sign-off and applies at once;
lowering a quota is never taken below what is already running.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any, Literal

from headroom.core.derivation import container_defaults, default_minimum, one_container
from headroom.core.names import APPROVED_CHANGE_ANNOTATION
from headroom.core.quantity import canonical, format_quantity, format_together, parse_quantity
from headroom.core.spec import (
    DEFAULT_HEADROOM_PERCENT,
    DEFAULT_LOOKBACK,
    ProjectSpec,
    format_duration,
    parse_duration,
)

__all__ = [
    "Approval",
    "ChangeDecision",
    "ClampedTarget",
    "PendingChange",
    "ResourceChange",
    "SettingChange",
    "Terms",
    "append_history",
    "apply_change",
    "approval_problem",
    "change_id",
    "decide",
    "pending_change",
    "short_id",
    "tighter_terms",
]

ID_PREFIX = "sha256:"

Targets = dict[str, dict[str, Decimal]]


def change_id(spec: ProjectSpec) -> str:
    """The id of everything in a Project that bounds what it may have: its terms and its request.

    Computable offline from the Project file alone (`headroom change-id`), so a reviewed commit can
    carry its own approval. Quantities are compared by value ("1" and "1000m" give the same id) and
    the project name is included, so an approval cannot be replayed on another Project. Fields that
    bound nothing (owner, alerts) are left out: editing them voids no approval.
    """
    body: dict[str, Any] = {
        "project": spec.name,
        "namespaces": {ns.name: {r: canonical(v) for r, v in ns.requested.items()} for ns in spec.namespaces},
        "resources": sorted(spec.quota.resources),
        "headroomPercent": spec.quota.headroom_percent,
        "lookback": int(spec.quota.lookback.total_seconds()),
        "minimum": {r: canonical(v) for r, v in spec.quota.minimum.items()},
        "enforcement": spec.quota.enforcement or "",
        "reason": spec.reason or "",
        "defaults": {
            "requests": {r: canonical(v) for r, v in spec.defaults.requests.items()},
            "limits": {r: canonical(v) for r, v in spec.defaults.limits.items()},
        },
    }
    # When a raise ends and why it is asked for are part of the change (a longer time or another reason
    # is another change); left out when no namespace names them, so older ids stay what they were.
    ending = {
        ns.name: {
            **({"until": ns.until.astimezone(UTC).isoformat()} if ns.until else {}),
            **({"reason": ns.reason} if ns.reason else {}),
        }
        for ns in spec.namespaces
        if ns.until or ns.reason
    }
    if ending:
        body["namespaceTerms"] = ending
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return ID_PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()


SHORT_ID_DIGITS = 12


def short_id(identifier: str) -> str:
    """The id as people quote it: `sha256:` and its first 12 hex digits (`headroom approve --id` takes it)."""
    return identifier[: len(ID_PREFIX) + SHORT_ID_DIGITS] if identifier.startswith(ID_PREFIX) else identifier


# --------------------------------------------------------------------------------------------- terms


@dataclass(frozen=True)
class Terms:
    """The settings of a Project that bound what it may get without a person deciding.

    `minimum` holds every floor explicitly (the built-in one where the Project names none), so
    two terms compare resource by resource. `container` is what one container that sets nothing gets
    from the LimitRange defaults (the floors never go below it, so it bounds what a Project gets too).
    """

    resources: tuple[str, ...]
    headroom_percent: int
    lookback: timedelta
    minimum: Mapping[str, Decimal]
    enforcement: str | None  # None: follow the operator's --mode
    container: Mapping[str, Decimal] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: ProjectSpec) -> Terms:
        quota = spec.quota
        floors = {r: quota.minimum.get(r, default_minimum(r)) for r in (*quota.resources, *quota.minimum)}
        container = one_container(*container_defaults(spec.defaults.requests, spec.defaults.limits))
        return cls(tuple(quota.resources), quota.headroom_percent, quota.lookback, floors, quota.enforcement, container)

    def limitrange_defaults(self) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """The LimitRange's (default limits, default requests) that give one container `container`."""
        limits = {r.removeprefix("limits."): v for r, v in self.container.items() if r.startswith("limits.")}
        requests = {r.removeprefix("requests."): v for r, v in self.container.items() if r.startswith("requests.")}
        return limits, requests

    def to_status(self) -> dict[str, Any]:
        return {
            "resources": list(self.resources),
            "headroomPercent": self.headroom_percent,
            "lookback": format_duration(self.lookback),
            "minimum": {r: format_quantity(v, r) for r, v in sorted(self.minimum.items())},
            "enforcement": self.enforcement,
            "container": {r: format_quantity(v, r) for r, v in sorted(self.container.items())},
        }

    @classmethod
    def from_status(cls, raw: Any) -> Terms | None:
        """The terms Headroom recorded as approved, or None when there are none (or they are damaged)."""
        if not isinstance(raw, Mapping):
            return None
        try:
            resources = tuple(str(r) for r in raw.get("resources") or ())
            percent = int(raw.get("headroomPercent", DEFAULT_HEADROOM_PERCENT))
            lookback = parse_duration(str(raw.get("lookback") or format_duration(DEFAULT_LOOKBACK)))
            minimum = {str(r): parse_quantity(str(v)) for r, v in (raw.get("minimum") or {}).items()}
            container = {str(r): parse_quantity(str(v)) for r, v in (raw["container"] or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        enforcement = raw.get("enforcement")
        return cls(
            resources,
            percent,
            lookback,
            minimum,
            enforcement if enforcement in ("Enforce", "Observe") else None,
            container,
        )


@dataclass(frozen=True)
class SettingChange:
    """One way an edit loosens a Project's terms: a namespace claimed, a floor raised, a limit dropped."""

    subject: str
    from_text: str
    to_text: str

    def describe(self) -> str:
        return f"{self.subject} from {self.from_text} to {self.to_text}"

    def to_status(self) -> dict[str, str]:
        return {"field": self.subject, "from": self.from_text, "to": self.to_text}


def tighter_terms(asked: Terms, approved: Terms, default_enforcement: str) -> tuple[Terms, tuple[SettingChange, ...]]:
    """The terms in force while nothing is signed off, and what `asked` loosens beyond `approved`.

    Field by field, the tighter of the two holds: what the Project asks where it tightens (that
    needs nobody), what was approved where it loosens (that waits for sign-off).
    """
    loosened: list[SettingChange] = []
    dropped = [r for r in approved.resources if r not in asked.resources]
    resources = (*asked.resources, *dropped)
    loosened.extend(SettingChange("spec.quota.resources", f"limits {r}", f"does not limit {r}") for r in dropped)

    percent = asked.headroom_percent
    if asked.headroom_percent > approved.headroom_percent:
        loosened.append(
            SettingChange("spec.quota.headroomPercent", str(approved.headroom_percent), str(asked.headroom_percent))
        )
        percent = approved.headroom_percent
    lookback = asked.lookback
    if asked.lookback > approved.lookback:
        # A longer window can only find a higher peak.
        loosened.append(
            SettingChange("spec.quota.lookback", format_duration(approved.lookback), format_duration(asked.lookback))
        )
        lookback = approved.lookback
    minimum: dict[str, Decimal] = {}
    for r in sorted({*asked.minimum, *approved.minimum}):
        want = asked.minimum.get(r, default_minimum(r))
        had = approved.minimum.get(r, default_minimum(r))
        if want > had:
            loosened.append(SettingChange(f"spec.quota.minimum[{r}]", *format_together([had, want], r)))
        minimum[r] = min(want, had)
    # A larger default for containers that set nothing hands every such pod more, and raises the floors.
    container: dict[str, Decimal] = {}
    for r in sorted({*asked.container, *approved.container}):
        want, had = asked.container.get(r, Decimal(0)), approved.container.get(r, Decimal(0))
        if want > had:
            kind, name = r.split(".", 1)
            loosened.append(
                SettingChange(
                    f"spec.defaults.{kind}.{name}", format_quantity(had, r) if had else "none", format_quantity(want, r)
                )
            )
        if min(want, had) > 0:
            container[r] = min(want, had)
    enforcement = asked.enforcement
    if (asked.enforcement or default_enforcement) == "Observe" and (
        approved.enforcement or default_enforcement
    ) == "Enforce":
        loosened.append(SettingChange("spec.quota.enforcement", "Enforce", "Observe (quotas not enforced)"))
        enforcement = approved.enforcement
    return Terms(resources, percent, lookback, minimum, enforcement, container), tuple(loosened)


# --------------------------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class ResourceChange:
    namespace: str
    resource: str
    from_value: Decimal | None  # None: the quota does not limit this resource yet
    to_value: Decimal

    @property
    def is_raise(self) -> bool:
        # Starting to limit a resource counts as a raise: it is new, unreviewed capacity.
        return self.from_value is None or self.to_value > self.from_value

    @property
    def is_decrease(self) -> bool:
        return self.from_value is not None and self.to_value < self.from_value

    @property
    def label(self) -> str:
        return f"{self.namespace} {self.resource}"

    def describe(self) -> str:
        # One unit on both sides: "from 4800m to 6000m", never "from 4800m to 6".
        from_text, to_text = format_together([self.from_value, self.to_value], self.resource)
        if self.from_value is None:
            return f"{self.label} to {to_text} (currently unlimited)"
        return f"{self.label} from {from_text} to {to_text}"

    def to_status(self) -> dict[str, str | None]:
        return {
            "namespace": self.namespace,
            "resource": self.resource,
            "from": None if self.from_value is None else format_quantity(self.from_value, self.resource),
            "to": format_quantity(self.to_value, self.resource),
        }


@dataclass(frozen=True)
class PendingChange:
    id: str
    changes: tuple[ResourceChange, ...]
    loosened: tuple[SettingChange, ...] = ()  # claims and settings that loosen the terms

    @property
    def raises(self) -> tuple[ResourceChange, ...]:
        return tuple(change for change in self.changes if change.is_raise)

    @property
    def decreases(self) -> tuple[ResourceChange, ...]:
        return tuple(change for change in self.changes if change.is_decrease)

    @property
    def is_pure_decrease(self) -> bool:
        return not self.loosened and bool(self.changes) and all(c.is_decrease for c in self.changes)

    def describe_raises(self) -> str:
        return "; ".join([*(c.describe() for c in self.raises), *(s.describe() for s in self.loosened)])

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"diff": [c.to_status() for c in self.changes]}
        if self.loosened:
            status["loosens"] = [s.to_status() for s in self.loosened]
        return status


def pending_change(
    identifier: str,
    requested: Mapping[str, Mapping[str, Decimal]],
    applied: Mapping[str, Mapping[str, Decimal]],
    loosened: Iterable[SettingChange] = (),
) -> PendingChange | None:
    """What the request would change in the applied quotas and terms, or None if they already agree."""
    changes = tuple(
        ResourceChange(namespace, resource, applied.get(namespace, {}).get(resource), to_value)
        for namespace in sorted(requested)
        for resource, to_value in sorted(requested[namespace].items())
        if applied.get(namespace, {}).get(resource) != to_value
    )
    loosened = tuple(loosened)
    if not changes and not loosened:
        return None
    return PendingChange(id=identifier, changes=changes, loosened=loosened)


@dataclass(frozen=True)
class Approval:
    """A sign-off as the Project carries it, and what Headroom remembers of earlier ones."""

    change_id: str | None  # the approved-change annotation
    approved_by: str | None = None
    requested_by: str | None = None
    used: frozenset[str] = field(default_factory=frozenset)  # ids of changes already applied


def approval_problem(identifier: str, approval: Approval) -> str | None:
    """Why the approval does not sign off the change `identifier`, or None when it does.

    The one rule for a valid sign-off: it names exactly this change, the change was not applied
    before (an approval is used once), and the person who signed it off is not the one who asked
    for it (four eyes means two people). The admission policy makes both names the writers' own.
    """
    how = f"set annotation {APPROVED_CHANGE_ANNOTATION}={identifier} on the Project to approve it"
    approved = approval.change_id.strip() if approval.change_id else None
    if not approved:
        return f"no approval yet ({how})"
    if approved != identifier:
        return f"the approval annotation names a different change ({approved}), so it approves nothing ({how})"
    if identifier in approval.used:
        return (
            f"the approval names change {identifier}, which was already applied once: an approval is used "
            "once. To ask for these terms again, make it a new change (for example a new spec.reason) "
            "and have it signed off"
        )
    if approval.approved_by and approval.requested_by and approval.approved_by == approval.requested_by:
        return (
            f"the change was requested and signed off by the same person ({approval.approved_by}); four "
            "eyes means two people: another approver must sign it off"
        )
    return None


@dataclass(frozen=True)
class ClampedTarget:
    """A decrease that was held at current use instead of the requested value."""

    namespace: str
    resource: str
    requested: Decimal
    used: Decimal

    @property
    def message(self) -> str:
        requested, used = format_together([self.requested, self.used], self.resource)
        return (
            f"{self.namespace} {self.resource}: requested {requested} is below current use {used}, "
            f"so it was set to {used}"
        )


@dataclass(frozen=True)
class ChangeDecision:
    action: Literal["apply", "wait", "none"]
    reason: str
    targets: Targets  # namespace -> resource -> hard value to set; empty unless action is "apply"
    clamped: tuple[ClampedTarget, ...] = ()


def _lookup(values: Mapping[str, Mapping[str, Decimal]], change: ResourceChange) -> Decimal | None:
    return values.get(change.namespace, {}).get(change.resource)


def _targets(
    pending: PendingChange, used: Mapping[str, Mapping[str, Decimal]]
) -> tuple[Targets, tuple[ClampedTarget, ...], list[ResourceChange]]:
    """Values to set, decreases held at current use; also the decreases whose use is not known."""
    targets: Targets = {}
    clamped: list[ClampedTarget] = []
    unknown_use: list[ResourceChange] = []
    for change in pending.changes:
        value = change.to_value
        if change.is_decrease:
            in_use = _lookup(used, change)
            if in_use is None:
                unknown_use.append(change)
            elif in_use > value:
                clamped.append(ClampedTarget(change.namespace, change.resource, value, in_use))
                value = in_use
        targets.setdefault(change.namespace, {})[change.resource] = value
    return targets, tuple(clamped), unknown_use


def _apply(pending: PendingChange, used: Mapping[str, Mapping[str, Decimal]], why: str) -> ChangeDecision:
    targets, clamped, unknown_use = _targets(pending, used)
    if unknown_use:
        # Missing data is unknown, never zero: a decrease could cut below what is running.
        labels = ", ".join(change.label for change in unknown_use)
        return ChangeDecision(
            "wait",
            f"change {pending.id} lowers {labels}, but current use there is not known yet; "
            "it will be applied once it is",
            {},
        )
    reason = why
    if clamped:
        reason += "; " + "; ".join(clamp.message for clamp in clamped)
    return ChangeDecision("apply", reason, targets, clamped)


def apply_change(pending: PendingChange, used: Mapping[str, Mapping[str, Decimal]], why: str) -> ChangeDecision:
    """Apply `pending` for the reason given (a rule approved it): decreases still held at current use."""
    return _apply(pending, used, why)


def _within_recommendation(pending: PendingChange, recommended: Mapping[str, Mapping[str, Decimal]]) -> list[str]:
    """The raises that exceed (or have no) recommendation, described for a person."""
    beyond: list[str] = []
    for change in pending.raises:
        limit = _lookup(recommended, change)
        if limit is None:
            beyond.append(f"{change.label} has no recommendation")
        elif change.to_value > limit:
            asked, bound = format_together([change.to_value, limit], change.resource)
            beyond.append(f"{change.label} {asked} is above the recommendation {bound}")
    return beyond


def decide(
    pending: PendingChange | None,
    approval: Approval,
    used: Mapping[str, Mapping[str, Decimal]],
    recommended: Mapping[str, Mapping[str, Decimal]],
    auto_approve_within_recommendation: bool,
) -> ChangeDecision:
    """Decide whether a pending change may be applied now, and with which values.

    A change is one unit: if any part of it raises a quota or loosens the terms, all of it waits
    for sign-off, so an approval always covers exactly what will happen.
    """
    if pending is None:
        return ChangeDecision("none", "no change requested: the applied quotas match the request", {})

    if pending.is_pure_decrease:
        return _apply(pending, used, f"change {pending.id} only lowers quotas, which needs no sign-off")

    problem = approval_problem(pending.id, approval)
    if problem is None:
        return _apply(pending, used, f"change {pending.id} is approved")

    beyond: list[str] = []
    if auto_approve_within_recommendation:
        # Only values: a claim or a loosened setting always needs a person.
        beyond = [f"{s.subject} needs sign-off" for s in pending.loosened]
        beyond += _within_recommendation(pending, recommended)
        if not beyond:
            return _apply(pending, used, f"change {pending.id} raises quotas only up to the current recommendation")

    reason = f"change {pending.id} raises {pending.describe_raises()} and needs sign-off: {problem}"
    if beyond:
        reason += "; not auto-approved because " + "; ".join(beyond)
    return ChangeDecision("wait", reason, {})


def append_history(history: list[dict[str, Any]], entry: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
    """A new history list with `entry` appended, keeping only the newest `limit` entries.

    Reconciles repeat, so recording the same change twice in a row is a no-op.
    """
    if limit < 1:
        raise ValueError(f"history limit must be at least 1, not {limit}")
    if "id" not in entry:
        raise ValueError("a history entry needs an id")
    if history and history[-1].get("id") == entry["id"]:
        return list(history[-limit:])
    return [*history, entry][-limit:]
