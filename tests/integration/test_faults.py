"""Faults, one per test: Headroom keeps its promises when the world around it breaks.

Every test breaks something real (the API server, the operator process, a watch connection, the
history source, the alert receivers, a hand edit) and checks the four promises: no quota lowered
wrongly, no approval lost or applied twice, no alert lost or sent twice, and convergence after
recovery. Each prints the time it took to recover; the figures are summed up at the end of the run.

Tests that stop, restart or throttle the API server run on a control plane of their own (audited,
module-scoped), so the suite's shared cluster is never disturbed; they are skipped when the suite
runs against an external cluster (HEADROOM_TEST_KUBECONFIG).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from headroom.core.quantity import parse_quantity
from headroom.shell.handlers import WATCH_INACTIVITY_SECONDS
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, user_name, wait_for
from hack.localcluster.operator import OPERATOR_NAMESPACE, OperatorProcess, custom, project_manifest
from tests.harness.faults import (
    AuditLog,
    FakePrometheus,
    Recorder,
    StallingProxy,
    bump_etcd_revision,
    dedicated_cluster,
    health,
    kubeconfig_via,
    metric,
    now_utc,
    start_apiserver,
    stop_apiserver,
    wait_log,
)
from tests.harness.receivers import Alertmanager, WebhookReceiver, alertmanager_binary

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
ALWAYS_OPEN = "Mon-Sun 00:00-24:00 UTC"
SMALL = {"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}}

FIGURES: list[str] = []


def figure(fault: str, what: str, seconds: float) -> None:
    line = f"{fault}: {what} {seconds:.1f}s"
    FIGURES.append(line)
    print(line)


@pytest.fixture(scope="module", autouse=True)
def _print_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not FIGURES:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("fault recovery times (tests/integration/test_faults.py):")
        for line in FIGURES:
            reporter.write_line(f"  {line}")


# ------------------------------------------------------------------------------------------- helpers


def get_project(client: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(client).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def status(client: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(get_project(client, name).get("status") or {})


def condition(client: k8s.ApiClient, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in status(client, name).get("conditions") or [] if c["type"] == kind), {})


def hard(client: k8s.ApiClient, namespace: str) -> dict[str, str]:
    return dict(k8s.CoreV1Api(client).read_namespaced_resource_quota("headroom", namespace).spec.hard or {})


def governed(client: k8s.ApiClient, namespace: str, timeout: float = 60) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        quota = k8s.CoreV1Api(client).read_namespaced_resource_quota("headroom", namespace)
        if (quota.metadata.annotations or {}).get("headroom.dev/state") == "governed":
            return dict(quota.spec.hard)
        return None

    return wait_for(probe, timeout, f"a governed quota in {namespace}")


def new_namespace(client: k8s.ApiClient, prefix: str = "f") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def create_project(client: k8s.ApiClient, namespaces: list[str], **spec: Any) -> str:
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(client).create_cluster_custom_object(GROUP, VERSION, PLURAL, project_manifest(name, namespaces, **spec))
    return name


def request(client: k8s.ApiClient, project: str, namespace: str, values: dict[str, str]) -> None:
    """A change request as the sign-off policy wants it (where it is installed): naming who asks."""
    namespaces = get_project(client, project)["spec"]["namespaces"]
    for ns in namespaces:
        if ns["name"] == namespace:
            ns["requested"] = values
    custom(client).patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project,
        {
            "metadata": {"annotations": {"headroom.dev/requested-by": user_name(client)}},
            "spec": {"namespaces": namespaces},
        },
    )


def pending_id(client: k8s.ApiClient, project: str, other_than: str | None = None) -> str:
    def probe() -> str | None:
        change = (status(client, project).get("pendingChange") or {}).get("id")
        return change if change and change != other_than else None

    return wait_for(probe, 30, f"a pending change on {project}")


def approve(client: k8s.ApiClient, project: str, change: str) -> None:
    custom(client).patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project,
        {"metadata": {"annotations": {"headroom.dev/approved-change": change, "headroom.dev/approved-by": "reviewer"}}},
    )


def applied(client: k8s.ApiClient, project: str, change: str) -> dict[str, Any] | None:
    """The Project's status once it records `change` as applied and nothing as pending."""
    current = status(client, project)
    last = current.get("lastAppliedChange") or {}
    return current if last.get("id") == change and not current.get("pendingChange") else None


