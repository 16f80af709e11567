"""Memory of the operator's own state per Project, without a cluster.

`python -m bench.memory N [--tracemalloc]` fills the Store as bench.reconcile_cost does (N Projects,
one namespace each, writes landing in the Store as the watch would echo them), but with quotas shaped
as the API server returns them: managedFields of Headroom's server-side apply and of the quota
controller's status updates. After the onboarding, governing and steady passes it renders /metrics
once and prints one JSON line: RSS now and at its peak (MiB), and with --tracemalloc the bytes
Python holds live, per Project. Run one process per N (RSS is the whole process's): the bytes per
Project are the difference between two sizes divided by the difference in Projects.

`python -m bench.memory --kopf N` measures instead what Kopf itself keeps per watched object for
as long as the object exists (its ResourceMemory: memo, error throttler, indexing and daemon
records), by filling its inventory with N objects as its watch streams would: with Kopf's default
memories and with Headroom's (handlers.NoMemories, which keep nothing).

What this does not hold: Kopf's own per-object state and the watch streams' buffers, the client
library's connection pools, and the start-up LIST's transient copy; the RSS of a real operator is
measured by `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tracemalloc
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from headroom.core.planning import DesiredQuota, Settings
from headroom.shell.history.cache import HistoryCache
from headroom.shell.kube import quota_manifest
from headroom.shell.metrics import Metrics
from headroom.shell.reconcile import Reconciler
from headroom.shell.store import Store

from bench.reconcile_cost import USED, InstantHistory, StoreWriter


def _managed_fields(quota: Mapping[str, Any]) -> list[dict[str, Any]]:
    """managedFields as the API server records them for Headroom's quota: its apply, and the quota
    controller's status updates."""
    meta = quota["metadata"]
    own = {
        "f:metadata": {
            "f:annotations": {f"f:{k}": {} for k in meta.get("annotations") or {}},
            "f:labels": {f"f:{k}": {} for k in meta.get("labels") or {}},
            "f:ownerReferences": {'k:{"uid":"' + o["uid"] + '"}': {} for o in meta.get("ownerReferences") or []},
        },
        "f:spec": {"f:hard": {f"f:{r}": {} for r in quota["spec"]["hard"]}},
    }
    status = {
        "f:status": {
            "f:hard": {f"f:{r}": {} for r in quota["spec"]["hard"]},
            "f:used": {f"f:{r}": {} for r in quota["spec"]["hard"]},
        }
    }
    return [
        {
            "manager": "headroom",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": own,
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-01-01T00:00:01Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": status,
            "subresource": "status",
        },
    ]


class ApiShapedWriter(StoreWriter):
    async def apply_quota(self, project: Mapping[str, Any], desired: DesiredQuota) -> None:
        self.writes += 1
        self.version += 1
        quota = quota_manifest(project, desired)
        quota["metadata"].update(
            resourceVersion=str(self.version), uid=f"q-{self.version}", creationTimestamp="2026-01-01T00:00:00Z"
        )
        quota["status"] = {"hard": dict(desired.hard), "used": {r: USED[r] for r in desired.hard if r in USED}}
        quota["metadata"]["managedFields"] = _managed_fields(quota)
        # As the watch delivers it: parsed anew, nothing shared with what was written.
        self.store.quotas[desired.namespace] = json.loads(json.dumps(quota))


def _rss_mib() -> tuple[float, float]:
    now = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(n: int) -> dict[str, Any]:
    store = Store()
    writer = ApiShapedWriter(store)
    metrics = Metrics()
    cache = HistoryCache(InstantHistory(), max_age=timedelta(hours=1), metrics=metrics)
    reconciler = Reconciler(
        store=store,
        writer=writer,
        history=cache,
        settings=Settings(),  # type: ignore[arg-type]
        metrics=metrics,
    )
    for i in range(n):
        namespace = f"team-{i:05d}"
        store.namespaces.add(namespace)
        store.projects[namespace] = {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "Project",
            "metadata": {
                "name": namespace,
                "uid": f"uid-{i}",
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"owner": {"team": "t"}, "namespaces": [{"name": namespace}]},
        }
    for _phase in ("onboarding", "governing", "steady"):
        # In turns of 200, as the write limiter serves them, not every Project's plan at once.
        names = list(store.projects)
        for start in range(0, len(names), 200):
            await asyncio.gather(*(reconciler.reconcile(name) for name in names[start : start + 200]))
    scrape = b"".join(metrics.exposition())
    rss, peak = _rss_mib()
    result: dict[str, Any] = {
        "projects": n,
        "rss_mib": round(rss, 1),
        "rss_peak_mib": round(peak, 1),
        "metrics_bytes": len(scrape),
        "writes": writer.writes,
    }
    if tracemalloc.is_tracing():
        result["live_bytes"] = tracemalloc.get_traced_memory()[0]
    return result


async def measure_kopf(n: int) -> dict[str, Any]:
    """Bytes Kopf keeps per watched object between events (tracemalloc, live): with its default
    memories, and with the ones Headroom runs it with (handlers.NoMemories)."""
    from headroom.shell.handlers import NoMemories
    from kopf._core.reactor.inventory import ResourceMemories

    bodies = [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"namespace": f"team-{i:05d}", "name": "headroom", "uid": f"uid-{i:05d}"},
        }
        for i in range(n)
    ]
    result: dict[str, Any] = {"objects": n}
    for label, memories in (("kopf_default", ResourceMemories()), ("headroom", NoMemories())):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            await memories.recall(body)  # type: ignore[arg-type]
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        result[f"{label}_bytes_per_object"] = round(kept / n)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("projects", type=int)
    parser.add_argument("--tracemalloc", action="store_true", help="also count live bytes (slower)")
    parser.add_argument("--kopf", action="store_true", help="what Kopf keeps per watched object instead")
    args = parser.parse_args(argv)
    if args.kopf:
        print(json.dumps(asyncio.run(measure_kopf(args.projects))))
        return
    if args.tracemalloc:
        tracemalloc.start()
    print(json.dumps(asyncio.run(measure(args.projects))))


if __name__ == "__main__":
    main()
