"""The imperative shell around `plan_project`: what the watches saw in, writes of the differences out.

Watch events only mark a Project dirty; one worker per Project reconciles it, so a burst of events
becomes one reconcile (coalescing), and one reconcile makes only the writes whose desired state
differs from what was seen. Failures are retried with jittered exponential backoff; nothing here
ever lowers a quota on missing data, because `plan_project` never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from headroom.core.history import HistoryResult, HistorySource, PeakQuery, decode, encode, record
from headroom.core.names import (
    DAILY_PEAKS_ANNOTATION,
    FIELD_MANAGER,
    PROJECT_LABEL,
    QUOTA_NAME,
    STATE_ANNOTATION,
)
from headroom.core.planning import (
    COUNTING,
    Event,
    Observed,
    Plan,
    Settings,
    invalid_status,
    observe_limitrange,
    observe_quota,
    plan_project,
    terms_in_force,
    with_alerts,
)
from headroom.core.spec import ProjectSpec, SpecError, parse_project
from headroom.shell.backoff import backoff_delays, jittered
from headroom.shell.failpoints import async_failpoint
from headroom.shell.kube import (
    WRITE_PRIORITY,
    KubeWriter,
    is_retryable,
    is_unreachable,
)
from headroom.shell.metrics import Metrics

log = logging.getLogger("headroom")

# Keys of status that belong to Kopf or to nobody: never compared, never removed.
_FOREIGN_STATUS_KEYS = frozenset({"kopf"})


class AlertOutcomeLike(Protocol):
    records: list[dict[str, Any]]
    conditions: list[dict[str, Any]]


class AlertHook(Protocol):
    async def __call__(self, spec: ProjectSpec, body: Mapping[str, Any], plan: Plan,
                       now: datetime) -> AlertOutcomeLike: ...


class IndexedDict(dict[str, dict[str, Any]]):
    """A dict that keeps an inverted index: index key -> the keys whose value names it.

    Reconciling one Project must not cost a pass over every Project or quota in the cluster (that
    is quadratic: at 3000 Projects a derivation cycle spent seconds of CPU in such passes).
    """

    def __init__(self, index_keys: Callable[[Mapping[str, Any]], set[str]]) -> None:
        super().__init__()
        self._index_keys = index_keys
        self._index: dict[str, set[str]] = {}

    def keys_for(self, index_key: str) -> set[str]:
        return set(self._index.get(index_key, ()))

    def _unindex(self, key: str) -> None:
        if key in self:
            for index_key in self._index_keys(dict.__getitem__(self, key)):
                keys = self._index.get(index_key)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._index[index_key]

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self._unindex(key)
        super().__setitem__(key, value)
        for index_key in self._index_keys(value):
            self._index.setdefault(index_key, set()).add(key)

    def __delitem__(self, key: str) -> None:
        self._unindex(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self._unindex(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._index.clear()


def _claimed_namespaces(body: Mapping[str, Any]) -> set[str]:
    return {str(ns.get("name")) for ns in (body.get("spec") or {}).get("namespaces") or []
            if isinstance(ns, Mapping) and ns.get("name")}


def _labelled_project(obj: Mapping[str, Any]) -> set[str]:
    project = (obj.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
    return {project} if project else set()


@dataclass
class Store:
    """What the watch streams have shown: the operator's whole view of the cluster."""

    # name -> Project, indexed by the namespaces it claims
    projects: IndexedDict = field(default_factory=lambda: IndexedDict(_claimed_namespaces))
    # namespace -> Headroom's quota, indexed by the Project its label names
    quotas: IndexedDict = field(default_factory=lambda: IndexedDict(_labelled_project))
    limitranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    # namespace -> the Project its headroom.dev/project label names (only labelled namespaces)
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def projects_claiming(self, namespace: str) -> list[str]:
        return sorted(self.projects.keys_for(namespace))

    def quota_namespaces_of(self, project: str) -> set[str]:
        """Namespaces holding a quota labelled for `project` (some may have left its spec)."""
        return self.quotas.keys_for(project)

    def confirmed_claim(self, project: str, namespace: str) -> bool:
        """Whether another Project's claim on a namespace counts (claims.py has the rule; this is
        its view from outside: the label, Headroom's quota, or what that Project's status recorded)."""
        label = self.namespace_labels.get(namespace)
        if label is not None:
            return label == project
        quota = self.quotas.get(namespace)
        if quota is not None and (quota.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL) == project:
            return True
        body = self.projects.get(project) or {}
        approved = ((body.get("status") or {}).get("approved") or {}).get("namespaces") or ()
        return namespace in approved or body.get("metadata", {}).get("generation") == 1

    def claimed_by_others(self, project: str) -> dict[str, str]:
        """Namespaces of `project` that an older Project claims with a confirmed claim (oldest wins)."""
        body = self.projects.get(project) or {}

        def age(name: str) -> tuple[str, str]:
            meta = self.projects[name].get("metadata", {})
            return (str(meta.get("creationTimestamp") or "9999"), name)

        mine = age(project) if project in self.projects else ("", project)
        result: dict[str, str] = {}
        for ns in (body.get("spec") or {}).get("namespaces") or []:
            name = ns.get("name")
            rivals = [p for p in self.projects_claiming(name)
                      if p != project and age(p) < mine and self.confirmed_claim(p, name)]
            if rivals:
                result[name] = min(rivals, key=age)
        return result

    def released(self, namespaces: set[str], project: str) -> frozenset[str]:
        """Of `namespaces`, those whose Headroom quota belongs to another Project that no longer lists them."""
        out = set()
        for ns in namespaces:
            owner = _labelled_project(self.quotas.get(ns) or {})
            if owner and project not in owner and not any(p in self.projects_claiming(ns) for p in owner):
                out.add(ns)
        return frozenset(out)


