"""The cluster's allocatable capacity, read from Prometheus, and the governed totals, read from the store.

Why Prometheus and not a watch on Nodes (docs/capacity.md has the figures): `status.allocatable` is
only in the full Node object, and every kubelet status report (every 5 minutes by default, more
often while anything changes) sends the whole object again to every watcher, images list included.
At 2 500 nodes that is a stream of megabytes an hour that Headroom would decode for the handful of
numbers it needs, and a metadata-only watch does not carry them. kube-state-metrics already watches
Nodes for the cluster's Prometheus; one instant query per re-derivation (`--resync-interval`) returns
one sample per resource, whatever the number of nodes.

A failed read keeps the last answer (capacity does not vanish because Prometheus did) and says so;
with no answer at all capacity is unknown, never zero, and a budgeted raise waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import aiohttp

from headroom.core.capacity import CapacityView, governed_totals, node_resource, overcommit_ratio
from headroom.core.names import GOVERNED_ANNOTATION, PROJECT_LABEL, STATE_ANNOTATION
from headroom.core.planning import GOVERNED, observe_quota
from headroom.shell.backoff import backoff_delays

log = logging.getLogger("headroom")

# Allocatable of the nodes that take new pods: a cordoned node's capacity is not on offer.
ALLOCATABLE_QUERY = (
    "sum by (resource) (kube_node_status_allocatable unless on (node) (kube_node_spec_unschedulable == 1))"
)


def parse_allocatable(body: Mapping[str, Any]) -> dict[str, Decimal]:
    """resource -> allocatable, from a Prometheus instant-query answer (values are exact decimal text)."""
    out: dict[str, Decimal] = {}
    for sample in (body.get("data") or {}).get("result") or []:
        resource = (sample.get("metric") or {}).get("resource")
        try:
            value = Decimal(str(sample["value"][1]))
        except (KeyError, IndexError, TypeError, InvalidOperation):
            continue
        if resource and value.is_finite() and value >= 0:
            out[str(resource)] = value
    return out


@dataclass
class CapacityReader:
    """The last known allocatable capacity, refreshed from Prometheus."""

    url: str
    timeout: float = 30.0
    attempts: int = 3
    allocatable: dict[str, Decimal] = field(default_factory=dict)
    error: str | None = "not read yet"
    read_at: datetime | None = None

    async def refresh(self) -> None:
        delays = backoff_delays(base=0.5, cap=8.0)
        problem = ""
        for attempt in range(self.attempts):
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                    session.post(f"{self.url.rstrip('/')}/api/v1/query", data={"query": ALLOCATABLE_QUERY}) as resp,
                ):
                    body = await resp.json(content_type=None)
                if resp.status < 500 and isinstance(body, dict) and body.get("status") == "success":
                    found = parse_allocatable(body)
                    if found:
                        self.allocatable, self.error, self.read_at = found, None, datetime.now(UTC)
                        return
                    problem = "Prometheus has no kube_node_status_allocatable series (is kube-state-metrics scraped?)"
                    break  # an empty answer will not fill by retrying now
                problem = f"Prometheus answered HTTP {resp.status}: {str(body)[:200]}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = f"Prometheus at {self.url} unavailable: {exc!s}"
            if attempt + 1 < self.attempts:
                await asyncio.sleep(next(delays))
        kept = f"; the last answer ({self.read_at:%Y-%m-%d %H:%M}Z) is used" if self.read_at else ""
        error, self.error = self.error, problem + kept
        # Said once per new problem, not at every resync while it lasts (the metric and, with a
        # budget, the CapacityHeld condition keep saying it).
        level = logging.WARNING if error != self.error else logging.DEBUG
        log.log(level, "cannot read the cluster's allocatable capacity: %s", self.error)

    def view(self, quotas: Mapping[str, Mapping[str, Any]], project: str, listed: Iterable[str]) -> CapacityView:
        """The capacity, and the governed total of every quota but those of `project` in the namespaces it
        lists (the plan has those, with the change). A namespace it released still promises its quota."""
        mine = set(listed)
        others = governed_totals(
            governed_of(q) for ns, q in quotas.items() if not (ns in mine and _labelled(q) == project)
        )
        return CapacityView(dict(self.allocatable), others, self.error)


def _labelled(quota: Mapping[str, Any]) -> str | None:
    label = (quota.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
    return str(label) if label is not None else None


def governed_of(quota: Mapping[str, Any]) -> Mapping[str, Decimal]:
    """What one of Headroom's quotas promises: its governed values (a counting quota promises nothing)."""
    annotations = quota.get("metadata", {}).get("annotations") or {}
    if annotations.get(STATE_ANNOTATION) != GOVERNED:
        return {}
    return dict(_governed_values(annotations.get(GOVERNED_ANNOTATION) or ""))


@lru_cache(maxsize=8192)
def _governed_values(text: str) -> tuple[tuple[str, Decimal], ...]:
    """The governed-values annotation, parsed once per distinct text: a scrape sums every quota, and
    their annotations change only with a change (3000 quotas: 280 ms a scrape parsed each time)."""
    return tuple(observe_quota({"metadata": {"annotations": {GOVERNED_ANNOTATION: text}}}).governed.items())


def capacity_figures(
    quotas: Iterable[Mapping[str, Any]], allocatable: Mapping[str, Decimal]
) -> list[tuple[str, Decimal, Decimal | None, Decimal | None]]:
    """(resource, governed total, allocatable, ratio) per governed resource: what /metrics shows."""
    totals = governed_totals(governed_of(q) for q in quotas)
    out = []
    for resource, total in sorted(totals.items()):
        key = node_resource(resource)
        capacity = allocatable.get(key) if key is not None else None
        out.append((resource, total, capacity, overcommit_ratio(total, capacity)))
    return out
