"""Quota alerts: hysteresis, one notification per crossing, business-hours deferral, two-phase delivery.

The model, per alert key ``(namespace, resource, threshold)``:

* **Hysteresis.** A key starts *firing* when utilization >= threshold and stops (*resolved*) only when
  utilization < threshold - hysteresis; in between it keeps its previous state, so 79/80/81 % does not
  flap. A key missing from the input (namespace no longer governed, resource or threshold gone, hard
  limit 0) counts as resolved.
* **What the receivers were told.** ``AlertRecord.announced`` is the state of the last notification
  handed out for delivery. A notification is owed whenever the hysteresis state differs from it, plus
  a reminder while firing once the cooldown since the last delivered firing notification has passed.
  If the state flips back before an owed notification went out, nothing is owed any more: a firing
  that resolves before business hours open sends nothing at all, and a resolved that re-fires before
  opening leaves the receivers' (still correct) "firing" alone. So "resolved" is only ever sent after
  a firing notification was handed out. Handed out counts as sent even before every sink confirmed
  it: the caller may have delivered it and crashed before confirming, and a spurious "resolved" is
  harmless where a missing one would leave a team believing a quota is still full.
* **Business hours.** An owed notification goes out only while ``hours`` are open; otherwise the record
  holds ``not_before`` (the next opening) and it is re-checked on every evaluation. Alerts at a
  threshold >= 100 bypass business hours (both firing and resolved) when ``urgent_when_full`` is set.
* **Two-phase delivery.** Handing out means putting the notification into the record's ``outbox``.
  :func:`evaluate` returns every undelivered outbox notification each time it runs, unchanged and with
  the same ``id``, until :func:`mark_delivered` has recorded an acknowledgement from every configured
  sink. The caller persists the state (see :func:`state_to_status`) *before* delivering, delivers,
  then marks and persists again: a crash in between re-delivers the same ``id`` (receivers can
  de-duplicate on it) but never loses or invents a notification. A newer notification for the same
  key replaces an undelivered one, as the newer state is what receivers need to learn.

Everything here is pure: ``now`` is always passed in and the state is an immutable value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Literal, NamedTuple, TypeVar

from headroom.core.business_hours import BusinessHours, add_business_days, next_opening
from headroom.core.conditions import condition, rfc3339
from headroom.core.quantity import (
    CONTEXT,
    QuantityError,
    format_percent,
    format_quantity,
    format_together,
    parse_quantity,
    utilization_percent,
)
from headroom.core.spec import DEFAULT_HYSTERESIS, DEFAULT_THRESHOLDS

__all__ = [
    "FIRING",
    "FORECAST_ID_PREFIX",
    "FULL",
    "RESOLVED",
    "AlertKey",
    "AlertPolicy",
    "AlertRecord",
    "AlertState",
    "DeliveryOutcome",
    "Notification",
    "NotificationState",
    "Usage",
    "UtilizationInput",
    "alert_conditions",
    "describe_firing",
    "evaluate",
    "firing_alerts",
    "forecast_due_at",
    "forecast_inputs",
    "forecast_policy",
    "mark_delivered",
    "next_wakeup",
    "pending_notifications",
    "state_from_status",
    "state_to_status",
    "undelivered_sinks",
]

_T = TypeVar("_T")

NotificationState = Literal["firing", "resolved"]
FIRING: NotificationState = "firing"
RESOLVED: NotificationState = "resolved"

#: Thresholds at or above this are "full" and may bypass business hours.
FULL = 100


class AlertKey(NamedTuple):
    namespace: str
    resource: str
    threshold: int


@dataclass(frozen=True)
class Usage:
    """Raw quota figures for one (namespace, resource); lets notifications carry used/hard."""

    used: Decimal
    hard: Decimal

    @property
    def utilization(self) -> Decimal | None:
        return utilization_percent(_decimal(self.used, "used"), _decimal(self.hard, "hard"))


@dataclass(frozen=True)
class AlertPolicy:
    """Per-Project alerting knobs.

    ``cooldown`` is how long after a firing notification was delivered a still-firing alert is
    repeated; ``None`` means one business day (:func:`headroom.core.business_hours.add_business_days`).
    """

    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    hysteresis: Decimal = Decimal(DEFAULT_HYSTERESIS)
    cooldown: timedelta | None = None
    urgent_when_full: bool = False
    repeat: bool = True  # remind while firing (threshold alerts); a forecast alert is told once per crossing
    id_prefix: str = ""  # keeps the ids of one kind of alert apart from another's ("forecast/...")
    # Keep each record's latest measure (status shows it). A forecast's measure moves with the clock,
    # not with use: kept, it would rewrite status at every resync, so it keeps the one it crossed at.
    follow_measure: bool = True

    def __post_init__(self) -> None:
        for threshold in self.thresholds:
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
                raise ValueError(f"alert thresholds must be positive whole percents, got {threshold!r}")
        # Normalized so equal policies compare equal and keys come out in a stable order.
        object.__setattr__(self, "thresholds", tuple(sorted(set(self.thresholds))))
        hysteresis = _decimal(self.hysteresis, "hysteresis")
        if hysteresis < 0:
            raise ValueError(f"hysteresis must be >= 0, got {hysteresis}")
        object.__setattr__(self, "hysteresis", hysteresis)
        if self.cooldown is not None and self.cooldown <= timedelta(0):
            raise ValueError(f"cooldown must be positive, got {self.cooldown}")

    def is_urgent(self, threshold: int) -> bool:
        return self.urgent_when_full and threshold >= FULL


@dataclass(frozen=True)
class Notification:
    """One message to deliver. ``id`` is deterministic and unique per notification, for idempotency.

    ``since`` is when the alert entered ``state``; ``repeat`` is 0 for the crossing itself and n for
    the n-th reminder of a still-firing alert. ``utilization``/``used``/``hard`` are as observed when
    the notification was handed out (``None`` when the key disappeared from the input).
    """

    id: str
    key: AlertKey
    state: NotificationState
    since: datetime
    utilization: Decimal | None
    used: Decimal | None = None
    hard: Decimal | None = None
    repeat: int = 0
    urgent: bool = False

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def resource(self) -> str:
        return self.key.resource

    @property
    def threshold(self) -> int:
        return self.key.threshold


@dataclass(frozen=True)
class AlertRecord:
    """Everything remembered about one alert key between evaluations.

    * ``firing``/``since``: hysteresis state and when it was entered.
    * ``utilization``/``used``/``hard``: latest observation (``None``: key absent).
    * ``announced``: the last notification handed out said "firing".
    * ``last_sent``: when the last firing notification was acknowledged by all sinks (cooldown base).
    * ``repeats``: reminders handed out since ``since``.
    * ``not_before``: a notification is owed but held back until then (business hours or cooldown).
    * ``outbox``: the notification awaiting delivery, if any; ``sinks`` must all acknowledge it and
      ``delivered_sinks`` have.
    """

    key: AlertKey
    firing: bool
    since: datetime
    utilization: Decimal | None = None
    used: Decimal | None = None
    hard: Decimal | None = None
    announced: bool = False
    last_sent: datetime | None = None
    repeats: int = 0
    not_before: datetime | None = None
    outbox: Notification | None = None
    sinks: frozenset[str] = frozenset()
    delivered_sinks: frozenset[str] = frozenset()

    @property
    def state(self) -> NotificationState:
        return FIRING if self.firing else RESOLVED

    @property
    def idle(self) -> bool:
        """Nothing left to remember: the default for any key without a record."""
        return not self.firing and not self.announced and self.outbox is None


@dataclass(frozen=True)
class AlertState:
    """All records of one Project, ordered by key; keys without a record are idle."""

    records: tuple[AlertRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(sorted(self.records, key=lambda r: r.key)))

    def by_key(self) -> dict[AlertKey, AlertRecord]:
        return {r.key: r for r in self.records}

    def get(self, key: AlertKey | tuple[str, str, int]) -> AlertRecord | None:
        return self.by_key().get(AlertKey(*key))


UtilizationInput = Mapping[tuple[str, str], Decimal | int | Usage]


@dataclass(frozen=True)
class _Observation:
    utilization: Decimal
    used: Decimal | None
    hard: Decimal | None


# ------------------------------------------------------------------------------------------ evaluation


def evaluate(
    state: AlertState,
    utilization: UtilizationInput,
    policy: AlertPolicy,
    hours: BusinessHours,
    now: datetime,
    sinks: AbstractSet[str],
) -> tuple[AlertState, list[Notification]]:
    """Advance every alert to ``now``; return the new state and all notifications awaiting delivery.

    ``utilization`` maps (namespace, resource) to a percent (Decimal/int) or a :class:`Usage`; usages
    without a positive hard limit are ignored. The returned list holds every undelivered outbox entry,
    including ones returned by earlier calls (retry them; their ``id`` is unchanged). With no ``sinks``
    configured, notifications are considered delivered the moment they are handed out.
    Raises ``BusinessHoursError`` if an owed notification would wait for hours that never open.
    """
    now = _utc(now, "now")
    required = frozenset(sinks)
    observations = _observe(utilization)
    previous = state.by_key()
    keys = set(previous)
    for (namespace, resource), seen in observations.items():
        keys.update(
            AlertKey(namespace, resource, threshold) for threshold in policy.thresholds if seen.utilization >= threshold
        )
    records = []
    for key in sorted(keys):
        # A threshold dropped from the policy is observed as nothing, which resolves its alert.
        observation = None
        if key.threshold in policy.thresholds:
            observation = observations.get((key.namespace, key.resource))
        record = previous.get(key) or AlertRecord(key=key, firing=False, since=now)
        advanced = _advance(record, observation, policy, hours, now, required)
        if not advanced.idle:
            records.append(advanced)
    new_state = AlertState(tuple(records))
    return new_state, pending_notifications(new_state)


def _advance(
    record: AlertRecord,
    observation: _Observation | None,
    policy: AlertPolicy,
    hours: BusinessHours,
    now: datetime,
    sinks: frozenset[str],
) -> AlertRecord:
    key = record.key
    value = observation.utilization if observation is not None else None
    firing = _hysteresis(record.firing, value, key.threshold, policy.hysteresis)
    follow = policy.follow_measure or record.utilization is None
    if firing != record.firing:
        record = replace(record, firing=firing, since=now, repeats=0)
        follow = True
    record = replace(
        record,
        utilization=value if follow or value is None else record.utilization,
        used=observation.used if observation is not None else None,
        hard=observation.hard if observation is not None else None,
        sinks=sinks,
    )
    # A sink removed from the configuration must not keep an outbox pending forever.
    record = _settle(record, now)

    owed: NotificationState | None = None
    earliest = now
    is_repeat = False
    if firing != record.announced:
        owed = FIRING if firing else RESOLVED
    elif firing and policy.repeat and record.outbox is None and record.last_sent is not None:
        owed, is_repeat = FIRING, True
        if policy.cooldown is not None:
            earliest = record.last_sent + policy.cooldown
        else:
            earliest = add_business_days(hours, record.last_sent)

    if owed is None:
        return replace(record, not_before=None)
    urgent = policy.is_urgent(key.threshold)
    moment = max(earliest, now)
    # Recomputed on every call rather than trusting a stored not_before: if the operator was down
    # through a whole opening, the notification waits for the next one instead of going out at night.
    due = moment if urgent else next_opening(hours, moment)
    if due > now:
        return replace(record, not_before=due)
    return _hand_out(record, owed, now, urgent=urgent, is_repeat=is_repeat, prefix=policy.id_prefix)


def _hysteresis(firing: bool, value: Decimal | None, threshold: int, hysteresis: Decimal) -> bool:
    if value is None:
        return False
    if value >= threshold:
        return True
    if value < threshold - hysteresis:
        return False
    return firing


def _hand_out(
    record: AlertRecord, state: NotificationState, now: datetime, *, urgent: bool, is_repeat: bool, prefix: str = ""
) -> AlertRecord:
    key = record.key
    repeats = record.repeats + 1 if is_repeat else record.repeats
    notification_id = f"{prefix}{key.namespace}/{key.resource}/{key.threshold}/{state}/{_iso(record.since)}"
    if is_repeat:
        notification_id += f"/repeat-{repeats}"
    notification = Notification(
        id=notification_id,
        key=key,
        state=state,
        since=record.since,
        utilization=record.utilization,
        used=record.used,
        hard=record.hard,
        repeat=repeats if is_repeat else 0,
        urgent=urgent,
    )
    record = replace(
        record,
        announced=state == FIRING,
        repeats=repeats,
        not_before=None,
        outbox=notification,
        delivered_sinks=frozenset(),
    )
    return _settle(record, now)


def _settle(record: AlertRecord, now: datetime) -> AlertRecord:
    """Retire the outbox once every required sink acknowledged it."""
    outbox = record.outbox
    if outbox is None or not record.sinks <= record.delivered_sinks:
        return record
    last_sent = now if outbox.state == FIRING else record.last_sent
    return replace(record, outbox=None, delivered_sinks=frozenset(), last_sent=last_sent)


def _observe(utilization: UtilizationInput) -> dict[tuple[str, str], _Observation]:
    observations = {}
    for (namespace, resource), value in utilization.items():
        if isinstance(value, Usage):
            percent = value.utilization
            if percent is None:
                continue  # no positive hard limit: nothing can be "near" it
            observations[namespace, resource] = _Observation(
                percent, _decimal(value.used, "used"), _decimal(value.hard, "hard")
            )
        else:
            observations[namespace, resource] = _Observation(_decimal(value, "utilization"), None, None)
    return observations


# -------------------------------------------------------------------------------------------- delivery


def mark_delivered(state: AlertState, notification_id: str, sink: str, now: datetime) -> AlertState:
    """Record that ``sink`` acknowledged ``notification_id``; retire it once all sinks have.

    Idempotent, and a no-op for ids no longer in any outbox (e.g. superseded by a newer one).
    """
    now = _utc(now, "now")
    records = []
    changed = False
    for record in state.records:
        if record.outbox is not None and record.outbox.id == notification_id:
            changed = True
            record = _settle(replace(record, delivered_sinks=record.delivered_sinks | {sink}), now)
            if record.idle:
                continue
        records.append(record)
    return AlertState(tuple(records)) if changed else state


def pending_notifications(state: AlertState) -> list[Notification]:
    """Every notification handed out but not yet acknowledged by all its sinks."""
    return [r.outbox for r in state.records if r.outbox is not None]


def undelivered_sinks(state: AlertState, notification_id: str) -> frozenset[str]:
    """The sinks still owing an acknowledgement for ``notification_id`` (empty if unknown or done)."""
    for record in state.records:
        if record.outbox is not None and record.outbox.id == notification_id:
            return record.sinks - record.delivered_sinks
    return frozenset()


def next_wakeup(state: AlertState) -> datetime | None:
    """The earliest ``not_before``: when evaluating again could hand out a held-back notification."""
    return min((r.not_before for r in state.records if r.not_before is not None), default=None)


# ------------------------------------------------------------------------------------------- summaries


def firing_alerts(state: AlertState) -> list[AlertRecord]:
    """Records currently firing (hysteresis state, regardless of notification), by key."""
    return [r for r in state.records if r.firing]


# ------------------------------------------------------------------------------------------------ status


def state_to_status(state: AlertState) -> list[dict[str, Any]]:
    """JSON-friendly form for the Project status: UTC ``...Z`` timestamps, decimals as strings.

    Absent optional values are omitted rather than null, so the CRD schema needs no nullable fields.
    """
    return [_record_to_status(r) for r in state.records]


def state_from_status(items: Sequence[Any] | None) -> AlertState:
    """Inverse of :func:`state_to_status`; skips malformed entries (and later duplicates of a key)."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        return AlertState()
    records: dict[AlertKey, AlertRecord] = {}
    for item in items:
        try:
            record = _record_from_status(item)
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue
        records.setdefault(record.key, record)
    return AlertState(tuple(records.values()))


