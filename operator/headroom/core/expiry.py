"""Raises that expire: `until` on a namespace entry, the withdrawal at that time, the reminder before it.

A raise signed off with `until` is applied like any other; Headroom then keeps a *raise record* on the
namespace's quota (annotation headroom.dev/raise-expiry, written in the same write as the raised values,
so a crash can neither lose the deadline nor withdraw twice): the change id, when it ends, and what each
raised resource was governed at before. At `until` the raise is withdrawn without sign-off: each raised
value returns to what it was before (or to the recommendation where nothing was governed), never below
current use, never above what is governed now. The record then says "withdrawn", and the request stays
expired for as long as its `until` is in the past: a file in Git that still asks for more does not bring
it back; a new `until` or new values are a new change that needs a new sign-off.

A tenant cannot stretch a raise without a person: the `until` in force is the one that was signed off,
a later or removed `until` is a loosening that waits for sign-off, an earlier one applies at once.

Everything here is pure: `now` is an argument, the business hours are given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from headroom.core.business_hours import BusinessHours, BusinessHoursError, add_business_days, next_opening
from headroom.core.changes import ResourceChange, SettingChange
from headroom.core.conditions import rfc3339
from headroom.core.quantity import canonical, format_together, parse_quantity
from headroom.core.spec import NamespaceSpec

__all__ = [
    "ExpiryStep",
    "Notice",
    "RaiseRecord",
    "expiry_step",
    "next_end",
    "notices_from_status",
    "notices_to_status",
    "owed_notices",
    "record_after_change",
    "records_from_status",
    "reminder_at",
    "withdrawal",
]

Values = Mapping[str, Decimal]


def parse_time(text: Any) -> datetime | None:
    """A time Headroom wrote (RFC 3339), or None when it is missing or damaged."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RaiseRecord:
    """An applied raise that ends: kept on the namespace's quota, next to the governed values."""

    change_id: str
    until: datetime
    before: Values  # resource -> what it was governed at before the raise
    withdrawn_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None

    def to_annotation(self) -> str:
        body: dict[str, Any] = {
            "id": self.change_id,
            "until": rfc3339(self.until),
            "before": {r: canonical(v) for r, v in sorted(self.before.items())},
        }
        if self.withdrawn_at is not None:
            body["withdrawnAt"] = rfc3339(self.withdrawn_at)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: str | None) -> RaiseRecord | None:
        """The record, or None when there is none or it is damaged (then nothing is withdrawn by guess)."""
        try:
            raw = json.loads(text) if text else None
            if not isinstance(raw, dict):
                return None
            until = parse_time(raw.get("until"))
            before = {str(r): parse_quantity(str(v)) for r, v in (raw.get("before") or {}).items()}
        except (ValueError, TypeError, AttributeError):
            return None
        if until is None or not isinstance(raw.get("id"), str):
            return None
        return cls(raw["id"], until, before, parse_time(raw.get("withdrawnAt")))

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"changeId": self.change_id, "until": rfc3339(self.until)}
        out["state"] = "Active" if self.active else "Withdrawn"
        if self.withdrawn_at is not None:
            out["withdrawnAt"] = rfc3339(self.withdrawn_at)
        return out


def withdrawal(record: RaiseRecord, governed: Values, used: Values | None) -> dict[str, Decimal] | None:
    """The governed values once the raise ends: what they were before it, never below current use and
    never above what is governed now (a later decrease stands). None while use is not known: missing
    data is unknown, never zero, so nothing is lowered on it."""
    targets: dict[str, Decimal] = {}
    for resource, before in sorted(record.before.items()):
        if resource not in governed:
            continue
        if used is None or resource not in used:
            return None
        targets[resource] = min(governed[resource], max(before, used[resource]))
    return targets


# --------------------------------------------------------------------------------------------- one pass


@dataclass
class ExpiryStep:
    """What the ends of raises decide in one planning pass, before the change request is decided."""

    records: dict[str, RaiseRecord] = field(default_factory=dict)  # namespace -> record in force
    withdrawn: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # namespace -> values now governed
    expired: dict[str, datetime] = field(default_factory=dict)  # namespace -> until of a request that ended
    loosened: list[SettingChange] = field(default_factory=list)  # a later or removed until
    waiting: list[str] = field(default_factory=list)  # withdrawals held until current use is known


def _until_text(until: datetime | None) -> str:
    return rfc3339(until) if until is not None else "none (permanent)"


