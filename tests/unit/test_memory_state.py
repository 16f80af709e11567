"""What the operator keeps per Project stays small, and still answers what it is kept for.

The per-Project metrics are made at scrape time from one small tuple per Project, with the names,
labels and values the dashboard and the PrometheusRule read; a stored quota keeps only the digest of
its managedFields that drift detection reads, and drift detection still names the same editors.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from headroom.core.forecast import Forecast
from headroom.core.names import FIELD_MANAGER, GOVERNED_ANNOTATION
from headroom.core.planning import observe_quota
from headroom.shell.metrics import Metrics
from headroom.shell.store import Store
from prometheus_client.parser import text_string_to_metric_families

D = Decimal


def plan(
    namespaces: dict[str, tuple[Decimal, Decimal]], pending: bool = False, forecasts: dict[str, Any] | None = None
) -> Any:
    """What observe_plan reads of a plan: per namespace, requests.cpu (hard, used)."""
    return SimpleNamespace(
        forecasts=forecasts or {},
        utilization={(ns, "requests.cpu"): used * 100 / hard for ns, (hard, used) in namespaces.items()},
        governed={ns: {"requests.cpu": hard} for ns, (hard, _) in namespaces.items()},
        used={ns: {"requests.cpu": used} for ns, (_, used) in namespaces.items()},
        status={"pendingChange": {"id": "x"}} if pending else {},
        events=(),
    )


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = b"".join(metrics.exposition()).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("headroom_quota_", "headroom_pending_changes"))
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def test_per_project_series_are_scraped_with_their_names_labels_and_values() -> None:
    metrics = Metrics()
    metrics.observe_plan(SimpleNamespace(name="shop"), plan({"web": (D(4), D(3)), "db": (D(2), D(1))}, pending=True))
    seen = scraped(metrics)
    assert (
        seen[key("headroom_quota_utilization_percent", project="shop", namespace="web", resource="requests.cpu")]
        == 75.0
    )
    assert seen[key("headroom_quota_hard", project="shop", namespace="db", resource="requests.cpu")] == 2.0
    assert seen[key("headroom_quota_used", project="shop", namespace="db", resource="requests.cpu")] == 1.0
    assert seen[key("headroom_pending_changes", project="shop")] == 1.0
    assert len(seen) == 7


def test_a_namespace_that_left_and_a_deleted_project_leave_no_series() -> None:
    metrics = Metrics()
    metrics.observe_plan(SimpleNamespace(name="shop"), plan({"web": (D(4), D(3)), "db": (D(2), D(1))}))
    metrics.observe_plan(SimpleNamespace(name="shop"), plan({"web": (D(4), D(2))}))
    assert {dict(labels).get("namespace") for _, labels in scraped(metrics)} == {"web", None}
    metrics.forget("shop")
    assert scraped(metrics) == {}


def test_forecasts_are_scraped_and_leave_with_their_project() -> None:
    metrics = Metrics()
    full_at = datetime(2026, 12, 11, 6, 0, tzinfo=UTC)
    forecasts = {
        "web": {"requests.cpu": Forecast(D("0.4"), full_at, 14, D(8))},
        "db": {"requests.cpu": Forecast(D("-0.25"), None, 14, D(2))},
    }
    metrics.observe_plan(
        SimpleNamespace(name="shop"), plan({"web": (D(8), D(5)), "db": (D(2), D(1))}, False, forecasts)
    )
    seen = scraped(metrics)
    web = {"project": "shop", "namespace": "web", "resource": "requests.cpu"}
    db = {**web, "namespace": "db"}
    assert seen[key("headroom_quota_growth_per_day", **web)] == 0.4
    assert seen[key("headroom_quota_growth_per_day", **db)] == -0.25
    assert seen[key("headroom_quota_forecast_full_timestamp_seconds", **web)] == full_at.timestamp()
    assert key("headroom_quota_forecast_full_timestamp_seconds", **db) not in seen  # shrinking: no date
    metrics.observe_plan(SimpleNamespace(name="shop"), plan({"web": (D(8), D(5))}))
    assert not [k for k in scraped(metrics) if "growth" in k[0] or "forecast" in k[0]]


def quota(*editors: dict[str, Any]) -> dict[str, Any]:
    own = {
        "manager": FIELD_MANAGER,
        "operation": "Apply",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:annotations": {f"f:{GOVERNED_ANNOTATION}": {}, "f:headroom.dev/state": {}}},
            "f:spec": {"f:hard": {"f:requests.cpu": {}}},
        },
    }
    controller = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "subresource": "status",
        "fieldsV1": {"f:status": {"f:hard": {"f:requests.cpu": {}}, "f:used": {"f:requests.cpu": {}}}},
    }
    return {
        "metadata": {
            "name": "headroom",
            "namespace": "web",
            "labels": {"headroom.dev/project": "shop"},
            "annotations": {GOVERNED_ANNOTATION: '{"requests.cpu":"4"}', "headroom.dev/state": "governed"},
            "managedFields": [own, controller, *editors],
        },
        "spec": {"hard": {"requests.cpu": "4"}},
        "status": {"hard": {"requests.cpu": "4"}, "used": {"requests.cpu": "3"}},
    }


def test_a_quota_only_headroom_and_the_quota_controller_wrote_keeps_no_managed_fields() -> None:
    store = Store()
    store.quotas["web"] = quota()
    assert store.quotas["web"]["metadata"]["managedFields"] == []
    assert store.quota_namespaces_of("shop") == {"web"}


def test_the_digest_names_the_same_editors_as_the_whole_managed_fields() -> None:
    spec_edit = {
        "manager": "kubectl-edit",
        "operation": "Update",
        "fieldsV1": {"f:spec": {"f:hard": {"f:requests.cpu": {}}}},
    }
    annotation_edit = {
        "manager": "argocd",
        "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{GOVERNED_ANNOTATION}": {}}}},
    }
    label_edit = {
        "manager": "kubectl-label",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}},
    }
    whole = quota(spec_edit, annotation_edit, label_edit)
    store = Store()
    store.quotas["web"] = copy.deepcopy(whole)
    kept = store.quotas["web"]
    assert observe_quota(kept).governed_edited_by == observe_quota(whole).governed_edited_by == ("argocd",)
    spec_writers = {
        m["manager"]
        for m in kept["metadata"]["managedFields"]
        if m.get("subresource") != "status" and "f:spec" in m["fieldsV1"]
    }
    assert spec_writers == {"kubectl-edit"}
    # Put in again (a re-list): the digest of a digest is the same digest.
    store.quotas["web"] = copy.deepcopy(kept)
    assert store.quotas["web"]["metadata"]["managedFields"] == kept["metadata"]["managedFields"]
    assert len(str(kept["metadata"]["managedFields"])) < len(str(whole["metadata"]["managedFields"])) / 2


def test_metrics_are_served_over_http_whole_for_thousands_of_projects() -> None:
    import socket
    import urllib.request

    from headroom.shell.metrics import serve_metrics

    metrics = Metrics()
    for i in range(1500):  # more series than one chunk of lines
        metrics.observe_plan(SimpleNamespace(name=f"p{i}"), plan({f"ns{i}": (D(4), D(i % 4))}, pending=i % 2 == 0))
    metrics.writes.labels("status").inc()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve_metrics(port, metrics.exposition)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
    finally:
        server.shutdown()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert len(families["headroom_quota_utilization_percent"].samples) == 1500
    assert len(families["headroom_pending_changes"].samples) == 1500
    hard = {s.labels["project"]: s.value for s in families["headroom_quota_hard"].samples}
    assert hard["p1499"] == 4
    used = {s.labels["namespace"]: s.value for s in families["headroom_quota_used"].samples}
    assert used["ns1499"] == 3
    assert [s.value for s in families["headroom_api_writes"].samples if s.name.endswith("_total")] == [1]


def test_stored_objects_share_their_keys_and_short_values_but_keep_what_they_say() -> None:
    import json

    from headroom.shell.store import plain

    def parsed(ns: str) -> dict[str, Any]:
        # Each object parsed on its own, as two watch events bring them: equal strings, distinct copies.
        text = json.dumps({"metadata": {"namespace": ns, "labels": {"team": "checkout-" + "x" * 80}}, "spec": {}})
        return dict(json.loads(text))

    first, second = plain(parsed("web")), plain(parsed("web"))
    assert first == parsed("web")
    (k1,), (k2,) = [[k for k in o if k == "metadata"] for o in (first, second)]
    assert k1 is k2
    assert first["metadata"]["namespace"] is second["metadata"]["namespace"]
    # Long values (annotations of recorded JSON, say) are rarely shared: they are left as they are.
    assert first["metadata"]["labels"]["team"] is not second["metadata"]["labels"]["team"]


def test_a_reconcile_woken_from_a_kopf_handler_keeps_nothing_of_the_handlers_context() -> None:
    """Kopf runs a handler with the event's cause (its whole parsed object) in a context variable,
    and a task inherits the context it is created in. The reconcile a handler wakes must not keep
    that cause alive once the handler has returned: at thousands of Projects that is one raw object
    each, for as long as the operator runs."""
    import asyncio
    import contextvars
    import gc
    import weakref

    from tests.unit.test_admission import _reconciler

    cause_var: contextvars.ContextVar[object] = contextvars.ContextVar("cause_var")

    class Cause:
        """Stands for Kopf's cause: what the handler's context holds."""

    async def run() -> tuple[bool, list[str]]:
        writer, reconciler = _reconciler(["shop"], max_in_flight=4)
        cause = Cause()
        held = weakref.ref(cause)

        def handler(cause: Cause) -> None:  # what Kopf does around a handler
            cause_var.set(cause)
            reconciler.schedule("shop")

        written = writer.apply_quota

        async def apply_quota(project: Any, desired: Any) -> None:
            # The reconcile leaves a timer behind, as an alert held until business hours does.
            reconciler.schedule_at("shop", datetime.now(UTC).replace(year=2100))
            await written(project, desired)

        writer.apply_quota = apply_quota  # type: ignore[method-assign]
        contextvars.copy_context().run(handler, cause)
        del cause
        for _ in range(200):
            if writer.projects_written:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the worker has finished its reconcile
        gc.collect()
        return held() is None, writer.projects_written

    released, onboarded = asyncio.run(run())
    assert onboarded == ["shop"]  # the reconcile did run...
    assert released  # ...and nothing keeps the handler's cause


def _status(i: int) -> dict[str, Any]:
    """A Project's status shaped as Headroom writes it for one governed namespace."""
    resources = ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"]
    figures = {r: f"{i % 97 + 1}{'Gi' if 'memory' in r else 'm' if 'cpu' in r else ''}" for r in resources}
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": "AsExpected",
            "message": f"{kind} of project-{i:05d} checked; nothing to report at this time",
            "lastTransitionTime": "2026-12-06T03:50:12Z",
            "observedGeneration": 1,
        }
        for kind in ("HistoryAvailable", "ChangePending", "QuotaNearLimit", "QuotaDenied", "AlertsDelivered")
    ]
    return {
        "observedGeneration": 1,
        "phase": "Governed",
        "approved": {"namespaces": [f"ns-{i:05d}"], "terms": {"lookback": "30d", "minimum": dict(figures)}},
        "conditions": conditions,
        "namespaces": [
            {
                "name": f"ns-{i:05d}",
                "state": "Governed",
                "hard": dict(figures),
                "used": dict(figures),
                "recommended": dict(figures),
                "reasons": {r: "peak+20%" for r in resources},
            }
        ],
        "forecastAlerts": {r: {"state": "ok", "since": "2026-12-06T03:50:12Z"} for r in resources},
        "summary": {"governedNamespaces": 1},
    }


