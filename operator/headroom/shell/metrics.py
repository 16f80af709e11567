"""Prometheus metrics on /metrics."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, SupportsFloat

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from headroom.core.planning import Plan
    from headroom.core.spec import ProjectSpec
    from headroom.shell.capacity import CapacityReader


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The per-Project figures: rendered at scrape time from one small tuple per Project (see
        # ProjectFigures), not kept as labelled gauge children (about 14 KiB a Project).
        self.figures = ProjectFigures()  # served beside the registry (see exposition)
        self.changes_applied = Counter(
            "headroom_changes_applied_total", "Quota changes applied", ["project"], registry=r
        )
        self.rule_approvals = Counter(
            "headroom_rule_approvals_total",
            "Raises applied without a person, by the rule that approved them",
            ["rule"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "headroom_alerts_sent_total", "Alert notifications delivered", ["sink", "state"], registry=r
        )
        self.alerts_deferred = Counter(
            "headroom_alerts_deferred_total", "Alert notifications deferred to business hours", registry=r
        )
        self.alerts_failed = Counter(
            "headroom_alert_delivery_failures_total", "Failed alert delivery attempts (retried)", ["sink"], registry=r
        )
        self.quota_denials = Counter(
            "headroom_quota_denials_total",
            "Pods refused by Headroom's quota (FailedCreate Events), per exceeded resource",
            ["project", "namespace", "resource"],
            registry=r,
        )
        self.denial_watch_requests = Counter(
            "headroom_denial_watch_requests_total",
            "Requests of the FailedCreate Events watch: list, resume (from the last version), from-now",
            ["how"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "headroom_reconcile_duration_seconds", "Time to reconcile one Project", registry=r
        )
        self.webhook_secret_missing = Gauge(
            "headroom_webhook_secret_missing_projects",
            "Projects whose own webhook Secret is missing or unreadable (their alerts wait for it)",
            registry=r,
        )
        self.reconcile_errors = Counter(
            "headroom_reconcile_errors_total", "Failed reconciles (retried)", ["error"], registry=r
        )
        self.writes = Counter("headroom_api_writes_total", "Writes to the Kubernetes API", ["kind"], registry=r)
        self.history_queries = Counter(
            "headroom_history_queries_total", "Queries to the history source", ["source"], registry=r
        )
        self.history_duration = Histogram(
            "headroom_history_fetch_seconds", "Time to fetch peaks for one lookback", registry=r
        )

    def capacity_from(
        self,
        quotas: Callable[[], Iterable[Mapping[str, Any]]],
        reader: CapacityReader | None,
        budget: Mapping[str, Decimal],
    ) -> None:
        """Publish the cluster's capacity figures, computed from these sources at scrape time."""
        self.registry.register(CapacityFigures(quotas, reader, budget))

    def observe_plan(self, spec: ProjectSpec, plan: Plan) -> None:
        # Replaced whole: a namespace that left the Project does not keep its last utilization (and alerts).
        self.figures.put(spec.name, plan)
        for event in plan.events:
            if event.reason == "ChangeApplied":
                self.changes_applied.labels(spec.name).inc()
                by = str((plan.status.get("lastAppliedChange") or {}).get("approvedBy") or "")
                if by.startswith("rule "):  # approved by a platform rule (core/approval_rules.py)
                    self.rule_approvals.labels(by.removeprefix("rule ")).inc()

    def forget(self, project: str) -> None:
        """Remove every series of a deleted Project."""
        self.figures.forget(project)

    def exposition(self) -> Iterator[bytes]:
        """/metrics: the registry's families, then the per-Project ones, in chunks."""
        yield generate_latest(self.registry)
        for text in self.figures.exposition():
            yield text.encode()

    def serve(self, port: int) -> None:
        if port:
            serve_metrics(port, self.exposition)


_Row = tuple[str, str, float]  # namespace, resource, value


class ProjectFigures:
    """headroom_quota_utilization_percent, _hard, _used, headroom_pending_changes and the forecasts
    (headroom_quota_growth_per_day, headroom_quota_forecast_full_timestamp_seconds), made at scrape time.

    A labelled Gauge keeps a child object (a lock, a value holder, its label tuple) per series: 16
    series a Project cost about 14 KiB, most of the operator's memory per Project. Here each
    Project's last plan leaves one tuple of (namespace, resource, value) rows, with the resource
    names interned, and the series are built only while /metrics is being read. Names, labels and
    values are those of the gauges they replace (the PrometheusRule and the dashboard use them).
    The values are the plan's rather than re-read from the store: the plan already holds a change
    it has just applied, before the watch brings the quota back.
    """

    def __init__(self) -> None:
        self._projects: dict[str, tuple[tuple[_Row, ...], tuple[_Row, ...], tuple[_Row, ...], bool]] = {}
        # Forecasts: per Project, (growth rows, full-at rows); only Projects whose history has days.
        self._forecasts: dict[str, tuple[tuple[_Row, ...], tuple[_Row, ...]]] = {}

    def put(self, project: str, plan: Plan) -> None:
        def rows(table: Iterator[tuple[str, str, SupportsFloat]]) -> tuple[_Row, ...]:
            return tuple((ns, sys.intern(r), float(v)) for ns, r, v in table)

        self._projects[project] = (
            rows((ns, r, pct) for (ns, r), pct in plan.utilization.items()),
            rows((ns, r, v) for ns, values in plan.governed.items() for r, v in values.items()),
            rows((ns, r, v) for ns, values in plan.used.items() for r, v in values.items()),
            bool(plan.status.get("pendingChange")),
        )
        trends = [(ns, r, f) for ns, by in plan.forecasts.items() for r, f in by.items()]
        if trends:
            self._forecasts[project] = (
                rows((ns, r, f.growth_per_day) for ns, r, f in trends),
                rows((ns, r, f.full_at.timestamp()) for ns, r, f in trends if f.full_at is not None),
            )
        else:
            self._forecasts.pop(project, None)

    def forget(self, project: str) -> None:
        self._projects.pop(project, None)
        self._forecasts.pop(project, None)

    def exposition(self) -> Iterator[str]:
        """The series in Prometheus' text format, a family at a time, written straight from the rows.

        Not a Collector: prometheus_client would first build a Sample and a label dict for each of
        the ~26 series a Project has, and then the whole page as one string. At 3 000 Projects that
        was about 90 MiB for every scrape, the operator's high-water mark; here a scrape holds one
        chunk of lines at a time."""
        projects = list(self._projects.items())
        forecasts = list(self._forecasts.items())
        for index, (name, text) in enumerate(_QUOTA_FAMILIES):
            yield from _family(name, text, ((p, rows[index]) for p, (*rows, _) in projects))
        yield from _family(
            _PENDING[0], _PENDING[1], (), [(p, 1.0 if pending else 0.0) for p, (*_, pending) in projects]
        )
        for index, (name, text) in enumerate(_FORECAST_FAMILIES):
            yield from _family(name, text, ((p, tables[index]) for p, tables in forecasts))


