"""Quota-denial incidents end to end: a real Deployment whose pods exceed Headroom's quota.

The local control plane runs the deployment and replicaset controllers; without a node their pods
stay Pending, which is enough: the quota counts them, and the ReplicaSet controller posts a
FailedCreate Event each time the API server refuses one. The operator watches those Events, and
the test watches what reaches the Project's status, a webhook receiver and a real Alertmanager.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from headroom.shell.apiclient import ApiClient
from headroom.shell.denials_watch import DenialWatch
from kubernetes.client import ApiException

from hack.localcluster.kube import user_name, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest
from tests.harness.receivers import Alertmanager, WebhookReceiver, alertmanager_binary

pytestmark = pytest.mark.integration

k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
ALERTNAME = "HeadroomQuotaDenied"
# Longer than the ReplicaSet controller's retry gaps during the test (its backoff doubles from 5 ms:
# about 20 s apart after 40 s of denials), far shorter than the 20m default.
QUIET = "45s"


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    if alertmanager_binary() is None:
        pytest.skip("prometheus-alertmanager is not installed (.ci/run installs it)")
    with WebhookReceiver() as forwarded, Alertmanager(tmp_path_factory.mktemp("am"), forward_to=forwarded.url) as am:
        yield am


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def operator(
    start_operator: Callable[..., OperatorProcess], webhook: WebhookReceiver, alertmanager: Alertmanager, tmp_path: Path
) -> OperatorProcess:
    history = tmp_path / "history.csv"
    history.write_text("time,namespace,resource,value\n")  # no history: the minimum is the quota
    return start_operator(
        "--history-source=file",
        f"--history-file={history}",
        f"--webhook-url={webhook.url}",
        f"--alertmanager-url={alertmanager.url}",
        f"--denial-quiet-period={QUIET}",
    )


@pytest.fixture
def project(admin: k8s.ApiClient, namespace: str) -> Iterator[str]:
    """A Project governing `namespace` with requests.cpu: 1 (no history, so the floor is the quota)."""
    name = f"denials-{uuid.uuid4().hex[:8]}"
    body = project_manifest(
        name,
        [namespace],
        team="web-team",
        quota={"resources": ["requests.cpu"], "minimum": {"requests.cpu": "1"}},
    )
    body["spec"]["owner"].update({"contacts": ["#web"], "businessHours": "Mon-Fri 09:00-09:01 UTC"})  # type: ignore[index]
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def _deployment(name: str, replicas: int, cpu: str) -> k8s.V1Deployment:
    labels = {"app": name}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    automount_service_account_token=False,
                    containers=[
                        k8s.V1Container(
                            name="app",
                            image="registry.invalid/web:1",
                            resources=k8s.V1ResourceRequirements(requests={"cpu": cpu}),
                        )
                    ],
                ),
            ),
        ),
    )


def _status(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    return custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name).get("status") or {}


def _condition(admin: k8s.ApiClient, name: str) -> dict[str, Any] | None:
    return next((c for c in _status(admin, name).get("conditions") or [] if c.get("type") == "QuotaDenied"), None)


def _governed(admin: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(admin)

    def ready() -> bool:
        quota = core.read_namespaced_resource_quota("headroom", namespace)
        governed = (quota.metadata.annotations or {}).get("headroom.dev/state") == "governed"
        return governed and (quota.status.hard or {}).get("requests.cpu") == "1"

    wait_for(ready, 60, f"ResourceQuota headroom in {namespace} governed with requests.cpu=1")
    wait_for(lambda: core.read_namespaced_service_account("default", namespace), 30, "ServiceAccount default")


def test_a_deployment_refused_by_the_quota_is_one_incident_told_at_once_and_resolved(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    project: str,
    webhook: WebhookReceiver,
    alertmanager: Alertmanager,
) -> None:
    _governed(admin, namespace)
    apps = k8s.AppsV1Api(admin)
    # Two pods of 400m fit in 1 cpu; the third is refused: requested 400m + used 800m > 1, short of 200m.
    # Business hours are one minute a week: the denial goes out at once anyway (Immediate is the default).
    apps.create_namespaced_deployment(namespace, _deployment("web", 3, "400m"))

    def denied() -> dict[str, Any] | None:
        found = _condition(admin, project)
        return found if found and found["status"] == "True" else None

    cond = wait_for(denied, 90, f"QuotaDenied=True on Project {project}")
    assert cond["reason"] == "PodsRefused"
    assert f"Deployment {namespace}/web" in cond["message"]
    assert "requests.cpu 200m (needs 1200m, limit 1000m)" in cond["message"]

    fired = wait_for(lambda: webhook.payloads({"project": project, "kind": "QuotaDenied"}), 60, "the webhook")
    first = fired[0]
    assert first["state"] == "firing"
    assert first["workload"] == {"kind": "Deployment", "name": "web"}
    assert first["shortfall"] == {"requests.cpu": "200m"}
    assert first["request"] == f"headroom request {project} {namespace} requests.cpu=1200m"
    assert first["changeId"].startswith("sha256:")

    am = wait_for(lambda: alertmanager.alerts(active=True, alertname=ALERTNAME, project=project), 60, "Alertmanager")
    assert len(am) == 1
    assert am[0]["labels"]["workload"] == "web" and am[0]["labels"]["namespace"] == namespace
    assert am[0]["annotations"]["request"] == first["request"]

    # The controller keeps retrying; a restart re-lists the same Events. Still one incident, one message.
    denials_before = _status(admin, project)["denials"][0]["denials"]
    operator.stop()
    operator.start()
    wait_for(
        lambda: _status(admin, project)["denials"][0]["denials"] > denials_before,
        90,
        "more denials of the same workload counted after the restart",
    )
    incidents = _status(admin, project)["denials"]
    assert [(i["kind"], i["name"], i["state"]) for i in incidents] == [("Deployment", "web", "firing")]
    assert len(webhook.payloads({"project": project, "kind": "QuotaDenied"})) == 1
    assert len(alertmanager.alerts(alertname=ALERTNAME, project=project)) == 1

    # The change id offered is the one the operator publishes once that request is made.
    spec_ns = [{"name": namespace, "requested": {"requests.cpu": "1200m"}}]
    # Named as its writer, as the shipped admission policy insists (earlier tests may have bound it).
    asked = {
        "metadata": {"annotations": {"headroom.dev/requested-by": user_name(admin)}},
        "spec": {"namespaces": spec_ns},
    }
    custom(admin).patch_cluster_custom_object(GROUP, VERSION, PLURAL, project, asked)
    pending = wait_for(
        lambda: (_status(admin, project).get("pendingChange") or {}).get("id"), 60, "the pending change of the request"
    )
    assert pending == first["changeId"]

    # Scaled down, nothing is refused any more: once the quiet period passes, the incident resolves.
    apps.patch_namespaced_deployment_scale(namespace=namespace, name="web", body={"spec": {"replicas": 2}})
    resolved = wait_for(
        lambda: webhook.payloads({"project": project, "kind": "QuotaDenied", "state": "resolved"}),
        150,
        "the resolution at the webhook",
    )
    assert len(resolved) == 1 and resolved[0]["workload"]["name"] == "web"
    cond = wait_for(lambda: (c := _condition(admin, project)) and c["status"] == "False" and c, 30, "QuotaDenied=False")
    assert cond["reason"] == "NoDenials"
    assert "denials" not in _status(admin, project)
    wait_for(
        lambda: not alertmanager.alerts(active=True, alertname=ALERTNAME, project=project),
        30,
        "the Alertmanager alert resolved",
    )
    assert len(webhook.payloads({"project": project, "kind": "QuotaDenied", "state": "firing"})) == 1
    assert operator.metric("headroom_quota_denials_total", {"project": project, "resource": "requests.cpu"}) >= 1


def test_the_events_watch_renewed_from_now_carries_new_failed_creates_only(
    admin: k8s.ApiClient, namespace: str
) -> None:
    """A quiet cluster's Events watch is renewed "from now" (no bookmarks come on Events to keep a
    version fresh): the API server must take it, send only what happens afterwards, and select by
    reason itself."""
    core = k8s.CoreV1Api(admin)

    def post(name: str, reason: str = "FailedCreate") -> None:
        now = datetime.now(UTC)
        core.create_namespaced_event(
            namespace,
            k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(name=name),
                involved_object=k8s.V1ObjectReference(kind="ReplicaSet", name="web-1", namespace=namespace),
                reason=reason,
                message="Error creating: test",
                type="Warning",
                first_timestamp=now,
                last_timestamp=now,
                count=1,
            ),
        )

    post("before-the-watch")
    seen: list[tuple[str | None, str]] = []
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def handle(kind: str | None, obj: dict[str, Any]) -> None:
        if obj.get("metadata", {}).get("namespace") == namespace:
            seen.append((kind, obj["metadata"]["name"]))

    config = admin.configuration
    info = kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        token=(config.api_key or {}).get("authorization", "").removeprefix("Bearer ") or None,
    )
    watch = DenialWatch(ApiClient(lambda: info), handle)
    watching = asyncio.run_coroutine_threadsafe(watch._watch(from_now=True), loop)
    posted: list[str] = []

    def arrived() -> bool:
        # The watch request may not be open yet when the first Event is written: write another.
        posted.append(f"after-{len(posted)}")
        post(f"other-{len(posted)}", reason="Scheduled")
        post(posted[-1])
        return any(name in posted for _, name in seen)

    wait_for(arrived, 60, "a FailedCreate Event written after the watch began, on the watch")
    watching.cancel()
    asyncio.run_coroutine_threadsafe(watch.client.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    names = {name for _, name in seen}
    assert names <= set(posted), f"only new FailedCreate Events, got {sorted(names)}"
    assert all(kind == "ADDED" for kind, _ in seen)
