"""Kopf's part: watch streams in, the Store updated, the Project's worker woken. Nothing else.

Only low-level Kopf handlers are used (`on.event`): Kopf then stores nothing on the Projects (no
finalizer, no annotations, no progress in status), which keeps them free of drift for Argo CD and
Flux, and the reconciler is level-based rather than edge-based.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import kopf
from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory

from headroom.core.names import (
    GROUP,
    LIMITRANGE_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    PLURAL,
    PROJECT_LABEL,
    QUOTA_NAME,
    VERSION,
)
from headroom.shell.apiclient import connection_info
from headroom.shell.backoff import backoff_delays
from headroom.shell.kube import LIST_PAGE
from headroom.shell.store import plain

if TYPE_CHECKING:
    from headroom.shell.main import Runtime


# A watch request lasts this long on the server, then is renewed from its last bookmark: one
# request per watch (four in all, and the Events watch of denials_watch.py), no re-list. Long
# watches are what keep the steady state cheap.
WATCH_SECONDS = 300


# A watch that goes silent without closing (a dead NAT entry, a stuck proxy) is noticed by this
# inactivity timeout. The API server's watch cache sends every watch a bookmark about every minute
# (k8s.io/apiserver cacher: defaultBookmarkFrequency), so a healthy stream is never silent this long;
# a false alarm would cost one more watch request, nothing else.
WATCH_INACTIVITY_SECONDS = 75


def _essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Project can change the plan; its status is Headroom's own output."""
    meta = body.get("metadata", {})
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        tuple(sorted((meta.get("annotations") or {}).items())),
        repr(body.get("spec")),
    )


class JitteredBackoffs:
    """Kopf's retry delays for its own API requests (lists, watch connections): exponential from
    0.5 s, capped at 10 s, each jittered, so that watches come back within seconds of an API server
    that was down, and replicas or restarts do not retry in step. Iterable again for every request."""

    def __init__(self, attempts: int = 12, first: float = 0.5, cap: float = 10.0) -> None:
        self.attempts, self.first, self.cap = attempts, first, cap

    def __iter__(self) -> Iterator[float]:
        return backoff_delays(self.first, self.cap, self.attempts)


def _unchanged(before: Mapping[str, Any] | None, body: Mapping[str, Any]) -> bool:
    """The same version of an object seen again (a re-list after a watch expired): nothing to do."""
    version = body.get("metadata", {}).get("resourceVersion")
    return before is not None and version is not None and before.get("metadata", {}).get("resourceVersion") == version


