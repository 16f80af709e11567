"""What Headroom's Prometheus source costs Prometheus, measured by Prometheus itself.

`python -m bench.history` (`make bench-history`) backfills a real Prometheus (Debian's, with its
default query limits) with kube-state-metrics-shaped series, `promtool tsdb create-blocks-from
openmetrics`, for each size in `--sizes` (live pods) over `--days` days, with pod churn, and asks it
what Headroom asks, with `stats=all`:

- old: the design before daily peaks, one `max_over_time((join over all pods)[lookback:step])` per
  resource for every namespace, every cycle;
- new, start-up: every day of the lookback asked once (range queries with a step of a day, chunked);
- new, steady: the next cycle, which asks only the window since the last answer;
- the same two with the namespace-level recording rules (`namespace_cpu:...:sum`) present.

Each pod exports what kube-state-metrics exports and the queries read: its Pending and Running
`kube_pod_status_phase` series and its CPU and memory `kube_pod_container_resource_requests`. The
recording rules' series are written as Prometheus would have recorded them (the same sums, one
series per namespace). The figures are Prometheus' own: `totalQueryableSamples` (samples read),
`peakSamples` (held at once, what `--query.max-samples` limits) and `execTotalTime`.
Results go to bench/results/history-<timestamp>.json and history-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from headroom.core.history import PeakQuery
from headroom.shell.history.prometheus import DEFAULT_QUERIES, DEFAULT_RULES, PrometheusHistory, peak_query

from tests.harness.prometheus import Prometheus

RESULTS = Path(__file__).resolve().parent / "results"
INTERVAL = 300  # seconds between samples: the subquery step Headroom uses by default
# Two of the five default resources: requests.cpu stands for the four container sums (the same join
# over different series), pods for the count; a full cycle asks five.
RESOURCES = ("requests.cpu", "pods")
PEAKS: dict[str, dict[tuple[str, str], Decimal]] = {"old": {}, "raw": {}, "rules": {}}  # the last answers
PODS_PER_NAMESPACE = 10
LABELS = 'job="ksm"'


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    start: int
    end: int
    cpu_milli: int
    memory_mi: int


def workload(live: int, days: int, end: int, seed: int = 13) -> list[Pod]:
    """`live` pod slots, ten per namespace; a third churn every 6 hours, the rest every 3 days,
    each new pod with requests of its own (so each day has its own peak)."""
    rng = random.Random(seed)
    start = end - days * 86_400
    pods: list[Pod] = []
    for slot in range(live):
        namespace = f"team-{slot // PODS_PER_NAMESPACE:05d}"
        life = 6 * 3600 if slot % 3 == 0 else 3 * 86_400
        at = start - rng.randrange(life) // INTERVAL * INTERVAL
        n = 0
        while at < end:
            stop = min(at + life, end)
            cpu = rng.choice((100, 250, 500, 1000, 2000))
            memory = rng.choice((128, 256, 512, 1024, 4096))
            pods.append(Pod(namespace, f"p{slot}-{n}", max(at, start), stop, cpu, memory))
            n += 1
            # A gap longer than the 5-minute lookback delta between a pod and its successor.
            at = stop + 2 * INTERVAL
    return pods


def _times(pod: Pod) -> range:
    first = -(-pod.start // INTERVAL) * INTERVAL
    return range(first, pod.end + 1, INTERVAL)


def write_openmetrics(pods: list[Pod], out: TextIO) -> None:
    """The pods as OpenMetrics, each family's series together, each series in time order, plus
    the recording rules' series that kube-prometheus would have recorded from them."""
    out.write("# TYPE kube_pod_status_phase gauge\n")
    for pod in pods:
        base = f'namespace="{pod.namespace}",pod="{pod.name}",{LABELS}'
        times = _times(pod)
        # One sample Pending, then Running: the Pending series is 1 first and 0 after.
        pending, running = (f'kube_pod_status_phase{{{base},phase="{p}"}} ' for p in ("Pending", "Running"))
        out.writelines(f"{pending}{1 if i == 0 else 0} {t}\n" for i, t in enumerate(times))
        out.writelines(f"{running}{0 if i == 0 else 1} {t}\n" for i, t in enumerate(times))
    out.write("# TYPE kube_pod_container_resource_requests gauge\n")
    for pod in pods:
        base = f'namespace="{pod.namespace}",pod="{pod.name}",container="app",{LABELS}'
        cpu = f"{pod.cpu_milli / 1000:g}"
        memory = str(pod.memory_mi * 2**20)
        out.writelines(
            f'kube_pod_container_resource_requests{{{base},resource="cpu",unit="core"}} {cpu} {t}\n'
            for t in _times(pod)
        )
        out.writelines(
            f'kube_pod_container_resource_requests{{{base},resource="memory",unit="byte"}} {memory} {t}\n'
            for t in _times(pod)
        )
    for resource, record in DEFAULT_RULES.items():
        if resource not in RESOURCES:
            continue
        out.write(f"# TYPE {record} gauge\n")
        for namespace, series in sorted(_sums(pods, resource).items()):
            out.writelines(f'{record}{{namespace="{namespace}"}} {v:g} {t}\n' for t, v in sorted(series.items()))
    out.write("# EOF\n")