def test_a_projects_status_is_kept_packed_and_reads_as_it_was_written() -> None:
    import json
    import tracemalloc

    from headroom.shell.store import PackedStatus, plain, unpacked

    def project(i: int) -> dict[str, Any]:
        body = {
            "metadata": {"name": f"project-{i:05d}", "uid": f"u{i}", "generation": 2},
            "spec": {"namespaces": [{"name": f"ns-{i:05d}"}]},
            "status": _status(i),
        }
        return plain(json.loads(json.dumps(body)), keep_managed_fields=False)  # as a watch event brings it

    store = Store()
    store.projects["project-00007"] = project(7)
    kept = store.projects["project-00007"]
    assert isinstance(kept["status"], PackedStatus)
    assert kept["status"] == _status(7)
    assert kept["status"].get("approved") == _status(7)["approved"]
    assert unpacked(kept)["status"] == _status(7)
    assert type(unpacked(kept)["status"]) is dict  # a reconcile reads a plain dict, decoded once
    # What reads another Project's status through the Store still finds it there.
    assert store.confirmed_claim("project-00007", "ns-00007")  # its status's approved namespaces
    assert not store.confirmed_claim("project-00007", "ns-00008")

    # Packed, 300 statuses take well under a third of what the parsed ones took.
    bodies = [project(i) for i in range(300)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    parsed = [plain(b["status"]) for b in bodies]
    as_parsed = tracemalloc.get_traced_memory()[0] - before
    del parsed
    before = tracemalloc.get_traced_memory()[0]
    packed = [PackedStatus(b["status"]) for b in bodies]
    as_packed = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert packed[299] == _status(299)
    assert as_packed * 3 < as_parsed, (as_packed, as_parsed)


def test_a_reconcile_remembers_its_status_packed_and_writes_it_once() -> None:
    import asyncio

    from headroom.shell.store import PackedStatus

    from tests.unit.test_admission import _reconciler

    async def run() -> list[int]:
        writer, reconciler = _reconciler(["shop"], max_in_flight=4)
        written: list[Any] = []
        original = writer.patch_status

        async def patch_status(name: str, patch: Any) -> None:
            written.append(patch)
            await original(name, patch)

        writer.patch_status = patch_status  # type: ignore[method-assign]
        counts = []
        for _ in range(4):  # onboarding, governing, then nothing new
            await reconciler.reconcile("shop")
            counts.append(len(written))
        stored = reconciler.store.projects["shop"]["status"]
        assert isinstance(stored, PackedStatus)
        assert stored.get("phase") == written[-1].get("phase") and stored.get("conditions")
        return counts

    counts = asyncio.run(run())
    assert counts[-1] >= 1
    assert counts[-1] == counts[-2]  # the steady pass reads the packed status and finds nothing to write


def test_reconciles_waiting_for_their_place_hold_their_status_packed() -> None:
    """At a start over thousands of Projects every reconcile waits for its place at once: each must
    not hold its status decoded meanwhile (about 15 KiB parsed, 40 MiB at 3,000). What 300 waiting
    reconciles hold is measured with and without a status on their Projects."""
    import asyncio
    import json
    import tracemalloc

    from headroom.shell.store import plain

    from tests.unit.test_admission import _reconciler

    names = [f"team-{i:03d}" for i in range(300)]

    async def waiting(with_status: bool) -> int:
        writer, reconciler = _reconciler(names, max_in_flight=2)
        if with_status:
            for i, name in enumerate(names):
                body = dict(reconciler.store.projects[name])
                body["status"] = json.loads(json.dumps(_status(i)))
                reconciler.store.projects[name] = body
        gate = asyncio.Event()
        original = writer.apply_limitrange

        async def held(project: Any, desired: Any) -> None:
            await gate.wait()  # the write limiter, full: every other reconcile waits for a place
            await original(project, desired)

        writer.apply_limitrange = held  # type: ignore[method-assign]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(reconciler.reconcile(name)) for name in names]
        for _ in range(20):
            await asyncio.sleep(0.01)
        held_bytes = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        gate.set()
        await asyncio.gather(*tasks)
        assert set(writer.projects_written) == set(names)
        return held_bytes

    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    parsed = [plain(_status(i)) for i in range(len(names))]
    decoded_statuses = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    del parsed
    by_status = asyncio.run(waiting(True)) - asyncio.run(waiting(False))
    assert by_status < decoded_statuses / 2, (by_status, decoded_statuses)