def _record_to_status(record: AlertRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "namespace": record.key.namespace,
        "resource": record.key.resource,
        "threshold": record.key.threshold,
        "state": record.state,
        "since": _iso(record.since),
        "utilization": _dec_str(record.utilization),
        "used": _amount(record.used, record.key.resource),
        "hard": _amount(record.hard, record.key.resource),
        "announced": record.announced,
        "lastSent": _iso(record.last_sent) if record.last_sent else None,
        "repeats": record.repeats,
        "notBefore": _iso(record.not_before) if record.not_before else None,
        "outbox": _notification_to_status(record.outbox) if record.outbox else None,
        "sinks": sorted(record.sinks),
        "deliveredSinks": sorted(record.delivered_sinks),
    }
    return {k: v for k, v in item.items() if v is not None}


def _notification_to_status(notification: Notification) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": notification.id,
        "state": notification.state,
        "since": _iso(notification.since),
        "utilization": _dec_str(notification.utilization),
        "used": _amount(notification.used, notification.resource),
        "hard": _amount(notification.hard, notification.resource),
        "repeat": notification.repeat,
        "urgent": notification.urgent,
    }
    return {k: v for k, v in item.items() if v is not None}


def _record_from_status(item: Any) -> AlertRecord:
    if not isinstance(item, Mapping):
        raise TypeError("status entry is not an object")
    key = AlertKey(_text(item["namespace"]), _text(item["resource"]), _count(item["threshold"], minimum=1))
    outbox_item = item.get("outbox")
    return AlertRecord(
        key=key,
        firing=_state(item["state"]) == FIRING,
        since=_parse_time(item["since"]),
        utilization=_optional(item, "utilization", _parse_decimal),
        used=_optional(item, "used", _parse_amount),
        hard=_optional(item, "hard", _parse_amount),
        announced=_flag(item.get("announced", False)),
        last_sent=_optional(item, "lastSent", _parse_time),
        repeats=_count(item.get("repeats", 0), minimum=0),
        not_before=_optional(item, "notBefore", _parse_time),
        outbox=_notification_from_status(key, outbox_item) if outbox_item is not None else None,
        sinks=_names(item.get("sinks", [])),
        delivered_sinks=_names(item.get("deliveredSinks", [])),
    )


