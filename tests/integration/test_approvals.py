"""Sign-off: raises wait for an approval bound to the exact change; the API server decides who may approve."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from headroom.core.changes import change_id
from headroom.core.spec import parse_project
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, api_error_message, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
REPO = Path(__file__).resolve().parents[2]
APPROVERS = ["headroom:approvers"]


def get_project(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def quota_hard(admin: k8s.ApiClient, namespace: str) -> dict[str, str]:
    return dict(k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace).spec.hard)


def governed(admin: k8s.ApiClient, namespace: str) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
        return quota.spec.hard if (quota.metadata.annotations or {}).get("headroom.dev/state") == "governed" else None

    return wait_for(probe, 40, f"a governed quota in {namespace}")


def request(client: k8s.ApiClient, project: str, namespace: str, values: dict[str, str], who: str = "alice") -> None:
    """A change request as the policy wants it: the writer names themselves as the requester."""
    body = get_project(client, project)
    namespaces = body["spec"]["namespaces"]
    for ns in namespaces:
        if ns["name"] == namespace:
            ns["requested"] = values
    custom(client).patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project,
        {"metadata": {"annotations": {"headroom.dev/requested-by": who}}, "spec": {"namespaces": namespaces}},
    )


def approve(client: k8s.ApiClient, project: str, change: str, who: str) -> None:
    custom(client).patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project,
        {"metadata": {"annotations": {"headroom.dev/approved-change": change, "headroom.dev/approved-by": who}}},
    )


def pending_id(admin: k8s.ApiClient, project: str) -> str:
    return wait_for(
        lambda: ((get_project(admin, project).get("status") or {}).get("pendingChange") or {}).get("id"),
        20,
        "a pending change in status",
    )


@pytest.fixture
def governed_project(
    admin: k8s.ApiClient, namespace: str, approval_policy: None, start_operator: Callable[..., OperatorProcess]
) -> Iterator[tuple[str, str, OperatorProcess]]:
    operator = start_operator()
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            name,
            [namespace],
            quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}},
        ),
    )
    assert governed(admin, namespace) == {"requests.cpu": "2", "pods": "10"}
    yield name, namespace, operator
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def test_a_raise_waits_for_the_exact_approval_then_applies(
    cluster: Cluster, admin: k8s.ApiClient, governed_project: tuple[str, str, OperatorProcess]
) -> None:
    project, namespace, _ = governed_project
    owner = cluster.impersonate("alice", ["payments-devs"])
    approver = cluster.impersonate("bob", APPROVERS)

    request(owner, project, namespace, {"requests.cpu": "40"})
    change = pending_id(admin, project)
    pending = get_project(admin, project)["status"]["pendingChange"]
    assert pending["diff"] == [{"namespace": namespace, "resource": "requests.cpu", "from": "2", "to": "40"}]
    assert "needs sign-off" in pending["reason"]
    time.sleep(2)
    assert quota_hard(admin, namespace)["requests.cpu"] == "2"

    approve(approver, project, "sha256:" + "0" * 64, "bob")  # a different change approves nothing
    time.sleep(3)
    assert quota_hard(admin, namespace)["requests.cpu"] == "2"
    reason = get_project(admin, project)["status"]["pendingChange"]["reason"]
    assert "names a different change" in reason and change in reason

    started = time.monotonic()
    approve(approver, project, change, "bob")
    wait_for(lambda: quota_hard(admin, namespace)["requests.cpu"] == "40", 15, "the approved raise")
    print(f"approved change applied after {time.monotonic() - started:.1f}s")
    status = wait_for(
        lambda: (
            (s := get_project(admin, project).get("status") or {}).get("lastAppliedChange")
            and "pendingChange" not in s
            and s
        ),
        15,
        "status to record the change",
    )
    assert status["lastAppliedChange"]["id"] == change
    assert status["lastAppliedChange"]["approvedBy"] == "bob"
    assert [h["id"] for h in status["history"]] == [change]
    assert status["history"][0]["diff"] == pending["diff"]

    # The offline id, computed from the Project as a file, is the one the operator published.
    assert change_id(parse_project(get_project(admin, project))) == change
    events = k8s.CoreV1Api(admin).list_namespaced_event("default", field_selector=f"involvedObject.name={project}")
    reasons = [e.reason for e in events.items]
    assert reasons.count("ChangeApplied") == 1 and "ChangePending" in reasons


def test_a_new_request_under_an_old_approval_stays_pending(
    cluster: Cluster, admin: k8s.ApiClient, governed_project: tuple[str, str, OperatorProcess]
) -> None:
    project, namespace, _ = governed_project
    owner = cluster.impersonate("alice")
    approver = cluster.impersonate("bob", APPROVERS)
    request(owner, project, namespace, {"requests.cpu": "8"})
    first = pending_id(admin, project)
    approve(approver, project, first, "bob")
    wait_for(lambda: quota_hard(admin, namespace)["requests.cpu"] == "8", 15, "the first raise")

    request(owner, project, namespace, {"requests.cpu": "16"})  # the old approval is still on the object
    second = wait_for(lambda: (i := pending_id(admin, project)) != first and i, 20, "a new pending change")
    time.sleep(3)
    assert quota_hard(admin, namespace)["requests.cpu"] == "8"
    assert get_project(admin, project)["metadata"]["annotations"]["headroom.dev/approved-change"] == first
    assert "names a different change" in get_project(admin, project)["status"]["pendingChange"]["reason"]
    assert second != first


def test_a_decrease_applies_without_sign_off_but_never_below_current_use(
    cluster: Cluster, admin: k8s.ApiClient, governed_project: tuple[str, str, OperatorProcess]
) -> None:
    project, namespace, _ = governed_project
    core = k8s.CoreV1Api(admin)
    for i in range(4):
        core.create_namespaced_pod(
            namespace,
            k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(name=f"p{i}"),
                spec=k8s.V1PodSpec(
                    containers=[
                        k8s.V1Container(
                            name="c",
                            image="registry.invalid/x:1",
                            resources=k8s.V1ResourceRequirements(requests={"cpu": "100m"}, limits={"cpu": "100m"}),
                        )
                    ]
                ),
            ),
        )
    request(cluster.impersonate("alice"), project, namespace, {"pods": "2"})  # 4 pods run: clamped at 4
    wait_for(lambda: quota_hard(admin, namespace)["pods"] == "4", 20, "the decrease, clamped at use")
    status = wait_for(
        lambda: (s := get_project(admin, project)["status"]).get("lastAppliedChange") and s,
        15,
        "the applied decrease in status",
    )
    assert status["lastAppliedChange"]["approvedBy"] == "no sign-off needed (decrease)"
    # The rest of the request stays visible, with the reason it cannot go lower yet.
    wait_for(
        lambda: (
            "below current use"
            in ((get_project(admin, project)["status"].get("pendingChange") or {}).get("reason", ""))
        ),
        15,
        "the clamp to be explained",
    )
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={project}").items
    assert any(e.reason == "DecreaseClamped" for e in events)


def test_an_operator_killed_after_reading_an_approval_applies_it_exactly_once_after_restart(
    cluster: Cluster,
    admin: k8s.ApiClient,
    governed_project: tuple[str, str, OperatorProcess],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    project, namespace, operator = governed_project
    request(cluster.impersonate("alice"), project, namespace, {"requests.cpu": "12"})
    change = pending_id(admin, project)
    operator.stop()
    crashing = start_operator(env={"HEADROOM_FAILPOINTS": "approved-change-before-write"})
    approve(cluster.impersonate("bob", APPROVERS), project, change, "bob")
    wait_for(
        lambda: crashing.process is not None and crashing.process.poll() == 137,
        30,
        "the operator to die at the failpoint",
    )
    assert quota_hard(admin, namespace)["requests.cpu"] == "2"

    start_operator()
    wait_for(lambda: quota_hard(admin, namespace)["requests.cpu"] == "12", 20, "the change after restart")
    status = wait_for(
        lambda: (s := get_project(admin, project)["status"]).get("lastAppliedChange") and s, 15, "status after restart"
    )
    assert [h["id"] for h in status["history"]] == [change]
    time.sleep(3)
    events = k8s.CoreV1Api(admin).list_namespaced_event("default", field_selector=f"involvedObject.name={project}")
    assert [e.reason for e in events.items].count("ChangeApplied") == 1


# --------------------------------------------------------------------------------------------- who may approve


@pytest.fixture
def plain_project(admin: k8s.ApiClient, approval_policy: None) -> Iterator[str]:
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, project_manifest(name, [f"{name}-ns"]))
    yield name
    custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def _denied(call: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403
    return api_error_message(caught.value)


def test_an_owner_cannot_approve(cluster: Cluster, plain_project: str) -> None:
    owner = cluster.impersonate("alice", ["payments-devs"])
    message = _denied(lambda: approve(owner, plain_project, "sha256:abc", "alice"))
    assert "only members of group headroom:approvers may sign off" in message
    assert "kubectl headroom approve" in message


def test_an_approver_can_approve_but_only_in_their_own_name(cluster: Cluster, plain_project: str) -> None:
    approver = cluster.impersonate("bob", APPROVERS)
    message = _denied(lambda: approve(approver, plain_project, "sha256:abc", "carol"))
    assert "must be your own user name (bob)" in message
    approve(approver, plain_project, "sha256:abc", "bob")


def test_requesting_and_approving_in_one_write_is_rejected(
    cluster: Cluster, admin: k8s.ApiClient, plain_project: str
) -> None:
    approver = cluster.impersonate("bob", APPROVERS)
    body = get_project(admin, plain_project)
    namespaces = body["spec"]["namespaces"]
    namespaces[0]["requested"] = {"requests.cpu": "40"}
    identifier = change_id(parse_project({**body, "spec": {**body["spec"], "namespaces": namespaces}}))
    message = _denied(
        lambda: custom(approver).patch_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            plain_project,
            {
                "spec": {"namespaces": namespaces},
                "metadata": {
                    "annotations": {"headroom.dev/approved-change": identifier, "headroom.dev/approved-by": "bob"}
                },
            },
        )
    )
    assert "two separate writes" in message


def test_a_gitops_controller_may_apply_a_reviewed_request_and_approval_together(
    cluster: Cluster, admin: k8s.ApiClient, plain_project: str
) -> None:
    flux = cluster.impersonate("system:serviceaccount:flux-system:kustomize-controller")
    body = get_project(admin, plain_project)
    namespaces = body["spec"]["namespaces"]
    namespaces[0]["requested"] = {"requests.cpu": "40"}
    identifier = change_id(parse_project({**body, "spec": {**body["spec"], "namespaces": namespaces}}))
    custom(flux).patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        plain_project,
        {
            "spec": {"namespaces": namespaces},
            "metadata": {
                "annotations": {
                    "headroom.dev/approved-change": identifier,
                    "headroom.dev/approved-by": "reviewer-in-git",
                }
            },
        },
    )


def test_cli_change_id_and_verify_match_the_gitops_files(tmp_path: Path) -> None:
    project = project_manifest("payments", [{"name": "payments", "requested": {"requests.cpu": "40000m"}}])
    path = tmp_path / "payments.yaml"
    path.write_text(yaml.safe_dump(project))
    cli = [sys.executable, "-m", "headroom.cli"]
    printed = subprocess.run([*cli, "change-id", str(path)], capture_output=True, text=True, check=True)
    identifier = printed.stdout.strip()
    same = project_manifest("payments", [{"name": "payments", "requested": {"requests.cpu": "40"}}])
    assert identifier == change_id(parse_project(same))

    project["metadata"]["annotations"] = {"headroom.dev/approved-change": identifier}  # type: ignore[index]
    path.write_text(yaml.safe_dump(project))
    assert subprocess.run([*cli, "verify", str(path)], capture_output=True).returncode == 0

    project["spec"]["namespaces"][0]["requested"]["requests.cpu"] = "48"  # type: ignore[index]
    path.write_text(yaml.safe_dump(project))
    stale = subprocess.run([*cli, "verify", str(path)], capture_output=True, text=True)
    assert stale.returncode == 1
    assert str(path) in stale.stderr and identifier in stale.stderr
