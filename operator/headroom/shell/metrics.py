"""Prometheus metrics on /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from headroom.core.planning import Plan
    from headroom.core.spec import ProjectSpec


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.utilization = Gauge("headroom_quota_utilization_percent",
                                 "Used as a percentage of the governed hard value",
                                 ["project", "namespace", "resource"], registry=r)
        self.hard = Gauge("headroom_quota_hard", "Governed hard value (cores, bytes or count)",
                          ["project", "namespace", "resource"], registry=r)
        self.used = Gauge("headroom_quota_used", "Current use (cores, bytes or count)",
                          ["project", "namespace", "resource"], registry=r)
        self.pending_changes = Gauge("headroom_pending_changes", "Projects with a change awaiting sign-off",
                                     ["project"], registry=r)
        self.changes_applied = Counter("headroom_changes_applied_total", "Quota changes applied",
                                       ["project"], registry=r)
        self.alerts_sent = Counter("headroom_alerts_sent_total", "Alert notifications delivered",
                                   ["sink", "state"], registry=r)
        self.alerts_deferred = Counter("headroom_alerts_deferred_total",
                                       "Alert notifications deferred to business hours", registry=r)
        self.alerts_failed = Counter("headroom_alert_delivery_failures_total",
                                     "Failed alert delivery attempts (retried)", ["sink"], registry=r)
        self.reconcile_duration = Histogram("headroom_reconcile_duration_seconds",
                                            "Time to reconcile one Project", registry=r)
        self.webhook_secret_missing = Gauge(
            "headroom_webhook_secret_missing_projects",
            "Projects whose own webhook Secret is missing or unreadable (their alerts wait for it)", registry=r)
        self.reconcile_errors = Counter("headroom_reconcile_errors_total", "Failed reconciles (retried)",
                                        ["error"], registry=r)
        self.writes = Counter("headroom_api_writes_total", "Writes to the Kubernetes API", ["kind"], registry=r)
        self.history_queries = Counter("headroom_history_queries_total", "Queries to the history source",
                                       ["source"], registry=r)
        self._series: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}
        self.history_duration = Histogram("headroom_history_fetch_seconds",
                                          "Time to fetch peaks for one lookback", registry=r)

    def observe_plan(self, spec: ProjectSpec, plan: Plan) -> None:
        series: set[tuple[Gauge, tuple[str, ...]]] = set()

        def put(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
            gauge.labels(*labels).set(value)
            series.add((gauge, labels))

        for (namespace, resource), pct in plan.utilization.items():
            put(self.utilization, (spec.name, namespace, resource), float(pct))
        for namespace, values in plan.governed.items():
            for resource, value in values.items():
                put(self.hard, (spec.name, namespace, resource), float(value))
        for namespace, values in plan.used.items():
            for resource, value in values.items():
                put(self.used, (spec.name, namespace, resource), float(value))
        put(self.pending_changes, (spec.name,), 1 if plan.status.get("pendingChange") else 0)
        # A namespace that left the Project must not keep its last utilization (and alerts) forever.
        for gauge, labels in self._series.get(spec.name, set()) - series:
            gauge.remove(*labels)
        self._series[spec.name] = series
        for event in plan.events:
            if event.reason == "ChangeApplied":
                self.changes_applied.labels(spec.name).inc()

    def forget(self, project: str) -> None:
        """Remove every series of a deleted Project."""
        for gauge, labels in self._series.pop(project, set()):
            gauge.remove(*labels)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