def expiry_step(
    namespaces: Sequence[NamespaceSpec],
    records: Mapping[str, RaiseRecord],
    governed: Mapping[str, Values],
    used: Mapping[str, Values],
    now: datetime,
) -> ExpiryStep:
    """Withdraw the raises whose time has come; find requests that ended and `until`s that loosen.

    A request whose `until` has passed is never applied (reported as expired). An active record's
    `until` is the one signed off: an earlier one in the Project applies at once (it tightens), a later
    or removed one is a loosening that waits for sign-off while the signed-off time keeps running.
    """
    step = ExpiryStep()
    for ns in namespaces:
        if ns.until is not None and ns.until <= now:
            step.expired[ns.name] = ns.until
        record = records.get(ns.name)
        if record is None or ns.name not in governed:
            continue
        if record.active and ns.until is not None and ns.until < record.until:
            record = replace(record, until=ns.until)  # an earlier end tightens: in force at once
        elif record.active and record.until > now and (ns.until is None or ns.until > record.until):
            step.loosened.append(
                SettingChange(f"spec.namespaces[{ns.name}].until", _until_text(record.until), _until_text(ns.until))
            )
        if record.active and record.until <= now:
            targets = withdrawal(record, governed[ns.name], used.get(ns.name))
            if targets is None:
                step.waiting.append(
                    f"{ns.name}: the raise ended at {rfc3339(record.until)}; it is withdrawn once current use is known"
                )
            else:
                step.withdrawn[ns.name] = targets
                record = replace(record, withdrawn_at=now)
        step.records[ns.name] = record
    return step


def record_after_change(
    before: RaiseRecord | None,
    ns: NamespaceSpec,
    change_id: str,
    applied: Sequence[ResourceChange],
    recommended: Values,
) -> RaiseRecord | None:
    """The record of a namespace after a change was applied to it (signed off, or needing nobody).

    A raise with `until` starts (or extends) a record; what each resource was governed at before the
    first raise is kept, so a raise on top of a raise still ends at the values before both. Without
    `until` (its removal signed off) the raise is permanent and the record goes.
    """
    if ns.until is None:
        return None
    raised = [c for c in applied if c.namespace == ns.name and c.is_raise]
    if not raised and before is not None and before.active:
        return replace(before, until=ns.until)  # the same raise, ending when the Project now says
    kept = dict(before.before) if before is not None and before.active else {}
    for change in raised:
        if change.resource not in kept:
            was = change.from_value if change.from_value is not None else recommended.get(change.resource)
            if was is not None:
                kept[change.resource] = was
    if not kept:
        return before if before is not None and not before.active else None
    return RaiseRecord(change_id, ns.until, kept)


def withdrawal_message(namespace: str, record: RaiseRecord, governed: Values, targets: Values) -> str:
    parts = []
    for resource, value in sorted(targets.items()):
        was, now_text = format_together([governed.get(resource), value], resource)
        parts.append(f"{resource} from {was} to {now_text}")
    return (
        f"the raise of {namespace} by change {record.change_id} ended at {rfc3339(record.until)} and was "
        f"withdrawn without sign-off: {', '.join(parts) or 'nothing left to lower'} (never below current use)"
    )


# --------------------------------------------------------------------------------------------- notices

NoticeKind = Literal["reminder", "withdrawn"]


def reminder_at(hours: BusinessHours, until: datetime) -> datetime:
    """When to remind the owners that a raise ends: the first open moment from which one business day
    ahead reaches `until` (Mon-Fri 09-17: until Wed 12:00 -> Tue 12:00; until Mon 10:00 -> Fri 10:00;
    until Saturday -> Friday's opening).

    One business day ahead of the next open moment grows with the start, so the earliest such moment
    is found by bisection over the fortnight before `until` (to the second).
    """

    def reaches(moment: datetime) -> bool:
        return add_business_days(hours, next_opening(hours, moment)) >= until

    low, high = until - timedelta(days=14), until
    try:
        if reaches(low):
            return next_opening(hours, low)
        while high - low > timedelta(seconds=1):
            middle = low + (high - low) / 2
            if reaches(middle):
                high = middle
            else:
                low = middle
        return next_opening(hours, high)
    except BusinessHoursError:
        return until  # hours that never open: no reminder before the end itself


@dataclass(frozen=True)
class Notice:
    """One message to the owners about the end of a raise; delivered once per sink, like an alert."""

    id: str
    kind: NoticeKind
    namespace: str
    change_id: str
    until: datetime
    not_before: datetime | None = None  # held until the owners' business hours open
    delivered: frozenset[str] = frozenset()

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "namespace": self.namespace,
            "changeId": self.change_id,
            "until": rfc3339(self.until),
            "deliveredTo": sorted(self.delivered),
        }
        if self.not_before is not None:
            out["notBefore"] = rfc3339(self.not_before)
        return out


