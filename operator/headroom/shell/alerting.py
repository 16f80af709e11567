"""Alert delivery: the shell around `alert_policy`, with the sinks (Event, webhook, Alertmanager).

Delivery is an outbox: a notification is first written to the Project's status, then delivered,
then marked delivered per sink and written again. A restart therefore neither loses a notification
(it is still in the outbox) nor repeats one that was acknowledged (it is marked). The one window
left, a crash between a receiver's acknowledgement and the status write, is closed on the
receiver's side by the notification's stable `id`, which every sink receives.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import aiohttp

from headroom.core.alert_policy import (
    AlertPolicy,
    AlertState,
    DeliveryOutcome,
    Notification,
    Usage,
    alert_conditions,
    evaluate,
    forecast_due_at,
    forecast_inputs,
    forecast_policy,
    mark_delivered,
    next_wakeup,
    state_from_status,
    state_to_status,
)
from headroom.core.business_hours import (
    DEFAULT_BUSINESS_HOURS,
    BusinessHoursError,
    add_business_days,
    next_opening,
    parse_business_hours,
)
from headroom.core.conditions import rfc3339
from headroom.core.denials import (
    BUSINESS_HOURS,
    IMMEDIATE,
    DenialNotification,
    DenialPolicy,
    DenialState,
    DeniedPod,
    denial_condition,
    describe,
    evaluate_denials,
    mark_denial_delivered,
    next_check,
)
from headroom.core.denials import state_from_status as denial_state_from_status
from headroom.core.denials import state_to_status as denial_state_to_status
from headroom.core.forecast import ForecastAlert, alert_text
from headroom.core.names import (
    FORECAST_ALERTNAME,
    FORECAST_ALERTS_FIELD,
    QUOTA_DENIED_ALERTNAME,
    QUOTA_DENIED_CONDITION,
)
from headroom.core.planning import Event, Plan
from headroom.core.quantity import format_percent, format_quantity, format_together
from headroom.core.spec import ProjectSpec
from headroom.shell.apiclient import ApiClient, ApiException
from headroom.shell.backoff import backoff_delays
from headroom.shell.config import OperatorConfig
from headroom.shell.kube import KubeWriter
from headroom.shell.metrics import Metrics

log = logging.getLogger("headroom.alerts")


@dataclass(frozen=True)
class Delivery:
    """What every sink needs to know about one notification."""

    notification: Notification
    project: str
    team: str
    contacts: tuple[str, ...]
    now: datetime
    # Until when Alertmanager should hold a firing alert without hearing from us again: past the
    # next reminder, so that it never resolves an alert that still fires.
    firing_until: datetime | None = None
    # A forecast alert's sentence (core.forecast.alert_text); None for a threshold alert.
    forecast_text: str | None = None

    @property
    def is_forecast(self) -> bool:
        return self.forecast_text is not None

    @property
    def severity(self) -> str:
        return "critical" if self.notification.threshold >= 100 and not self.is_forecast else "warning"

    def text(self) -> str:
        n = self.notification
        if self.forecast_text is not None:
            return self.forecast_text
        # One unit on both sides ("4000m of 4800m", never "4 of 4800m"), the percentage to 0.1.
        used, hard = (x.replace("-", "?") for x in format_together([n.used, n.hard], n.resource))
        if n.state == "firing":
            return (
                f":warning: Project {self.project} (team {self.team}): {n.namespace} {n.resource} is at "
                f"{format_percent(n.utilization)} of its quota ({used} of {hard}), past {n.threshold}%. "
                "Plan capacity and request a change on the Project before it is full."
            )
        return (
            f":white_check_mark: Project {self.project} (team {self.team}): {n.namespace} {n.resource} "
            f"is back below {n.threshold}% of its quota ({used} of {hard})."
        )

    def payload(self) -> dict[str, Any]:
        n = self.notification
        return {
            "id": n.id,
            "project": self.project,
            "team": self.team,
            "contacts": list(self.contacts),
            "namespace": n.namespace,
            "resource": n.resource,
            "used": format_quantity(n.used, n.resource) if n.used is not None else None,
            "hard": format_quantity(n.hard, n.resource) if n.hard is not None else None,
            "utilization": str(n.utilization) if n.utilization is not None and not self.is_forecast else None,
            "threshold": None if self.is_forecast else n.threshold,
            "kind": "forecast" if self.is_forecast else "threshold",
            "state": n.state,
            "severity": self.severity,
            "since": rfc3339(n.since),
            "repeat": n.repeat,
            "text": self.text(),
        }


class Sink(Protocol):
    name: str

    async def deliver(self, delivery: Delivery | DenialDelivery, spec: ProjectSpec) -> None: ...


class DeliveryError(RuntimeError):
    pass


class WebhookSecretMissing(DeliveryError):
    """The Project names its own webhook Secret and it cannot be used: its alerts wait for it."""


@dataclass
class WebhookSink:
    url: str | None
    secret_reader: Callable[[str, str], Awaitable[str | None]] | None = None
    namespace: str = "headroom-system"
    timeout: float = 10.0
    name: str = "webhook"

    async def _url_for(self, spec: ProjectSpec) -> str | None:
        ref = spec.alerts.webhook_secret_ref
        if ref is None or self.secret_reader is None:
            return self.url
        try:
            url = await self.secret_reader(ref.name, ref.key)
        except DeliveryError as exc:
            raise WebhookSecretMissing(str(exc)) from exc
        if not url:
            # The team's alerts go to the team's webhook or wait for it, never silently to the
            # platform's (and counting them as sent would lose them).
            raise WebhookSecretMissing(
                f"Secret {ref.name} (key {ref.key}) in {self.namespace} is missing or empty; "
                "the alert waits for it (the operator's --webhook-url is not used for "
                "a Project that names its own)"
            )
        return url

    async def deliver(self, delivery: Delivery | DenialDelivery, spec: ProjectSpec) -> None:
        await self.post(delivery.payload(), delivery.notification.id, spec)

    async def post(self, payload: Mapping[str, Any], key: str, spec: ProjectSpec) -> None:
        """One JSON message to the Project's webhook; `key` lets the receiver drop a re-delivery."""
        url = await self._url_for(spec)
        if not url:
            return
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(url, json=payload, headers={"Idempotency-Key": key}) as resp,
            ):
                if resp.status >= 300:
                    raise DeliveryError(f"webhook answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"webhook unreachable: {exc}") from exc


@dataclass
class AlertmanagerSink:
    url: str
    timeout: float = 10.0
    name: str = "alertmanager"

    def alert(self, delivery: Delivery) -> dict[str, Any]:
        n = delivery.notification
        starts = n.since if n.state == "firing" else delivery.now - timedelta(seconds=1)
        # Alertmanager resolves an alert that is not re-sent once endsAt passes; the cooldown repeat
        # re-sends a still-firing alert well before that. A resolved alert ends now.
        ends = (delivery.firing_until or delivery.now + timedelta(days=2)) if n.state == "firing" else delivery.now
        labels = {
            "alertname": FORECAST_ALERTNAME if delivery.is_forecast else "HeadroomQuotaNearLimit",
            "project": delivery.project,
            "team": delivery.team,
            "namespace": n.namespace,
            "resource": n.resource,
            "threshold": str(n.threshold),
            "severity": delivery.severity,
        }
        if delivery.is_forecast:
            del labels["threshold"]  # a forecast has a horizon (in the text), not a threshold
        return {
            "labels": labels,
            "annotations": {
                "summary": delivery.text(),
                "contacts": ", ".join(delivery.contacts),
                **({} if delivery.is_forecast else {"utilization": format_percent(n.utilization)}),
                "notification_id": n.id,
            },
            "startsAt": rfc3339(starts) if n.state == "firing" else rfc3339(_alert_start(n)),
            "endsAt": rfc3339(ends),
            "generatorURL": f"headroom://projects/{delivery.project}",
        }

    async def deliver(self, delivery: Delivery | DenialDelivery, spec: ProjectSpec) -> None:
        await self.post([delivery.alert() if isinstance(delivery, DenialDelivery) else self.alert(delivery)])

    async def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(f"{self.url.rstrip('/')}/api/v2/alerts", json=list(alerts)) as resp,
            ):
                if resp.status >= 300:
                    raise DeliveryError(f"Alertmanager answered HTTP {resp.status}: {await resp.text()}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"Alertmanager unreachable: {exc}") from exc


def _alert_start(n: Notification) -> datetime:
    # For a resolved notification, `since` is when it resolved; startsAt must not be after endsAt.
    return n.since - timedelta(seconds=1)


@dataclass
class EventSink:
    writer: KubeWriter
    body_of: Callable[[str], Mapping[str, Any] | None]
    name: str = "event"

    async def deliver(self, delivery: Delivery | DenialDelivery, spec: ProjectSpec) -> None:
        body = self.body_of(delivery.project)
        if body is None:
            return
        if isinstance(delivery, DenialDelivery):
            await self.writer.post_event(body, delivery.event())
            return
        n = delivery.notification
        kind = "Warning" if n.state == "firing" else "Normal"
        reason = "QuotaNearLimit" if n.state == "firing" else "QuotaBelowLimit"
        if delivery.is_forecast:
            reason = "QuotaForecastFull" if n.state == "firing" else "QuotaForecastClear"
        await self.writer.post_event(body, Event(kind, reason, delivery.text()))


def build_sinks(config: OperatorConfig, client: ApiClient) -> list[Sink]:
    async def read_secret(name: str, key: str) -> str | None:
        try:
            secret = await client.request("GET", f"/api/v1/namespaces/{config.namespace}/secrets/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeliveryError(f"cannot read Secret {name} in {config.namespace}: HTTP {exc.status}") from exc
        value = (secret.get("data") or {}).get(key)
        return base64.b64decode(value).decode().strip() if value else None

    sinks: list[Sink] = [WebhookSink(config.webhook_url, read_secret, config.namespace)]
    if config.alertmanager_url:
        sinks.append(AlertmanagerSink(config.alertmanager_url))
    return sinks


def sinks_for(sinks: Sequence[Sink], spec: ProjectSpec) -> list[Sink]:
    """The sinks that serve a Project: a webhook only where there is a URL, the operator's or the
    Project's own Secret; every other sink always (threshold, forecast and denial alerts alike)."""
    return [s for s in sinks if not (isinstance(s, WebhookSink) and not (s.url or spec.alerts.webhook_secret_ref))]


class Alerting:
    """Evaluates a Project's alerts after each reconcile and delivers what is owed."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        writer: KubeWriter,
        metrics: Metrics,
        wake_at: Callable[[str, datetime], None],
        body_of: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.writer, self.metrics, self.wake_at = writer, metrics, wake_at
        # The Event on the Project is a sink like the others: delivered once, through the outbox.
        self.sinks: list[Sink] = [*sinks, EventSink(writer, body_of)]
        self._retry: dict[str, Any] = {}
        self._secret_missing: set[str] = set()  # Projects whose own webhook Secret cannot be used

    def active_sinks(self, spec: ProjectSpec) -> list[Sink]:
        """The sinks that deliver this Project's messages (its own webhook, or the operator's)."""
        return self._active_sinks(spec)

    def _active_sinks(self, spec: ProjectSpec) -> list[Sink]:
        return sinks_for(self.sinks, spec)

    async def __call__(self, spec: ProjectSpec, body: Mapping[str, Any], plan: Plan, now: datetime) -> AlertOutcome:
        hours_problem = None
        try:
            hours = parse_business_hours(spec.owner.business_hours, spec.owner.holidays)
        except BusinessHoursError as exc:
            # The CRD's pattern catches malformed text; an unknown zone or a bad holiday gets here.
            hours_problem = f"spec.owner.businessHours: {exc}; alerts use {DEFAULT_BUSINESS_HOURS} until it is fixed"
            hours = parse_business_hours(None)
        policy = AlertPolicy(
            thresholds=tuple(spec.alerts.thresholds),
            hysteresis=Decimal(spec.alerts.hysteresis),
            cooldown=spec.alerts.cooldown,
            urgent_when_full=spec.alerts.urgent_when_full,
        )
        usage = {
            (ns, r): Usage(plan.used[ns][r], hard)
            for ns, values in plan.governed.items()
            for r, hard in values.items()
            if r in plan.used.get(ns, {}) and hard > 0
        }
        sinks = self._active_sinks(spec)
        reminder = now + policy.cooldown if policy.cooldown else add_business_days(hours, now)
        firing_until = next_opening(hours, reminder) + timedelta(days=1)
        before = state_from_status((body.get("status") or {}).get("alerts"))
        state, owed = evaluate(before, usage, policy, hours, now, {s.name for s in sinks})
        deferred_before = {r.key for r in before.records if r.not_before}
        deferred_now = [r for r in state.records if r.not_before and r.key not in deferred_before]
        if deferred_now:
            self.metrics.alerts_deferred.inc(len(deferred_now))
            for r in deferred_now:
                log.info(
                    "Project %s: alert %s %s %s deferred until %s (outside business hours or cooldown)",
                    spec.name,
                    r.key.namespace,
                    r.key.resource,
                    r.state,
                    r.not_before,
                )
        forecast_before = state_from_status((body.get("status") or {}).get(FORECAST_ALERTS_FIELD))
        forecast_state, forecast_owed = evaluate(
            forecast_before,
            forecast_inputs(_full_at(plan), spec.alerts.forecast_days, now),
            forecast_policy(),
            hours,
            now,
            {s.name for s in sinks},
        )
        if any(r.not_before for r in forecast_state.records) and not any(r.not_before for r in forecast_before.records):
            self.metrics.alerts_deferred.inc()
            log.info("Project %s: forecast alert deferred until business hours open", spec.name)
        if (owed or forecast_owed) and (
            state_to_status(state) != state_to_status(before)
            or state_to_status(forecast_state) != state_to_status(forecast_before)
        ):
            # Outbox first: what is owed is on record before anything leaves.
            await self.writer.patch_status(
                spec.name,
                {"alerts": state_to_status(state), FORECAST_ALERTS_FIELD: state_to_status(forecast_state) or None},
            )
        failed = False
        problems: list[str] = []
        delivered_from = state
        for notification in owed:
            delivery = Delivery(notification, spec.name, spec.owner.team, tuple(spec.owner.contacts), now, firing_until)
            state, failed_one = await self._deliver(spec, delivery, state, sinks, now, problems)
            failed |= failed_one
        for notification in forecast_owed:
            delivery = Delivery(
                notification,
                spec.name,
                spec.owner.team,
                tuple(spec.owner.contacts),
                now,
                # Not repeated: Alertmanager holds it until past the horizon, when the quota is, by the
                # forecast, full (and the threshold alerts speak), unless it resolves first.
                now + timedelta(days=spec.alerts.forecast_days + 1),
                forecast_text=_forecast_text(spec, plan, notification, now),
            )
            forecast_state, failed_one = await self._deliver(spec, delivery, forecast_state, sinks, now, problems)
            failed |= failed_one
        if state is not delivered_from:
            # Deliveries retired outboxes: evaluating once more now schedules the reminders, so the
            # status written below is already what the next reconcile computes (one write, not two).
            state, _ = evaluate(state, usage, policy, hours, now, {s.name for s in sinks})
        if owed and not any(p.startswith("webhook: ") for p in problems):
            self._secret_missing.discard(spec.name)
        self.metrics.webhook_secret_missing.set(len(self._secret_missing))
        outcome: DeliveryOutcome | None = None
        if problems:
            outcome = (
                False,
                "WebhookSecretMissing" if spec.name in self._secret_missing else "DeliveryFailed",
                "; ".join(problems) + "; retried until it succeeds",
            )
        elif owed or forecast_owed or all(not r.outbox for r in (*state.records, *forecast_state.records)):
            outcome = (True, "Delivered", "every alert owed was delivered")
        if failed:
            delays = self._retry.setdefault(spec.name, backoff_delays(base=2.0, cap=300.0))
            self.wake_at(spec.name, now + timedelta(seconds=next(delays)))
        else:
            self._retry.pop(spec.name, None)
            due = forecast_due_at(_full_at(plan), spec.alerts.forecast_days, now)
            wakes = [w for w in (next_wakeup(state), next_wakeup(forecast_state), due) if w is not None]
            wake = min(wakes, default=None)
            if wake is not None:
                self.wake_at(spec.name, wake)
        conditions = alert_conditions(
            state,
            hours=str(hours),
            hours_problem=hours_problem,
            delivery=outcome,
            previous=(body.get("status") or {}).get("conditions") or [],
            generation=body.get("metadata", {}).get("generation"),
            now=now,
            hysteresis=policy.hysteresis,
        )
        return AlertOutcome(state_to_status(state), conditions, state_to_status(forecast_state))

    async def _deliver(
        self,
        spec: ProjectSpec,
        delivery: Delivery,
        state: AlertState,
        sinks: Sequence[Sink],
        now: datetime,
        problems: list[str],
    ) -> tuple[AlertState, bool]:
        """One notification to every sink that has not acknowledged it; the state with what was."""
        notification = delivery.notification
        record = state.get(notification.key)
        done = record.delivered_sinks if record else frozenset()
        failed = False
        for sink in sinks:
            if sink.name in done:
                continue
            try:
                await sink.deliver(delivery, spec)
            except Exception as exc:
                failed = True
                problems.append(f"{sink.name}: {exc}")
                if isinstance(exc, WebhookSecretMissing):
                    self._secret_missing.add(spec.name)
                self.metrics.alerts_failed.labels(sink.name).inc()
                log.warning("Project %s: delivery of %s to %s failed: %s", spec.name, notification.id, sink.name, exc)
                continue
            state = mark_delivered(state, notification.id, sink.name, now)
            self.metrics.alerts_sent.labels(sink.name, notification.state).inc()
            if delivery.is_forecast:
                log.info(
                    "Project %s: forecast alert %s %s %s sent to %s",
                    spec.name,
                    notification.key.namespace,
                    notification.key.resource,
                    notification.state,
                    sink.name,
                )
                continue
            log.info(
                "Project %s: alert %s %s %s (%s of the quota, threshold %s%%) sent to %s",
                spec.name,
                notification.key.namespace,
                notification.key.resource,
                notification.state,
                format_percent(notification.utilization),
                notification.key.threshold,
                sink.name,
            )
        return state, failed


def _full_at(plan: Plan) -> dict[tuple[str, str], datetime]:
    """The dates the forecast alert watches: those of governed quotas only, as for threshold alerts (in
    Observe mode, or before a namespace is governed, nothing is enforced that could fill up; the date
    is still in status)."""
    return {
        (ns, r): trend.full_at
        for ns, by in plan.forecasts.items()
        for r, trend in by.items()
        if trend.full_at is not None and r in plan.governed.get(ns, {})
    }


def _forecast_text(spec: ProjectSpec, plan: Plan, notification: Notification, now: datetime) -> str:
    """The forecast alert's sentence, from the trend as it is now (a deferred alert says today's date)."""
    alert = ForecastAlert(
        spec.name,
        spec.owner.team,
        notification.namespace,
        notification.resource,
        spec.alerts.forecast_days,
        spec.quota.headroom_percent,
    )
    trend = plan.forecasts.get(notification.namespace, {}).get(notification.resource)
    return alert_text(alert, trend, now, notification.state == "firing")


@dataclass(frozen=True)
class AlertOutcome:
    """What alerting adds to the status: the alert records (the outbox), its conditions, and the
    forecast alerts' records (their own outbox, status.forecastAlerts)."""

    records: list[dict[str, Any]]
    conditions: list[dict[str, Any]]
    forecast_records: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------- quota denials