class HistoryCache:
    """Peaks from the history source, refreshed once per cycle for every namespace at once.

    A Project seen between cycles waits for a short batch window, so that a burst of new Projects
    costs one query per resource, not one per Project.

    A slow source must not hold up reconciles that already have answers (an approved change, a quota
    to restore): when every wanted peak has been answered before, `get` waits at most `stale_wait`
    for a refresh, then returns what is known and calls `on_refresh` once the refresh is done.
    A partial answer (the source's warnings, values that are not numbers) is treated as a failure:
    the last good answers stay, and the condition says why.
    """

    def __init__(self, source: HistorySource, max_age: timedelta, metrics: Metrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), batch_window: float = 0.5,
                 stale_wait: float = 2.0) -> None:
        self.source, self.max_age, self.metrics, self.clock = source, max_age, metrics, clock
        self.batch_window = batch_window
        self.stale_wait = stale_wait
        self._results: dict[tuple[str, str, timedelta], tuple[datetime, Decimal | None]] = {}
        self._errors: dict[timedelta, tuple[datetime, str | None, bool]] = {}
        self._wanted: dict[timedelta, set[tuple[str, str]]] = {}
        self._batch: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    def _fresh(self, keys: set[tuple[str, str]], lookback: timedelta, now: datetime) -> bool:
        return all((ns, r, lookback) in self._results
                   and now - self._results[(ns, r, lookback)][0] < self.max_age for ns, r in keys)

    async def get(self, namespaces: set[str], resources: set[str], lookback: timedelta,
                  on_refresh: Callable[[], None] | None = None) -> HistoryResult:
        keys = {(ns, r) for ns in namespaces for r in resources}
        if not getattr(self.source, "remote", True):
            # A local source (the sampler) costs nothing to ask and is always current.
            return await self.source.peaks(PeakQuery(frozenset(namespaces), frozenset(resources), lookback,
                                                     self.clock()))
        if not self._fresh(keys, lookback, self.clock()):
            done = self._want(keys, lookback)
            if not all((ns, r, lookback) in self._results for ns, r in keys):
                # Nothing known yet: a quota is never bootstrapped on a guess, and a status never
                # says "no history" for a namespace the source was not even asked about.
                asked = self.clock()
                while True:
                    await done.wait()
                    if all((ns, r, lookback) in self._results for ns, r in keys):
                        break
                    failed_at, error, _ = self._errors.get(lookback, (asked, None, False))
                    if error is not None and failed_at >= asked:
                        break  # the source failed: the answer says so
                    # These keys came while a batch was already being fetched: the next batch.
                    done = self._want(keys, lookback)
            else:
                refreshed = asyncio.ensure_future(done.wait())
                await asyncio.wait({refreshed}, timeout=self.stale_wait)
                if not refreshed.done():
                    # Answer with what is known; come back when the refresh tells something new.
                    seen = self._answer(keys, lookback)
                    if on_refresh is not None:
                        refreshed.add_done_callback(
                            lambda _: on_refresh() if self._answer(keys, lookback) != seen else None)
        return self._answer(keys, lookback)

    def _want(self, keys: set[tuple[str, str]], lookback: timedelta) -> asyncio.Event:
        """Add keys to the next batch (starting one if none is open); its completion event."""
        self._wanted.setdefault(lookback, set()).update(keys)
        if self._batch is None or self._batch.done():
            self._done = asyncio.Event()
            self._batch = asyncio.create_task(self._fetch_batch())
        return self._done

    def _answer(self, keys: set[tuple[str, str]], lookback: timedelta) -> HistoryResult:
        peaks = {(ns, r): value for ns, r in keys
                 if (value := self._results.get((ns, r, lookback), (None, None))[1]) is not None}
        _, error, partial = self._errors.get(lookback, (self.clock(), None, False))
        return HistoryResult(peaks=peaks, error=error, partial=partial)

    async def refresh_all(self, wanted: Mapping[timedelta, set[tuple[str, str]]]) -> None:
        for lookback, keys in wanted.items():
            self._wanted.setdefault(lookback, set()).update(keys)
        await self._fetch(delay=0)

    async def _fetch_batch(self) -> None:
        await self._fetch(delay=self.batch_window)

    async def _fetch(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        # The keys and the event that their waiters hold are taken together: keys wanted from now on
        # belong to a fresh event and a new batch. (Sharing one event across snapshots let a refresh
        # complete it early, and a waiter then spun on an event that was already set.)
        wanted, self._wanted = self._wanted, {}
        done, self._done = self._done, asyncio.Event()
        if self._batch is asyncio.current_task():
            self._batch = None
        try:
            for lookback, keys in wanted.items():
                now = self.clock()
                query = PeakQuery(frozenset(ns for ns, _ in keys), frozenset(r for _, r in keys), lookback, now)
                started = time.monotonic()
                try:
                    result = await self.source.peaks(query)
                except Exception as exc:  # a source bug must not stop reconciling
                    log.exception("history source %s failed", self.source.name)
                    result = HistoryResult(error=f"{type(exc).__name__}: {exc}")
                self.metrics.history_queries.labels(self.source.name).inc(result.queries)
                self.metrics.history_duration.observe(time.monotonic() - started)
                if result.error is None and result.partial:
                    # Some series were missing or garbage: what is missing is unknown, not zero, and
                    # an incomplete answer must not bootstrap a quota. Keep the last good answers.
                    result = HistoryResult(error=f"{self.source.name} gave a partial answer (warnings, or "
                                           "values that are not numbers); the last complete answer is kept",
                                           partial=True, queries=result.queries)
                if result.error is None:
                    for key in keys:
                        self._results[(*key, lookback)] = (now, result.peaks.get(key))
                # On error the previous answers stay: unknown is never zero.
                self._errors[lookback] = (now, result.error, result.partial)
        finally:
            done.set()


@dataclass
class Reconciler:
    store: Store
    writer: KubeWriter
    history: HistoryCache
    settings: Settings
    metrics: Metrics
    sampler: bool = False
    alerts: AlertHook | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    min_interval: float = 1.0  # seconds between two reconciles of one Project (coalescing)
    _dirty: set[str] = field(default_factory=set)
    _workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _later: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    _unreachable: dict[str, asyncio.Event] = field(default_factory=dict)  # waiting out an unreachable API
    # Order in which Projects were first seen: their writes queue in this order at the rate limiter,
    # so that a burst of new Projects is onboarded one after the other, not all of them at the end.
    _order: dict[str, int] = field(default_factory=dict)
    _seen: Iterator[int] = field(default_factory=itertools.count)

    # --- scheduling

    def schedule(self, name: str) -> None:
        self._dirty.add(name)
        if name not in self._order:
            self._order[name] = next(self._seen)
        worker = self._workers.get(name)
        if worker is None or worker.done():
            self._workers[name] = asyncio.create_task(self._work(name), name=f"reconcile:{name}")

    def schedule_at(self, name: str, when: datetime) -> None:
        """Wake a Project at a moment (a deferred alert's opening hour, a retry)."""
        delay = max(0.0, (when - self.clock()).total_seconds())
        previous = self._later.pop(name, None)
        if previous is not None:
            previous.cancel()
        self._later[name] = asyncio.get_running_loop().call_later(delay, self.schedule, name)

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
        WRITE_PRIORITY.set(self._order.get(name, math.inf))  # this task's own context
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
                level = (logging.INFO if status == 404 else logging.WARNING if is_retryable(exc)
                         else logging.ERROR)
                delay = next(delays)
                log.log(level, "reconcile of Project %s failed (%s); retrying in %.1fs", name, _brief(exc), delay)
                self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)
            if failed is not None:
                await self._backoff(name, delay, failed)
                self._dirty.add(name)
            # Coalesce: events that arrive during this pause are handled by one more pass.
            await asyncio.sleep(self.min_interval)
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
        body = self.store.projects.get(name)
        if body is None:
            self.metrics.forget(name)
            self._order.pop(name, None)
            return  # deleted: garbage collection removes the quotas it owned
        now = self.clock()
        try:
            spec = parse_project(body)
        except SpecError as exc:
            await self._write_status(body, invalid_status(body, exc, now))
            return
        terms = terms_in_force(spec, body, self.settings)
        history = await self.history.get(set(spec.namespace_names), set(terms.resources),
                                          terms.lookback, on_refresh=lambda: self.schedule(name))
        observed = self._observe(spec, body, history, now)
        plan = plan_project(spec, body, observed, self.settings, now)
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
                await self._announce(body, event)
            return
        status = plan.status
        if self.alerts is not None:
            outcome = await self.alerts(spec, body, plan, now)
            status = with_alerts(plan.status, outcome.records, outcome.conditions)
        await self._write_status(body, status)
        if applying:
            await async_failpoint("approved-change-after-status-write")
        for event in plan.events:
            await self._announce(body, event)
        self.metrics.observe_plan(spec, plan)

    def _observe(self, spec: ProjectSpec, body: Mapping[str, Any], history: HistoryResult,
                 now: datetime) -> Observed:
        mine = set(spec.namespace_names) | self.store.quota_namespaces_of(spec.name)
        quotas = {ns: observe_quota(self.store.quotas[ns]) for ns in mine if ns in self.store.quotas}
        extra: dict[str, dict[str, str]] = {}
        if self.sampler:
            for ns, seen in quotas.items():
                before = seen.annotations.get(DAILY_PEAKS_ANNOTATION)
                daily = decode(before)
                if seen.used is not None:
                    daily = record(daily, seen.used, now.date())
                text = encode(daily) if daily else None
                if text and decode(text) == decode(before):
                    text = before  # unchanged peaks: keep the exact text, so nothing is written
                if text:
                    extra[ns] = {DAILY_PEAKS_ANNOTATION: text}
        return Observed(
            project_uid=body["metadata"].get("uid", ""),
            namespaces_present=frozenset(ns for ns in spec.namespace_names if ns in self.store.namespaces),
            quotas=quotas,
            limitranges={ns: observe_limitrange(self.store.limitranges[ns]) for ns in spec.namespace_names
                         if ns in self.store.limitranges},
            claimed_by_others=self.store.claimed_by_others(spec.name),
            namespace_labels={ns: label for ns in spec.namespace_names
                              if (label := self.store.namespace_labels.get(ns)) is not None},
            released_by_others=self.store.released(set(spec.namespace_names), spec.name),
            peaks=history.peaks,
            history_error=history.error,
            history_partial=history.partial,
            extra_annotations=extra,
        )

    async def _apply(self, body: Mapping[str, Any], plan: Plan) -> bool:
        """Write what differs; True when a namespace's first (counting) quota was just created."""
        name = body["metadata"]["name"]
        uid = body["metadata"].get("uid", "")
        created_counting = False
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
        for desired_lr in plan.limitranges:
            seen_lr_obj = self.store.limitranges.get(desired_lr.namespace)
            seen_lr = observe_limitrange(seen_lr_obj) if seen_lr_obj else None
            if not desired_lr.matches(seen_lr, name, uid):
                await self.writer.apply_limitrange(body, desired_lr)
                self.metrics.writes.labels("limitrange").inc()
        for namespace in plan.delete_in:
            await self.writer.delete_owned(namespace)
            self.metrics.writes.labels("delete").inc()
        return created_counting

    async def _announce(self, body: Mapping[str, Any], event: Event) -> None:
        """An Event on the Project, and the same sentence in the log: what Headroom did, at INFO."""
        log.info("Project %s: %s: %s", body["metadata"]["name"], event.reason, event.message)
        await self.writer.post_event(body, event)

    def _note_deleted(self, body: Mapping[str, Any], namespace: str) -> None:
        """Headroom's quota was governing this namespace, and now it is gone: say so when recreating it."""
        entries = (body.get("status") or {}).get("namespaces") or []
        if not any(e.get("name") == namespace and e.get("state") == "Governed" for e in entries):
            return  # never governed yet (a new namespace): nothing was restored
        message = (f"ResourceQuota {QUOTA_NAME} in {namespace} was deleted; recreated, counting use first, then "
                   "governed again (the API server does not record who deleted it: see its audit log)")
        asyncio.get_running_loop().create_task(self._announce(body, Event("Warning", "QuotaRestored", message)))

    def _note_drift(self, body: Mapping[str, Any], namespace: str, seen_obj: Mapping[str, Any] | None,
                    desired: Any) -> None:
        """Someone else changed Headroom's quota: say so on the Project when restoring it."""
        # Who wrote the spec: the quota controller's status updates are not edits.
        managers = {m.get("manager") for m in (seen_obj or {}).get("metadata", {}).get("managedFields") or []
                    if m.get("subresource") != "status" and "f:spec" in (m.get("fieldsV1") or {})}
        foreign = sorted(m for m in managers if m and m != FIELD_MANAGER)
        if foreign:
            # Field managers are all the API server records of a writer (the user is in its audit log):
            # name them as what they are, not as people.
            which = "field manager" if len(foreign) == 1 else "field managers"
            message = (f"ResourceQuota {QUOTA_NAME} in {namespace} was changed by {which} {', '.join(foreign)}; "
                       "restored to the governed values (change quotas through the Project instead)")
            asyncio.get_running_loop().create_task(self._announce(body, Event("Warning", "QuotaRestored", message)))

    async def _write_status(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        old = {k: v for k, v in (body.get("status") or {}).items() if k not in _FOREIGN_STATUS_KEYS}
        new = {k: v for k, v in status.items() if v is not None}
        if _normalized(old) == _normalized(new):
            return
        patch: dict[str, Any] = dict(new)
        for key in old:
            if key not in new:
                patch[key] = None  # merge patch: remove what no longer applies (a pending change)
        await self.writer.patch_status(body["metadata"]["name"], patch)
        self.metrics.writes.labels("status").inc()
        # Remember what we wrote, so the echo of our own write through the watch is a no-op.
        stored = self.store.projects.get(body["metadata"]["name"])
        if stored is not None and stored.get("metadata", {}).get("uid") == body["metadata"].get("uid"):
            stored["status"] = {**{k: v for k, v in (stored.get("status") or {}).items()
                                   if k in _FOREIGN_STATUS_KEYS}, **new}


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