def events(client: k8s.ApiClient, project: str, reason: str) -> list[Any]:
    return list(
        k8s.CoreV1Api(client)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={project},reason={reason}")
        .items
    )


def writes_by_kind(operator: OperatorProcess) -> dict[str, float]:
    return {
        kind: operator.metric("headroom_api_writes_total", {"kind": kind})
        for kind in ("resourcequota", "limitrange", "status", "delete")
    }


def empty_history(path: Path) -> list[str]:
    path.write_text("time,namespace,resource,value\n")
    return ["--history-source=file", f"--history-file={path}"]


def never_below(samples: list[dict[str, str] | None], resource: str, floor: float) -> list[float]:
    """The values of `resource` seen while a fault lasted, checked never to go below `floor`."""
    seen = [float(parse_quantity(v[resource])) for v in samples if v and resource in v]
    assert seen, "no sample of the quota was taken"
    assert min(seen) >= floor, f"{resource} went down to {min(seen)} (below {floor}) during the fault: {seen}"
    return seen


# ------------------------------------------------------------------------- a control plane of our own


@dataclass
class Dedicated:
    cluster: Cluster
    audit: AuditLog
    admin: k8s.ApiClient
    flags: tuple[str, ...]


@pytest.fixture(scope="module")
def dedicated(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dedicated]:
    if cluster.plane is None:
        pytest.skip(
            "stops and restarts control-plane components: needs the suite's own control plane, "
            "not an external cluster (HEADROOM_TEST_KUBECONFIG)"
        )
    with dedicated_cluster(tmp_path_factory.mktemp("dedicated")) as (own, audit):
        assert own.plane is not None
        yield Dedicated(own, audit, own.api_client(), tuple(own.plane.apiserver_flags))