@dataclass(frozen=True)
class DenialDelivery:
    """What every sink needs to know about one quota-denial notification (core/denials.py)."""

    notification: DenialNotification
    project: str
    team: str
    contacts: tuple[str, ...]
    now: datetime

    def text(self) -> str:
        n = self.notification
        what = describe(n.key, n.denial)
        if n.state == "firing":
            room = f" To make room: `{n.command}` (change id {n.change_id}), then sign it off." if n.command else ""
            return f":no_entry: Project {self.project} (team {self.team}): {what}.{room}"
        last = rfc3339(n.last_seen or n.since)
        return (
            f":white_check_mark: Project {self.project} (team {self.team}): {n.key} is no longer refused by "
            f"the quota: no denial since {last} ({n.denials} denial(s) in all)."
        )

    def payload(self) -> dict[str, Any]:
        n = self.notification
        return {
            "id": n.id,
            "kind": "QuotaDenied",
            "project": self.project,
            "team": self.team,
            "contacts": list(self.contacts),
            "namespace": n.key.namespace,
            "workload": {"kind": n.key.kind, "name": n.key.name},
            "quota": n.denial.quota,
            "shortfall": {r: format_quantity(v, r) for r, v in n.denial.shortfall.items()},
            "denials": n.denials,
            "request": n.command or None,
            "changeId": n.change_id or None,
            "state": n.state,
            "severity": "critical",
            "since": rfc3339(n.since),
            "text": self.text(),
        }

    def alert(self) -> dict[str, Any]:
        n = self.notification
        firing = n.state == "firing"
        # Alertmanager ends an alert it stops hearing about at endsAt; an incident is announced once
        # and ended by its resolution, so a firing alert is held for as long as any incident lasts.
        ends = self.now + timedelta(days=30) if firing else self.now
        return {
            "labels": {
                "alertname": QUOTA_DENIED_ALERTNAME,
                "project": self.project,
                "team": self.team,
                "namespace": n.key.namespace,
                "workload_kind": n.key.kind,
                "workload": n.key.name,
                "severity": "critical",
            },
            "annotations": {
                "summary": self.text(),
                "contacts": ", ".join(self.contacts),
                "shortfall": ", ".join(f"{r}={format_quantity(v, r)}" for r, v in n.denial.shortfall.items()),
                "request": n.command,
                "change_id": n.change_id,
                "notification_id": n.id,
            },
            # For a resolution `since` is when it resolved: the alert started before that.
            "startsAt": rfc3339(n.since if firing else n.since - timedelta(seconds=1)),
            "endsAt": rfc3339(ends),
            "generatorURL": f"headroom://projects/{self.project}",
        }

    def event(self) -> Event:
        if self.notification.state == "firing":
            return Event("Warning", QUOTA_DENIED_CONDITION, self.text())
        return Event("Normal", "QuotaDenialResolved", self.text())


