"""A raise that ends, end to end: a real operator and API server, the owners' webhook receiver in the test.

The raise is signed off with an `until` a few tens of seconds ahead. The owners' hours are always open,
so the reminder (one business day before the end) is owed at once; at `until` the operator wakes up by
itself (no edit, no resync: the resync is 5 minutes), withdraws the raise, and tells the owners.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from headroom.core.changes import change_id
from headroom.core.spec import parse_project
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest
from tests.harness.receivers import Alertmanager, WebhookReceiver
from tests.integration.test_alerts import alertmanager  # noqa: F401  (the real Alertmanager, module-wide)
from tests.integration.test_cli import headroom, user_kubeconfig

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
APPROVERS = ["headroom:approvers"]
ALWAYS_OPEN = "Mon-Sun 00:00-24:00 UTC"


def get_project(client: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(client).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def patch(client: k8s.ApiClient, name: str, body: dict[str, Any]) -> None:
    custom(client).patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, body)


def pods_hard(admin: k8s.ApiClient, namespace: str) -> str | None:
    quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
    return (quota.spec.hard or {}).get("pods")


def settled(admin: k8s.ApiClient, name: str, timeout: float = 30) -> dict[str, Any]:
    """The status once the operator has seen the current generation."""

    def probe() -> dict[str, Any] | None:
        body = get_project(admin, name)
        status = body.get("status") or {}
        return status if status.get("observedGeneration") == body["metadata"]["generation"] else None

    return wait_for(probe, timeout, f"Project {name} to observe its latest generation")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def operator(
    start_operator: Callable[..., OperatorProcess],
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],  # noqa: F811
    tmp_path: Path,
) -> OperatorProcess:
    history = tmp_path / "history.csv"
    history.write_text("time,namespace,resource,value\n")  # no history: the minimum decides
    return start_operator(
        "--history-source=file",
        f"--history-file={history}",
        f"--webhook-url={webhook.url}",
        f"--alertmanager-url={alertmanager[0].url}",
    )


@pytest.fixture
def project(admin: k8s.ApiClient, namespace: str, approval_policy: None, operator: OperatorProcess) -> Iterator[str]:
    """A Project governing `namespace` at pods=10, its owners always in office."""
    name = f"expiry-{uuid.uuid4().hex[:8]}"
    body = project_manifest(name, [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}})
    body["spec"]["owner"].update({"contacts": ["#payments"], "businessHours": ALWAYS_OPEN})  # type: ignore[index]
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    wait_for(lambda: pods_hard(admin, namespace) == "10", 40, f"the governed quota in {namespace}")
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def ask(client: k8s.ApiClient, project: str, who: str, entry: dict[str, Any]) -> None:
    """The owner's request, naming themselves as its requester (as the admission policy wants)."""
    spec = get_project(client, project)["spec"]
    spec["namespaces"][0].update(entry)
    patch(client, project, {"metadata": {"annotations": {"headroom.dev/requested-by": who}}, "spec": spec})


def sign_off(client: k8s.ApiClient, project: str, change: str, who: str) -> None:
    annotations = {"headroom.dev/approved-change": change, "headroom.dev/approved-by": who}
    patch(client, project, {"metadata": {"annotations": annotations}})


