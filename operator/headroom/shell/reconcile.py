"""The imperative shell around `plan_project`: what the watches saw in, writes of the differences out.

Watch events only mark a Project dirty; one worker per Project reconciles it, so a burst of events
becomes one reconcile (coalescing), and one reconcile makes only the writes whose desired state
differs from what was seen. Failures are retried with jittered exponential backoff; nothing here
ever lowers a quota on missing data, because `plan_project` never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from headroom.core.approval_rules import Rule
from headroom.core.audit import audit_line, audit_record
from headroom.core.conditions import merge_conditions
from headroom.core.history import HistoryResult, day_offset, decode, encode, keep_days, recorded, sampler_day
from headroom.core.names import (
    DAILY_PEAKS_ANNOTATION,
    FIELD_MANAGER,
    FORECAST_ALERTS_FIELD,
    PROMETHEUS_DAYS_ANNOTATION,
    QUOTA_NAME,
    RAISE_NOTICES_FIELD,
    STATE_ANNOTATION,
)
from headroom.core.planning import (
    COUNTING,
    Event,
    Observed,
    Plan,
    Settings,
    approved_terms,
    invalid_status,
    observe_limitrange,
    observe_quota,
    plan_project,
    terms_in_force,
    with_alerts,
)
from headroom.core.spec import ProjectSpec, SpecError, parse_project
from headroom.shell.backoff import backoff_delays, jittered
from headroom.shell.capacity import CapacityReader
from headroom.shell.failpoints import async_failpoint
from headroom.shell.history.cache import HistoryCache
from headroom.shell.kube import (
    WRITE_PRIORITY,
    KubeWriter,
    is_retryable,
    is_unreachable,
)
from headroom.shell.metrics import Metrics
from headroom.shell.store import PackedStatus, Store, planned_generation, unpacked

log = logging.getLogger("headroom")
# The audit trail: one JSON object per line, nothing around it (main.run gives it its own handler).
audit_log = logging.getLogger("headroom.audit")

# Keys of status that belong to Kopf or to nobody: never compared, never removed.
_FOREIGN_STATUS_KEYS = frozenset({"kopf"})


class AlertOutcomeLike(Protocol):
    @property
    def records(self) -> list[dict[str, Any]]: ...

    @property
    def conditions(self) -> list[dict[str, Any]]: ...

    @property
    def forecast_records(self) -> list[dict[str, Any]]: ...


class NoticeHook(Protocol):
    async def __call__(
        self, spec: ProjectSpec, body: Mapping[str, Any], plan: Plan, now: datetime
    ) -> list[dict[str, Any]]: ...


class DenialHook(Protocol):
    async def __call__(self, spec: ProjectSpec, body: Mapping[str, Any], now: datetime) -> AlertOutcomeLike: ...


class AlertHook(Protocol):
    async def __call__(
        self, spec: ProjectSpec, body: Mapping[str, Any], plan: Plan, now: datetime
    ) -> AlertOutcomeLike: ...


# Admission ranks, lower first.
# A team is waiting: a spec no plan has answered yet (a new Project, an edited one), or a namespace
# whose counting quota waits to become the governed one.
OWED = 0
# Planned before, by another process (the Projects woken at a start): their quotas are in place.
RESUMED = 1
# Planned by this process (a derivation cycle, a resync, a status echo).
REPLAN = 2
# Added to the write priority (the order Projects were first seen) of every Project not owed a
# plan: a new Project's writes go ahead of a start's backlog at the write limiter, and its status
# ahead of theirs (still behind every quota: kube.AFTER_ENFORCEMENT is larger).
ROUTINE_WRITES = 1e9


def owed_a_plan(body: Mapping[str, Any]) -> bool:
    """Whether the Project's spec, as it stands, was never answered by a plan."""
    generation = (body.get("metadata") or {}).get("generation")
    return generation is None or planned_generation(body) != generation


