"""Delivery of the messages about raises that end: the reminder before `until`, the withdrawal at it.

The same sinks as the quota alerts (the Project's webhook or the operator's, Alertmanager, an Event on
the Project) and the same outbox (shell/alerting.py): a notice is written to status.raiseNotices before
it leaves, marked per sink once delivered, and written again, so that a restart neither loses one nor
sends one twice; each sink receives its stable id (the webhook as Idempotency-Key).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from headroom.core.business_hours import BusinessHoursError, parse_business_hours
from headroom.core.conditions import rfc3339
from headroom.core.expiry import (
    Notice,
    deliverable,
    next_end,
    notice_text,
    notices_from_status,
    notices_to_status,
    owed_notices,
    records_from_status,
)
from headroom.core.names import RAISE_ENDING_ALERT, RAISE_NOTICES_FIELD, RAISE_WITHDRAWN_ALERT
from headroom.core.planning import Event, Plan
from headroom.core.spec import ProjectSpec
from headroom.shell.alerting import Alerting, AlertmanagerSink, EventSink, Sink, WebhookSink
from headroom.shell.backoff import backoff_delays
from headroom.shell.kube import KubeWriter

log = logging.getLogger("headroom.alerts")


def payload(spec: ProjectSpec, notice: Notice, now: datetime) -> dict[str, Any]:
    return {
        "id": notice.id,
        "kind": f"raise-{notice.kind}",
        "project": spec.name,
        "team": spec.owner.team,
        "contacts": list(spec.owner.contacts),
        "namespace": notice.namespace,
        "changeId": notice.change_id,
        "until": rfc3339(notice.until),
        "sentAt": rfc3339(now),
        "text": notice_text(spec.name, spec.owner.team, notice),
    }


def alert(spec: ProjectSpec, notice: Notice, now: datetime) -> dict[str, Any]:
    # A reminder holds until the raise ends; a withdrawal is news for a day, then resolves by itself.
    ends = notice.until if notice.kind == "reminder" and notice.until > now else now + timedelta(days=1)
    return {
        "labels": {
            "alertname": RAISE_ENDING_ALERT if notice.kind == "reminder" else RAISE_WITHDRAWN_ALERT,
            "project": spec.name,
            "team": spec.owner.team,
            "namespace": notice.namespace,
            "severity": "info",
        },
        "annotations": {
            "summary": notice_text(spec.name, spec.owner.team, notice),
            "contacts": ", ".join(spec.owner.contacts),
            "notification_id": notice.id,
            "until": rfc3339(notice.until),
        },
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(ends),
        "generatorURL": f"headroom://projects/{spec.name}",
    }


class RaiseNotices:
    """After each reconcile: what is owed about raises that end, delivered once; and when to wake."""

    def __init__(self, alerting: Alerting, writer: KubeWriter, wake_at: Callable[[str, datetime], None]) -> None:
        self.alerting, self.writer, self.wake_at = alerting, writer, wake_at
        self._retry: dict[str, Any] = {}

    async def _deliver(
        self, sink: Sink, spec: ProjectSpec, body: Mapping[str, Any], notice: Notice, now: datetime
    ) -> None:
        if isinstance(sink, WebhookSink):
            await sink.post(payload(spec, notice, now), notice.id, spec)
        elif isinstance(sink, AlertmanagerSink):
            await sink.post([alert(spec, notice, now)])
        elif isinstance(sink, EventSink) and notice.kind == "reminder":
            # The withdrawal's Event is the planner's (RaiseWithdrawn), posted with the quota change.
            await self.writer.post_event(
                body, Event("Normal", "RaiseEndsSoon", notice_text(spec.name, spec.owner.team, notice))
            )

    async def __call__(
        self, spec: ProjectSpec, body: Mapping[str, Any], plan: Plan, now: datetime
    ) -> list[dict[str, Any]]:
        """The outbox for status.raiseNotices; also schedules this Project's next wake-up."""
        try:
            hours = parse_business_hours(spec.owner.business_hours, spec.owner.holidays)
        except BusinessHoursError:
            hours = parse_business_hours(None)  # alerting reports the bad hours in a condition
        records = records_from_status(plan.status.get("namespaces"))
        before = notices_from_status((body.get("status") or {}).get(RAISE_NOTICES_FIELD))
        notices, wake = owed_notices(spec.name, records, before, hours, now)
        if notices and notices_to_status(notices) != notices_to_status(before):
            await self.writer.patch_status(spec.name, {RAISE_NOTICES_FIELD: notices_to_status(notices)})
        sinks = self.alerting.active_sinks(spec)
        names = frozenset(s.name for s in sinks)
        failed = False
        for index, notice in enumerate(notices):
            if not deliverable(notice, names, now):
                continue
            for sink in sinks:
                if sink.name in notice.delivered:
                    continue
                try:
                    await self._deliver(sink, spec, body, notice, now)
                except Exception as exc:
                    failed = True
                    log.warning("Project %s: delivery of %s to %s failed: %s", spec.name, notice.id, sink.name, exc)
                    continue
                notice = notices[index] = replace(notice, delivered=notice.delivered | {sink.name})
                log.info(
                    "Project %s: raise %s notice for %s sent to %s", spec.name, notice.kind, notice.namespace, sink.name
                )
        if failed:
            delays = self._retry.setdefault(spec.name, backoff_delays(base=2.0, cap=300.0))
            wake = now + timedelta(seconds=next(delays))
        else:
            self._retry.pop(spec.name, None)
        ends = next_end(spec.namespaces, now)
        moments = [m for m in (wake, ends) if m is not None]
        if moments:
            self.wake_at(spec.name, min(moments))
        return notices_to_status(notices)