def _notification_from_status(key: AlertKey, item: Any) -> Notification:
    if not isinstance(item, Mapping):
        raise TypeError("outbox is not an object")
    return Notification(
        id=_text(item["id"]),
        key=key,
        state=_state(item["state"]),
        since=_parse_time(item["since"]),
        utilization=_optional(item, "utilization", _parse_decimal),
        used=_optional(item, "used", _parse_amount),
        hard=_optional(item, "hard", _parse_amount),
        repeat=_count(item.get("repeat", 0), minimum=0),
        urgent=_flag(item.get("urgent", False)),
    )


# ---------------------------------------------------------------------------------------------- helpers


def _utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


_iso = rfc3339


def _decimal(value: object, name: str) -> Decimal:
    # Floats are refused rather than converted: they would smuggle binary rounding into exact math.
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be a Decimal or int, got {type(value).__name__}")
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"{name} must be finite, got {result}")
    return result


def _dec_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _amount(value: Decimal | None, resource: str) -> str | None:
    # As the quota itself shows it ("2400Mi", not "2516582400"), so status reads like the quota.
    return None if value is None else format_quantity(value, resource)


def _parse_amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise TypeError("amounts are stored as strings")
    try:
        return parse_quantity(value)  # also reads the plain decimals that earlier versions stored
    except QuantityError as exc:
        raise ValueError(str(exc)) from exc