def _sums(pods: list[Pod], resource: str) -> dict[str, dict[int, float]]:
    sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for pod in pods:
        value = {"requests.cpu": pod.cpu_milli / 1000, "requests.memory": pod.memory_mi * 2**20, "pods": 1}[resource]
        for t in _times(pod):
            sums[pod.namespace][t] += value
    return sums


def backfill(pods: list[Pod], data_dir: Path, workdir: Path) -> dict[str, float]:
    source = workdir / "history.om"
    started = time.monotonic()
    with source.open("w") as out:
        write_openmetrics(pods, out)
    written = time.monotonic()
    subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            "--max-block-duration=720h",
            str(source),
            str(data_dir),
        ],
        check=True,
        capture_output=True,
    )
    size = source.stat().st_size
    source.unlink()
    return {"render_s": written - started, "promtool_s": time.monotonic() - written, "openmetrics_bytes": size}


# --------------------------------------------------------------------------------------------- measuring


def _figures(stats: Mapping[str, Any]) -> dict[str, float]:
    samples = stats.get("samples") or {}
    timings = stats.get("timings") or {}
    return {
        "samples": float(samples.get("totalQueryableSamples", 0)),
        "peak_samples": float(samples.get("peakSamples", 0)),
        "seconds": float(timings.get("execTotalTime", 0)),
    }


def _total(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "queries": len(records),
        "samples": sum(r["samples"] for r in records),
        "peak_samples": max((r["peak_samples"] for r in records), default=0),
        "seconds": round(sum(r["seconds"] for r in records), 3),
        "errors": [r["error"] for r in records if r.get("error")],
    }


async def old_design(url: str, namespaces: frozenset[str], lookback: timedelta, at: datetime) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for resource in RESOURCES:
            promql = peak_query(DEFAULT_QUERIES[resource], namespaces, int(lookback.total_seconds()), "5m")
            data = {"query": promql, "time": f"{at.timestamp():.3f}", "stats": "all"}
            async with session.post(f"{url}/api/v1/query", data=data) as resp:
                body = await resp.json(content_type=None)
            if body.get("status") == "success":
                records.append({"resource": resource, **_figures(body["data"].get("stats") or {})})
                for sample in body["data"]["result"]:
                    PEAKS["old"][(sample["metric"]["namespace"], resource)] = Decimal(sample["value"][1])
            else:
                records.append(
                    {
                        "resource": resource,
                        "samples": 0,
                        "peak_samples": 0,
                        "seconds": 0,
                        "error": f"{body.get('errorType')}: {body.get('error')}",
                    }
                )
    return {**_total(records), "per_query": records}


