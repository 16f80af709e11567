"""`make bench`: how gentle Headroom is with the API server, side by side with a naive quota script.

For each size N (`--sizes`), on a fresh local control plane whose audit log counts the requests of
Headroom's ServiceAccount and of the baseline's:

1. setup (not measured): N namespaces with a few Pending pods each, and a history file;
2. Headroom (`headroom run` as its ServiceAccount, file history): the N Projects are created, and a
   WATCH from the benchmark times each one until its quota is governed; then a steady state where
   nothing changes; then a restart over quotas that are already right; then one phase with a fake
   Prometheus that counts the history queries of each derivation cycle. One new Project at a time
   (`--singles` of them) is timed from its creation to its governed quota twice: after the steady
   state, and while the derivation cycles of the fake Prometheus phase reconcile every Project;
   then a phase with the default history source (the sampler) and `--leader-elect`, a standby
   replica beside the leader, that counts the sampler's bookkeeping writes and the Lease requests;
3. the baseline (bench/baseline.py, its own ServiceAccount): the same namespaces are labelled for
   it, timed until each has its quota, then the same steady state; then the competent cron job
   (one LIST of all pods per run, writes on change) in its steady state.

Beside the audit log's request counts, the API server's own /metrics give the bytes it served and
its CPU seconds in each steady state (bench/apimetrics.py).

Results: bench/results/<timestamp>.json, latest.json and latest.md. The method: docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from headroom.core.quantity import parse_quantity
from headroom.core.spec import parse_duration

from bench import apimetrics, workload
from bench.audit import BASELINE_NAMESPACE, AuditLog, tally, writes_per_project
from bench.eventswatch import EventsWatchMeter
from bench.fakeprom import FakePrometheus, cycles
from bench.procstats import Sample, cpu_between, sample
from bench.report import add_ratios, render
from bench.watcher import governed, project_watcher, quota_watcher, ready
from hack.localcluster.controlplane import ControlPlane, _die_with_parent
from hack.localcluster.kube import Cluster, apply_yaml
from hack.localcluster.operator import OPERATOR_NAMESPACE, OperatorProcess, install_rbac

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WATCHED = {"projects", "resourcequotas", "limitranges", "namespaces", "events"}
TOKEN_SECONDS = 48 * 3600  # a run at N=3000 lasts longer than the harness's one-hour token
COMPETENT_QUOTA = "baseline-competent"  # the competent cron job's quota, beside the naive script's
QUOTA_SYNC_PERIOD = "5m"  # kube-controller-manager's default --resource-quota-sync-period


def log(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return round(ordered[int(rank) - 1], 3)


def rss_peak(size: dict[str, Any]) -> float | None:
    """The larger of the RSS after the steady state and the high-water mark of a restart."""
    h = size.get("headroom") or {}
    values = [
        v
        for v in (
            ((h.get("steady") or {}).get("process") or {}).get("end", {}).get("rss_mib"),
            ((h.get("restart") or {}).get("process") or {}).get("hwm_mib"),
        )
        if isinstance(v, int | float)
    ]
    return max(values) if values else None


def headline(size: dict[str, Any]) -> None:
    """The keys every size carries at its top level (bench/results/latest.json)."""
    h = size.get("headroom") or {}
    size["rss_mib"] = rss_peak(size)
    size["rss_steady_mib"] = ((h.get("steady") or {}).get("process") or {}).get("end", {}).get("rss_mib")
    size["rss_restart_peak_mib"] = ((h.get("restart") or {}).get("process") or {}).get("hwm_mib")
    singles = [
        x
        for x in (
            (h.get("single_project") or {}).get("p99_s"),
            ((h.get("history") or {}).get("single_project") or {}).get("p99_s"),
        )
        if isinstance(x, int | float)
    ]
    size["single_project_p99_s"] = max(singles) if singles else None
    size["writes_per_new_project"] = ((h.get("convergence") or {}).get("requests") or {}).get("writes_per_project")


def latency_summary(sent: dict[str, float], seen: dict[str, tuple[float, Any]]) -> dict[str, Any]:
    latencies = [seen[ns][0] - t for ns, t in sent.items() if ns in seen]
    result: dict[str, Any] = {
        "projects": len(sent),
        "converged": len(latencies),
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "max_s": percentile(latencies, 100),
    }
    if latencies:
        result["all_s"] = round(max(seen[ns][0] for ns in sent if ns in seen) - min(sent.values()), 3)
        result["onboarding_sent_s"] = round(max(sent.values()) - min(sent.values()), 3)
    return result


class BenchOperator(OperatorProcess):
    """The harness's operator process, with a token that outlives a long run."""

    def kubeconfig(self) -> Path:
        return self.cluster.service_account_kubeconfig(
            OPERATOR_NAMESPACE, "headroom", self.workdir / "operator.kubeconfig", expiration_seconds=TOKEN_SECONDS
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def counters(self, prefix: str) -> dict[str, float]:
        """Every sample of the metrics whose name starts with prefix, by its full label set."""
        out: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for line in self.metrics_text().splitlines():
                if line.startswith(prefix):
                    head, _, value = line.rpartition(" ")
                    out[head] = float(value)
        return out


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        # What a size measured so far: a phase that fails late keeps the figures of the ones before.
        self.partial: dict[str, Any] = {}

    # --- waiting

    def quiet(self, n: int) -> float:
        return float(self.args.quiet or max(10.0, n / 100))

    def wait_ready(self, op: BenchOperator, audit: AuditLog, since: float, timeout: float = 600) -> float:
        """Until the operator has opened its five watches (the audit log shows them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not op.running():
                raise RuntimeError(f"the operator exited:\n{op.logs(40)}")
            if audit.watched_resources("headroom", since) >= WATCHED:
                return time.time()
            time.sleep(0.25)
        raise RuntimeError(f"the operator did not open its watches in {timeout:.0f}s:\n{op.logs(40)}")

    def wait_reconciled(self, op: BenchOperator, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if op.metric("headroom_reconcile_duration_seconds_count") >= n:
                    return True
            time.sleep(0.5)
        return False

    def wait_quiet(
        self,
        audit: AuditLog,
        actor: str,
        since: float,
        quiet: float,
        timeout: float,
        exclude: frozenset[str] = frozenset(),
    ) -> tuple[float, bool]:
        """Until `actor` has made no request (watches and `exclude` aside) for `quiet` seconds;
        (moment, reached)."""
        deadline = time.monotonic() + timeout
        while True:
            last = max(audit.last_request(actor, exclude=exclude) or since, since)
            if time.time() - last >= quiet:
                return time.time(), True
            if time.monotonic() > deadline:
                return time.time(), False
            time.sleep(0.5)

    # --- one size

    def run_size(self, n: int) -> dict[str, Any]:
        args = self.args
        workdir = self.workdir / f"n{n}"
        workdir.mkdir(parents=True, exist_ok=True)
        audit = AuditLog(workdir / "audit")
        # The quota controller recounts every quota at Kubernetes' default period, as in a real cluster:
        # the suite's 15 s had it recount all N quotas four times a minute, on the same two cores as
        # the API server and Headroom, and a new quota's first count queued behind that.
        plane = ControlPlane(
            workdir / "cluster",
            apiserver_flags=audit.apiserver_flags(),
            keep_workdir=args.keep,
            quota_sync_period=QUOTA_SYNC_PERIOD,
        )
        result: dict[str, Any] = {
            "n": n,
            "quota_sync_period": QUOTA_SYNC_PERIOD,
            "revision": git_revision(),
            "pods_per_namespace": args.pods,
            "steady_seconds": args.steady,
            "loadavg_start": loadavg(),
        }
        self.partial = result
        log(f"N={n}: starting the control plane (audit: {audit.log_path})")
        plane.start()
        audit.start()
        try:
            cluster = Cluster(plane.kubeconfig, plane)
            admin = workload.client(plane.kubeconfig)
            result["kubernetes"] = plane.version()
            self.install(cluster, admin)
            log(f"N={n}: setup: {n} namespaces with {args.pods} Pending pods each (not measured)")
            # N namespaces for the Projects, and 2 x --singles more for the ones created one at a time.
            total = n + 2 * args.singles
            setup_seconds = workload.create_namespaces(admin, total, args.pods, workdir.name, args.workers, log)
            history = workload.write_history(workdir / "history.csv", total, args.history_days)
            result["setup"] = {"seconds": round(setup_seconds, 1), "history_rows": n * 5 * args.history_days}
            if args.only in ("both", "headroom"):
                result["headroom"] = self.headroom(n, cluster, admin, audit, history, workdir)
            if args.only in ("both", "baseline"):
                result["baseline"] = self.baseline(n, cluster, admin, audit, workdir)
            audit.sync()
            result["audit_records"] = len(audit.requests)
            headline(result)
            result["audit_malformed_lines"] = audit.malformed
        finally:
            audit.stop()
            plane.stop()
        result["loadavg_end"] = loadavg()
        add_ratios(result)
        return result

    def install(self, cluster: Cluster, admin: kubernetes.client.ApiClient) -> None:
        ext = kubernetes.client.ApiextensionsV1Api(admin)
        apply_yaml(admin, REPO / "crds" / "projects.headroom.dev.yaml")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conditions = ext.read_custom_resource_definition("projects.headroom.dev").status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            time.sleep(0.2)
        # A new CRD's storage answers 429 "storage is (re)initializing" for a moment: let that pass
        # here, so that it is not counted against the operator's start-up.
        custom = kubernetes.client.CustomObjectsApi(admin)
        workload.retrying(
            lambda: custom.list_cluster_custom_object("headroom.dev", "v1alpha1", "projects"), "list projects", 120
        )
        install_rbac(cluster)
        # Headroom as shipped: its requests in their own limited, queuing priority level.
        apply_yaml(admin, REPO / "manifests" / "apf.yaml")
        apply_yaml(admin, REPO / "bench" / "baseline-rbac.yaml")

    # --- Headroom

    def headroom(
        self,
        n: int,
        cluster: Cluster,
        admin: kubernetes.client.ApiClient,
        audit: AuditLog,
        history: Path,
        workdir: Path,
    ) -> dict[str, Any]:
        args = self.args
        names = {workload.name_of(i) for i in range(n)}
        flags = [
            "--history-source=file",
            f"--history-file={history}",
            "--mode=enforce",
            f"--resync-interval={args.resync}",
            *args.operator_arg,
        ]
        out: dict[str, Any] = {"resync_interval": args.resync, "flags": flags}
        self.partial["headroom"] = out
        watcher = quota_watcher(admin, "app.kubernetes.io/managed-by=headroom", governed).start()
        statuses = project_watcher(admin, ready).start()
        op = BenchOperator(cluster, workdir / "operator", args=flags)
        try:
            # Start-up: the operator's initial LISTs and watches, before any Project exists.
            t_start = time.time()
            op.start()
            t_ready = self.wait_ready(op, audit, t_start)
            log(f"N={n}: Headroom is watching ({t_ready - t_start:.1f}s); creating {n} Projects")
            out["startup"] = tally(audit.select("headroom", t_start, t_ready), n)

            # Convergence: from each Project's creation to its governed quota.
            t_create = time.time()
            before = sample(op.pid)
            sent = workload.create_projects(admin, n, args.workers)
            log(f"N={n}: {n} Projects created in {time.time() - t_create:.1f}s; waiting for governed quotas")
            deadline = time.monotonic() + (args.converge_timeout or 300 + 1.0 * n)
            converged = watcher.wait_for(names, deadline - time.monotonic(), log)
            t_governed = time.time()
            # Then every Project's status must say so (its status write may trail its quota), and
            # Headroom must have gone quiet.
            statuses_ready = statuses.wait_for(names, max(60.0, deadline - time.monotonic()), log)
            t_quiet, quiet = self.wait_quiet(audit, "headroom", t_create, self.quiet(n), 120 + 0.2 * n)
            audit.sync()
            after = sample(op.pid)
            convergence = latency_summary(sent, watcher.first)
            convergence["all_converged"] = converged
            # Until `kubectl get project` shows it: the Ready condition of its status.
            convergence["status_ready"] = {**latency_summary(sent, statuses.first), "all_ready": statuses_ready}
            convergence["quiet_reached"] = quiet
            convergence["quiet_after_governed_s"] = round(t_quiet - t_governed, 1)
            convergence["wrong_values"] = self.check_values(watcher.first)
            requests = audit.select("headroom", t_create, t_quiet)
            convergence["requests"] = tally(requests, n, t_quiet - t_create)
            # e.g. {"patch projects/status": {2: 80, 3: 20}}: 80 Projects got two status writes, 20 three.
            convergence["writes_histogram"] = writes_per_project(requests)
            convergence["events_by_reason"] = events_by_reason(admin)
            convergence["process"] = {"start": _d(before), "end": _d(after), "cpu_s": cpu_between(before, after)}
            convergence["operator_writes_metric"] = op.counters("headroom_api_writes_total")
            convergence["operator_history_metric"] = op.counters("headroom_history_")
            out["convergence"] = convergence
            log(
                f"N={n}: Headroom converged: p50 {convergence['p50_s']}s p99 {convergence['p99_s']}s, "
                f"{convergence['requests']['writes']} writes; steady state for {args.steady:.0f}s"
            )

            # Steady state: nothing changes. The meter opens the operator's Events watch beside it
            # and counts the bytes the stream carries (the audit log counts only its requests).
            meter = EventsWatchMeter(admin).start()
            out["steady"] = self.steady("headroom", op.pid, audit, n, lambda: op.counters("headroom_"), admin)
            out["steady"]["events_watch"] = meter.stop()

            # One new Project at a time while N are steady: from its creation to its governed quota.
            out["single_project"] = guarded(
                "single Projects", lambda: self.singles(admin, watcher, range(n, n + args.singles), args.single_gap)
            )

            # Restart over quotas that are already right.
            op.stop()
            t_restart = time.time()
            op.start()
            self.wait_ready(op, audit, t_restart)
            reconciled = self.wait_reconciled(op, n, 120 + 0.5 * n)
            t_done, quiet = self.wait_quiet(audit, "headroom", t_restart, self.quiet(n), 120 + 0.2 * n)
            audit.sync()
            out["restart"] = {
                "reconciled_all": reconciled,
                "quiet_reached": quiet,
                "requests": tally(audit.select("headroom", t_restart, t_done), n, t_done - t_restart),
                "process": _d(sample(op.pid)),
                "operator_writes_metric": op.counters("headroom_api_writes_total"),
            }
            log(
                f"N={n}: restart: {out['restart']['requests']['writes']} writes, "
                f"{out['restart']['requests']['lists']} LISTs"
            )
            op.stop()

            out["history"] = self.history_phase(n, cluster, audit, workdir, admin, watcher)
            out["sampler"] = guarded("sampler phase", lambda: self.sampler_phase(n, cluster, audit, workdir, admin))
            out["events_by_reason"] = events_by_reason(admin)
        finally:
            op.stop()
            watcher.stop()
            statuses.stop()
            out["watch_errors"] = (watcher.errors + statuses.errors)[:10]
            out["operator_log_issues"] = log_issues(op.workdir)
        return out

    def check_values(self, seen: dict[str, tuple[float, Any]]) -> dict[str, Any]:
        """Governed values against the derivation from the history: a quota governed without its
        history (the floors) would show here."""
        wrong: list[str] = []
        for ns, (_, obj) in sorted(seen.items()):
            annotations = obj.get("metadata", {}).get("annotations") or {}
            governed_hard: dict[str, Any] = {}
            try:
                governed_hard = json.loads(annotations.get("headroom.dev/governed-hard") or "{}")
                got = {r: parse_quantity(str(v)) for r, v in governed_hard.items()}
            except ValueError:
                got = {}
            want = workload.expected_governed(int(ns.rsplit("-", 1)[1]), self.args.pods)
            if got != want:
                wrong.append(f"{ns}: got {governed_hard} want {{{', '.join(f'{r}: {v}' for r, v in want.items())}}}")
        return {"count": len(wrong), "examples": wrong[:5]}

    def steady(
        self,
        actor: str,
        pid: int,
        audit: AuditLog,
        n: int,
        counters: Callable[[], dict[str, float]] | None = None,
        admin: kubernetes.client.ApiClient | None = None,
    ) -> dict[str, Any]:
        server_before = apimetrics.scrape(admin) if admin else None
        t0 = time.time()
        first = sample(pid)
        metrics_before = counters() if counters else {}
        time.sleep(self.args.steady)
        t1 = time.time()
        last = sample(pid)
        metrics_after = counters() if counters else {}
        server_after = apimetrics.scrape(admin) if admin else None
        audit.sync()
        cpu = cpu_between(first, last)
        out: dict[str, Any] = {
            "requests": tally(audit.select(actor, t0, t1), n, t1 - t0),
            "process": {
                "start": _d(first),
                "end": _d(last),
                "cpu_s": cpu,
                "cpu_s_per_hour": round(cpu * 3600 / (t1 - t0), 2) if cpu is not None else None,
            },
            "apiserver": apimetrics.between(server_before, server_after, t1 - t0, n),
        }
        if counters:
            out["metric_deltas"] = {
                k: v - metrics_before.get(k, 0.0)
                for k, v in metrics_after.items()
                if ("_total" in k or k.endswith("_count")) and v - metrics_before.get(k, 0.0)
            }
        r = out["requests"]
        log(
            f"steady ({actor}): {r['total']} requests, {r['writes']} writes, {r['lists']} LISTs in "
            f"{t1 - t0:.0f}s = {r['per_project_per_hour']} requests/project/hour"
        )
        return out

    def singles(self, admin: kubernetes.client.ApiClient, watcher: Any, indices: range, gap: float) -> dict[str, Any]:
        """Create one Project every `gap` seconds (not waiting for the one before) and time each
        until its quota is governed: the wait of a team onboarding while the rest is busy."""
        custom = kubernetes.client.CustomObjectsApi(admin)
        sent: dict[str, float] = {}
        for index in indices:
            body = workload.project_body(index)
            sent[workload.name_of(index)] = time.time()
            workload.retrying(
                lambda body=body: custom.create_cluster_custom_object(
                    "headroom.dev", "v1alpha1", "projects", body, _request_timeout=60
                ),
                f"project {workload.name_of(index)}",
            )
            time.sleep(gap)
        done = watcher.wait_for(set(sent), 120, log)
        result = latency_summary(sent, watcher.first)
        result["all_converged"] = done
        result["gap_s"] = gap
        result["latencies_s"] = sorted(round(watcher.first[k][0] - t, 3) for k, t in sent.items() if k in watcher.first)
        result["sent_at"] = {k: round(t, 3) for k, t in sent.items()}
        # Which Project waited, not only how long the slowest did: the tail is read beside the
        # operator's own moments (derivation cycles, a restart's writes).
        result["latency_by_project_s"] = {
            k: round(watcher.first[k][0] - t, 3) for k, t in sent.items() if k in watcher.first
        }
        log(f"single Projects: p50 {result['p50_s']}s p99 {result['p99_s']}s max {result['max_s']}s")
        return result

    def sampler_phase(
        self, n: int, cluster: Cluster, audit: AuditLog, workdir: Path, admin: kubernetes.client.ApiClient
    ) -> dict[str, Any]:
        """The configuration users get: the sampler history source, with leader election and a
        standby replica. Counts the sampler's writes (its first day on quotas governed before, then
        its steady state) and the Lease requests of both replicas."""
        args = self.args
        flags = [
            "--history-source=sampler",
            "--leader-elect",
            "--mode=enforce",
            f"--resync-interval={args.resync}",
            *args.operator_arg,
        ]
        leader = BenchOperator(cluster, workdir / "operator-sampler", args=flags)
        standby = BenchOperator(cluster, workdir / "operator-standby", args=flags)
        out: dict[str, Any] = {"flags": flags}
        try:
            t0 = time.time()
            leader.start()
            self.wait_ready(leader, audit, t0)
            standby.start()  # starts after the leader holds the Lease: it waits as the standby
            reconciled = self.wait_reconciled(leader, n, 120 + 0.5 * n)
            # The Lease's renewals and the standby's polls never stop: they are counted apart.
            t_quiet, quiet = self.wait_quiet(
                audit, "headroom", t0, self.quiet(n), 120 + 0.2 * n, exclude=frozenset({"leases"})
            )
            audit.sync()
            first = audit.select("headroom", t0, t_quiet)
            out["first_start"] = {
                "reconciled_all": reconciled,
                "quiet_reached": quiet,
                "requests": tally([r for r in first if r.resource != "leases"], n, t_quiet - t0),
                "writes_histogram": writes_per_project(first),
            }
            log(
                f"N={n}: sampler first start: {out['first_start']['requests']['writes']} writes; "
                f"steady {args.steady:.0f}s"
            )
            server_before = apimetrics.scrape(admin)
            t1 = time.time()
            before = sample(leader.pid)
            time.sleep(args.steady)
            t2 = time.time()
            after = sample(leader.pid)
            server_after = apimetrics.scrape(admin)
            audit.sync()
            steady = audit.select("headroom", t1, t2)
            hours = (t2 - t1) / 3600
            leases = [r for r in steady if r.resource == "leases"]
            rest = [r for r in steady if r.resource != "leases"]
            writes = sum(1 for r in rest if r.write)
            out["steady"] = {
                "requests": tally(rest, n, t2 - t1),
                "writes_per_project_per_day": round(writes / n / hours * 24, 3) if n else None,
                "process": {"start": _d(before), "end": _d(after), "cpu_s": cpu_between(before, after)},
                "apiserver": apimetrics.between(server_before, server_after, t2 - t1, n),
            }
            out["leader_election"] = {
                "replicas": 2,
                "requests": len(leases),
                "requests_per_hour": round(len(leases) / hours, 1),
                "by_verb": tally(leases, n)["by_verb_resource"],
            }
            log(
                f"N={n}: sampler steady: {writes} writes ({out['steady']['writes_per_project_per_day']} per project "
                f"per day), leader election {out['leader_election']['requests_per_hour']} requests/hour"
            )
        finally:
            standby.stop()
            leader.stop()
        out["operator_log_issues"] = log_issues(leader.workdir)
        return out

    def history_phase(
        self,
        n: int,
        cluster: Cluster,
        audit: AuditLog,
        workdir: Path,
        admin: kubernetes.client.ApiClient,
        watcher: Any,
    ) -> dict[str, Any]:
        """History queries per derivation cycle, counted by a fake Prometheus; and new Projects,
        one at a time, timed while those cycles reconcile every Project."""
        args = self.args
        resync = parse_duration(args.history_resync).total_seconds()
        fake = FakePrometheus().start()
        flags = [
            "--history-source=prometheus",
            f"--prometheus-url={fake.url}",
            "--mode=enforce",
            f"--resync-interval={args.history_resync}",
            *args.operator_arg,
        ]
        op = BenchOperator(cluster, workdir / "operator-prometheus", args=flags)
        try:
            t0 = time.time()
            op.start()
            self.wait_ready(op, audit, t0)
            reconciled = self.wait_reconciled(op, n, 120 + 0.5 * n)
            t_reconciled, cpu_reconciled = time.time(), sample(op.pid)
            log(
                f"N={n}: history phase: waiting for {args.history_cycles} derivation cycles "
                f"(--resync-interval={args.history_resync}); single Projects meanwhile"
            )
            # Spread over two cycles, so that some are created while a cycle reconciles everyone.
            gap = 2 * resync / max(1, args.singles)
            start = n + args.singles
            single = guarded(
                "single Projects", lambda: self.singles(admin, watcher, range(start, start + args.singles), gap)
            )
            deadline = time.time() + (args.history_cycles + 1) * resync * 1.2 + 60
            periodic: list[list[Any]] = []
            while time.time() < deadline:
                queries = fake.since(t0)
                periodic = cycles([q for q in queries if q.at >= t0 + 0.8 * resync])
                settled = queries and time.time() - max(q.at for q in queries) > 5
                if len(periodic) >= args.history_cycles and settled:
                    break
                time.sleep(1)
            t1 = time.time()
            cpu_end = sample(op.pid)
            audit.sync()
            queries = fake.since(t0)
            startup = [q for q in queries if q.at < t0 + 0.8 * resync]
            sizes = [len(c) for c in periodic]
            result = {
                "resync_interval": args.history_resync,
                "reconciled_all": reconciled,
                "startup_queries": len(startup),
                "startup_bursts": [len(c) for c in cycles(startup)],
                "cycles": len(periodic),
                "queries_per_cycle": sizes,
                "max_queries_per_cycle": max(sizes) if sizes else None,
                "namespaces_per_query": max((q.namespaces for q in queries), default=0),
                "largest_query_bytes": max((q.bytes for q in queries), default=0),
                "cycle_starts_s": [round(c[0].at - t0, 1) for c in periodic],
                "metric_history_queries_total": op.counters("headroom_history_queries_total"),
                "requests": tally(audit.select("headroom", t0, t1), n, t1 - t0),
                "process": _d(cpu_end),
                "startup_reconcile_s": round(t_reconciled - t0, 1),
                "cpu_s_after_startup": cpu_between(cpu_reconciled, cpu_end),
                "seconds_after_startup": round(t1 - t_reconciled, 1),
                "single_project": single,
            }
        finally:
            op.stop()
            fake.stop()
        result["operator_log_issues"] = log_issues(op.workdir)
        return result

    # --- baseline

    def baseline(
        self, n: int, cluster: Cluster, admin: kubernetes.client.ApiClient, audit: AuditLog, workdir: Path
    ) -> dict[str, Any]:
        """The naive script: one LIST of the pods of each namespace per run, a write per quota."""
        kubeconfig = cluster.service_account_kubeconfig(
            BASELINE_NAMESPACE, "baseline", workdir / "baseline.kubeconfig", expiration_seconds=TOKEN_SECONDS
        )
        out = self.script(n, admin, audit, workdir / "baseline.log", kubeconfig, "baseline", None, [])
        out["reads_per_cycle"] = n + 1  # one LIST of namespaces, one LIST of pods per namespace
        out["competent"] = guarded("competent baseline", lambda: self.competent(n, audit, workdir, kubeconfig, admin))
        return out

    def competent(
        self, n: int, audit: AuditLog, workdir: Path, kubeconfig: Path, admin: kubernetes.client.ApiClient
    ) -> dict[str, Any]:
        """The competent cron job over the same namespaces: one LIST of all pods per run, into a quota
        of its own."""
        log_path = workdir / "baseline-competent.log"
        flags = ["--all-pods", f"--quota-name={COMPETENT_QUOTA}"]
        out = self.script(n, admin, audit, log_path, kubeconfig, "competent", COMPETENT_QUOTA, flags)
        out["reads_per_cycle"] = 2
        return out

    def script(
        self,
        n: int,
        admin: kubernetes.client.ApiClient,
        audit: AuditLog,
        log_path: Path,
        kubeconfig: Path,
        label: str,
        quota: str | None,
        flags: list[str],
    ) -> dict[str, Any]:
        """One of the scripts (`bench.baseline`), as the audit log knows it ("baseline"): its namespaces
        opt in to it (label value `label`) half an interval after one of its runs, the wait a namespace
        created at a random moment sees on average (right after a run would be the worst case, right
        before the best); timed until each namespace has its quota (`quota`, or any it manages); then
        its steady state."""
        args = self.args
        names = {workload.name_of(i) for i in range(n)}
        watcher = quota_watcher(
            admin,
            "app.kubernetes.io/managed-by=baseline-cron",
            lambda obj: quota is None or obj.get("metadata", {}).get("name") == quota,
        ).start()
        with open(log_path, "ab") as handle:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.baseline",
                    *flags,
                    f"--interval={args.baseline_interval}",
                    f"--selector={workload.BASELINE_LABEL}={label}",
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO)},
                preexec_fn=_die_with_parent,
            )
        out: dict[str, Any] = {"interval_s": args.baseline_interval}
        try:
            t_start = time.time()
            deadline = time.monotonic() + 120
            while '"tick": 1,' not in log_path.read_text():  # its first run, over no namespace yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {label} script did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.25)
            first_run = json.loads(next(line for line in log_path.read_text().splitlines() if '"tick": 1,' in line))
            time.sleep(max(0.0, float(first_run["start"]) + args.baseline_interval / 2 - time.time()))
            t_label = time.time()
            out["startup"] = tally(audit.select("baseline", t_start, t_label), n)
            log(f"N={n}: {label} script running (every {args.baseline_interval:.0f}s); labelling {n} namespaces")
            before = sample(proc.pid)
            sent = workload.label_for_baseline(admin, n, args.workers, value=label)
            converged = watcher.wait_for(names, 3 * args.baseline_interval + 0.2 * n + 120, log)
            t_conv = max((watcher.first[ns][0] for ns in names if ns in watcher.first), default=time.time())
            t_conv = max(t_conv, max(sent.values()))
            audit.sync()
            after = sample(proc.pid)
            convergence = latency_summary(sent, watcher.first)
            convergence["all_converged"] = converged
            convergence["requests"] = tally(audit.select("baseline", t_label, t_conv), n, t_conv - t_label)
            convergence["process"] = {"start": _d(before), "end": _d(after), "cpu_s": cpu_between(before, after)}
            out["convergence"] = convergence
            log(
                f"N={n}: {label} script converged: p50 {convergence['p50_s']}s p99 {convergence['p99_s']}s; "
                f"steady state for {args.steady:.0f}s"
            )
            out["steady"] = self.steady("baseline", proc.pid, audit, n, admin=admin)
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()
            watcher.stop()
        ticks = []
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if "tick" in record:
                    ticks.append(record)
        out["ticks"] = len(ticks)
        out["tick_seconds"] = [t.get("seconds") for t in ticks]
        out["tick_errors"] = sum(int(t.get("errors", 0)) for t in ticks)
        out["watch_errors"] = watcher.errors[:10]
        return out


def guarded(what: str, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A phase added to a size's run: its failure is recorded, and the size's other figures kept."""
    try:
        return phase()
    except Exception as exc:
        log(f"{what} failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def events_by_reason(api: kubernetes.client.ApiClient) -> dict[str, int]:
    """The Events Headroom posted about Projects (they go to the default namespace)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(kubernetes.client.ApiException, OSError):
        for event in kubernetes.client.CoreV1Api(api).list_namespaced_event("default", _request_timeout=60).items:
            if event.involved_object and event.involved_object.kind == "Project":
                key = f"{event.type} {event.reason}"
                counts[key] = counts.get(key, 0) + (event.count or 1)
    return dict(sorted(counts.items()))


def log_issues(directory: Path, limit: int = 8) -> dict[str, Any]:
    """Warnings and errors in the operator's logs: how many, and the first few."""
    lines = []
    for path in sorted(directory.glob("operator-*.log")):
        lines += [
            f"{path.name}: {line[:300]}"
            for line in path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line or "Traceback" in line
        ]
    return {"count": len(lines), "first": lines[:limit]}


def _d(s: Sample | None) -> dict[str, Any] | None:
    return s.to_dict() if s else None


def git_revision() -> str:
    """The revision measured; BENCH_REVISION names it for a run from an exported tree (git archive)."""
    if os.environ.get("BENCH_REVISION"):
        return os.environ["BENCH_REVISION"]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "operator"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(results: dict[str, Any], stamp: str, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False, default=str)
    path = results_dir / f"{stamp}.json"
    for target in (path, results_dir / "latest.json"):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(target)
    (results_dir / "latest.md").write_text(render(results))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,3000", help="comma-separated numbers of Projects")
    parser.add_argument("--steady", type=float, default=600, help="seconds of steady state (each contender)")
    parser.add_argument("--pods", type=int, default=3, help="Pending pods per namespace")
    parser.add_argument("--history-days", type=int, default=7, help="daily samples per namespace and resource")
    parser.add_argument("--resync", default="5m", help="Headroom's --resync-interval in the main phases")
    parser.add_argument(
        "--history-resync", default="30s", help="--resync-interval of the phase that counts history queries"
    )
    parser.add_argument("--history-cycles", type=int, default=3, help="derivation cycles to count")
    parser.add_argument("--singles", type=int, default=20, help="Projects created one at a time, per phase")
    parser.add_argument("--single-gap", type=float, default=2.0, help="seconds between two single Projects")
    parser.add_argument("--baseline-interval", type=float, default=60, help="seconds between baseline runs")
    parser.add_argument("--workers", type=int, default=16, help="threads creating objects")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0,
        help="seconds without a request that end convergence and restart (0: 10 s, or N/100 s "
        "if more: a pause in the writes, such as a derivation cycle over thousands of Projects, "
        "must not pass for the end)",
    )
    parser.add_argument("--converge-timeout", type=float, default=0, help="0: 300 s + 1 s per Project")
    parser.add_argument("--operator-arg", action="append", default=[], help="extra flag for headroom run")
    parser.add_argument("--only", choices=["both", "headroom", "baseline"], default="both")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="headroom-bench-"))
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": [],
    }
    log(f"benchmark {stamp}: sizes {sizes}, steady {args.steady:.0f}s, work directory {workdir}")
    failed = False
    try:
        for n in sizes:
            bench = Bench(args, workdir)
            try:
                results["sizes"].append(bench.run_size(n))
            except Exception as exc:
                failed = True
                log(f"N={n} failed: {type(exc).__name__}: {exc}")
                partial = {**bench.partial, "n": n, "error": f"{type(exc).__name__}: {exc}"[:4000]}
                partial["loadavg_end"] = loadavg()
                headline(partial)
                results["sizes"].append(partial)
                args.keep = True
            results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            path = write_results(results, stamp, args.results_dir)
            log(f"results so far: {path}")
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