@pytest.fixture
def run_operator(
    dedicated: Dedicated, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators (as the ServiceAccount) on the dedicated cluster; all Projects go afterwards."""
    started: list[OperatorProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, cluster: Cluster | None = None) -> OperatorProcess:
        operator = OperatorProcess(
            cluster or dedicated.cluster, tmp_path / f"operator-{len(started)}", args=args, env=env or {}
        )
        started.append(operator.start())
        return operator

    yield start
    report = getattr(request.node, "rep_call", None)
    for operator in started:
        operator.stop()
        if report is not None and report.failed:
            print(operator.logs(60))
    if report is not None and report.failed and dedicated.cluster.plane is not None:
        print(dedicated.cluster.plane.logs(20))
    projects = custom(dedicated.admin).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    for item in projects:
        with contextlib.suppress(ApiException):
            custom(dedicated.admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, item["metadata"]["name"])


# ============================================================================ on the shared cluster


@pytest.fixture
def doomed(admin: k8s.ApiClient) -> Iterator[list[str]]:
    """Names of Projects on the shared cluster to delete after the test."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ApiException):
            custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def test_a_quota_edited_or_deleted_by_hand_is_restored(
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    doomed: list[str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """Drift: a hand edit (lower or higher, another field manager) is undone with one write and a
    Warning Event naming the editor; a deleted quota comes back with the same values."""
    operator = start_operator(*empty_history(tmp_path / "h.csv"))
    name = create_project(admin, [namespace], quota=SMALL)
    doomed.append(name)
    assert governed(admin, namespace) == {"requests.cpu": "2", "pods": "10"}
    wait_for(lambda: condition(admin, name, "Ready").get("status") == "True", 30, "Ready")
    core = k8s.CoreV1Api(admin)
    # The operator's own writes (counting, then governed) are not drift: no Warning for them.
    assert events(admin, name, "QuotaRestored") == []

    for edit, value in (("lowered", "1"), ("raised", "100")):
        writes = operator.metric("headroom_api_writes_total", {"kind": "resourcequota"})
        core.patch_namespaced_resource_quota(
            "headroom", namespace, {"spec": {"hard": {"requests.cpu": value}}}, field_manager="kubectl-edit"
        )
        edited = time.monotonic()
        wait_for(lambda: hard(admin, namespace)["requests.cpu"] == "2", 30, f"the {edit} quota to be restored")
        figure("drift", f"quota {edit} by hand, restored after", time.monotonic() - edited)
        time.sleep(1)
        assert operator.metric("headroom_api_writes_total", {"kind": "resourcequota"}) == writes + 1

    restored = wait_for(
        lambda: len(e := events(admin, name, "QuotaRestored")) >= 2 and e, 30, "two QuotaRestored Events on the Project"
    )
    assert all(e.type == "Warning" and "kubectl-edit" in e.message for e in restored), [e.message for e in restored]
    # Only who edited the spec is named; the quota controller's status updates are not edits (its
    # field manager is kube-controller-manager, or this harness's binary name, controlplane).
    assert not any("controller-manager" in e.message or "controlplane" in e.message for e in restored)

    core.delete_namespaced_resource_quota("headroom", namespace)
    deleted = time.monotonic()
    assert governed(admin, namespace, timeout=60) == {"requests.cpu": "2", "pods": "10"}
    figure("drift", "quota deleted by hand, governed again after", time.monotonic() - deleted)
    wait_for(lambda: condition(admin, name, "Ready").get("status") == "True", 30, "Ready after recreation")
    assert operator.running()


def test_a_failing_history_source_changes_no_quota_and_says_why(
    admin: k8s.ApiClient, namespace: str, doomed: list[str], start_operator: Callable[..., OperatorProcess]
) -> None:
    """Prometheus slow, answering garbage (not JSON, NaN), partially, with 500s, or down: the quota
    stays, HistoryAvailable=False/HistoryUnavailable says why, the query is retried with backoff, and
    a slow source does not hold up a change that needs no history."""
    other = new_namespace(admin, "t-history")
    peaks = {namespace: {"requests.cpu": "3", "pods": "5"}, other: {"requests.cpu": "1", "pods": "2"}}
    with FakePrometheus(peaks, delay=3) as prometheus, contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: k8s.CoreV1Api(admin).delete_namespace(other))
        operator = start_operator(
            "--history-source=prometheus",
            f"--prometheus-url={prometheus.url}",
            "--prometheus-timeout=1",
            # Steady cycles ask only the steps since the last answer: a short step makes every
            # 5 s resync ask again, so each fault is met within seconds.
            "--prometheus-step=10s",
            "--resync-interval=5s",
        )
        name = create_project(
            admin,
            [namespace, other],
            quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "100m", "pods": "1"}},
        )
        doomed.append(name)
        assert governed(admin, namespace) == {"requests.cpu": "3600m", "pods": "6"}
        assert governed(admin, other) == {"requests.cpu": "1200m", "pods": "3"}
        wait_for(lambda: condition(admin, name, "HistoryAvailable").get("reason") == "HistoryFound", 30, "HistoryFound")

        def unavailable(marker: str) -> Callable[[], bool]:
            def probe() -> bool:
                found = condition(admin, name, "HistoryAvailable")
                return (found.get("status"), found.get("reason")) == (
                    "False",
                    "HistoryUnavailable",
                ) and marker in found.get("message", "")

            return probe

        with Recorder(lambda: hard(admin, namespace)) as quota:
            prometheus.set_mode("slow")
            broke = time.monotonic()
            # A change that needs no history (a decrease) is not held up by the slow source.
            request(admin, name, namespace, {"pods": "5"})
            wait_for(lambda: hard(admin, namespace)["pods"] == "5", 10, "the decrease while Prometheus is slow")
            figure("history slow", "decrease applied while Prometheus hangs, after", time.monotonic() - broke)
            wait_for(unavailable("unavailable"), 60, "HistoryUnavailable while Prometheus is slow")
            figure("history slow", "HistoryUnavailable reported after", time.monotonic() - broke)
            # Each query timed out and was tried again (three tries, jittered backoff between them).
            assert len([r for r in prometheus.seen(broke, "slow") if r[1] == "pods"]) >= 3

            # Each answer's message differs from the one before, so each is seen to be handled.
            for mode, marker in (
                ("invalid-json", "Expecting value"),
                ("nan", "partial answer"),
                ("error-500", "HTTP 500"),
                ("partial", "partial answer"),
            ):
                prometheus.set_mode(mode)
                broke = time.monotonic()
                wait_for(unavailable(marker), 60, f"HistoryUnavailable naming the {mode} answer")
                figure(f"history {mode}", "HistoryUnavailable reported after", time.monotonic() - broke)

            prometheus.stop()
            broke = time.monotonic()
            wait_for(unavailable("Cannot connect"), 60, "HistoryUnavailable while Prometheus is down")
            figure("history down", "HistoryUnavailable reported after", time.monotonic() - broke)
            prometheus.set_mode("ok")
            prometheus.start()
            back = time.monotonic()
            wait_for(
                lambda: condition(admin, name, "HistoryAvailable").get("reason") == "HistoryFound",
                60,
                "HistoryFound once Prometheus answers again",
            )
            figure("history", "HistoryFound again after recovery", time.monotonic() - back)

        assert {v["requests.cpu"] for v in quota.values()} == {"3600m"}  # never touched
        assert [v["pods"] for v in quota.values()][-1] == "5"
        never_below([v for _, v in quota.samples], "pods", 5)
        assert condition(admin, name, "Ready")["status"] == "True"
        assert operator.running()


