"""The baseline: the quota script a platform team writes when it has no operator.

A cron-style loop, honest and typical: every interval it

1. lists the namespaces that opted in (one LIST, by label),
2. for each one lists its pods (one LIST per namespace) and sums their requests and limits,
3. recomputes the quota as that sum times 1.2 (never below the same floors Headroom uses), and
4. server-side applies the ResourceQuota `baseline` (one PATCH per namespace, changed or not).

With `--all-pods` it is the competent cron job instead: one LIST of the opted-in namespaces and one
LIST of every pod in the cluster per run (two requests at any N, but the same bytes as the naive
one, and more: pods of namespaces that did not opt in too), and a write only for a namespace whose
quota would change since the run before (it remembers what it applied, as a long-running loop can).

The naive form is the cheapest form of the naive script (a client-side `kubectl apply` would add a GET per
namespace). It runs sequentially, as a shell loop over `kubectl` would; a tick that overruns the
interval is followed at once by the next one. It runs as its own ServiceAccount
(`headroom-bench:baseline`, RBAC in bench/baseline-rbac.yaml), so the audit log tells it apart.

    python -m bench.baseline --interval 60 --selector bench.headroom.dev/quota=baseline
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import kubernetes
from kubernetes.utils import parse_quantity

QUOTA_NAME = "baseline"
FIELD_MANAGER = "baseline-cron"
MANAGED_BY = "baseline-cron"
# The same floors as Headroom's built-in minimum, so that both give a new namespace room to start.
FLOORS = {
    "requests.cpu": Decimal(1),
    "requests.memory": Decimal(2**30),
    "limits.cpu": Decimal(2),
    "limits.memory": Decimal(2 * 2**30),
    "pods": Decimal(10),
}


def totals(pods: Sequence[Any]) -> dict[str, Decimal]:
    """Summed requests and limits of the pods that hold them (Pending or Running), and their count."""
    sums = dict.fromkeys(FLOORS, Decimal(0))
    for item in pods:
        if (item.status.phase if item.status else None) in ("Succeeded", "Failed"):
            continue
        sums["pods"] += 1
        for container in item.spec.containers:
            resources = container.resources
            for kind, values in (
                ("requests", resources.requests if resources else None),
                ("limits", resources.limits if resources else None),
            ):
                for name in ("cpu", "memory"):
                    if values and name in values:
                        sums[f"{kind}.{name}"] += Decimal(parse_quantity(values[name]))
    return sums


def quota_hard(sums: dict[str, Decimal], headroom_percent: int = 20) -> dict[str, str]:
    factor = Decimal(100 + headroom_percent) / 100
    hard: dict[str, str] = {}
    for resource, total in sums.items():
        value = max(total * factor, FLOORS[resource])
        if resource.endswith(".cpu"):
            hard[resource] = f"{math.ceil(value * 1000)}m"
        elif resource.endswith(".memory"):
            hard[resource] = f"{math.ceil(value / 2**20)}Mi"
        else:
            hard[resource] = str(math.ceil(value))
    return hard


def manifest(namespace: str, hard: dict[str, str], name: str = QUOTA_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "spec": {"hard": hard},
    }


def tick(core: kubernetes.client.CoreV1Api, selector: str, headroom_percent: int) -> dict[str, Any]:
    started = time.time()
    errors = 0
    namespaces = core.list_namespace(label_selector=selector, _request_timeout=120).items
    for ns in namespaces:
        name = ns.metadata.name
        try:
            pods = core.list_namespaced_pod(name, _request_timeout=60).items
            core.patch_namespaced_resource_quota(
                QUOTA_NAME,
                name,
                manifest(name, quota_hard(totals(pods), headroom_percent)),
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
                _request_timeout=60,
            )
        except Exception as exc:  # a naive script logs and goes on with the next namespace
            errors += 1
            print(json.dumps({"error": f"{name}: {exc}"[:300]}), flush=True)
    return {
        "start": round(started, 3),
        "seconds": round(time.time() - started, 3),
        "namespaces": len(namespaces),
        "errors": errors,
    }


def tick_all_pods(
    core: kubernetes.client.CoreV1Api,
    selector: str,
    headroom_percent: int,
    applied: dict[str, dict[str, str]],
    quota_name: str = QUOTA_NAME,
) -> dict[str, Any]:
    """The competent run: two LISTs, then a write only where the quota changes."""
    started = time.time()
    errors = writes = 0
    namespaces = core.list_namespace(label_selector=selector, _request_timeout=120).items
    pods = core.list_pod_for_all_namespaces(_request_timeout=300).items
    by_namespace: dict[str, list[Any]] = {}
    for item in pods:
        by_namespace.setdefault(item.metadata.namespace, []).append(item)
    for ns in namespaces:
        name = ns.metadata.name
        hard = quota_hard(totals(by_namespace.get(name, [])), headroom_percent)
        if applied.get(name) == hard:
            continue
        try:
            core.patch_namespaced_resource_quota(
                quota_name,
                name,
                manifest(name, hard, quota_name),
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
                _request_timeout=60,
            )
            applied[name] = hard
            writes += 1
        except Exception as exc:
            errors += 1
            print(json.dumps({"error": f"{name}: {exc}"[:300]}), flush=True)
    return {
        "start": round(started, 3),
        "seconds": round(time.time() - started, 3),
        "namespaces": len(namespaces),
        "pods": len(pods),
        "writes": writes,
        "errors": errors,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between two runs")
    parser.add_argument(
        "--selector", default="bench.headroom.dev/quota=baseline", help="label selector of the namespaces to manage"
    )
    parser.add_argument("--headroom-percent", type=int, default=20)
    parser.add_argument("--quota-name", default=QUOTA_NAME, help="the ResourceQuota it applies (each script its own)")
    parser.add_argument("--once", action="store_true", help="one run, then exit (a real CronJob)")
    parser.add_argument(
        "--all-pods", action="store_true", help="the competent job: one LIST of all pods per run, writes on change"
    )
    args = parser.parse_args(argv)

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(client_configuration=config)
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    # SIGTERM ends the script at once, mid-run or not, like a killed shell loop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    number = 0
    applied: dict[str, dict[str, str]] = {}
    next_run = time.monotonic()
    while True:
        number += 1
        try:
            if args.all_pods:
                report = tick_all_pods(core, args.selector, args.headroom_percent, applied, args.quota_name)
            else:
                report = tick(core, args.selector, args.headroom_percent)
        except Exception as exc:
            report = {"tick_error": str(exc)[:300]}
        print(json.dumps({"tick": number, **report}), flush=True)
        if args.once:
            break
        # An overrun is followed at once by the next run, without trying to catch up.
        next_run = max(next_run + args.interval, time.monotonic())
        while time.monotonic() < next_run:
            time.sleep(max(0.0, min(0.5, next_run - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