def _parse_decimal(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise TypeError("decimals are stored as strings")
    result = Decimal(value)  # InvalidOperation is an ArithmeticError, caught by the caller
    if not result.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return result


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("timestamps are stored as strings")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without zone: {value!r}")
    return moment.astimezone(UTC)


def _optional(item: Mapping[str, Any], name: str, parse: Callable[[Any], _T]) -> _T | None:
    value = item.get(name)
    return None if value is None else parse(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _count(value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {value!r}")
    return value


def _state(value: Any) -> NotificationState:
    if value == FIRING:
        return FIRING
    if value == RESOLVED:
        return RESOLVED
    raise ValueError(f"expected 'firing' or 'resolved', got {value!r}")


def _names(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of names, got {value!r}")
    return frozenset(value)


DeliveryOutcome = tuple[bool, str, str]  # (delivered, reason, message) of the last delivery attempt


# -------------------------------------------------------------------------------------------- forecasts

# A forecast alert is the same machinery (outbox, business hours, once per crossing, restart-safe
# state in status) over another measure: how much of the horizon the time left until full takes.
# 100 * horizon / time left is >= 100 exactly when the trend reaches the quota within the horizon;
# it falls below 100 - FORECAST_HYSTERESIS (the date moved about 5 % past the horizon: a raise, or
# slower growth) before the alert resolves, so a date that wobbles around the horizon's edge from
# one day's peak to the next is not told twice.
FORECAST_ID_PREFIX = "forecast/"
FORECAST_THRESHOLD = 100
FORECAST_HYSTERESIS = Decimal(5)
_FORECAST_PAST = Decimal(1_000_000)  # the date has passed: as far inside the horizon as it gets


def forecast_policy() -> AlertPolicy:
    """Business hours always (a forecast is never urgent), no reminders: told once per crossing."""
    return AlertPolicy(
        thresholds=(FORECAST_THRESHOLD,),
        hysteresis=FORECAST_HYSTERESIS,
        repeat=False,
        id_prefix=FORECAST_ID_PREFIX,
        follow_measure=False,
    )


def forecast_inputs(
    full_at: Mapping[tuple[str, str], datetime], horizon_days: int, now: datetime
) -> dict[tuple[str, str], Decimal]:
    """The measure `evaluate` compares with FORECAST_THRESHOLD, per (namespace, resource) with a date.

    A key without a date (flat, shrinking, too little history) is left out: absent resolves."""
    if horizon_days < 1:
        raise ValueError(f"the forecast horizon must be at least a day, got {horizon_days}")
    horizon = Decimal(horizon_days * 86_400)
    measures = {}
    for key, moment in full_at.items():
        left = Decimal(int((_utc(moment, "fullAt") - _utc(now, "now")).total_seconds()))
        with localcontext(CONTEXT):
            # To a hundredth: enough to compare with 100 and 95, short enough to keep in status. Down,
            # so that it reaches 100 when the date comes within the horizon, not before (rounded up,
            # it did up to 2 minutes of 14 days early), at the moment `forecast_due_at` wakes for.
            measure = (
                (horizon * 100 / left).quantize(Decimal("0.01"), rounding=ROUND_FLOOR) if left > 0 else _FORECAST_PAST
            )
        measures[key] = min(measure, _FORECAST_PAST)
    return measures


def forecast_due_at(full_at: Mapping[tuple[str, str], datetime], horizon_days: int, now: datetime) -> datetime | None:
    """The next moment a forecast date comes within the horizon with nothing changed but the clock:
    `forecast_inputs` gives it FORECAST_THRESHOLD from then on, not a second before. None when no
    date is still beyond it.

    Without a wake-up at that moment, nothing would evaluate the alert until some other change planned
    the Project again (with an unchanged history, possibly not before a restart), and the owners were
    told late, or only by a restart."""
    horizon = timedelta(days=horizon_days)
    return min((due for moment in full_at.values() if (due := _utc(moment, "fullAt") - horizon) > now), default=None)


def describe_firing(record: AlertRecord, hysteresis: Decimal | None = None) -> str:
    """One firing alert for people: "payments requests.cpu at 89.7% (4490m of 5000m; alert at 90%, until
    below 85%)". Hysteresis keeps an alert firing a little under its threshold, so the text says where it
    clears rather than claiming ">= 90%" next to 89.7%."""
    key = record.key
    amounts = ""
    if record.used is not None and record.hard is not None:
        used, hard = format_together([record.used, record.hard], key.resource)
        amounts = f"{used} of {hard}; "
    clears = f", until below {format_percent(key.threshold - hysteresis)}" if hysteresis else ""
    return (
        f"{key.namespace} {key.resource} at {format_percent(record.utilization)} "
        f"({amounts}alert at {key.threshold}%{clears})"
    )


def alert_conditions(
    state: AlertState,
    *,
    hours: str,
    hours_problem: str | None,
    delivery: DeliveryOutcome | None,
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: datetime,
    hysteresis: Decimal | None = None,
) -> list[dict[str, Any]]:
    """The conditions alerting adds to a Project's status: QuotaNearLimit, BusinessHoursValid and
    AlertsDelivered (kept as it was when `delivery` is None: nothing was attempted or settled)."""
    firing = firing_alerts(state)
    if firing:
        top = max(firing, key=lambda r: (r.key.threshold, r.utilization or 0))
        near = condition(
            "QuotaNearLimit",
            True,
            f"Above{top.key.threshold}Percent",
            "; ".join(describe_firing(r, hysteresis) for r in firing),
            generation=generation,
            previous=previous,
            now=now,
        )
    else:
        near = condition(
            "QuotaNearLimit",
            False,
            "BelowThresholds",
            "every quota is below its alert thresholds",
            generation=generation,
            previous=previous,
            now=now,
        )
    valid = condition(
        "BusinessHoursValid",
        hours_problem is None,
        "Parsed" if hours_problem is None else "InvalidBusinessHours",
        hours_problem or f"alerts are sent during {hours}",
        generation=generation,
        previous=previous,
        now=now,
    )
    conditions = [near, valid]
    if delivery is not None:
        conditions.append(condition("AlertsDelivered", *delivery, generation=generation, previous=previous, now=now))
    else:
        conditions.extend(dict(c) for c in previous if c.get("type") == "AlertsDelivered")
    return conditions
