"""`headroom run`: start-up, health and leadership around the reconciler.

The Runtime loads what exists once (three LISTs), then lives on watches (handlers.py feeds the
store); it re-derives every --resync-interval, serves /healthz and /metrics, and holds the Lease when
several replicas run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from headroom.core.denials import DeniedPod, IncidentKey, observe_event, owner_of
from headroom.core.names import (
    LIMITRANGE_NAME,
    MANAGED_SELECTOR,
    PROJECT_LABEL,
    QUOTA_NAME,
)
from headroom.core.planning import Settings
from headroom.core.spec import ProjectSpec, SpecError, parse_duration
from headroom.shell.alerting import Alerting, DenialAlerting, EventSink, build_sinks
from headroom.shell.apiclient import ApiClient
from headroom.shell.approval_rules import RulesFile
from headroom.shell.backoff import backoff_delays, jittered
from headroom.shell.capacity import CapacityReader
from headroom.shell.config import OperatorConfig
from headroom.shell.denials_watch import DenialWatch
from headroom.shell.expiry import RaiseNotices
from headroom.shell.handlers import NoMemories, register
from headroom.shell.history import history_source
from headroom.shell.history.cache import HistoryCache
from headroom.shell.kube import KubeWriter, list_pages
from headroom.shell.leader import LeaderElector
from headroom.shell.metrics import Metrics
from headroom.shell.reconcile import Reconciler
from headroom.shell.store import Store, plain, quota_daily_peaks, quota_prometheus_days

log = logging.getLogger("headroom")


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
        history = (
            f"prometheus {_site(config.prometheus_url)} (step {config.prometheus_step}, "
            f"timeout {config.prometheus_timeout:g}s)"
        )
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
    ports = ", ".join(
        f"{what} {port or 'off'}" for what, port in (("metrics", config.metrics_port), ("health", config.health_port))
    )
    return (
        f"Headroom starting: mode {config.mode}, history {history}, re-derived every "
        f"{_duration(config.resync_interval)}, alerts to {', '.join(sinks)}, auto-approval within "
        f"recommendation {'on' if config.auto_approve_within_recommendation else 'off'}, ports {ports}, "
        f"leader election {election}, writes {config.api_qps:g}/s (burst {config.api_burst})"
        + (
            ", overcommit budget " + ",".join(f"{r}={v}" for r, v in sorted(config.max_overcommit.items()))
            if config.max_overcommit
            else ""
        )
    )


@dataclass
class Runtime:
    config: OperatorConfig
    store: Store
    reconciler: Reconciler
    metrics: Metrics
    primed: asyncio.Event
    denial_watch: DenialWatch | None = None
    # The FailedCreate watch's own connection (None: the writer's), so that a watch held open for
    # minutes never takes one of the few connections the writes share (apiclient.CONNECTIONS).
    watch_client: ApiClient | None = None
    replanning: asyncio.Task[None] | None = None  # the unchanged Projects of the last cycle, being re-planned

    async def prime(self) -> None:
        """Load quotas, LimitRanges and namespaces before the first reconcile.

        A Project event could otherwise arrive before its namespace's quota has been seen, and a
        governed quota would be mistaken for a missing one. Three LIST calls at start-up, then
        watches only.
        """
        client = self.reconciler.writer.client
        # Page by page: at thousands of namespaces the whole lists at once, on top of the same lists
        # Kopf's watches are reading at start-up, were the operator's high-water mark.
        async for page in list_pages(client, "/api/v1/resourcequotas", labelSelector=MANAGED_SELECTOR):
            for item in page.items:
                if item["metadata"].get("name") == QUOTA_NAME:
                    self.store.quotas[item["metadata"]["namespace"]] = plain(item)
        async for page in list_pages(client, "/api/v1/limitranges", labelSelector=MANAGED_SELECTOR):
            for item in page.items:
                if item["metadata"].get("name") == LIMITRANGE_NAME:
                    self.store.limitranges[item["metadata"]["namespace"]] = plain(item, keep_managed_fields=False)
        async for page in list_pages(client, "/api/v1/namespaces"):
            for item in page.items:
                meta = item["metadata"]
                if not meta.get("deletionTimestamp"):
                    self.store.namespace_seen(meta["name"], (meta.get("labels") or {}).get(PROJECT_LABEL))
        if self.reconciler.capacity is not None:
            await self.reconciler.capacity.refresh()  # before the first reconcile weighs a raise
        self.primed.set()
        for name in list(self.store.projects):
            self.reconciler.schedule(name)

    def schedule(self, name: str) -> None:
        if self.primed.is_set():
            self.reconciler.schedule(name)

    def start_denial_watch(self) -> None:
        if self.denial_watch is None:
            self.denial_watch = DenialWatch(
                self.watch_client or self.reconciler.writer.client,
                self.denial_seen,
                lambda how: self.metrics.denial_watch_requests.labels(how).inc(),
            ).start()

    def stop_denial_watch(self) -> None:
        if self.denial_watch is not None:
            self.denial_watch.stop()

    async def denial_seen(self, kind: str | None, body: dict[str, Any]) -> None:
        """A FailedCreate Event (handlers.py): keep it if it is a denial by Headroom's quota in a
        governed namespace, and wake that namespace's Project. Everything else is dropped here."""
        self.reconciler.api_reachable()
        uid = str(body.get("metadata", {}).get("uid") or "")
        namespace = str((body.get("involvedObject") or {}).get("namespace") or "")
        if kind == "DELETED":
            self.store.denials.get(namespace, {}).pop(uid, None)
            return
        seen = observe_event(body)
        if seen is None:
            return
        # The start-up list of Events may come before the quotas are loaded: a denial listed then
        # (an incident that went on while the operator was down) must not be taken for a stranger's.
        await self.primed.wait()
        quota = self.store.quotas.get(seen.key.namespace) or {}
        project = (quota.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
        if not isinstance(project, str):
            return  # not a namespace Headroom governs (or a quota of that name that is not ours)
        if self.reconciler.clock() - seen.at >= self.config.denial_quiet_period:
            return  # listed at start-up, long over
        if seen.key.kind == "ReplicaSet":
            seen = replace(seen, key=await self._replicaset_owner(seen.key, body))
        self.store.denials.setdefault(seen.key.namespace, {})[uid] = seen
        if project in self.store.projects:  # else its first reconcile, when it is seen, reads this
            self.schedule(project)

    async def _replicaset_owner(self, key: IncidentKey, event: dict[str, Any]) -> IncidentKey:
        """The Deployment behind a refused ReplicaSet: one GET per ReplicaSet, remembered. People know
        their Deployment, and a rollout's new ReplicaSet belongs to the same incident as the old."""
        uid = str((event.get("involvedObject") or {}).get("uid") or f"{key.namespace}/{key.name}")
        if uid not in self.store.owners:
            try:
                rs = await self.reconciler.writer.client.request(
                    "GET", f"/apis/apps/v1/namespaces/{key.namespace}/replicasets/{key.name}"
                )
                owner = owner_of(rs)
            except Exception as exc:  # forbidden, gone, unreachable: name the ReplicaSet instead
                log.debug("owner of ReplicaSet %s/%s unknown: %s", key.namespace, key.name, exc)
                owner = None
            if len(self.store.owners) >= 10_000:
                self.store.owners.pop(next(iter(self.store.owners)))
            self.store.owners[uid] = owner
        owner = self.store.owners[uid]
        return IncidentKey(key.namespace, *owner) if owner else key

    def denials_of(self, spec: ProjectSpec) -> list[DeniedPod]:
        since = self.reconciler.clock() - self.config.denial_quiet_period
        return self.store.recent_denials(set(spec.namespace_names), since)

    async def prime_with_retry(self) -> None:
        """prime(), until the API server answers."""
        delays = backoff_delays(base=2.0, cap=60.0)
        while True:
            try:
                await self.prime()
                return
            except Exception as exc:
                delay = next(delays)
                log.warning("cannot load quotas and namespaces yet (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)

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
                resources = quota.get("resources") or [
                    "requests.cpu",
                    "requests.memory",
                    "limits.cpu",
                    "limits.memory",
                    "pods",
                ]
                for ns in spec.get("namespaces") or []:
                    wanted.setdefault(lookback, set()).update((ns.get("name"), r) for r in resources)
            changed: set[str] | None = None  # None: not known which, so every Project at once
            with contextlib.suppress(Exception):
                changed = await self.reconciler.history.refresh_all(wanted)
            if self.reconciler.capacity is not None:
                # Capacity read here, with history: a held raise is weighed again as every Project is.
                await self.reconciler.capacity.refresh()
            if self.replanning is not None:
                self.replanning.cancel()  # the new round covers every Project the last one had left
            self.replanning = asyncio.create_task(self.replan(changed, interval))

    async def replan(self, changed: set[str] | None, interval: float) -> None:
        """After a derivation cycle: the Projects whose history answer changed are reconciled at once;
        every other one too (the cycle is also the safety net for whatever no watch event announces),
        but spread over half the interval. Thousands of reconciles woken together kept the event loop
        busy for seconds, and a new Project's first reconcile waited behind all of them."""
        names = list(self.store.projects)
        if changed is None:
            now, later = names, []
        else:
            touched = {n for n in names if any(ns in changed for ns in _namespace_names(self.store.projects.get(n)))}
            now = [n for n in names if n in touched]
            later = [n for n in names if n not in touched]
        for name in now:
            self.schedule(name)
        if not later:
            return
        batches = math.ceil(len(later) / REPLAN_BATCH)
        pause = min(interval / 2 / batches, REPLAN_MAX_PAUSE)
        for start in range(0, len(later), REPLAN_BATCH):
            await asyncio.sleep(pause)
            for name in later[start : start + REPLAN_BATCH]:
                # A Project with a reconcile queued or under way plans from the store as it is now,
                # which is all the safety net asks; so did one planned in the last half interval (its
                # history answer has not changed since, or it would be among `now`). Marked again,
                # it was planned twice: after a restart, thousands of second passes queued behind
                # the first ones and ran in one burst at the end of them, seconds of CPU that a new
                # Project's reconcile waited out. Half an interval: a Project planned only by this
                # safety net is still planned once every cycle.
                if (
                    name in self.store.projects
                    and not self.reconciler.pending(name)
                    and not self.reconciler.planned_within(name, interval / 2)
                ):
                    self.schedule(name)


# Unchanged Projects re-planned after a derivation cycle: this many at a time, spread over half the
# interval, but never slower than one batch per this many seconds.
REPLAN_BATCH = 20
REPLAN_MAX_PAUSE = 1.0


def _namespace_names(body: Mapping[str, Any] | None) -> list[str]:
    return [str(ns.get("name")) for ns in ((body or {}).get("spec") or {}).get("namespaces") or [] if ns.get("name")]


def build_runtime(config: OperatorConfig, client: ApiClient, metrics: Metrics | None = None) -> Runtime:
    metrics = metrics or Metrics()
    store = Store()
    writer = KubeWriter(client, qps=config.api_qps, burst=config.api_burst)
    source = history_source(config, quota_daily_peaks(store), quota_prometheus_days(store))
    cache = HistoryCache(source, max_age=config.resync_interval, metrics=metrics)
    settings = Settings(
        default_enforcement=config.enforcement_default,
        auto_approve_within_recommendation=config.auto_approve_within_recommendation,
        protected_namespaces=frozenset({*config.protected_namespaces, config.namespace}),
        max_overcommit=dict(config.max_overcommit),
    )
    reconciler = Reconciler(
        store=store,
        writer=writer,
        history=cache,
        settings=settings,
        metrics=metrics,
        sampler=config.history_source == "sampler",
    )
    if config.prometheus_url:
        reconciler.capacity = CapacityReader(config.prometheus_url, timeout=config.prometheus_timeout)
    metrics.capacity_from(store.quotas.values, reconciler.capacity, settings.max_overcommit)
    sinks = build_sinks(config, client)
    reconciler.alerts = Alerting(sinks, writer, metrics, reconciler.schedule_at, store.projects.get)
    runtime = Runtime(config, store, reconciler, metrics, asyncio.Event())
    reconciler.denials = DenialAlerting(
        [*sinks, EventSink(writer, store.projects.get)],
        writer,
        metrics,
        reconciler.schedule_at,
        runtime.denials_of,
        config.denial_quiet_period,
    )
    reconciler.notices = RaiseNotices(reconciler.alerts, writer, reconciler.schedule_at)
    if config.approval_rules_file is not None:
        reconciler.rules = RulesFile(config.approval_rules_file).current
    return runtime


def run(config: OperatorConfig) -> None:
    logging.basicConfig(
        level=logging.DEBUG if config.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Kopf logs every handled watch event at INFO; Headroom's own log says what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Audit records are bare JSON lines on the same stream, so that a log shipper parses them whole.
    audit = logging.getLogger("headroom.audit")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit.addHandler(handler)
    audit.propagate = False
    audit.setLevel(logging.INFO)
    code = asyncio.run(_main(config))
    if code:
        raise SystemExit(code)


async def _serve_health(
    port: int, role: dict[str, str], problem: Callable[[], str | None] = lambda: None
) -> web.AppRunner | None:
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
    client = ApiClient()
    role = {"role": "starting"}
    elector: LeaderElector | None = None
    if config.leader_elect:
        identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        # A client of its own: a renewal never waits behind writes for one of their connections.
        elector = LeaderElector(ApiClient(), config.namespace, config.lease_name, identity)
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
    runtime.watch_client = ApiClient()
    stop = asyncio.Event()
    register(registry, runtime, stop)
    operator = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop, memories=NoMemories())
    )
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
            await elector.release()
        if health is not None:
            await health.cleanup()
        await client.close()
        await runtime.watch_client.close()
        if elector is not None:
            await elector.client.close()
    return 1 if lost else 0
