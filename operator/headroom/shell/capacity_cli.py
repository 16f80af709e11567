"""`headroom capacity`: what the governed quotas promise against what the cluster's nodes can give.

The governed values come from the Projects' status (what Headroom published for each governed
namespace), so reading them needs nothing beyond reading Projects; the allocatable capacity from
the Nodes (one LIST, as `kubectl get nodes` does) or, with --prometheus-url, from the same query the
operator uses. Rows: the cluster, then each team, then each Project; a team's or a Project's ratio is
its share of the cluster (0.25: a quarter of the allocatable capacity is promised to it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import yaml

from headroom.core.capacity import capacity_rows, governed_totals, parse_budget
from headroom.core.names import GROUP, PLURAL, VERSION
from headroom.core.quantity import QuantityError, parse_quantity
from headroom.shell.cli import EXIT_UNREACHABLE, CliError, _client, _custom, _table, calling

Values = dict[str, Decimal]


def _node_allocatable(client: Any) -> tuple[Values, str]:
    import kubernetes

    with calling("list Nodes for their allocatable capacity (or pass --prometheus-url)"):
        nodes = kubernetes.client.CoreV1Api(client).list_node().items
    total: Values = {}
    counted = 0
    for node in nodes:
        if node.spec is not None and node.spec.unschedulable:
            continue  # cordoned: its capacity is not on offer
        counted += 1
        for resource, text in ((node.status.allocatable if node.status else None) or {}).items():
            key = re.sub(r"[^A-Za-z0-9_]", "_", resource)
            try:
                total[key] = total.get(key, Decimal(0)) + parse_quantity(str(text))
            except QuantityError:
                continue
    return total, f"{counted} schedulable node(s)"


def _prometheus_allocatable(url: str) -> tuple[Values, str]:
    from headroom.shell.capacity import CapacityReader

    reader = CapacityReader(url, attempts=1)
    asyncio.run(reader.refresh())
    if reader.error is not None:
        raise CliError(f"cannot read the allocatable capacity: {reader.error}", EXIT_UNREACHABLE)
    return dict(reader.allocatable), f"Prometheus {url}"


def _governed(project: Mapping[str, Any]) -> Values:
    """The Project's governed values, summed over its governed namespaces (as Headroom published them)."""
    values: list[Values] = []
    for entry in (project.get("status") or {}).get("namespaces") or []:
        if entry.get("state") != "Governed":
            continue
        parsed: Values = {}
        for resource, text in (entry.get("hard") or {}).items():
            try:
                parsed[str(resource)] = parse_quantity(str(text))
            except QuantityError:
                continue
        values.append(parsed)
    return governed_totals(values)


def capacity_report(args: argparse.Namespace) -> int:
    try:
        budget = parse_budget(args.max_overcommit or "")
    except ValueError as exc:
        raise CliError(f"--max-overcommit: {exc}") from exc
    client = _client(args)
    with calling("list Projects"):
        projects = _custom(client).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    allocatable, source = (
        _prometheus_allocatable(args.prometheus_url) if args.prometheus_url else _node_allocatable(client)
    )
    per_project = {p["metadata"]["name"]: _governed(p) for p in sorted(projects, key=lambda p: p["metadata"]["name"])}
    teams: dict[str, list[Values]] = {}
    for project in projects:
        team = str(((project.get("spec") or {}).get("owner") or {}).get("team") or "(no team)")
        teams.setdefault(team, []).append(per_project[project["metadata"]["name"]])
    scopes: dict[str, Mapping[str, Decimal]] = {"cluster": governed_totals(per_project.values())}
    scopes.update({f"team {t}": governed_totals(v) for t, v in sorted(teams.items())})
    scopes.update({f"project {p}": v for p, v in per_project.items()})
    rows = capacity_rows(scopes, allocatable)
    for row in rows:
        row["budget"] = str(budget[row["resource"]]) if row["scope"] == "cluster" and row["resource"] in budget else ""
    held = [
        {"project": p["metadata"]["name"], "change": pending.get("shortId") or pending.get("id"), **excess}
        for p in projects
        for pending in [(p.get("status") or {}).get("pendingChange") or {}]
        for excess in pending.get("heldForCapacity") or []
    ]
    if args.output in ("json", "yaml"):
        out = {"allocatableFrom": source, "rows": rows, "held": held}
        print(json.dumps(out, indent=2) if args.output == "json" else yaml.safe_dump(out, sort_keys=False), end="\n")
        return 0
    print(f"Allocatable capacity from {source}")
    _table(rows, ["scope", "resource", "governed", "allocatable", "ratio", "budget"])
    for h in held:
        print(
            f"held: Project {h['project']} change {h['change']}: {h['resource']} to {h['total']}"
            + (f", {h['over']} over the budget {h['budget']}x" if "over" in h else ", capacity unknown")
        )
    return 0


def add_parser(sub: Any, cluster_flags: Any) -> None:
    capacity = sub.add_parser(
        "capacity", help="the sum of governed quotas against the cluster's allocatable capacity, per team and Project"
    )
    capacity.add_argument(
        "--prometheus-url", help="read allocatable capacity from kube-state-metrics there (default: the Nodes)"
    )
    capacity.add_argument(
        "--max-overcommit", help="show this budget beside the cluster's ratios (RESOURCE=RATIO[,...])"
    )
    capacity.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    cluster_flags(capacity)
    capacity.set_defaults(func=lambda args: capacity_report(args))