def _owned(body: Mapping[str, Any], name: str) -> bool:
    meta = body.get("metadata", {})
    return meta.get("name") == name and (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


KOPF_WORKER_LIMIT = 64  # Kopf's per-object workers running at once (see startup)
KOPF_WORKER_IDLE = 0.01  # seconds an idle worker keeps its place (see startup)


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf's diff base: the essence of an object as last handled, which its change handlers
    (on.create, on.update, on.field) compare against. Headroom has event handlers only (a test
    holds it to that), so there is nothing to compare; but the default storage builds the essence
    anyway, for every event, from a deep copy of the whole object (status and managedFields
    included). With thousands of objects listed at start-up that was 16 MiB of the operator's
    high-water mark."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class NoMemories(ResourceMemories):
    """Kopf's per-object memory, kept for no object. Kopf remembers every watched object until it is
    deleted (its memo, error throttler, indexing and daemon records: about 850 bytes each, and
    Headroom watches four objects per Project); all of it serves handlers Headroom does not have:
    daemons, timers, indexes, resume handlers (a test holds it to event handlers only). Each event
    gets a fresh memory instead, used and dropped."""

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: Any = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        return await super().recall(raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=True)


def register(registry: kopf.OperatorRegistry, runtime: Runtime, stop_flag: asyncio.Event | None = None) -> None:
    store = runtime.store
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info()  # the same identity as Headroom's own requests

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Headroom posts its own, meaningful Events
        settings.scanning.disabled = True
        settings.watching.label_selectors["v1", "resourcequotas"] = MANAGED_SELECTOR
        settings.watching.label_selectors["v1", "limitranges"] = MANAGED_SELECTOR
        settings.watching.connect_timeout = 10
        settings.watching.server_timeout = WATCH_SECONDS
        settings.watching.inactivity_timeout = WATCH_INACTIVITY_SECONDS
        settings.networking.request_timeout = 30
        settings.networking.error_backoffs = JitteredBackoffs()
        # Kopf keeps one worker per object while its events come, and that worker holds the last
        # event's parsed body until it has been idle this long (5 s by default). The handlers only
        # copy what the Store needs and return, so a worker has nothing to wait for; a later event
        # of the same object just starts a new one.
        settings.queueing.idle_timeout = KOPF_WORKER_IDLE
        # And at most this many of those workers at once: a start-up list of thousands of objects
        # otherwise starts thousands of tasks together, each with its frame and its body; the rest
        # wait in Kopf's queue, each holding its parsed event. An idle worker keeps its place, so the
        # idle timeout bounds how fast that queue drains: at 0.5 s, at most 128 objects a second, and
        # at a restart over 1,500 Projects (6,000 objects) the whole list waited parsed in the queue
        # (RSS 207 MiB, against 171 MiB once it drains at the handlers' own pace).
        settings.queueing.worker_limit = KOPF_WORKER_LIMIT
        # Kopf's start-up LISTs in pages too, like the Store's own (list_pages): at thousands of
        # Projects one response of the whole list was the peak.
        settings.watching.chunk_size = LIST_PAGE
        settings.persistence.diffbase_storage = NoDiffBase()
        # One active replica is ensured by the Lease (leader.py), not by Kopf's peering.
        settings.peering.standalone = True
        tasks.append(asyncio.create_task(runtime.prime_with_retry()))
        tasks.append(asyncio.create_task(runtime.derivation_cycle()))
        # Quota denials: FailedCreate Events, on a watch of their own (denials_watch.py says why).
        runtime.start_denial_watch()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        if runtime.replanning is not None:
            runtime.replanning.cancel()
        runtime.stop_denial_watch()
        await runtime.reconciler.shutdown()
        if stop_flag is not None:
            # Stopped by a signal: Kopf's waiter on our stop flag would otherwise linger as a "hung"
            # task that Kopf waits 5 s for, delaying the release of the Lease on SIGTERM.
            stop_flag.set()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def project_event(event: Mapping[str, Any], body: kopf.Body, name: str, **_: Any) -> None:
        runtime.reconciler.api_reachable()
        if event.get("type") == "DELETED":
            store.projects.pop(name, None)
            runtime.schedule(name)  # forgets its metrics
            for other in {p for ns in _namespaces(body) for p in store.projects_claiming(ns)}:
                runtime.schedule(other)  # a Project waiting on a claimed namespace may go ahead now
            return
        before = store.projects.get(name)
        store.projects[name] = plain(body, keep_managed_fields=False)
        if before is None or _essence(before) != _essence(store.projects[name]):
            runtime.schedule(name)
            # A namespace it no longer lists may be taken over by another Project that claims it.
            for ns in set(_namespaces(before or {})) - set(_namespaces(body)):
                for other in store.projects_claiming(ns):
                    runtime.schedule(other)

    def owned_object_event(
        kept: dict[str, dict[str, Any]],
        name: str,
        keep_managed_fields: bool,
        event: Mapping[str, Any],
        body: kopf.Body,
        namespace: str,
    ) -> None:
        """A watch event of one of Headroom's own objects: remember it, and wake its Project."""
        runtime.reconciler.api_reachable()
        if not _owned(body, name):
            return
        if event.get("type") == "DELETED":
            kept.pop(namespace, None)
        elif _unchanged(kept.get(namespace), body):
            return
        else:
            kept[namespace] = plain(body, keep_managed_fields=keep_managed_fields)
        project = (body.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
        if isinstance(project, str) and project in store.projects:
            runtime.schedule(project)

    @kopf.on.event("v1", "resourcequotas", registry=registry)
    async def quota_event(event: Mapping[str, Any], body: kopf.Body, namespace: str | None, **_: Any) -> None:
        # Drift detection reads who wrote a quota: the Store keeps a digest of its managedFields.
        owned_object_event(store.quotas, QUOTA_NAME, True, event, body, namespace or "")

    @kopf.on.event("v1", "limitranges", registry=registry)
    async def limitrange_event(event: Mapping[str, Any], body: kopf.Body, namespace: str | None, **_: Any) -> None:
        owned_object_event(store.limitranges, LIMITRANGE_NAME, False, event, body, namespace or "")

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def namespace_event(event: Mapping[str, Any], name: str, body: kopf.Body, **_: Any) -> None:
        runtime.reconciler.api_reachable()
        gone = event.get("type") == "DELETED" or bool(body.get("metadata", {}).get("deletionTimestamp"))
        label = None if gone else (body.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
        before = store.namespace_labels.get(name)
        if (name in store.namespaces) != gone and label == before:
            return  # nothing Headroom decides on has changed
        if gone:
            store.namespaces.discard(name)
            store.namespace_labels.pop(name, None)
        else:
            store.namespace_seen(name, label)  # the label: the platform's confirmation of a claim
        named = (p for p in (label, before) if isinstance(p, str) and p in store.projects)
        for project in {*store.projects_claiming(name), *named}:
            runtime.schedule(project)


def _namespaces(body: Mapping[str, Any]) -> list[str]:
    return [ns.get("name") for ns in (body.get("spec") or {}).get("namespaces") or []]
