"""History from Prometheus, over the kube-state-metrics v2 series.

One instant query per (resource, lookback) for all governed namespaces at once, never one per
project: a `max_over_time` subquery over the namespace totals. The queries are templates, so a
platform with other metric names can replace them (`--prometheus-query RESOURCE=TEMPLATE`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any

import aiohttp

from headroom.core.history import HistoryResult, PeakQuery
from headroom.core.quantity import CONTEXT, resource_kind
from headroom.shell.backoff import backoff_delays

# Prometheus adds in float64 (1.1 + 1.1 + 1.1 is 3.3000000000000003), and the derivation rounds every
# excess up to a whole millicore or Mi. Requests and limits are whole millicores and bytes, so the
# noise below those is dropped before anything is derived from it.
_RESOLUTION = {"cpu": Decimal("0.000001"), "memory": Decimal(1), "count": Decimal(1)}


def _denoise(value: Decimal, resource: str) -> Decimal:
    with localcontext(CONTEXT):
        return value.quantize(_RESOLUTION[resource_kind(resource)], rounding=ROUND_HALF_EVEN)


# Only pods that hold their requests count: Pending and Running.
_LIVE_PODS = (
    'max by (namespace, pod) (kube_pod_status_phase{{phase=~"Pending|Running", namespace=~"{namespaces}"}} == 1)'
)


def _container_sum(metric: str, resource: str, unit: str) -> str:
    return (
        f"sum by (namespace) ({metric}"
        f'{{{{resource="{resource}", unit="{unit}", namespace=~"{{namespaces}}"}}}}'
        f" * on (namespace, pod) group_left () {_LIVE_PODS})"
    )


DEFAULT_QUERIES: Mapping[str, str] = {
    "requests.cpu": _container_sum("kube_pod_container_resource_requests", "cpu", "core"),
    "requests.memory": _container_sum("kube_pod_container_resource_requests", "memory", "byte"),
    "limits.cpu": _container_sum("kube_pod_container_resource_limits", "cpu", "core"),
    "limits.memory": _container_sum("kube_pod_container_resource_limits", "memory", "byte"),
    "requests.ephemeral-storage": _container_sum("kube_pod_container_resource_requests", "ephemeral_storage", "byte"),
    "limits.ephemeral-storage": _container_sum("kube_pod_container_resource_limits", "ephemeral_storage", "byte"),
    "pods": f"count by (namespace) ({_LIVE_PODS})",
}


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _prom_duration(seconds: int) -> str:
    return f"{seconds}s"


def peak_query(template: str, namespaces: frozenset[str], lookback_seconds: int, step: str) -> str:
    """The PromQL for the peak of a namespace total over the window ending now."""
    # Namespace names are DNS labels: nothing in them is special to a regex or a PromQL string,
    # and anything else is refused rather than escaped.
    bad = [ns for ns in namespaces if not _DNS_LABEL.fullmatch(ns)]
    if bad:
        raise ValueError(f"not namespace names: {sorted(bad)}")
    pattern = "|".join(sorted(namespaces))
    inner = template.format(namespaces=pattern)
    return f"max_over_time(({inner})[{_prom_duration(lookback_seconds)}:{step}])"


@dataclass
class PrometheusHistory:
    url: str
    step: str = "5m"
    timeout: float = 30.0
    attempts: int = 3
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    name: str = "prometheus"

    async def _query(self, session: aiohttp.ClientSession, promql: str, at: float) -> dict[str, Any]:
        delays = backoff_delays(base=0.5, cap=8.0)
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                # POST: the namespace alternation can be longer than a URL may be.
                async with session.post(
                    f"{self.url.rstrip('/')}/api/v1/query", data={"query": promql, "time": f"{at:.3f}"}
                ) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status >= 500:
                        raise RuntimeError(f"Prometheus answered HTTP {resp.status}")
                    if body.get("status") != "success":
                        # A bad query will not get better by retrying.
                        return {"error": f"{body.get('errorType', 'error')}: {body.get('error', body)}"}
                    return body  # type: ignore[no-any-return]
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                last = exc
                if attempt + 1 < self.attempts:
                    await asyncio.sleep(next(delays))
        return {"error": f"Prometheus at {self.url} unavailable: {last!s}"}

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        if not query.namespaces:
            return HistoryResult()
        peaks: dict[tuple[str, str], Decimal] = {}
        errors: list[str] = []
        partial = False
        count = 0
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for resource in sorted(query.resources):
                template = self.queries.get(resource)
                if template is None:
                    continue  # not a resource Prometheus knows about: unknown, never zero
                promql = peak_query(template, query.namespaces, int(query.lookback.total_seconds()), self.step)
                count += 1
                body = await self._query(session, promql, query.now.timestamp())
                if "error" in body:
                    errors.append(f"{resource}: {body['error']}")
                    continue
                if body.get("warnings"):
                    partial = True
                data = body.get("data", {})
                if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
                    errors.append(f"{resource}: unexpected answer (resultType {data.get('resultType')!r})")
                    continue
                for sample in data["result"]:
                    try:
                        namespace = sample["metric"]["namespace"]
                        value = Decimal(sample["value"][1])
                        if not value.is_finite() or value < 0:
                            raise InvalidOperation  # NaN, Inf or negative: garbage, treat as unknown
                        value = _denoise(value, resource)
                    except (KeyError, IndexError, TypeError, InvalidOperation):
                        partial = True
                        continue
                    if namespace in query.namespaces:
                        peaks[(namespace, resource)] = value
        return HistoryResult(peaks=peaks, error="; ".join(errors) or None, partial=partial, queries=count)
