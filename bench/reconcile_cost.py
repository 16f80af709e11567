"""CPU time of one reconcile as the number of Projects grows, without a cluster.

`python -m bench.reconcile_cost [N ...]` fills the operator's Store with N Projects (one namespace
each), a history source that answers at once and a writer that puts what Headroom writes straight
into the Store, the way the watch streams would. It then times three passes over every Project:
onboarding (counting quota and LimitRange), governing (governed quota and status), and a steady
pass that writes nothing. A reconcile that scanned every Project or quota would cost O(N) each,
O(N^2) a derivation cycle: the per-reconcile figure must stay flat as N grows.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from headroom.core.history import HistoryResult, PeakQuery
from headroom.core.planning import (
    DesiredLimitRange,
    DesiredQuota,
    Event,
    Settings,
)
from headroom.shell.history.cache import HistoryCache
from headroom.shell.kube import limitrange_manifest, quota_manifest
from headroom.shell.metrics import Metrics
from headroom.shell.reconcile import Reconciler
from headroom.shell.store import Store

USED = {"requests.cpu": "300m", "requests.memory": "384Mi", "limits.cpu": "600m", "limits.memory": "768Mi", "pods": "3"}


class InstantHistory:
    name = "instant"

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        return HistoryResult(
            peaks={(ns, r): Decimal(2) for ns in query.namespaces for r in query.resources},
            queries=len(query.resources),
        )


class StoreWriter:
    """Writes land in the Store as the API server (and the quota controller) would echo them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0
        self.version = 0

    async def apply_quota(self, project: Mapping[str, Any], desired: DesiredQuota) -> None:
        self.writes += 1
        self.version += 1
        quota = quota_manifest(project, desired)
        quota["metadata"]["resourceVersion"] = str(self.version)
        quota["status"] = {"hard": dict(desired.hard), "used": {r: USED[r] for r in desired.hard if r in USED}}
        self.store.quotas[desired.namespace] = quota

    async def apply_limitrange(self, project: Mapping[str, Any], desired: DesiredLimitRange) -> None:
        self.writes += 1
        self.store.limitranges[desired.namespace] = limitrange_manifest(project, desired)

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> None:
        self.writes += 1

    async def post_event(self, project: Mapping[str, Any], event: Event) -> None:
        pass

    async def delete_owned(self, namespace: str) -> None:
        pass


async def measure(n: int) -> dict[str, float]:
    store = Store()
    writer = StoreWriter(store)
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
    result: dict[str, float] = {"projects": n}
    for phase in ("onboarding", "governing", "steady"):
        writer.writes = 0
        started = time.process_time()
        await asyncio.gather(*(reconciler.reconcile(name) for name in list(store.projects)))
        result[f"{phase}_ms"] = round(1000 * (time.process_time() - started) / n, 3)
        result[f"{phase}_writes"] = writer.writes
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile_cost", description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000, 3000])
    args = parser.parse_args(argv)
    print("| Projects | onboarding ms/reconcile | governing ms/reconcile | steady ms/reconcile | steady writes |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        r = asyncio.run(measure(n))
        print(f"| {n} | {r['onboarding_ms']} | {r['governing_ms']} | {r['steady_ms']} | {r['steady_writes']:.0f} |")


if __name__ == "__main__":
    main()