class DenialAlerting:
    """Folds the quota-denial Events seen for a Project into its incidents and delivers what is owed.

    The same outbox as the threshold alerts: the incident with its notification is written to
    status before anything is sent, each sink's acknowledgement is recorded, and the Events are the
    input again after a restart (core/denials.py ignores what an incident already holds).
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        writer: KubeWriter,
        metrics: Metrics,
        wake_at: Callable[[str, datetime], None],
        observed: Callable[[ProjectSpec], Sequence[DeniedPod]],
        quiet: timedelta,
    ) -> None:
        self.sinks, self.writer, self.metrics, self.wake_at = list(sinks), writer, metrics, wake_at
        self.observed, self.quiet = observed, quiet
        self._retry: dict[str, Any] = {}

    def _active_sinks(self, spec: ProjectSpec) -> list[Sink]:
        return sinks_for(self.sinks, spec)

    async def __call__(self, spec: ProjectSpec, body: Mapping[str, Any], now: datetime) -> AlertOutcome:
        try:
            hours = parse_business_hours(spec.owner.business_hours, spec.owner.holidays)
        except BusinessHoursError:
            hours = parse_business_hours(None)  # the threshold alerts' condition says why
        policy = DenialPolicy(self.quiet, BUSINESS_HOURS if spec.alerts.denials == BUSINESS_HOURS else IMMEDIATE)
        sinks = self._active_sinks(spec)
        names = frozenset(s.name for s in sinks)
        status = body.get("status") or {}
        before = denial_state_from_status(status.get("denials"))
        state, owed = evaluate_denials(before, self.observed(spec), spec, policy, hours, now, names)
        self._count(spec.name, before, state)
        if owed and denial_state_to_status(state) != denial_state_to_status(before):
            await self.writer.patch_status(spec.name, {"denials": denial_state_to_status(state)})
        failed = False
        for notification in owed:
            delivery = DenialDelivery(notification, spec.name, spec.owner.team, tuple(spec.owner.contacts), now)
            incident = next((i for i in state if i.key == notification.key), None)
            done = incident.delivered_sinks if incident else frozenset()
            for sink in sinks:
                if sink.name in done:
                    continue
                try:
                    await sink.deliver(delivery, spec)
                except Exception as exc:
                    failed = True
                    self.metrics.alerts_failed.labels(sink.name).inc()
                    log.warning(
                        "Project %s: delivery of %s to %s failed: %s", spec.name, notification.id, sink.name, exc
                    )
                    continue
                state = mark_denial_delivered(state, notification.id, sink.name)
                self.metrics.alerts_sent.labels(sink.name, f"denial-{notification.state}").inc()
                log.info(
                    "Project %s: quota denial %s (%s) sent to %s",
                    spec.name,
                    notification.state,
                    notification.id,
                    sink.name,
                )
        if failed:
            delays = self._retry.setdefault(spec.name, backoff_delays(base=2.0, cap=300.0))
            self.wake_at(spec.name, now + timedelta(seconds=next(delays)))
        else:
            self._retry.pop(spec.name, None)
            wake = next_check(state, policy)
            if wake is not None:
                self.wake_at(spec.name, wake)
        conditions = [
            denial_condition(
                state,
                policy,
                generation=body.get("metadata", {}).get("generation"),
                previous=status.get("conditions") or [],
                now=now,
            )
        ]
        return AlertOutcome(denial_state_to_status(state), conditions)

    def _count(self, project: str, before: DenialState, after: DenialState) -> None:
        """headroom_quota_denials_total: denials newly folded in (replays after a restart add nothing)."""
        known = {i.key: i for i in before}
        for incident in after:
            old = known.get(incident.key)
            added = incident.denials if old is None or old.since != incident.since else incident.denials - old.denials
            if added > 0:
                for resource in incident.denial.shortfall:
                    self.metrics.quota_denials.labels(project, incident.key.namespace, resource).inc(added)
                if old is None or old.since != incident.since:
                    log.warning("Project %s: %s", project, describe(incident.key, incident.denial))