class Admission:
    """A semaphore whose waiters are let in by priority (lower first), then in arrival order."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._sequence), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # handed a place just as it was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


@dataclass
class Reconciler:
    store: Store
    writer: KubeWriter
    history: HistoryCache
    settings: Settings
    metrics: Metrics
    sampler: bool = False
    alerts: AlertHook | None = None
    capacity: CapacityReader | None = None  # read only with an overcommit budget (--max-overcommit)
    notices: NoticeHook | None = None  # messages about raises that end (shell/expiry.py)
    denials: DenialHook | None = None
    rules: Callable[[], tuple[Rule, ...]] | None = None  # rules for routine approvals (shell/approval_rules.py)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    min_interval: float = 1.0  # seconds between two reconciles of one Project (coalescing)
    # ... and while one of its namespaces waits for the quota controller's first count: the event of
    # that count is what turns the counting quota into the governed one, so it is not held back.
    counting_interval: float = 0.05
    _dirty: set[str] = field(default_factory=set)
    _workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _later: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _unreachable: dict[str, asyncio.Event] = field(default_factory=dict)  # waiting out an unreachable API
    # Order in which Projects were first seen: their writes queue in this order at the rate limiter,
    # so that a burst of new Projects is onboarded one after the other, not all of them at the end.
    _order: dict[str, int] = field(default_factory=dict)
    _seen: Iterator[int] = field(default_factory=itertools.count)
    _counting: set[str] = field(default_factory=set)  # Projects with a namespace still counting
    # Plans made and not yet written, at most: a burst of thousands of Projects otherwise holds
    # thousands of plans (status, desired objects, derivations) queued at the write limiter at once,
    # which was the operator's high-water mark. Enough to keep the limiter busy; the rest wait with
    # their history in hand and nothing else.
    max_in_flight: int = 64
    _admission: Admission | None = None
    # Of those, re-plans of Projects planned before (a derivation cycle's, above all): at most this
    # many at once. Their plans are CPU and rarely write, so a few keep the CPU as busy as many; with
    # 64 of them ready, each turn of the event loop held about 100 ms of planning, and a new
    # Project's history question, which takes dozens of turns, waited seconds at 3,000 Projects.
    max_replans: int = 4
    _replans: asyncio.Semaphore | None = None
    # Projects planned by this process -> when their last plan began (the event loop's clock)
    _planned: dict[str, float] = field(default_factory=dict)

    # --- scheduling

    def schedule(self, name: str) -> None:
        self._dirty.add(name)
        if name not in self._order:
            self._order[name] = next(self._seen)
        worker = self._workers.get(name)
        if worker is None or worker.done():
            # In a context of its own: a task inherits its creator's, and when that is one of Kopf's
            # handlers, Kopf's context holds the cause of the event (its whole parsed object). The
            # worker, and the resync timer it leaves behind, would keep that alive: at 1,500
            # Projects, one raw object per Project for as long as the operator ran.
            self._workers[name] = asyncio.create_task(
                self._work(name), name=f"reconcile:{name}", context=contextvars.Context()
            )

    def planned_within(self, name: str, seconds: float) -> bool:
        """Whether a plan of the Project began in the last `seconds`."""
        at = self._planned.get(name)
        return at is not None and asyncio.get_running_loop().time() - at < seconds

    def pending(self, name: str) -> bool:
        """Whether a reconcile of the Project is queued or under way (it will read the store anew)."""
        worker = self._workers.get(name)
        return worker is not None and not worker.done()

    def schedule_at(self, name: str, when: datetime) -> None:
        """Wake a Project at a moment (a deferred alert's opening hour, the end of a raise, a retry).

        The earliest wake-up asked for holds: every reconcile asks again for the moments it still
        needs, so a later one is not lost, and one timer per Project is all there is."""
        delay = max(0.0, (when - self.clock()).total_seconds())
        loop = asyncio.get_running_loop()
        previous = self._later.get(name)
        if previous is not None and not previous.cancelled() and loop.time() <= previous.when() <= loop.time() + delay:
            return
        if previous is not None:
            previous.cancel()
        self._later[name] = loop.call_later(delay, self._wake, name)

    def _wake(self, name: str) -> None:
        self._later.pop(name, None)
        self.schedule(name)

    def api_reachable(self) -> None:
        """The API server answered (a watch event arrived): Projects whose last reconcile could not
        reach it retry now, each after a short random pause, instead of waiting out a long backoff."""
        waiting = [wake for wake in self._unreachable.values() if not wake.is_set()]
        if waiting:
            log.info("the API server answers again: %d Project(s) retry now", len(waiting))
        for wake in waiting:
            wake.set()

    async def _backoff(self, name: str, delay: float, exc: Exception) -> None:
        if not is_unreachable(exc):
            await asyncio.sleep(delay)  # a refusal (409, 429, 5xx): the full backoff
            return
        wake = self._unreachable[name] = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
        finally:
            self._unreachable.pop(name, None)
        if wake.is_set():
            await asyncio.sleep(jittered(0.5, 1.0))  # not every Project at once

    async def _work(self, name: str) -> None:
        delays = backoff_delays(base=1.0, cap=120.0)
        while name in self._dirty:
            self._dirty.discard(name)
            started = time.monotonic()
            failed: Exception | None = None
            try:
                await self.reconcile(name)
                delays = backoff_delays(base=1.0, cap=120.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = exc
                status = getattr(exc, "status", None)
                # 404: the Project was deleted under this reconcile (its watch event follows); the
                # retry finds it gone and stops. Routine, so not an ERROR.
                level = logging.INFO if status == 404 else logging.WARNING if is_retryable(exc) else logging.ERROR
                delay = next(delays)
                log.log(level, "reconcile of Project %s failed (%s); retrying in %.1fs", name, _brief(exc), delay)
                self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)
            if failed is not None:
                await self._backoff(name, delay, failed)
                self._dirty.add(name)
            # Coalesce: events that arrive during this pause are handled by one more pass.
            await asyncio.sleep(self.counting_interval if name in self._counting else self.min_interval)
        self._workers.pop(name, None)

    async def shutdown(self) -> None:
        for handle in self._later.values():
            handle.cancel()
        for task in list(self._workers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- one reconcile

    async def reconcile(self, name: str) -> None:
        if self._admission is None:
            self._admission = Admission(self.max_in_flight)
        stored = self.store.projects.get(name)
        owed = stored is not None and self._owed(name, stored)
        # In this task's own context (a reconcile runs in its worker's task).
        WRITE_PRIORITY.set(self._order.get(name, math.inf) + (0 if owed else ROUTINE_WRITES))
        if owed or name not in self._planned:
            await self._reconcile(name, admitted=False)
            return
        # A Project planned before, and owed nothing, waits for its place before it does anything at
        # all: thousands of them woken together each parsing their spec and asking for history first
        # kept the event loop busy for seconds, and a new Project's first reconcile waited behind it.
        if self._replans is None:
            self._replans = asyncio.Semaphore(self.max_replans)
        async with self._replans, self._admission.slot(REPLAN):
            await self._reconcile(name, admitted=True)

    def _owed(self, name: str, stored: Mapping[str, Any]) -> bool:
        return name in self._counting or owed_a_plan(stored)

    async def _reconcile(self, name: str, admitted: bool) -> None:
        stored = self.store.projects.get(name)
        if stored is None:
            self.metrics.forget(name)
            self._order.pop(name, None)
            self._counting.discard(name)
            self._planned.pop(name, None)
            return  # deleted: garbage collection removes the quotas it owned
        now = self.clock()
        try:
            spec = parse_project(stored)
        except SpecError as exc:
            body = unpacked(stored)
            await self._write_status(body, invalid_status(body, exc, now))
            return
        terms = terms_in_force(spec, stored, self.settings)  # its approved terms: decoded, then let go
        history = await self.history.get(
            set(spec.namespace_names),
            set(terms.resources),
            terms.lookback,
            on_refresh=lambda: self.schedule(name),
            # Holding a place, it does not wait for a refresh under way: it goes on with the answers
            # known, and comes back when the refresh tells something new.
            stale_wait=0 if admitted else None,
        )
        # The status is decoded only once the reconcile has its place: at a start over thousands of
        # Projects all of them wait here at once, and each holding its decoded status (about 15 KiB
        # parsed) was 40 MiB at 3,000.
        if admitted:
            await self._plan_and_write(name, unpacked(stored), spec, history, self.clock())
            return
        assert self._admission is not None
        # A new Project goes ahead of a start's backlog, and both ahead of the re-reconciles of a
        # derivation cycle: its quota is what a team is waiting for. At a start every Project is
        # one this process has not planned; ranked alike, a new one waited behind thousands.
        async with self._admission.slot(OWED if self._owed(name, stored) else RESUMED):
            # Planned at the moment it is admitted (an event meanwhile has marked it for one more pass).
            await self._plan_and_write(name, unpacked(stored), spec, history, self.clock())

    async def _plan_and_write(
        self, name: str, body: Mapping[str, Any], spec: ProjectSpec, history: HistoryResult, now: datetime
    ) -> None:
        """Plan the Project and write what differs: one of at most max_in_flight at once."""
        self._planned[name] = asyncio.get_running_loop().time()
        observed = self._observe(spec, body, history, now)
        settings = self.settings
        if self.rules is not None:  # the platform's rules for routine approvals, as the file says now
            settings = replace(settings, approval_rules=self.rules())
        plan = plan_project(spec, body, observed, settings, now)
        if self.capacity is not None and "heldForCapacity" in (plan.status.get("pendingChange") or {}):
            # A raise is about to apply (without capacity known, the budget holds every one): only
            # now is the cluster's governed total summed, so a steady reconcile never costs a pass
            # over every quota.
            observed = replace(
                observed, capacity=self.capacity.view(self.store.quotas, spec.name, spec.namespace_names)
            )
            plan = plan_project(spec, body, observed, settings, now)
        if any(q.annotations.get(STATE_ANNOTATION) == COUNTING for q in plan.quotas):
            self._counting.add(name)
        else:
            self._counting.discard(name)
        applying = any(event.reason == "ChangeApplied" for event in plan.events)
        if applying:
            await async_failpoint("approved-change-before-write")
        created_counting = await self._apply(body, plan)
        if applying:
            await async_failpoint("approved-change-after-quota-write")
        if created_counting and not _uses_sign_off(body, plan):
            # The quota controller reports the new quota's use within moments, and the watch event of
            # that report reconciles this Project again: one status write then, not two. (A sign-off
            # used now is recorded at once: it approves nothing more.)
            for event in plan.events:
                await self._announce(body, event, plan.status)
            return
        status = plan.status
        if self.alerts is not None:
            outcome = await self.alerts(spec, body, plan, now)
            status = with_alerts(plan.status, outcome.records, outcome.conditions)
            if outcome.forecast_records:
                status[FORECAST_ALERTS_FIELD] = outcome.forecast_records  # the forecast alerts' outbox
        if self.notices is not None:
            notices = await self.notices(spec, body, plan, now)
            status = {**status, RAISE_NOTICES_FIELD: notices or None}
        if self.denials is not None:
            denied = await self.denials(spec, body, now)
            status = {
                **status,
                "denials": denied.records or None,
                "conditions": merge_conditions(status.get("conditions") or [], denied.conditions),
            }
        await self._write_status(body, status)
        if applying:
            await async_failpoint("approved-change-after-status-write")
        for event in plan.events:
            await self._announce(body, event, status)
        self.metrics.observe_plan(spec, plan)

    def _observe(self, spec: ProjectSpec, body: Mapping[str, Any], history: HistoryResult, now: datetime) -> Observed:
        mine = set(spec.namespace_names) | self.store.quota_namespaces_of(spec.name)
        quotas = {ns: observe_quota(self.store.quotas[ns]) for ns in mine if ns in self.store.quotas}
        extra: dict[str, dict[str, str]] = {}
        if self.sampler:
            # Keep as many days as the longest lookback this Project may come to use without a new
            # day of sampling: the one it asks for and the one approved (the tighter is in force,
            # and either may become the one in force again).
            keep = keep_days(max(spec.quota.lookback, approved_terms(spec, body).lookback))
            for ns, seen in quotas.items():
                before = seen.annotations.get(DAILY_PEAKS_ANNOTATION)
                daily = decode(before)
                changed = (
                    recorded(daily, seen.used, sampler_day(now, day_offset(ns)), keep)
                    if seen.used is not None
                    else None
                )
                # Unchanged peaks keep the exact text they had, so that nothing is written.
                text = encode(changed) if changed else before if daily else None
                if text:
                    extra[ns] = {DAILY_PEAKS_ANNOTATION: text}
        keeper = getattr(self.history.source, "annotation", None)
        if keeper is not None:
            # The Prometheus source's closed days ride on the quota: rewritten once a day at the
            # namespace's own moment, otherwise kept as they are (so nothing is written).
            for ns, seen in quotas.items():
                if text := keeper(ns, seen.annotations.get(PROMETHEUS_DAYS_ANNOTATION), now):
                    extra.setdefault(ns, {})[PROMETHEUS_DAYS_ANNOTATION] = text
        return Observed(
            project_uid=body["metadata"].get("uid", ""),
            namespaces_present=frozenset(ns for ns in spec.namespace_names if ns in self.store.namespaces),
            quotas=quotas,
            limitranges={
                ns: observe_limitrange(self.store.limitranges[ns])
                for ns in spec.namespace_names
                if ns in self.store.limitranges
            },
            claimed_by_others=self.store.claimed_by_others(spec.name),
            namespace_labels={
                ns: label for ns in spec.namespace_names if (label := self.store.namespace_labels.get(ns)) is not None
            },
            released_by_others=self.store.released(set(spec.namespace_names), spec.name),
            peaks=history.peaks,
            history_error=history.error,
            history_partial=history.partial,
            daily=history.daily,
            day_offsets=history.day_offsets,
            extra_annotations=extra,
        )

    async def _apply(self, body: Mapping[str, Any], plan: Plan) -> bool:
        """Write what differs; True when a namespace's first (counting) quota was just created."""
        name = body["metadata"]["name"]
        uid = body["metadata"].get("uid", "")
        created_counting = False
        # LimitRanges first: a quota that tracks requests.cpu (even the counting one, unbounded)
        # makes the API server refuse every pod that does not state that request, and it is the
        # LimitRange's defaults that state it for them. Written the other way round, a new
        # namespace refuses such pods for as long as the LimitRange waits at the write limiter.
        for desired_lr in plan.limitranges:
            seen_lr_obj = self.store.limitranges.get(desired_lr.namespace)
            seen_lr = observe_limitrange(seen_lr_obj) if seen_lr_obj else None
            if not desired_lr.matches(seen_lr, name, uid):
                await self.writer.apply_limitrange(body, desired_lr)
                self.metrics.writes.labels("limitrange").inc()
        for desired in plan.quotas:
            seen_obj = self.store.quotas.get(desired.namespace)
            seen = observe_quota(seen_obj) if seen_obj else None
            if not desired.matches(seen, name, uid):
                if seen is not None and seen.project == name and seen.state is not None:
                    self._note_drift(body, desired.namespace, seen_obj, desired)
                elif seen_obj is None:
                    self._note_deleted(body, desired.namespace)
                await self.writer.apply_quota(body, desired)
                self.metrics.writes.labels("resourcequota").inc()
                created_counting |= seen is None and desired.annotations.get(STATE_ANNOTATION) == COUNTING
        for namespace in plan.delete_in:
            await self.writer.delete_owned(namespace)
            self.metrics.writes.labels("delete").inc()
        return created_counting

    async def _announce(self, body: Mapping[str, Any], event: Event, status: Mapping[str, Any] | None = None) -> None:
        """An Event on the Project, and the same sentence in the log: what Headroom did, at INFO. An Event
        about a change is also one JSON line in the audit log (who, what, why, when, the change id)."""
        log.info("Project %s: %s: %s", body["metadata"]["name"], event.reason, event.message)
        record = audit_record(
            body["metadata"]["name"],
            event.type,
            event.reason,
            event.message,
            status if status is not None else body.get("status") or {},
            body["metadata"].get("annotations") or {},
            self.clock(),
        )
        if record is not None:
            audit_log.info(audit_line(record))
        await self.writer.post_event(body, event)

    def _note_deleted(self, body: Mapping[str, Any], namespace: str) -> None:
        """Headroom's quota was governing this namespace, and now it is gone: say so when recreating it."""
        entries = (body.get("status") or {}).get("namespaces") or []
        if not any(e.get("name") == namespace and e.get("state") == "Governed" for e in entries):
            return  # never governed yet (a new namespace): nothing was restored
        message = (
            f"ResourceQuota {QUOTA_NAME} in {namespace} was deleted; recreated, counting use first, then "
            "governed again (the API server does not record who deleted it: see its audit log)"
        )
        asyncio.get_running_loop().create_task(self._announce(body, Event("Warning", "QuotaRestored", message)))

    def _note_drift(
        self, body: Mapping[str, Any], namespace: str, seen_obj: Mapping[str, Any] | None, desired: Any
    ) -> None:
        """Someone else changed Headroom's quota: say so on the Project when restoring it."""
        # Who wrote the spec: the quota controller's status updates are not edits.
        managers = {
            m.get("manager")
            for m in (seen_obj or {}).get("metadata", {}).get("managedFields") or []
            if m.get("subresource") != "status" and "f:spec" in (m.get("fieldsV1") or {})
        }
        foreign = sorted(m for m in managers if m and m != FIELD_MANAGER)
        if foreign:
            # Field managers are all the API server records of a writer (the user is in its audit log):
            # name them as what they are, not as people.
            which = "field manager" if len(foreign) == 1 else "field managers"
            message = (
                f"ResourceQuota {QUOTA_NAME} in {namespace} was changed by {which} {', '.join(foreign)}; "
                "restored to the governed values (change quotas through the Project instead)"
            )
            asyncio.get_running_loop().create_task(self._announce(body, Event("Warning", "QuotaRestored", message)))

    async def _write_status(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        old = {k: v for k, v in (body.get("status") or {}).items() if k not in _FOREIGN_STATUS_KEYS}
        new = {k: v for k, v in status.items() if v is not None}
        if _normalized(old) == _normalized(new):
            return
        if log.isEnabledFor(logging.DEBUG):
            changed = sorted(k for k in {*old, *new} if _normalized(old.get(k)) != _normalized(new.get(k)))
            log.debug(
                "Project %s: status changes in %s: %s",
                body["metadata"]["name"],
                changed,
                {k: (old.get(k), new.get(k)) for k in changed},
            )
        await self.writer.patch_status(body["metadata"]["name"], status_patch(old, new))
        self.metrics.writes.labels("status").inc()
        # Remember what we wrote, so the echo of our own write through the watch is a no-op.
        stored = self.store.projects.get(body["metadata"]["name"])
        if stored is not None and stored.get("metadata", {}).get("uid") == body["metadata"].get("uid"):
            kept = {k: v for k, v in (stored.get("status") or {}).items() if k in _FOREIGN_STATUS_KEYS}
            stored["status"] = PackedStatus({**kept, **new})


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns status `old` into `new`: every value of `new`, and
    null for every key that is gone, at any depth. A merge patch merges maps, so a map sent without
    a key it had keeps that key: a `summary.soonestFull` that no longer applies stayed on the server,
    and every later reconcile found the status different and wrote it again."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = status_patch(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None  # remove what no longer applies (a pending change)
    return patch


def _uses_sign_off(body: Mapping[str, Any], plan: Plan) -> bool:
    before = ((body.get("status") or {}).get("approved") or {}).get("changeId")
    return bool((plan.status.get("approved") or {}).get("changeId") != before)


def _brief(exc: BaseException) -> str:
    """An error in one line: an API error's status and the server's sentence, not its HTTP headers."""
    status = getattr(exc, "status", None)
    if status is not None and hasattr(exc, "body"):
        message = getattr(exc, "reason", "")
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            message = json.loads(exc.body).get("message") or message
        return f"{type(exc).__name__} {status}: {message}"
    return f"{type(exc).__name__}: {exc}"


def _normalized(value: Any) -> Any:
    """Status as the API server returns it: no None values, no empty maps from our side."""
    if isinstance(value, Mapping):
        return {k: _normalized(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value