_QUOTA_FAMILIES = (
    ("headroom_quota_utilization_percent", "Used as a percentage of the governed hard value"),
    ("headroom_quota_hard", "Governed hard value (cores, bytes or count)"),
    ("headroom_quota_used", "Current use (cores, bytes or count)"),
)
_PENDING = ("headroom_pending_changes", "Projects with a change awaiting sign-off")
_FORECAST_FAMILIES = (
    (
        "headroom_quota_growth_per_day",
        "Growth a day of the trend of daily peaks (Theil-Sen; cores, bytes or count; negative when shrinking)",
    ),
    (
        "headroom_quota_forecast_full_timestamp_seconds",
        "When the trend of daily peaks reaches the governed hard value (Unix time); absent when flat, "
        "shrinking or fewer than 7 days are known",
    ),
)
_LINES_PER_CHUNK = 2000


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """A sample value as Prometheus writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _family(
    name: str,
    text: str,
    tables: Iterable[tuple[str, tuple[_Row, ...]]],
    per_project: Iterable[tuple[str, float]] = (),
) -> Iterator[str]:
    """One gauge family: its HELP and TYPE lines, then its samples, in chunks of lines."""
    chunk = [f"# HELP {name} {text}\n# TYPE {name} gauge\n"]
    for project, value in per_project:
        chunk.append(f'{name}{{project="{_label(project)}"}} {_number(value)}\n')
    for project, rows in tables:
        for namespace, resource, value in rows:
            chunk.append(
                f'{name}{{project="{_label(project)}",namespace="{_label(namespace)}",'
                f'resource="{_label(resource)}"}} {_number(value)}\n'
            )
            if len(chunk) >= _LINES_PER_CHUNK:
                yield "".join(chunk)
                chunk = []
    yield "".join(chunk)


class CapacityFigures(Collector):
    """headroom_capacity_governed_hard, _allocatable, _overcommit_ratio and _budget_ratio per resource.

    Summed while /metrics is read, from the quotas the watch keeps: nothing is kept between scrapes,
    and a reconcile never pays for it.
    """

    def __init__(
        self,
        quotas: Callable[[], Iterable[Mapping[str, Any]]],
        reader: CapacityReader | None,
        budget: Mapping[str, Decimal],
    ) -> None:
        self._quotas, self._reader, self._budget = quotas, reader, dict(budget)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from headroom.shell.capacity import capacity_figures

        allocatable = self._reader.allocatable if self._reader is not None else {}
        governed = GaugeMetricFamily(
            "headroom_capacity_governed_hard",
            "Sum of every governed quota's hard value (cores, bytes or count)",
            labels=["resource"],
        )
        capacity = GaugeMetricFamily(
            "headroom_capacity_allocatable",
            "Allocatable capacity of the schedulable nodes that the resource draws on",
            labels=["resource"],
        )
        ratio = GaugeMetricFamily(
            "headroom_capacity_overcommit_ratio", "Governed total divided by allocatable capacity", labels=["resource"]
        )
        budget = GaugeMetricFamily(
            "headroom_capacity_budget_ratio", "The overcommit budget (--max-overcommit)", labels=["resource"]
        )
        for resource, total, node, overcommit in capacity_figures(list(self._quotas()), allocatable):
            governed.add_metric([resource], float(total))
            if node is not None:
                capacity.add_metric([resource], float(node))
            if overcommit is not None:
                ratio.add_metric([resource], float(overcommit))
        for resource, limit in sorted(self._budget.items()):
            budget.add_metric([resource], float(limit))
        yield from (governed, capacity, ratio, budget)


def serve_metrics(port: int, exposition: Callable[[], Iterator[bytes]]) -> ThreadingHTTPServer:
    """/metrics on `port`, in a daemon thread: the page is written as it is made, never whole."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.end_headers()  # HTTP/1.0: the page ends when the connection closes
            for chunk in exposition():
                self.wfile.write(chunk)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news

    server = ThreadingHTTPServer(("", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
