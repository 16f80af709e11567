"""Quota-denial incidents: a pod refused by Headroom's quota is an outage in the making.

When a workload controller (ReplicaSet, Job, StatefulSet, DaemonSet) cannot create a pod because
the API server's quota admission refuses it, it posts a `FailedCreate` Event on itself whose
message carries the admission error, e.g.::

    Error creating: pods "web-7d9f8c6b5-x2x9q" is forbidden: exceeded quota: headroom,
    requested: requests.cpu=2, used: requests.cpu=9, limited: requests.cpu=10

(k8s.io/apiserver, admission/plugin/resourcequota: "exceeded quota: %s, requested: %s, used: %s,
limited: %s", each list "name=quantity" joined by "," in name order, naming only the resources that
were exceeded). This module reads such an Event into a :class:`Denial`, groups the denials of one
workload into one :class:`Incident`, and decides what the owners are told and when, with the
same outbox discipline as the threshold alerts (core/alert_policy.py):

* **One incident per workload.** Denials of one workload (namespace, kind, name) while an incident
  is open extend it; it resolves when none came for the quiet period. The workload controllers
  retry a refused create with a per-object exponential backoff capped at 1000 s (client-go's
  default controller rate limiter), so a deployment that stays blocked is refused again at least
  every 16m40s: the default quiet period, 20 minutes, is longer than that, so that a still-blocked
  workload never looks resolved between two retries and then opens a second incident.
* **At once.** A denial is announced when it opens, whatever the hour, unless the Project asks for
  business hours (``spec.alerts.denials: BusinessHours``); an incident that resolves before its
  announcement was handed out is never sent at all, and "resolved" only follows a "firing".
* **Two-phase delivery.** As in alert_policy: a notification waits in the incident's ``outbox``
  until every sink acknowledged it; the caller persists the state before delivering, so a crash
  re-delivers the same ``id`` and never loses or invents one.
* **Restarts.** The Events themselves are the input: after a restart the watch lists them again.
  A denial not newer than what an incident already holds, or older than the quiet period, changes
  nothing, so replayed Events neither reopen nor re-announce an incident.

Pure: ``now`` is passed in, the state is an immutable value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from headroom.core.business_hours import BusinessHours, next_opening
from headroom.core.changes import change_id, short_id
from headroom.core.conditions import condition, rfc3339
from headroom.core.names import FAILED_CREATE_REASON, QUOTA_DENIED_CONDITION, QUOTA_NAME
from headroom.core.quantity import QuantityError, format_quantity, format_together, parse_quantity
from headroom.core.spec import ProjectSpec

__all__ = [
    "BUSINESS_HOURS",
    "DEFAULT_QUIET",
    "IMMEDIATE",
    "Denial",
    "DenialNotification",
    "DenialPolicy",
    "DenialState",
    "DeniedPod",
    "Incident",
    "IncidentKey",
    "Suggestion",
    "denial_condition",
    "describe",
    "evaluate_denials",
    "make_room",
    "mark_denial_delivered",
    "next_check",
    "observe_event",
    "owner_of",
    "parse_denial",
    "pending_denials",
    "state_from_status",
    "state_to_status",
]

DenialTiming = Literal["Immediate", "BusinessHours"]
IMMEDIATE: DenialTiming = "Immediate"
BUSINESS_HOURS: DenialTiming = "BusinessHours"

DenialState = tuple["Incident", ...]
NotificationState = Literal["firing", "resolved"]

DEFAULT_QUIET = timedelta(minutes=20)

# One "name=quantity" list as prettyPrint writes it; quantities and resource names hold no "," or space.
_LIST = r"[^\s,=]+=[^\s,]+(?:,[^\s,=]+=[^\s,]+)*"
_EXCEEDED = re.compile(
    rf"exceeded quota: (?P<quota>[^\s,]+), requested: (?P<requested>{_LIST}), "
    rf"used: (?P<used>{_LIST}), limited: (?P<limited>{_LIST})"
)
_POD = re.compile(r'pods "(?P<pod>[^"]*)" is forbidden')


@dataclass(frozen=True)
class Denial:
    """One refusal by a quota: what the pod asked for, what was used, the limit, per exceeded resource."""

    quota: str
    requested: Mapping[str, Decimal]
    used: Mapping[str, Decimal]
    limited: Mapping[str, Decimal]
    pod: str = ""

    @property
    def shortfall(self) -> dict[str, Decimal]:
        """How much more each resource needs for this pod to fit: requested + used - limited."""
        out = {}
        for resource, limit in self.limited.items():
            missing = self.requested.get(resource, Decimal(0)) + self.used.get(resource, Decimal(0)) - limit
            if missing > 0:
                out[resource] = missing
        return dict(sorted(out.items()))

    @property
    def needed(self) -> dict[str, Decimal]:
        """The smallest hard value per resource that admits this pod: used + requested."""
        return {r: self.used.get(r, Decimal(0)) + self.requested.get(r, Decimal(0)) for r in self.shortfall}


def _resource_list(text: str) -> dict[str, Decimal] | None:
    values: dict[str, Decimal] = {}
    for pair in text.split(","):
        resource, _, quantity = pair.partition("=")
        try:
            values[resource] = parse_quantity(quantity)
        except QuantityError:
            return None
    return values


def parse_denial(message: str) -> Denial | None:
    """The quota denial in an Event message, or None when the message is not one (or is garbled).

    Accepts every wrapping the controllers use ("Error creating: ...", "create Pod web-0 in
    StatefulSet web failed error: ...", the recorder's "(combined from similar events): ...").
    """
    if not isinstance(message, str):
        return None
    match = _EXCEEDED.search(message)
    if match is None:
        return None
    lists = [_resource_list(match[part]) for part in ("requested", "used", "limited")]
    requested, used, limited = lists
    if requested is None or used is None or limited is None:
        return None
    pod = _POD.search(message)
    denial = Denial(match["quota"], requested, used, limited, pod["pod"] if pod else "")
    return denial if denial.shortfall else None


class IncidentKey(NamedTuple):
    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class DeniedPod:
    """One denial Event as last seen: whose pods, when last refused, how many times (its count)."""

    key: IncidentKey
    at: datetime
    denial: Denial
    uid: str = ""
    count: int = 1


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    series = event.get("series") or {}
    meta = event.get("metadata") or {}
    for text in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        meta.get("creationTimestamp"),
    ):
        if isinstance(text, str) and text:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)
    return None


def observe_event(event: Mapping[str, Any], quota: str = QUOTA_NAME) -> DeniedPod | None:
    """A core/v1 Event as a denial by the quota named `quota`, or None when it is something else."""
    if event.get("reason") != FAILED_CREATE_REASON:
        return None
    denial = parse_denial(str(event.get("message") or ""))
    involved = event.get("involvedObject") or {}
    namespace, kind, name = involved.get("namespace"), involved.get("kind"), involved.get("name")
    at = _event_time(event)
    if denial is None or denial.quota != quota or at is None:
        return None
    if not (isinstance(namespace, str) and isinstance(kind, str) and isinstance(name, str)):
        return None
    count = event.get("count") or (event.get("series") or {}).get("count") or 1
    count = count if isinstance(count, int) and count > 0 else 1
    uid = str((event.get("metadata") or {}).get("uid") or "")
    return DeniedPod(IncidentKey(namespace, kind, name), at, denial, uid=uid, count=count)


def owner_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) of an object's controller (a ReplicaSet's Deployment), from its ownerReferences."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind") and ref.get("name"):
            return str(ref["kind"]), str(ref["name"])
    return None


# ------------------------------------------------------------------------------------------ suggestion


@dataclass(frozen=True)
class Suggestion:
    """The `headroom request` that would make room for the refused pod, and the id it would have."""

    command: str
    change_id: str
    values: Mapping[str, Decimal] = field(default_factory=dict)


def make_room(spec: ProjectSpec, namespace: str, denial: Denial) -> Suggestion | None:
    """Request, for each exceeded resource, the hard value that admits the refused pod (used +
    requested), never less than what the namespace already requests. The change id is the one
    `headroom request` prints and a reviewer approves: that of the Project with this request."""
    entry = next((ns for ns in spec.namespaces if ns.name == namespace), None)
    if entry is None:
        return None
    values = {r: max(v, entry.requested.get(r, Decimal(0))) for r, v in denial.needed.items()}
    requested = {**entry.requested, **values}
    namespaces = tuple(replace(ns, requested=requested) if ns is entry else ns for ns in spec.namespaces)
    identifier = change_id(replace(spec, namespaces=namespaces))
    shown = " ".join(f"{r}={format_quantity(v, r)}" for r, v in sorted(values.items()))
    return Suggestion(f"headroom request {spec.name} {namespace} {shown}", identifier, values)


# -------------------------------------------------------------------------------------------- incidents


@dataclass(frozen=True)
class DenialPolicy:
    quiet: timedelta = DEFAULT_QUIET
    timing: DenialTiming = IMMEDIATE

    def __post_init__(self) -> None:
        if self.quiet <= timedelta(0):
            raise ValueError(f"the quiet period must be positive, got {self.quiet}")


@dataclass(frozen=True)
class DenialNotification:
    """One message about an incident; ``id`` is stable, for receivers to de-duplicate on."""

    id: str
    key: IncidentKey
    state: NotificationState
    since: datetime
    denials: int
    denial: Denial
    command: str = ""
    change_id: str = ""
    last_seen: datetime | None = None  # the last denial (a resolution's `since` is when it resolved)


@dataclass(frozen=True)
class Incident:
    """One workload's denials. ``active`` while they continue; ``announced``: the last notification
    handed out said "firing"; ``ended``: when it resolved (last denial + quiet period)."""

    key: IncidentKey
    since: datetime
    last_seen: datetime
    denials: int
    denial: Denial
    active: bool = True
    ended: datetime | None = None
    command: str = ""
    change_id: str = ""
    announced: bool = False
    not_before: datetime | None = None
    outbox: DenialNotification | None = None
    sinks: frozenset[str] = frozenset()
    delivered_sinks: frozenset[str] = frozenset()

    @property
    def idle(self) -> bool:
        return not self.active and not self.announced and self.outbox is None


def _fold(
    incidents: dict[IncidentKey, Incident],
    seen: Sequence[DeniedPod],
    spec: ProjectSpec,
    policy: DenialPolicy,
    now: datetime,
) -> None:
    """One workload's denial Events into its incident: extend an open one, open a new one, or nothing.

    The number of denials is the Events' own count (the recorder counts repeats on one Event) summed
    over the Events of the incident; it only ever grows, so a forgotten old Event lowers nothing.
    """
    fresh = [d for d in seen if now - d.at < policy.quiet]  # older ones belong to a resolved incident
    before = incidents.get(seen[0].key) if seen else None
    if before is not None and before.active:
        since = before.since
    else:
        # A resolved incident's Events are old news (a replay after a restart, a re-list).
        fresh = [d for d in fresh if before is None or d.at > before.last_seen]
        if not fresh:
            return
        since = min(d.at for d in fresh)
    if not fresh:
        return
    latest = max(fresh, key=lambda d: d.at)
    denials = sum(d.count for d in fresh if d.at >= since)
    if before is not None and before.active:
        if latest.at <= before.last_seen:
            if denials > before.denials:
                incidents[before.key] = replace(before, denials=denials)
            return
        denials = max(denials, before.denials)
    suggestion = make_room(spec, latest.key.namespace, latest.denial)
    incidents[latest.key] = Incident(
        key=latest.key,
        since=since,
        last_seen=latest.at,
        denials=denials,
        denial=latest.denial,
        command=suggestion.command if suggestion else "",
        change_id=suggestion.change_id if suggestion else "",
        announced=before.announced if before is not None else False,
        outbox=before.outbox if before is not None else None,
        delivered_sinks=before.delivered_sinks if before is not None else frozenset(),
    )


def evaluate_denials(
    state: DenialState,
    observed: Sequence[DeniedPod],
    spec: ProjectSpec,
    policy: DenialPolicy,
    hours: BusinessHours,
    now: datetime,
    sinks: frozenset[str],
) -> tuple[DenialState, list[DenialNotification]]:
    """Fold new denials in, resolve quiet incidents, hand out what is owed; return the new state and
    every notification awaiting delivery (earlier undelivered ones included, same ``id``)."""
    incidents = {i.key: i for i in state}
    by_key: dict[IncidentKey, list[DeniedPod]] = {}
    for seen in observed:
        by_key.setdefault(seen.key, []).append(seen)
    for key in sorted(by_key):
        _fold(incidents, by_key[key], spec, policy, now)
    out = []
    for key in sorted(incidents):
        incident = replace(incidents[key], sinks=sinks)
        if incident.active and now - incident.last_seen >= policy.quiet:
            incident = replace(incident, active=False, ended=incident.last_seen + policy.quiet)
        incident = _owed(_settle(incident), policy, hours, now)
        if not incident.idle:
            out.append(incident)
    new = tuple(out)
    return new, pending_denials(new)


def _owed(incident: Incident, policy: DenialPolicy, hours: BusinessHours, now: datetime) -> Incident:
    if incident.active == incident.announced:
        return replace(incident, not_before=None)
    if policy.timing == BUSINESS_HOURS:
        # Recomputed each time, as for the threshold alerts: a missed opening waits for the next.
        due = next_opening(hours, now)
        if due > now:
            return replace(incident, not_before=due)
    state: NotificationState = "firing" if incident.active else "resolved"
    moment = incident.since if incident.active else (incident.ended or now)
    key = incident.key
    notification = DenialNotification(
        id=f"denied/{key.namespace}/{key.kind}/{key.name}/{state}/{rfc3339(moment)}",
        key=key,
        state=state,
        since=moment,
        denials=incident.denials,
        denial=incident.denial,
        command=incident.command,
        change_id=incident.change_id,
        last_seen=incident.last_seen,
    )
    handed = replace(
        incident, announced=incident.active, not_before=None, outbox=notification, delivered_sinks=frozenset()
    )
    return _settle(handed)


def _settle(incident: Incident) -> Incident:
    """Retire the outbox once every required sink acknowledged it."""
    if incident.outbox is None or not incident.sinks <= incident.delivered_sinks:
        return incident
    return replace(incident, outbox=None, delivered_sinks=frozenset())


def mark_denial_delivered(state: DenialState, notification_id: str, sink: str) -> DenialState:
    """Record that ``sink`` acknowledged ``notification_id``; idempotent, a no-op for unknown ids."""
    out = []
    for incident in state:
        if incident.outbox is not None and incident.outbox.id == notification_id:
            incident = _settle(replace(incident, delivered_sinks=incident.delivered_sinks | {sink}))
            if incident.idle:
                continue
        out.append(incident)
    return tuple(out)


def pending_denials(state: DenialState) -> list[DenialNotification]:
    return [i.outbox for i in state if i.outbox is not None]


def next_check(state: DenialState, policy: DenialPolicy) -> datetime | None:
    """When evaluating again changes something: an open incident's end, or a deferred announcement."""
    moments = [i.last_seen + policy.quiet for i in state if i.active]
    moments += [i.not_before for i in state if i.not_before is not None]
    return min(moments, default=None)


# -------------------------------------------------------------------------------------------- for people


def describe(key: IncidentKey, denial: Denial) -> str:
    """ "Deployment payments/web: pods refused by quota headroom, short of requests.cpu 500m
    (needs 10500m, limit 10000m)"."""
    parts = []
    for resource, missing in denial.shortfall.items():
        needed, limit = format_together([denial.needed[resource], denial.limited[resource]], resource)
        parts.append(f"{resource} {format_quantity(missing, resource)} (needs {needed}, limit {limit})")
    return f"{key}: pods refused by quota {denial.quota}, short of {', '.join(parts)}"


def _one_line(incident: Incident) -> str:
    text = f"{describe(incident.key, incident.denial)}; {incident.denials} denial(s) since {rfc3339(incident.since)}"
    if incident.command:
        text += f"; to make room: {incident.command} (change id {short_id(incident.change_id)})"
    return text


def denial_condition(
    state: DenialState,
    policy: DenialPolicy,
    *,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """QuotaDenied: True while a workload's pods are being refused, naming it and the shortfall."""
    active = [i for i in state if i.active]
    if active:
        message = "; ".join(_one_line(i) for i in active)
        return condition(
            QUOTA_DENIED_CONDITION, True, "PodsRefused", message, generation=generation, previous=previous, now=now
        )
    quiet = int(policy.quiet.total_seconds() // 60)
    message = f"no pod refused by Headroom's quota in the last {quiet}m"
    return condition(
        QUOTA_DENIED_CONDITION, False, "NoDenials", message, generation=generation, previous=previous, now=now
    )


# ------------------------------------------------------------------------------------------------ status


def _amounts(values: Mapping[str, Decimal]) -> dict[str, str]:
    return {r: format_quantity(v, r) for r, v in sorted(values.items())}


def _denial_to_status(denial: Denial) -> dict[str, Any]:
    return {
        "quota": denial.quota,
        "pod": denial.pod or None,
        "shortfall": _amounts(denial.shortfall),
        "requested": _amounts(denial.requested),
        "used": _amounts(denial.used),
        "limited": _amounts(denial.limited),
    }


def _incident_to_status(incident: Incident) -> dict[str, Any]:
    key = incident.key
    outbox = incident.outbox
    item: dict[str, Any] = {
        "namespace": key.namespace,
        "kind": key.kind,
        "name": key.name,
        "state": "firing" if incident.active else "resolved",
        "since": rfc3339(incident.since),
        "lastSeen": rfc3339(incident.last_seen),
        "ended": rfc3339(incident.ended) if incident.ended else None,
        "denials": incident.denials,
        "denial": {k: v for k, v in _denial_to_status(incident.denial).items() if v is not None},
        "request": incident.command or None,
        "changeId": incident.change_id or None,
        "announced": incident.announced,
        "notBefore": rfc3339(incident.not_before) if incident.not_before else None,
        "outbox": {"id": outbox.id, "state": outbox.state, "since": rfc3339(outbox.since), "denials": outbox.denials}
        if outbox
        else None,
        "sinks": sorted(incident.sinks),
        "deliveredSinks": sorted(incident.delivered_sinks),
    }
    return {k: v for k, v in item.items() if v is not None}


def state_to_status(state: DenialState) -> list[dict[str, Any]]:
    """JSON-friendly form for ``status.denials``; timestamps in whole seconds, quantities as the quota shows them."""
    return [_incident_to_status(i) for i in state]


def _time(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without zone: {value!r}")
    return moment.astimezone(UTC)


def _quantities(raw: Any) -> dict[str, Decimal]:
    if not isinstance(raw, Mapping):
        raise TypeError("expected a map of quantities")
    return {str(r): parse_quantity(str(v)) for r, v in raw.items()}


def _denial_from_status(raw: Any) -> Denial:
    if not isinstance(raw, Mapping):
        raise TypeError("denial is not an object")
    return Denial(
        str(raw["quota"]),
        _quantities(raw["requested"]),
        _quantities(raw["used"]),
        _quantities(raw["limited"]),
        str(raw.get("pod") or ""),
    )


def _incident_from_status(item: Any) -> Incident:
    if not isinstance(item, Mapping):
        raise TypeError("entry is not an object")
    key = IncidentKey(str(item["namespace"]), str(item["kind"]), str(item["name"]))
    denial = _denial_from_status(item["denial"])
    denials = item.get("denials")
    if isinstance(denials, bool) or not isinstance(denials, int) or denials < 0:
        raise ValueError("denials must be a count")
    raw_outbox = item.get("outbox")
    outbox = None
    if isinstance(raw_outbox, Mapping):
        state: NotificationState = "firing" if raw_outbox["state"] == "firing" else "resolved"
        outbox = DenialNotification(
            str(raw_outbox["id"]),
            key,
            state,
            _time(raw_outbox["since"]),
            int(raw_outbox.get("denials", denials)),
            denial,
            str(item.get("request") or ""),
            str(item.get("changeId") or ""),
            _time(item["lastSeen"]),
        )
    return Incident(
        key=key,
        since=_time(item["since"]),
        last_seen=_time(item["lastSeen"]),
        denials=denials,
        denial=denial,
        active=item.get("state") == "firing",
        ended=_time(item["ended"]) if item.get("ended") else None,
        command=str(item.get("request") or ""),
        change_id=str(item.get("changeId") or ""),
        announced=item.get("announced") is True,
        not_before=_time(item["notBefore"]) if item.get("notBefore") else None,
        outbox=outbox,
        sinks=frozenset(str(s) for s in item.get("sinks") or []),
        delivered_sinks=frozenset(str(s) for s in item.get("deliveredSinks") or []),
    )


def state_from_status(items: Any) -> DenialState:
    """Inverse of :func:`state_to_status`; skips malformed entries and later duplicates of a key."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        return ()
    found: dict[IncidentKey, Incident] = {}
    for item in items:
        try:
            incident = _incident_from_status(item)
        except (KeyError, TypeError, ValueError, ArithmeticError, QuantityError):
            continue
        found.setdefault(incident.key, incident)
    return tuple(found[k] for k in sorted(found))