async def new_design(
    url: str, namespaces: frozenset[str], lookback: timedelta, at: datetime, rules: bool
) -> dict[str, Any]:
    records: list[dict[str, Any]] = []

    def hook(kind: str, promql: str, stats: Mapping[str, Any]) -> None:
        records.append({"kind": kind, **_figures(stats)})

    source = PrometheusHistory(url, step="5m", timeout=300, on_stats=hook, rules=DEFAULT_RULES if rules else {})
    phases: dict[str, Any] = {}
    for phase, now in (("startup", at - timedelta(minutes=5)), ("steady", at)):
        records.clear()
        result = await source.peaks(PeakQuery(namespaces, frozenset(RESOURCES), lookback, now))
        phases[phase] = {**_total(records), "error": result.error, "peaks": len(result.peaks)}
        PEAKS["rules" if rules else "raw"] = dict(result.peaks)
        phases[phase]["by_kind"] = {
            kind: _total([r for r in records if r["kind"] == kind]) for kind in sorted({r["kind"] for r in records})
        }
    return phases


def _not_run(why: str) -> dict[str, Any]:
    return {"queries": 0, "samples": 0, "peak_samples": 0, "seconds": 0, "errors": [], "not_run": why}


def _agreement(old: Mapping[tuple[str, str], Decimal], new: Mapping[tuple[str, str], Decimal]) -> dict[str, int]:
    """How the new design's peaks compare with the old one's, key by key. The new one reads the
    oldest day of the lookback whole, so it may be higher, never lower."""
    keys = set(old) | set(new)
    return {
        "equal": sum(
            1 for k in keys if k in old and k in new and abs(new[k] - old[k]) < Decimal("0.001") * max(old[k], 1)
        ),
        "new_higher": sum(1 for k in keys if k in old and k in new and new[k] > old[k] * Decimal("1.001")),
        "new_lower": sum(1 for k in keys if k in old and k in new and new[k] < old[k] * Decimal("0.999")),
        "only_old": sum(1 for k in keys if k not in new),
        "only_new": sum(1 for k in keys if k not in old),
    }


def measure(size: int, days: int, workdir: Path, old_up_to: int) -> dict[str, Any]:
    for kept in PEAKS.values():
        kept.clear()
    end = int(time.time()) // 86_400 * 86_400 + 12 * 3600  # noon today: a partial day, as in production
    if end > time.time():
        end -= 86_400
    pods = workload(size, days, end)
    namespaces = frozenset(p.namespace for p in pods)
    # The query timeout is raised from 2 to 10 minutes so that the old design's cost can be measured
    # at all on this shared machine; every other limit is Prometheus' default (50M samples).
    prometheus = Prometheus(workdir / f"prometheus-{size}", flags=("--query.timeout=10m",))
    shutil.rmtree(prometheus.workdir, ignore_errors=True)
    prometheus.workdir.mkdir(parents=True)
    fill = backfill(pods, prometheus.data_dir, prometheus.workdir)
    prometheus.start(timeout=300)
    try:
        at = datetime.fromtimestamp(end, UTC)
        lookback = timedelta(days=days - 1)  # the first backfilled day is partly before the first pod
        load = os.getloadavg()
        result = {
            "live_pods": size,
            "namespaces": len(namespaces),
            "pods_over_history": len(pods),
            "days": days,
            "lookback_days": lookback.days,
            "samples_stored": sum(len(_times(p)) for p in pods) * 4,
            "backfill": fill,
            "load_average_before": load,
            "old": asyncio.run(old_design(prometheus.url, namespaces, lookback, at))
            if size <= old_up_to
            else _not_run(f"more than {old_up_to} live pods (--old-up-to)"),
            "new_raw": asyncio.run(new_design(prometheus.url, namespaces, lookback, at, rules=False)),
            "new_rules": asyncio.run(new_design(prometheus.url, namespaces, lookback, at, rules=True)),
            "load_average_after": os.getloadavg(),
            "agreement": {design: _agreement(PEAKS["old"], PEAKS[design]) for design in ("raw", "rules")},
        }
    finally:
        prometheus.stop()
        shutil.rmtree(prometheus.workdir, ignore_errors=True)
    return result


