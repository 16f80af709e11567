"""Change ids, pending changes, and the decision whether a change may be applied.

Raising a quota hands a team more of the shared cluster, so a raise needs
sign-off: the Project's approved-change annotation must name exactly the
change that is pending. Lowering a quota needs no sign-off, but it is never
taken below what is already running.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from headroom.project_spec import APPROVED_CHANGE_ANNOTATION
from headroom.quantity import canonical, format_quantity, parse_quantity

__all__ = [
    "ChangeDecision",
    "ClampedTarget",
    "PendingChange",
    "ResourceChange",
    "append_history",
    "change_id",
    "decide",
    "pending_change",
]

ID_PREFIX = "sha256:"

Targets = dict[str, dict[str, Decimal]]


def change_id(project_name: str, requested: Mapping[str, Mapping[str, Decimal | str]]) -> str | None:
    """A stable id for a whole change request, or None when nothing is requested.

    Quantities are compared by value, so "1" and "1000m" give the same id; the
    project name is included so one approval cannot be replayed on another project.
    """
    body = {
        namespace: {resource: canonical(parse_quantity(value)) for resource, value in resources.items()}
        for namespace, resources in requested.items()
        if resources
    }
    if not body:
        return None
    text = json.dumps(
        {"project": project_name, "requested": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return ID_PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()


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
        to_text = format_quantity(self.to_value, self.resource)
        if self.from_value is None:
            return f"{self.label} to {to_text} (currently unlimited)"
        return f"{self.label} from {format_quantity(self.from_value, self.resource)} to {to_text}"

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

    @property
    def raises(self) -> tuple[ResourceChange, ...]:
        return tuple(change for change in self.changes if change.is_raise)

    @property
    def decreases(self) -> tuple[ResourceChange, ...]:
        return tuple(change for change in self.changes if change.is_decrease)

    @property
    def is_pure_decrease(self) -> bool:
        return bool(self.changes) and all(change.is_decrease for change in self.changes)


def pending_change(
    project_name: str,
    requested: Mapping[str, Mapping[str, Decimal]],
    applied: Mapping[str, Mapping[str, Decimal]],
) -> PendingChange | None:
    """What the request would change in the applied quotas, or None if they already agree."""
    changes = tuple(
        ResourceChange(namespace, resource, applied.get(namespace, {}).get(resource), to_value)
        for namespace in sorted(requested)
        for resource, to_value in sorted(requested[namespace].items())
        if applied.get(namespace, {}).get(resource) != to_value
    )
    if not changes:
        return None
    identifier = change_id(project_name, requested)
    if identifier is None:  # unreachable: a change implies something was requested
        return None
    return PendingChange(id=identifier, changes=changes)


@dataclass(frozen=True)
class ClampedTarget:
    """A decrease that was held at current use instead of the requested value."""

    namespace: str
    resource: str
    requested: Decimal
    used: Decimal

    @property
    def message(self) -> str:
        used = format_quantity(self.used, self.resource)
        return (
            f"{self.namespace} {self.resource}: requested {format_quantity(self.requested, self.resource)} "
            f"is below current use {used}, so it was set to {used}"
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


def _within_recommendation(
    pending: PendingChange, recommended: Mapping[str, Mapping[str, Decimal]]
) -> list[str]:
    """The raises that exceed (or have no) recommendation, described for a person."""
    beyond: list[str] = []
    for change in pending.raises:
        limit = _lookup(recommended, change)
        if limit is None:
            beyond.append(f"{change.label} has no recommendation")
        elif change.to_value > limit:
            beyond.append(
                f"{change.label} {format_quantity(change.to_value, change.resource)} is above the "
                f"recommendation {format_quantity(limit, change.resource)}"
            )
    return beyond


def decide(
    pending: PendingChange | None,
    approved_id: str | None,
    used: Mapping[str, Mapping[str, Decimal]],
    recommended: Mapping[str, Mapping[str, Decimal]],
    auto_approve_within_recommendation: bool,
) -> ChangeDecision:
    """Decide whether a pending change may be applied now, and with which values.

    A change is one unit: if any part of it raises a quota, all of it waits for
    sign-off, so an approval always covers exactly what will happen.
    """
    if pending is None:
        return ChangeDecision("none", "no change requested: the applied quotas match the request", {})

    if pending.is_pure_decrease:
        return _apply(pending, used, f"change {pending.id} only lowers quotas, which needs no sign-off")

    approved_id = approved_id.strip() if approved_id else None
    if approved_id == pending.id:
        return _apply(pending, used, f"change {pending.id} is approved")

    beyond: list[str] = []
    if auto_approve_within_recommendation:
        beyond = _within_recommendation(pending, recommended)
        if not beyond:
            return _apply(
                pending, used, f"change {pending.id} raises quotas only up to the current recommendation"
            )

    raised = "; ".join(change.describe() for change in pending.raises)
    how = f"set annotation {APPROVED_CHANGE_ANNOTATION}={pending.id} on the Project to approve it"
    if approved_id is None:
        reason = f"change {pending.id} raises {raised} and needs sign-off: no approval yet ({how})"
    else:
        reason = (
            f"the approval annotation names a different change ({approved_id}), so it approves nothing; "
            f"current pending change is {pending.id}, which raises {raised} ({how})"
        )
    if beyond:
        reason += "; not auto-approved because " + "; ".join(beyond)
    return ChangeDecision("wait", reason, {})


def append_history(
    history: list[dict[str, Any]], entry: dict[str, Any], limit: int = 20
) -> list[dict[str, Any]]:
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