def test_an_expiring_raise_is_applied_reminded_and_withdrawn_at_its_end(
    cluster: Cluster,
    admin: k8s.ApiClient,
    namespace: str,
    project: str,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice, bob = cluster.impersonate("alice"), cluster.impersonate("bob", APPROVERS)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=40)
    ask(alice, project, "alice", {"requested": {"pods": "20"}, "until": rfc3339(until), "reason": "INC-7: load test"})
    change = wait_for(lambda: (settled(admin, project).get("pendingChange") or {}).get("id"), 20, "the pending raise")
    sign_off(bob, project, change, "bob")
    wait_for(lambda: pods_hard(admin, namespace) == "20", 20, "the signed-off raise")
    # The quota is written before the status of the same reconcile: wait for the status that records it.
    entry = wait_for(
        lambda: (e := get_project(admin, project)["status"]["namespaces"][0]).get("expiresAt") and e,
        20,
        "status.namespaces[].expiresAt",
    )
    assert entry["expiresAt"] == rfc3339(until)
    assert entry["raise"] == {"changeId": change, "until": rfc3339(until), "state": "Active"}
    as_alice = user_kubeconfig(cluster, "alice", (), tmp_path / "alice")
    shown = headroom(as_alice, "status", project)
    print(shown.stdout)
    assert f"raise expires at {rfc3339(until)}" in shown.stdout

    # The owners are always in office, so one business day before the end is now: the reminder goes out.
    reminder = wait_for(lambda: webhook.payloads({"kind": "raise-reminder"}), 20, "the reminder at the webhook")
    assert len(reminder) == 1
    assert reminder[0]["namespace"] == namespace and reminder[0]["changeId"] == change
    assert reminder[0]["until"] == rfc3339(until) and "ends at" in reminder[0]["text"]
    manager = alertmanager[0]
    ending = wait_for(
        lambda: manager.alerts(active=True, alertname="HeadroomRaiseEnding", project=project), 30, "HeadroomRaiseEnding"
    )
    assert ending[0]["labels"]["namespace"] == namespace
    assert ending[0]["annotations"]["notification_id"] == reminder[0]["id"]

    # At the end the operator wakes by itself and withdraws the raise, without anyone signing off.
    wait_for(
        lambda: pods_hard(admin, namespace) == "10", (until - datetime.now(UTC)).total_seconds() + 20, "withdrawal"
    )
    withdrawn_after = (datetime.now(UTC) - until).total_seconds()
    print(f"raise withdrawn {withdrawn_after:.1f}s after its until")
    notice = wait_for(lambda: webhook.payloads({"kind": "raise-withdrawn"}), 20, "the withdrawal notice at the webhook")
    assert notice[0]["namespace"] == namespace and "withdrawn" in notice[0]["text"]
    wait_for(
        lambda: manager.alerts(active=True, alertname="HeadroomRaiseWithdrawn", project=project),
        30,
        "HeadroomRaiseWithdrawn at Alertmanager",
    )
    status = wait_for(
        lambda: (s := get_project(admin, project)["status"])["history"][-1]["id"] == f"withdrawn:{change}" and s,
        20,
        "the withdrawal in status.history",
    )
    assert status["namespaces"][0]["raise"]["state"] == "Withdrawn"
    assert "expiresAt" not in status["namespaces"][0]
    assert "pendingChange" not in status  # the file still asks for 20, but that request has ended
    assert "is not applied" in status["namespaces"][0]["expiredRequest"]["message"]
    shown = headroom(as_alice, "status", project)
    print(shown.stdout)
    assert f"raise ended at {rfc3339(until)}" in shown.stdout and "is not applied" in shown.stdout
    assert f"withdrawn {change} at" in shown.stdout

    def reasons() -> list[str]:
        events = k8s.CoreV1Api(admin).list_namespaced_event("default", field_selector=f"involvedObject.name={project}")
        return [e.reason for e in events.items]

    # The planner's Events follow the status write of their reconcile.
    wait_for(lambda: "RaiseWithdrawn" in reasons(), 20, "the RaiseWithdrawn Event")
    assert reasons().count("RaiseWithdrawn") == 1 and reasons().count("RaiseEndsSoon") == 1

    # It stays withdrawn: an unrelated edit is reconciled, and nothing comes back or is sent again.
    ask(alice, project, "alice", {"reason": "INC-7: load test (done)"})
    status = settled(admin, project)  # notices are delivered before the status of that reconcile is written
    assert pods_hard(admin, namespace) == "10"
    assert "pendingChange" not in status
    assert len(webhook.payloads({"kind": "raise-reminder"})) == 1
    assert len(webhook.payloads({"kind": "raise-withdrawn"})) == 1

    # A new end in the future is a new change: it waits for a new sign-off.
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    ask(alice, project, "alice", {"until": rfc3339(later)})
    status = settled(admin, project)
    assert status["pendingChange"]["id"] != change
    assert "different change" in status["pendingChange"]["reason"]
    assert pods_hard(admin, namespace) == "10"


def test_a_request_whose_until_has_passed_is_reported_and_never_applied(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str, project: str
) -> None:
    alice, bob = cluster.impersonate("alice"), cluster.impersonate("bob", APPROVERS)
    past = rfc3339(datetime.now(UTC) - timedelta(minutes=5))
    entry = {"requested": {"pods": "30"}, "until": past}
    # Signed off ahead (the id computed offline, as `headroom change-id` does), then asked for.
    body = get_project(admin, project)
    body["spec"]["namespaces"][0].update(entry)
    sign_off(bob, project, change_id(parse_project(body)), "bob")
    ask(alice, project, "alice", entry)
    status = settled(admin, project)
    assert "pendingChange" not in status
    assert status["namespaces"][0]["expiredRequest"]["until"] == past
    assert pods_hard(admin, namespace) == "10"