def test_alert_receivers_down_for_a_minute_get_each_notification_once(
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    doomed: list[str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """Webhook and Alertmanager unreachable for 60 s: the notification waits in the outbox and reaches
    each of them exactly once after they are back; the Event on the Project is not held up."""
    if alertmanager_binary() is None:
        pytest.skip("prometheus-alertmanager is not installed (.ci/run installs it)")
    with (
        WebhookReceiver() as webhook,
        WebhookReceiver() as forwarded,
        Alertmanager(tmp_path / "alertmanager", forward_to=forwarded.url) as manager,
    ):
        operator = start_operator(
            *empty_history(tmp_path / "h.csv"),
            f"--webhook-url={webhook.url}",
            f"--alertmanager-url={manager.url}",
            "--resync-interval=10s",
        )
        body = project_manifest(
            f"p-{uuid.uuid4().hex[:8]}", [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}}
        )
        body["spec"]["owner"].update({"contacts": ["#alerts"], "businessHours": ALWAYS_OPEN})  # type: ignore[index]
        name = str(body["metadata"]["name"])  # type: ignore[index]
        custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        doomed.append(name)
        assert governed(admin, namespace) == {"pods": "10"}
        core = k8s.CoreV1Api(admin)
        wait_for(lambda: core.read_namespaced_service_account("default", namespace), 30, "ServiceAccount default")

        webhook.down()
        manager.stop()
        down = time.monotonic()
        for i in range(8):  # 80 % of the pods quota
            core.create_namespaced_pod(
                namespace,
                k8s.V1Pod(
                    metadata=k8s.V1ObjectMeta(name=f"p{i}"),
                    spec=k8s.V1PodSpec(
                        automount_service_account_token=False,
                        containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
                    ),
                ),
            )

        def owed() -> dict[str, Any] | None:
            records = status(admin, name).get("alerts") or []
            return next((r for r in records if r.get("outbox")), None)

        record = wait_for(owed, 60, "the notification in the outbox")
        wait_for(lambda: events(admin, name, "QuotaNearLimit"), 30, "the Event, which needs no receiver")
        wait_for(
            lambda: (
                (metric(operator, "headroom_alert_delivery_failures_total", {"sink": "webhook"}) or 0) >= 2
                and (metric(operator, "headroom_alert_delivery_failures_total", {"sink": "alertmanager"}) or 0) >= 2
            ),
            60,
            "failed, retried deliveries",
        )
        time.sleep(max(0.0, 60 - (time.monotonic() - down)))
        assert owed() is not None and webhook.requests() == []

        webhook.up()
        manager.start()
        up = time.monotonic()
        delivered = wait_for(lambda: webhook.delivered({"project": name}), 60, "the webhook delivery after recovery")
        figure("alert receivers down 60s", "webhook delivery after recovery", delivered[0].received - up)
        alerts = wait_for(lambda: manager.alerts(active=True, project=name), 60, "the alert in Alertmanager")
        figure("alert receivers down 60s", "Alertmanager has the alert after", time.monotonic() - up)
        wait_for(lambda: owed() is None, 30, "the outbox to settle")
        assert delivered[0].json["id"] == record["outbox"]["id"]
        wait_for(
            lambda: [p for p in forwarded.payloads() if p["commonLabels"].get("project") == name],
            30,
            "Alertmanager to notify its own receiver",
        )

        time.sleep(6)  # nothing is sent again (the retries and a resync would have)
        assert len(webhook.requests({"project": name})) == 1
        assert len(manager.alerts(project=name)) == 1
        assert manager.alerts(project=name)[0]["updatedAt"] == alerts[0]["updatedAt"]
        assert (
            len(
                [
                    p
                    for p in forwarded.payloads()
                    if p["commonLabels"].get("project") == name and p["status"] == "firing"
                ]
            )
            == 1
        )
        assert len(events(admin, name, "QuotaNearLimit")) == 1
        assert operator.running()


# ======================================================================= on a control plane of our own


def test_an_operator_killed_between_deciding_and_writing_applies_each_change_exactly_once(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """SIGKILL (a failpoint) before the quota write, after it, and after the status write: every
    restart converges, each approved change is applied once and recorded once in the history."""
    admin = dedicated.admin
    args = empty_history(tmp_path / "h.csv")
    namespace = new_namespace(admin)
    name = create_project(admin, [namespace], quota=SMALL)
    first = run_operator(*args)
    assert governed(admin, namespace) == {"requests.cpu": "2", "pods": "10"}
    first.stop()

    changes: list[str] = []
    for point, cpu, quota_after_kill in (
        ("approved-change-before-write", "8", "2"),
        ("approved-change-after-quota-write", "12", "12"),
        ("approved-change-after-status-write", "16", "16"),
    ):
        crashing = run_operator(*args, env={"HEADROOM_FAILPOINTS": point})
        request(admin, name, namespace, {"requests.cpu": cpu})
        change = pending_id(admin, name, other_than=changes[-1] if changes else None)
        approve(admin, name, change)
        wait_for(
            lambda op=crashing: op.process is not None and op.process.poll() == 137,
            30,
            f"the operator to die at {point}",
        )
        assert hard(admin, namespace)["requests.cpu"] == quota_after_kill
        restarted = time.monotonic()
        again = run_operator(*args)
        converged = wait_for(lambda c=change: applied(admin, name, c), 30, f"{change} recorded after restart")
        figure("SIGKILL", f"{point}: converged after restart in", time.monotonic() - restarted)
        assert hard(admin, namespace)["requests.cpu"] == cpu
        changes.append(change)
        assert [h["id"] for h in converged["history"]] == changes  # once each, in order
        again.stop()

    per_change = [sum(1 for e in events(admin, name, "ChangeApplied") if c in e.message) for c in changes]
    # The Event of a change is posted after its status write. A kill before the status write is
    # recovered from the record on the quota, Event included; a kill after it loses only the Event.
    assert per_change[:2] == [1, 1] and per_change[2] <= 1, per_change


def test_api_server_down_for_30s_in_the_middle_of_a_change(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """The API server stops while an approved change is being applied (the operator is held at the
    failpoint just before its write) and comes back 30 s later on the same port with the same etcd:
    nothing is lowered, the change is applied exactly once, the operator converges."""
    admin, plane = dedicated.admin, dedicated.cluster.plane
    assert plane is not None
    namespace = new_namespace(admin)
    name = create_project(admin, [namespace], quota=SMALL)
    operator = run_operator(
        *empty_history(tmp_path / "h.csv"), env={"HEADROOM_FAILPOINTS": "approved-change-before-write=pause:3"}
    )
    assert governed(admin, namespace) == {"requests.cpu": "2", "pods": "10"}
    request(admin, name, namespace, {"requests.cpu": "8"})
    change = pending_id(admin, name)
    approved_at = now_utc()
    approve(admin, name, change)
    wait_log(operator, "failpoint approved-change-before-write reached")

    with Recorder(lambda: hard(admin, namespace)) as quota:
        down = stop_apiserver(plane)
        time.sleep(max(0.0, 30 - (time.monotonic() - down)))
        restarted = time.monotonic()
        up = start_apiserver(plane)
        figure("API server down 30s", "API server ready after its restart in", up - restarted)
        wait_for(lambda: hard(admin, namespace)["requests.cpu"] == "8", 120, "the approved change after recovery")
        figure("API server down 30s", "approved change applied after the restart in", time.monotonic() - restarted)
        converged = wait_for(lambda: applied(admin, name, change), 60, "the status to record the change")
        figure("API server down 30s", "status converged after the restart in", time.monotonic() - restarted)

    seen = never_below([v for _, v in quota.samples], "requests.cpu", 2)
    assert seen == sorted(seen), f"the quota went up and down: {seen}"
    assert [h["id"] for h in converged["history"]] == [change]
    writes = [
        r
        for r in dedicated.audit.records(approved_at)
        if r.resource == "resourcequotas" and r.namespace == namespace and r.write and r.code < 300
    ]
    assert len(writes) == 1, writes  # the change, applied once
    wait_for(lambda: events(admin, name, "ChangeApplied"), 30, "the ChangeApplied Event")
    time.sleep(2)
    assert len(events(admin, name, "ChangeApplied")) == 1
    assert condition(admin, name, "Ready")["status"] == "True"
    assert operator.running()


def test_a_watch_ended_by_410_gone_costs_one_relist_and_no_writes(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """After an API server restart, etcd has moved past every resourceVersion the operator's watches
    hold, so each resumed watch ends with 410 Gone: one re-list per resource, no reconcile, no write."""
    admin, plane = dedicated.admin, dedicated.cluster.plane
    assert plane is not None
    namespaces = [new_namespace(admin) for _ in range(2)]
    names = [create_project(admin, [ns], quota=SMALL) for ns in namespaces]
    operator = run_operator(*empty_history(tmp_path / "h.csv"))
    for ns, name in zip(namespaces, names, strict=True):
        governed(admin, ns)
        wait_for(lambda n=name: condition(admin, n, "Ready").get("status") == "True", 30, "Ready")
    time.sleep(3)  # the last status writes and their echoes
    writes = operator.metric("headroom_api_writes_total")
    reconciles = operator.metric("headroom_reconcile_duration_seconds_count")
    since = now_utc()

    stop_apiserver(plane)
    bump_etcd_revision(plane)
    up = time.monotonic()
    start_apiserver(plane)
    lists = ("projects", "resourcequotas", "limitranges", "namespaces")

    def relisted() -> bool:
        return all(dedicated.audit.count(since, verb="list", resource=r, code=200) >= 1 for r in lists)

    wait_for(relisted, 60, "the operator to re-list after its watches expired")
    figure("watch 410 Gone", "re-listed after the API server restart began in", time.monotonic() - up)
    time.sleep(5)
    assert {r: dedicated.audit.count(since, verb="list", resource=r, code=200) for r in lists} == dict.fromkeys(
        lists, 1
    )
    assert [r for r in dedicated.audit.records(since) if r.write] == []
    assert operator.metric("headroom_api_writes_total") == writes
    assert operator.metric("headroom_reconcile_duration_seconds_count") == reconciles


def test_a_new_namespace_gets_its_limitrange_before_any_quota(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """A quota that tracks requests.cpu refuses pods that do not state it; the LimitRange's defaults
    state it for them. So the API server must see the LimitRange written before the first quota, or
    a new namespace refuses such pods until the LimitRange comes. (Here, not with the shared
    cluster's tests: the order is read from this control plane's audit log.)"""
    admin = dedicated.admin
    namespaces = [new_namespace(admin) for _ in range(2)]
    since = now_utc()
    run_operator(*empty_history(tmp_path / "h.csv"))
    create_project(admin, namespaces, quota=SMALL)
    for ns in namespaces:
        governed(admin, ns)
        writes = sorted(
            (
                r
                for r in dedicated.audit.records(since)
                if r.namespace == ns and r.write and r.code < 300 and r.resource in ("limitranges", "resourcequotas")
            ),
            key=lambda r: r.at,
        )
        assert [r.resource for r in writes][:1] == ["limitranges"], [
            (r.resource, r.verb, r.at.isoformat()) for r in writes
        ]
        assert [r.resource for r in writes].count("resourcequotas") >= 2  # counting, then governed


def test_a_watch_that_goes_silent_is_noticed_and_processing_resumes(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """Every connection of the operator goes through a proxy that, at some moment, stops forwarding
    without closing anything (a dead NAT entry). Processing resumes soon after the watches'
    inactivity timeout (75 s; a healthy watch gets a bookmark every minute)."""
    admin, plane = dedicated.admin, dedicated.cluster.plane
    assert plane is not None
    with StallingProxy(("127.0.0.1", plane.api_port)) as proxy:
        via_proxy = kubeconfig_via(dedicated.cluster, proxy.url, tmp_path / "proxied.kubeconfig")
        namespace = new_namespace(admin)
        name = create_project(admin, [namespace], quota=SMALL)
        operator = run_operator(*empty_history(tmp_path / "h.csv"), cluster=via_proxy)
        assert governed(admin, namespace) == {"requests.cpu": "2", "pods": "10"}
        wait_for(lambda: condition(admin, name, "Ready").get("status") == "True", 30, "Ready")
        time.sleep(2)

        frozen = proxy.stall()  # open connections go silent; new ones still get through
        stalled, accepted = time.monotonic(), proxy.accepted
        assert frozen >= 4  # at least the four watch streams
        request(admin, name, namespace, {"pods": "7"})  # a decrease: needs no sign-off
        wait_for(
            lambda: hard(admin, namespace)["pods"] == "7",
            WATCH_INACTIVITY_SECONDS + 60,
            "the decrease, after the silent watch",
        )
        elapsed = time.monotonic() - stalled
        figure("silent watch", "processing resumed after the connections went silent in", elapsed)
        assert elapsed < WATCH_INACTIVITY_SECONDS + 20
        assert proxy.accepted > accepted  # the operator gave up on the silent connections
        wait_for(lambda: status(admin, name).get("lastAppliedChange"), 30, "the status write")
        assert operator.running()


def test_two_replicas_one_acts_and_the_other_takes_over(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """Two replicas with --leader-elect: only the Lease holder writes; a 409 while renewing is retried,
    not taken for a loss; SIGKILL of the holder hands over within about a minute, SIGTERM at once;
    nothing is written or alerted twice."""
    admin = dedicated.admin
    coordination = k8s.CoordinationV1Api(admin)

    def holder() -> str | None:
        try:
            return coordination.read_namespaced_lease("headroom", OPERATOR_NAMESPACE).spec.holder_identity
        except ApiException:
            return None

    with WebhookReceiver() as webhook:
        args = (*empty_history(tmp_path / "h.csv"), "--leader-elect", f"--webhook-url={webhook.url}")
        first = run_operator(*args, env={"HEADROOM_FAILPOINTS": "lease-renew-before-write=pause:6"})
        wait_for(lambda: health(first)["role"] == "leader", 30, "the first replica to lead")
        second = run_operator(*args)
        wait_log(second, "waiting for lease")
        wait_for(lambda: health(second)["role"] == "standby", 30, "the second replica to stand by")

        namespace = new_namespace(admin)
        body = project_manifest(
            f"p-{uuid.uuid4().hex[:8]}", [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}}
        )
        body["spec"]["owner"].update({"businessHours": ALWAYS_OPEN})  # type: ignore[index]
        name = str(body["metadata"]["name"])  # type: ignore[index]
        custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        assert governed(admin, namespace) == {"pods": "10"}

        # The holder's first renewal is held at the failpoint; the Lease changes meanwhile (a label):
        # its write gets a 409, which must not make it step down.
        wait_log(first, "failpoint lease-renew-before-write reached")
        leader_identity = holder()
        coordination.patch_namespaced_lease(
            "headroom", OPERATOR_NAMESPACE, {"metadata": {"labels": {"touched-by": "a-test"}}}
        )
        touched = coordination.read_namespaced_lease("headroom", OPERATOR_NAMESPACE).spec.renew_time
        wait_log(first, "changed while renewing it (409)")
        wait_for(
            lambda: coordination.read_namespaced_lease("headroom", OPERATOR_NAMESPACE).spec.renew_time != touched,
            20,
            "the holder to renew after the conflict",
        )
        assert first.running() and health(first)["role"] == "leader" and holder() == leader_identity

        core = k8s.CoreV1Api(admin)
        wait_for(lambda: core.read_namespaced_service_account("default", namespace), 30, "ServiceAccount default")
        for i in range(8):
            core.create_namespaced_pod(
                namespace,
                k8s.V1Pod(
                    metadata=k8s.V1ObjectMeta(name=f"p{i}"),
                    spec=k8s.V1PodSpec(
                        automount_service_account_token=False,
                        containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
                    ),
                ),
            )
        wait_for(lambda: webhook.delivered({"project": name}), 60, "the alert, from the leader")
        wait_for(
            lambda: not any(r.get("outbox") for r in status(admin, name).get("alerts") or []),
            30,
            "the outbox to settle",
        )
        # The status right after a delivery is not yet a fixed point: the next evaluation adds the
        # repeat's notBefore (alert_policy). Let the leader get there, so that the new leader has
        # nothing at all to write.
        custom(admin).patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, {"metadata": {"annotations": {"example.com/nudge": "1"}}}
        )
        wait_for(
            lambda: all(r.get("notBefore") for r in status(admin, name).get("alerts") or []),
            30,
            "the repeat of the alert to be scheduled",
        )
        time.sleep(2)
        assert second.metric("headroom_api_writes_total") == 0
        assert second.metric("headroom_reconcile_duration_seconds_count") == 0

        first.stop(kill=True)
        killed = time.monotonic()
        wait_for(lambda: health(second)["role"] == "leader", 90, "the standby to take over")
        took_over = now_utc()
        figure("two replicas", "standby took over after SIGKILL of the leader in", time.monotonic() - killed)
        wait_for(
            lambda: (metric(second, "headroom_reconcile_duration_seconds_count") or 0) >= 1,
            30,
            "the new leader to reconcile",
        )
        time.sleep(3)
        assert second.metric("headroom_api_writes_total") == 0, (
            writes_by_kind(second),
            [r.body for r in dedicated.audit.records(took_over) if r.write],
        )
        assert holder() not in (None, leader_identity)

        first.start()  # back, as a standby (a fresh log)
        wait_log(first, "waiting for lease")
        terminated = time.monotonic()
        second.stop()  # SIGTERM: releases the Lease
        wait_for(lambda: health(first)["role"] == "leader", 20, "a quick hand-over after SIGTERM")
        figure("two replicas", "hand-over after SIGTERM of the leader in", time.monotonic() - terminated)
        wait_for(
            lambda: (metric(first, "headroom_reconcile_duration_seconds_count") or 0) >= 1,
            30,
            "the new leader to reconcile",
        )
        time.sleep(3)
        assert first.metric("headroom_api_writes_total") == 0, writes_by_kind(first)
        assert len(webhook.requests({"project": name})) == 1  # one alert, whoever leads
        assert len(events(admin, name, "QuotaNearLimit")) == 1


def test_a_throttled_api_server_and_55_projects_at_once(
    dedicated: Dedicated, tmp_path: Path, run_operator: Callable[..., OperatorProcess]
) -> None:
    """An API server that admits 5 requests at a time (2 writes) answers the burst of 55 new Projects
    with 429s: the operator backs off with jitter and converges all of them. Runs last: it restarts
    the dedicated API server with the limits, and back without them."""
    admin, plane = dedicated.admin, dedicated.cluster.plane
    assert plane is not None
    count = 55
    namespaces = [new_namespace(admin, "t") for _ in range(count)]
    stop_apiserver(plane)
    # Without API Priority and Fairness the limits answer 429 at once instead of queueing. The admin
    # (system:masters), the controllers and the test itself are exempt; the operator is not.
    start_apiserver(
        plane,
        [
            *dedicated.flags,
            "--max-requests-inflight=5",
            "--max-mutating-requests-inflight=2",
            "--enable-priority-and-fairness=false",
        ],
    )
    try:
        operator = run_operator(*empty_history(tmp_path / "h.csv"))
        wait_for(lambda: metric(operator, "headroom_api_writes_total") is not None, 30, "the operator to start")
        since = now_utc()
        started = time.monotonic()
        names = [create_project(admin, [ns], quota=SMALL) for ns in namespaces]
        core = k8s.CoreV1Api(admin)

        def all_governed() -> bool:
            quotas = core.list_resource_quota_for_all_namespaces(label_selector="app.kubernetes.io/managed-by=headroom")
            ours = {q.metadata.namespace: q for q in quotas.items if q.metadata.namespace in set(namespaces)}
            return len(ours) == count and all(
                (q.metadata.annotations or {}).get("headroom.dev/state") == "governed"
                and q.spec.hard == {"requests.cpu": "2", "pods": "10"}
                for q in ours.values()
            )

        wait_for(all_governed, 300, f"{count} governed quotas", interval=1)
        figure("throttled API server", f"{count} Projects governed after", time.monotonic() - started)

        def all_ready() -> bool:
            items = custom(admin).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
            ready = {i["metadata"]["name"] for i in items if (i.get("status") or {}).get("phase") == "Ready"}
            return set(names) <= ready

        wait_for(all_ready, 300, f"{count} Projects Ready", interval=1)
        figure("throttled API server", f"{count} Projects Ready after", time.monotonic() - started)
        throttled = dedicated.audit.count(since, code=429)
        FIGURES.append(
            f"throttled API server: {throttled} of the operator's requests were answered 429 "
            f"({dedicated.audit.count(since)} requests in all)"
        )
        assert throttled > 0, "the limits never bit: the test did not exercise throttling"
        assert operator.running()
    finally:
        stop_apiserver(plane)
        start_apiserver(plane, dedicated.flags)