def notice_id(project: str, kind: str, namespace: str, change_id: str, until: datetime) -> str:
    """Stable per raise and kind: a receiver de-duplicates on it after a crash re-delivers."""
    text = json.dumps([project, kind, namespace, change_id, rfc3339(until)], separators=(",", ":"))
    return "raise-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def notices_from_status(raw: Any) -> list[Notice]:
    notices: list[Notice] = []
    for item in raw if isinstance(raw, list) else []:
        until = parse_time(item.get("until")) if isinstance(item, Mapping) else None
        if until is None or item.get("kind") not in ("reminder", "withdrawn"):
            continue
        notices.append(
            Notice(
                str(item.get("id")),
                item["kind"],
                str(item.get("namespace")),
                str(item.get("changeId")),
                until,
                parse_time(item.get("notBefore")),
                frozenset(str(s) for s in item.get("deliveredTo") or ()),
            )
        )
    return notices


def notices_to_status(notices: Sequence[Notice]) -> list[dict[str, Any]]:
    return [n.to_status() for n in notices]


def _due(notice: Notice, hours: BusinessHours, now: datetime) -> Notice:
    """Held until the owners' business hours open (the moment is kept, so it does not drift)."""
    if notice.not_before is not None:
        return notice
    try:
        opening = next_opening(hours, now)
    except BusinessHoursError:
        opening = now
    return replace(notice, not_before=opening if opening > now else None)


def owed_notices(
    project: str,
    records: Mapping[str, RaiseRecord],
    before: Sequence[Notice],
    hours: BusinessHours,
    now: datetime,
) -> tuple[list[Notice], datetime | None]:
    """The notices on record after this pass (the outbox), and when to look again.

    A reminder is owed once from `reminder_at` until the raise ends (a reminder that could only go out
    after the end is dropped: the withdrawal notice says it); a withdrawal notice once the raise is
    withdrawn. Notices of raises no longer on record leave the outbox; nothing is ever owed twice.
    """
    known = {n.id: n for n in before}
    kept: list[Notice] = []
    wake: list[datetime] = []
    for namespace, record in sorted(records.items()):
        if record.active:
            remind = reminder_at(hours, record.until)
            wake.append(record.until)
            if now < remind:
                wake.append(remind)
                continue
            kind: NoticeKind = "reminder"
        else:
            kind = "withdrawn"
        ident = notice_id(project, kind, namespace, record.change_id, record.until)
        notice = known.get(ident) or _due(Notice(ident, kind, namespace, record.change_id, record.until), hours, now)
        if kind == "reminder" and notice.not_before is not None and notice.not_before >= record.until:
            continue
        if notice.not_before is not None and notice.not_before > now:
            wake.append(notice.not_before)
        kept.append(notice)
    future = [w for w in wake if w > now]
    return kept, min(future) if future else None


def records_from_status(entries: Any) -> dict[str, RaiseRecord]:
    """The raise of each namespace as the plan published it (status.namespaces[].raise)."""
    found: dict[str, RaiseRecord] = {}
    for entry in entries if isinstance(entries, list) else []:
        raw = entry.get("raise") if isinstance(entry, Mapping) else None
        until = parse_time(raw.get("until")) if isinstance(raw, Mapping) else None
        if isinstance(raw, Mapping) and until is not None and isinstance(raw.get("changeId"), str):
            withdrawn = parse_time(raw.get("withdrawnAt")) if raw.get("state") == "Withdrawn" else None
            found[str(entry.get("name"))] = RaiseRecord(raw["changeId"], until, {}, withdrawn)
    return found


def next_end(namespaces: Sequence[NamespaceSpec], now: datetime) -> datetime | None:
    """The next `until` still ahead: a request that is pending then becomes expired, not pending."""
    ahead = [ns.until for ns in namespaces if ns.until is not None and ns.until > now]
    return min(ahead) if ahead else None


def deliverable(notice: Notice, sinks: frozenset[str], now: datetime) -> bool:
    return not sinks <= notice.delivered and (notice.not_before is None or notice.not_before <= now)


def notice_text(project: str, team: str, notice: Notice) -> str:
    if notice.kind == "reminder":
        return (
            f":hourglass: Project {project} (team {team}): the raise of {notice.namespace} (change "
            f"{notice.change_id}) ends at {rfc3339(notice.until)}; its quota then returns to the values before "
            "the raise. To keep it, request a later `until` on the Project and have it signed off."
        )
    return (
        f":leftwards_arrow_with_hook: Project {project} (team {team}): the raise of {notice.namespace} (change "
        f"{notice.change_id}) ended at {rfc3339(notice.until)} and was withdrawn; the quota is back to the "
        "values before the raise, never below current use."
    )
