"""`headroom run`: Kopf's watch streams feed the Store; the Reconciler does the rest.

Only low-level Kopf handlers are used (`on.event`): Kopf then stores nothing on the Projects (no
finalizer, no annotations, no progress in status), which keeps them free of drift for Argo CD and
Flux, and the reconciler is level-based rather than edge-based.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import kopf
import kubernetes
from aiohttp import web

from headroom.core.history import DailyPeaks, decode
from headroom.core.names import (
    DAILY_PEAKS_ANNOTATION,
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
from headroom.core.planning import Settings
from headroom.core.spec import SpecError, parse_duration
from headroom.shell.alerting import Alerting, build_sinks
from headroom.shell.backoff import backoff_delays, jittered
from headroom.shell.config import OperatorConfig
from headroom.shell.history import history_source
from headroom.shell.kube import REQUEST_TIMEOUT, KubeWriter, api_client
from headroom.shell.leader import LeaderElector
from headroom.shell.metrics import Metrics
from headroom.shell.reconcile import HistoryCache, Reconciler, Store

log = logging.getLogger("headroom")
# A watch request lasts this long on the server, then is renewed from its last bookmark: one
# request per watch (four in all), no re-list. Long watches are what keep the steady state cheap.
WATCH_SECONDS = 300
# A watch that goes silent without closing (a dead NAT entry, a stuck proxy) is noticed by this
# inactivity timeout. The API server's watch cache sends every watch a bookmark about every minute
# (k8s.io/apiserver cacher: defaultBookmarkFrequency), so a healthy stream is never silent this long;
# a false alarm would cost one more watch request, nothing else.
WATCH_INACTIVITY_SECONDS = 75


def _site(url: str | None) -> str:
    """Where a URL points, without credentials or a path (a webhook's path is often its secret)."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def startup_line(config: OperatorConfig) -> str:
    """What this replica will do, in one line: the first thing an operator of Headroom reads."""
    if config.history_source == "prometheus":
        history = (f"prometheus {_site(config.prometheus_url)} (step {config.prometheus_step}, "
                   f"timeout {config.prometheus_timeout:g}s)")
    elif config.history_source == "file":
        history = f"file {config.history_file}"
    else:
        history = "sampler (daily peaks kept on the quotas)"
    sinks = ["Events", f"per-Project webhook Secrets in {config.namespace}"]
    if config.webhook_url:
        sinks.append(f"webhook {_site(config.webhook_url)}")
    if config.alertmanager_url:
        sinks.append(f"Alertmanager {_site(config.alertmanager_url)}")
    election = f"on (Lease {config.namespace}/{config.lease_name})" if config.leader_elect else "off"
    ports = ", ".join(f"{what} {port or 'off'}" for what, port in (("metrics", config.metrics_port),
                                                                     ("health", config.health_port)))
    return (f"Headroom starting: mode {config.mode}, history {history}, re-derived every "
            f"{_duration(config.resync_interval)}, alerts to {', '.join(sinks)}, auto-approval within "
            f"recommendation {'on' if config.auto_approve_within_recommendation else 'off'}, ports {ports}, "
            f"leader election {election}, writes {config.api_qps:g}/s (burst {config.api_burst})")


def quota_daily_peaks(store: Store) -> Callable[[str], DailyPeaks]:
    """The sampler's daily peaks of a namespace, as kept on Headroom's quota there."""
    def of(namespace: str) -> DailyPeaks:
        quota = store.quotas.get(namespace) or {}
        return decode((quota.get("metadata", {}).get("annotations") or {}).get(DAILY_PEAKS_ANNOTATION))

    return of


def _essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Project can change the plan; its status is Headroom's own output."""
    meta = body.get("metadata", {})
    return (meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"),
            tuple(sorted((meta.get("annotations") or {}).items())), repr(body.get("spec")))


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


@dataclass
class Runtime:
    config: OperatorConfig
    store: Store
    reconciler: Reconciler
    metrics: Metrics
    primed: asyncio.Event

    async def prime(self) -> None:
        """Load quotas, LimitRanges and namespaces before the first reconcile.

        A Project event could otherwise arrive before its namespace's quota has been seen, and a
        governed quota would be mistaken for a missing one. Three LIST calls at start-up, then
        watches only.
        """
        core = self.reconciler.writer.core
        quotas = await _list_plain(core.list_resource_quota_for_all_namespaces, label_selector=MANAGED_SELECTOR)
        limitranges = await _list_plain(core.list_limit_range_for_all_namespaces, label_selector=MANAGED_SELECTOR)
        namespaces = await _list_plain(core.list_namespace)
        for item in quotas:
            if item["metadata"].get("name") == QUOTA_NAME:
                self.store.quotas[item["metadata"]["namespace"]] = item
        for item in limitranges:
            if item["metadata"].get("name") == LIMITRANGE_NAME:
                self.store.limitranges[item["metadata"]["namespace"]] = _plain(item, keep_managed_fields=False)
        for item in namespaces:
            meta = item["metadata"]
            if not meta.get("deletionTimestamp"):
                self.store.namespaces.add(meta["name"])
                label = (meta.get("labels") or {}).get(PROJECT_LABEL)
                if label is not None:
                    self.store.namespace_labels[meta["name"]] = label
        self.primed.set()
        for name in list(self.store.projects):
            self.reconciler.schedule(name)

    def schedule(self, name: str) -> None:
        if self.primed.is_set():
            self.reconciler.schedule(name)

    async def derivation_cycle(self) -> None:
        """Re-derive every Project's peaks on an interval: one history query per resource for all."""
        interval = self.config.resync_interval.total_seconds()
        while True:
            # Jitter keeps replicas and restarts from querying in lockstep.
            await asyncio.sleep(jittered(interval))
            wanted: dict[timedelta, set[tuple[str, str]]] = {}
            for body in list(self.store.projects.values()):
                spec = body.get("spec") or {}
                quota = spec.get("quota") or {}
                try:
                    lookback = parse_duration(str(quota.get("lookback") or "30d"))
                except SpecError:
                    continue
                resources = quota.get("resources") or ["requests.cpu", "requests.memory", "limits.cpu",
                                                       "limits.memory", "pods"]
                for ns in spec.get("namespaces") or []:
                    wanted.setdefault(lookback, set()).update((ns.get("name"), r) for r in resources)
            with contextlib.suppress(Exception):
                await self.reconciler.history.refresh_all(wanted)
            for name in list(self.store.projects):
                self.schedule(name)


def build_runtime(config: OperatorConfig, client: kubernetes.client.ApiClient,
                  metrics: Metrics | None = None) -> Runtime:
    metrics = metrics or Metrics()
    store = Store()
    writer = KubeWriter(client, qps=config.api_qps, burst=config.api_burst)
    source = history_source(config, quota_daily_peaks(store))
    cache = HistoryCache(source, max_age=config.resync_interval, metrics=metrics)
    settings = Settings(default_enforcement=config.enforcement_default,
                        auto_approve_within_recommendation=config.auto_approve_within_recommendation,
                        protected_namespaces=frozenset({*config.protected_namespaces, config.namespace}))
    reconciler = Reconciler(store=store, writer=writer, history=cache, settings=settings, metrics=metrics,
                            sampler=config.history_source == "sampler")
    reconciler.alerts = Alerting(build_sinks(config, client), writer, metrics, reconciler.schedule_at,
                                 store.projects.get)
    return Runtime(config, store, reconciler, metrics, asyncio.Event())


def register(registry: kopf.OperatorRegistry, runtime: Runtime, stop_flag: asyncio.Event | None = None) -> None:
    store = runtime.store
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

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
        # One active replica is ensured by the Lease (leader.py), not by Kopf's peering.
        settings.peering.standalone = True
        tasks.append(asyncio.create_task(_prime_with_retry(runtime)))
        tasks.append(asyncio.create_task(runtime.derivation_cycle()))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
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
        store.projects[name] = _plain(body, keep_managed_fields=False)
        if before is None or _essence(before) != _essence(store.projects[name]):
            runtime.schedule(name)
            # A namespace it no longer lists may be taken over by another Project that claims it.
            for ns in set(_namespaces(before or {})) - set(_namespaces(body)):
                for other in store.projects_claiming(ns):
                    runtime.schedule(other)

    def owned_object_event(kept: dict[str, dict[str, Any]], name: str, keep_managed_fields: bool,
                           event: Mapping[str, Any], body: kopf.Body, namespace: str) -> None:
        """A watch event of one of Headroom's own objects: remember it, and wake its Project."""
        runtime.reconciler.api_reachable()
        if not _owned(body, name):
            return
        if event.get("type") == "DELETED":
            kept.pop(namespace, None)
        elif _unchanged(kept.get(namespace), body):
            return
        else:
            kept[namespace] = _plain(body, keep_managed_fields=keep_managed_fields)
        project = (body.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
        if project in store.projects:
            runtime.schedule(project)

    @kopf.on.event("v1", "resourcequotas", registry=registry)
    async def quota_event(event: Mapping[str, Any], body: kopf.Body, namespace: str, **_: Any) -> None:
        # Drift detection reads who wrote a quota, so its managedFields are kept.
        owned_object_event(store.quotas, QUOTA_NAME, True, event, body, namespace)

    @kopf.on.event("v1", "limitranges", registry=registry)
    async def limitrange_event(event: Mapping[str, Any], body: kopf.Body, namespace: str, **_: Any) -> None:
        owned_object_event(store.limitranges, LIMITRANGE_NAME, False, event, body, namespace)

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
        else:
            store.namespaces.add(name)
        if label is None:
            store.namespace_labels.pop(name, None)
        else:
            store.namespace_labels[name] = label  # the platform's confirmation of a claim
        for project in {*store.projects_claiming(name), *(p for p in (label, before) if p in store.projects)}:
            runtime.schedule(project)


async def _list_plain(fn: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """A LIST's items as plain dicts, parsed straight from the JSON: the client's model objects for
    thousands of items would cost several times the memory, and the store keeps dicts anyway."""
    response = await asyncio.to_thread(fn, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    try:
        return list(json.loads(response.data).get("items") or [])
    finally:
        response.release_conn()


def _namespaces(body: Mapping[str, Any]) -> list[str]:
    return [ns.get("name") for ns in (body.get("spec") or {}).get("namespaces") or []]


def _plain(body: Mapping[str, Any], keep_managed_fields: bool = True) -> dict[str, Any]:
    """A deep plain-dict copy: Kopf's bodies are live views that change under our feet.

    managedFields are kept only where drift detection reads them (quotas): on Projects they would
    be most of the memory the store holds.
    """
    def copy(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: copy(v) for k, v in value.items() if keep_managed_fields or k != "managedFields"}
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value
    return copy(body)


async def _prime_with_retry(runtime: Runtime) -> None:
    delays = backoff_delays(base=2.0, cap=60.0)
    while True:
        try:
            await runtime.prime()
            return
        except Exception as exc:
            delay = next(delays)
            log.warning("cannot load quotas and namespaces yet (%s); retrying in %.0fs", exc, delay)
            await asyncio.sleep(delay)


def run(config: OperatorConfig) -> None:
    logging.basicConfig(level=logging.DEBUG if config.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Kopf logs every handled watch event at INFO; Headroom's own log says what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    code = asyncio.run(_main(config))
    if code:
        raise SystemExit(code)


async def _serve_health(port: int, role: dict[str, str],
                        problem: Callable[[], str | None] = lambda: None) -> web.AppRunner | None:
    """/healthz answers while the event loop runs, for the leader and for a standby alike; but a
    replica that can never take part in the election is unhealthy (503, with why), so that it is
    restarted and noticed instead of standing by forever."""
    if not port:
        return None

    async def healthz(_: web.Request) -> web.Response:
        reason = problem()
        if reason is not None:
            return web.json_response({"status": "unhealthy", "role": role["role"], "reason": reason}, status=503)
        return web.json_response({"status": "ok", "role": role["role"]})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def _main(config: OperatorConfig) -> int:
    client = api_client()
    role = {"role": "starting"}
    elector: LeaderElector | None = None
    if config.leader_elect:
        identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        elector = LeaderElector(kubernetes.client.CoordinationV1Api(client), config.namespace, config.lease_name,
                                identity)
    health = await _serve_health(config.health_port, role, lambda: elector.problem if elector else None)
    metrics = Metrics()
    metrics.serve(config.metrics_port)
    log.info("%s", startup_line(config))
    if elector is not None:
        role["role"] = "standby"
        await elector.acquire()
    role["role"] = "leader" if elector else "active"

    registry = kopf.OperatorRegistry()
    runtime = build_runtime(config, client, metrics)
    stop = asyncio.Event()
    register(registry, runtime, stop)
    operator = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                                 stop_flag=stop))
    waiting: set[asyncio.Task[Any]] = {operator}
    holder = asyncio.create_task(elector.hold()) if elector else None
    if holder is not None:
        waiting.add(holder)
    lost = False
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if holder is not None and holder in done:
            lost = True  # stop acting at once; the Deployment restarts this pod as a standby
            stop.set()
            await operator
    finally:
        if holder is not None:
            holder.cancel()
        if elector is not None and not lost:
            await asyncio.to_thread(elector.release)
        if health is not None:
            await health.cleanup()
    return 1 if lost else 0