def _revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _rows(results: list[dict[str, Any]]) -> Iterator[str]:
    yield (
        "| live pods | namespaces | lookback (days) | design | queries | samples read | peak samples "
        "| Prometheus time (s) | peak samples at 30 days |"
    )
    yield "|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    for r in results:
        designs = [
            ("old, every cycle", r["old"]),
            ("new, start-up", r["new_raw"]["startup"]),
            ("new, steady cycle", r["new_raw"]["steady"]),
            ("new + rules, start-up", r["new_rules"]["startup"]),
            ("new + rules, steady cycle", r["new_rules"]["steady"]),
        ]
        for name, d in designs:
            failed = " (failed: " + "; ".join(d["errors"])[:80] + ")" if d.get("errors") else ""
            if d.get("not_run"):
                where = f"| {r['live_pods']} | {r['namespaces']} | {r['lookback_days']}"
                yield f"{where} | {name} (not run: {d['not_run']}) | | | | | |"
                continue
            yield (
                f"| {r['live_pods']} | {r['namespaces']} | {r['lookback_days']} | {name}{failed} | {d['queries']} | "
                f"{int(d['samples']):,} | {int(d['peak_samples']):,} | {d['seconds']:.3f} | {_at_30(r, name, d)} |"
            )


def _at_30(result: Mapping[str, Any], design: str, figures: Mapping[str, Any]) -> str:
    """Peak samples extrapolated to a 30-day lookback: the old design evaluates its join at every
    step of the lookback, so it grows with it; a steady cycle of the new one does not, and its
    start-up asks at most `max_days` days at once (measured, not scaled)."""
    if result["lookback_days"] >= 30:
        return "(measured)"
    if design.startswith("old"):
        return f"~{int(figures['peak_samples'] * 30 / result['lookback_days']):,}"
    return "same" if "steady" in design else "same or less (7-day chunks)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        # What this shared 2-core machine renders, backfills and queries in about 10 minutes; larger
        # sizes and the 30-day lookback are extrapolated, see docs/benchmark.md.
        default=["1000:8", "4000:3"],
        help="live pods, or PODS:DAYS (days of history backfilled, the lookback one less)",
    )
    parser.add_argument("--days", type=int, default=31, help="days of history for sizes given without :DAYS")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--old-up-to",
        type=int,
        default=4000,
        # The old design's query over 5 000 pods and 30 days held Prometheus above 23 GiB (of this
        # machine's 24) without an answer: it was stopped before the machine was.
        help="live pods up to which the old design is asked too (above: not run)",
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="headroom-bench-history-"))
    started = datetime.now(UTC)
    revision = _revision()  # the code measured: the revision at the start of the run
    results: list[dict[str, Any]] = []
    for spec in args.sizes:
        size, _, history_days = spec.partition(":")
        n, d = int(size), int(history_days or args.days)
        print(f"{n} live pods over {d} days ...", flush=True)
        results.append(measure(n, d, workdir, args.old_up_to))
        print("\n".join(list(_rows(results[-1:]))[2:]), flush=True)
        _write(revision, started, results)  # after each size: a run stopped early keeps what it measured
    print("\n".join(_rows(results)))


def _write(revision: str, started: datetime, results: list[dict[str, Any]]) -> None:
    version = subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout.splitlines()
    report = {
        "revision": revision,
        "started": started.isoformat(),
        "prometheus": version[0] if version else "unknown",
        "cpus": os.cpu_count(),
        "results": results,
        "table": list(_rows(results)),
    }
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(report, indent=2, default=str)
    (RESULTS / f"history-{started.strftime('%Y%m%dT%H%M%SZ')}.json").write_text(text)
    (RESULTS / "history-latest.json").write_text(text)


if __name__ == "__main__":
    main()
