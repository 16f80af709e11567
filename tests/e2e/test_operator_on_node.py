"""Headroom as a platform team runs it: `make deploy` of manifests/, on a node, checked by hand's means.

The tests share one deployment and run in file order: deployed as shipped (observe mode), then
switched to enforce (as docs/install.md tells), then scaled to two replicas with leader election.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from headroom.core.quantity import parse_quantity
from kubernetes.client import ApiClient

from hack.localcluster.controlplane import REPO
from hack.localcluster.images import PAUSE_IMAGE
from hack.localcluster.kube import wait_for
from hack.localcluster.node import CGROUP_FS, CGROUP_ROOT

from .conftest import NodeCluster

NS = "headroom-system"
# The first test also waits for the image build (minutes when cold) and the cluster with its node.
pytestmark = pytest.mark.timeout(1200)
SELECTOR = "app.kubernetes.io/name=headroom,app.kubernetes.io/component=operator"


def operator_pods(core: kubernetes.client.CoreV1Api) -> list[Any]:
    pods = core.list_namespaced_pod(NS, label_selector=SELECTOR).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def container_pid(pod: Any) -> int:
    """The host PID of the pod's (first) container: the node runs on this machine."""
    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    for procs in (CGROUP_FS / "memory" / CGROUP_ROOT).rglob(f"pod{pod.metadata.uid}/{container_id}/cgroup.procs"):
        pids = procs.read_text().split()
        if pids:
            return int(pids[0])
    raise AssertionError(f"no process of container {container_id} of pod {pod.metadata.name}")


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def root_mount_options(pid: int) -> set[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError("no root mount")


def deployment_available(apps: kubernetes.client.AppsV1Api, replicas: int) -> bool:
    d = apps.read_namespaced_deployment("headroom", NS)
    conditions = {c.type: c.status for c in d.status.conditions or []}
    return (
        conditions.get("Available") == "True"
        and (d.status.ready_replicas or 0) == replicas
        and (d.status.updated_replicas or 0) == replicas
        and (d.status.replicas or 0) == replicas
    )


def events(core: kubernetes.client.CoreV1Api, namespace: str, reason: str) -> list[Any]:
    return [e for e in core.list_namespaced_event(namespace).items if e.reason == reason]


# --------------------------------------------------------------------------------------------- as shipped


def test_deployment_from_manifests_is_available_with_its_restricted_security_context(deployed: NodeCluster) -> None:
    admin = deployed.cluster.api_client()
    apps, core = kubernetes.client.AppsV1Api(admin), kubernetes.client.CoreV1Api(admin)
    wait_for(lambda: deployment_available(apps, 1), 120, "Deployment headroom Available")
    (pod,) = operator_pods(core)
    assert pod.spec.node_name == "headroom-node"
    assert pod.spec.service_account_name == "headroom"
    # The namespace enforces Pod Security "restricted": the pod was admitted under it.
    namespace = core.read_namespace(NS)
    assert namespace.metadata.labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    # What the securityContext asks for is what the process on the node has.
    status = proc_status(container_pid(pod))
    assert status["Uid"].split()[:2] == ["65532", "65532"]
    assert status["Gid"].split()[:2] == ["65532", "65532"]
    assert int(status["CapEff"], 16) == 0, "all capabilities dropped"
    assert status["NoNewPrivs"].strip() == "1", "allowPrivilegeEscalation: false"
    assert status["Seccomp"].strip() == "2", "seccomp RuntimeDefault (filter mode)"
    assert "ro" in root_mount_options(container_pid(pod)), "read-only root filesystem"
    # The liveness probe has run (15 s initial delay, every 20 s) and passed: no restart.
    time.sleep(max(0.0, 40 - (time.time() - pod.status.start_time.timestamp())))
    pod = core.read_namespaced_pod(pod.metadata.name, NS)
    assert pod.status.container_statuses[0].restart_count == 0
    assert not [e for e in events(core, NS, "Unhealthy") if e.involved_object.name == pod.metadata.name]
    # The in-cluster credentials and the shipped RBAC are enough: no request was refused.
    logs = core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert "forbidden" not in logs.lower(), logs[-3000:]


def test_metrics_answer_through_the_service(deployed: NodeCluster) -> None:
    core = kubernetes.client.CoreV1Api(deployed.cluster.api_client())
    service = core.read_namespaced_service("headroom-metrics", NS)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/metrics"

    def scrape() -> str | None:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: str = resp.read().decode()
        return body if "headroom_" in body else None

    body = wait_for(scrape, 60, f"metrics at {url} (the Service's ClusterIP, through kube-proxy)")
    assert "# TYPE headroom_" in body


# --------------------------------------------------------------------------------------------- enforce


def _pause_pod_spec(resources: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": PAUSE_IMAGE,
        "imagePullPolicy": "Never",
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if resources:
        container["resources"] = resources
    return {
        "containers": [container],
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    }


def _quota(core: kubernetes.client.CoreV1Api, namespace: str) -> Any:
    quotas = [q for q in core.list_namespaced_resource_quota(namespace).items if q.metadata.name.startswith("headroom")]
    return quotas[0] if len(quotas) == 1 else None


@pytest.fixture(scope="module")
def enforcing(deployed: NodeCluster) -> NodeCluster:
    """The operator switched to enforce (docs/install.md) and the sample Projects applied."""
    deployed.kubectl("-n", NS, "set", "env", "deployment/headroom", "HEADROOM_MODE=enforce")
    deployed.kubectl("-n", NS, "rollout", "status", "deployment/headroom", "--timeout=180s")
    deployed.kubectl("apply", "-k", str(REPO / "manifests" / "samples"))
    return deployed


def test_enforce_governs_a_sample_project_on_the_node(enforcing: NodeCluster) -> None:
    admin: ApiClient = enforcing.cluster.api_client()
    core, apps = kubernetes.client.CoreV1Api(admin), kubernetes.client.AppsV1Api(admin)
    sample = yaml.safe_load((REPO / "manifests" / "samples" / "payments.yaml").read_text())["spec"]
    ns = sample["namespaces"][0]["name"]
    floor_cpu = sample["quota"]["minimum"]["requests.cpu"]

    def enforced_quota() -> Any:
        quota = _quota(core, ns)
        # Enforce: the governed values are the quota (not the far-above-use counting quota).
        if quota is None or not quota.status or not quota.status.hard:
            return None
        return quota if quota.spec.hard.get("requests.cpu") == floor_cpu else None

    quota = wait_for(enforced_quota, 120, f"the enforced ResourceQuota of {ns}")
    limit_ranges = core.list_namespaced_limit_range(ns).items
    assert limit_ranges, "the Project's LimitRange of defaults"

    # A pod that sets nothing is admitted with the LimitRange's defaults, and runs.
    core.create_namespaced_pod(
        ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"}, "spec": _pause_pod_spec()}
    )
    bare = core.read_namespaced_pod("bare", ns)
    assert bare.spec.containers[0].resources.requests == sample["defaults"]["requests"]
    assert bare.spec.containers[0].resources.limits == sample["defaults"]["limits"]
    wait_for(lambda: core.read_namespaced_pod("bare", ns).status.phase == "Running", 90, "pod bare Running")

    # A Deployment within the quota runs; scaled far past it, the ReplicaSet is refused by the quota.
    # Sized from the quota itself: three such pods fit in what the bare pod left of limits.cpu, while
    # their requests stay small enough for the node's two cores.
    hard_limits_cpu = parse_quantity(
        core.read_namespaced_resource_quota(quota.metadata.name, ns).spec.hard["limits.cpu"]
    )
    left = hard_limits_cpu - parse_quantity(sample["defaults"]["limits"]["cpu"])
    assert left > 0, f"the quota's limits.cpu {hard_limits_cpu} leaves nothing after the bare pod"
    fits = 3
    per_pod = f"{int(left * 1000 / fits)}m"
    size = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": per_pod, "memory": "32Mi"}}
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        ns,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _pause_pod_spec(size)},
            },
        },
    )

    def running_web() -> list[Any]:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        return [p for p in pods if p.status.phase == "Running"]

    first = wait_for(lambda: len(running_web()) == 2 and running_web(), 120, "2 web pods Running")
    first_uids = {p.metadata.uid for p in first}
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 30}})

    def refused() -> list[Any]:
        return [e for e in events(core, ns, "FailedCreate") if "exceeded quota" in (e.message or "")]

    failed = wait_for(refused, 120, "FailedCreate events saying 'exceeded quota'")
    assert quota.metadata.name in failed[0].message
    # The pods that ran before keep running; the quota caps what runs now.
    time.sleep(10)
    now_running = running_web()
    assert first_uids <= {p.metadata.uid for p in now_running}
    assert all(p.status.container_statuses[0].restart_count == 0 for p in now_running)
    assert len(now_running) == fits
    assert core.read_namespaced_pod("bare", ns).status.phase == "Running"
    used = core.read_namespaced_resource_quota(quota.metadata.name, ns).status.used
    hard = core.read_namespaced_resource_quota(quota.metadata.name, ns).spec.hard
    print(f"quota of {ns}: hard {json.dumps(hard)}, used {json.dumps(used)}; {len(now_running)} of 30 web pods running")
    (operator,) = operator_pods(core)
    rss_kib = int(proc_status(container_pid(operator))["VmRSS"].split()[0])
    print(f"operator pod RSS after governing the sample Projects: {rss_kib / 1024:.1f} MiB")
    assert rss_kib < 384 * 1024, "within the Deployment's memory limit"
    # Room on the node for the tests that follow.
    apps.delete_namespaced_deployment("web", ns)
    core.delete_namespaced_pod("bare", ns)


# --------------------------------------------------------------------------------------------- two replicas


def _headroom_writes(core: kubernetes.client.CoreV1Api, namespaces: list[str]) -> dict[str, Any]:
    """When Headroom's field manager last wrote each quota and LimitRange it owns."""
    found = {}
    for ns in namespaces:
        objects = core.list_namespaced_resource_quota(ns).items + core.list_namespaced_limit_range(ns).items
        for obj in objects:
            for entry in obj.metadata.managed_fields or []:
                if entry.manager == "headroom":
                    key = f"{ns}/{type(obj).__name__}/{obj.metadata.name}/{entry.subresource or ''}"
                    found[key] = entry.time
    return found


def test_two_replicas_hand_over_leadership_without_a_double_write(enforcing: NodeCluster) -> None:
    admin = enforcing.cluster.api_client()
    core, apps = kubernetes.client.CoreV1Api(admin), kubernetes.client.AppsV1Api(admin)
    coordination = kubernetes.client.CoordinationV1Api(admin)
    # docs/operations.md: two replicas, RollingUpdate, HEADROOM_LEADER_ELECT=true.
    apps.patch_namespaced_deployment(
        "headroom",
        NS,
        {
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            }
        },
    )
    enforcing.kubectl("-n", NS, "set", "env", "deployment/headroom", "HEADROOM_LEADER_ELECT=true")
    enforcing.kubectl("-n", NS, "rollout", "status", "deployment/headroom", "--timeout=240s")
    wait_for(lambda: deployment_available(apps, 2), 120, "two replicas Available")

    def holder() -> str | None:
        lease = coordination.read_namespaced_lease("headroom", NS)
        identity = lease.spec.holder_identity
        names = [p.metadata.name for p in operator_pods(core) if p.status.phase == "Running"]
        return next((n for n in names if identity and identity.startswith(f"{n}-")), None)

    leader = wait_for(holder, 90, "one of the two pods holding the Lease")
    standby = next(p.metadata.name for p in operator_pods(core) if p.metadata.name != leader)
    governed = ["payments", "payments-batch", "search", "search-indexer"]
    # Let the new pods settle (a leader that just took over re-reads everything, writing nothing).
    time.sleep(15)
    writes_before = _headroom_writes(core, governed)
    assert writes_before, "Headroom owns quotas and LimitRanges in the sample namespaces"

    assert holder() == leader, "the Lease did not change hands before the leader's pod was deleted"
    transitions = coordination.read_namespaced_lease("headroom", NS).spec.lease_transitions or 0
    start = time.monotonic()
    core.delete_namespaced_pod(leader, NS)  # graceful: SIGTERM, the holder releases the Lease

    def taken_over() -> str | None:
        current = holder()
        return current if current and current != leader else None

    try:
        successor = wait_for(taken_over, 60, f"a live replica to take the Lease over from {leader}", interval=0.1)
    except AssertionError as exc:
        lease = coordination.read_namespaced_lease("headroom", NS).spec
        pods = [
            (p.metadata.name, p.status.phase, p.metadata.deletion_timestamp)
            for p in core.list_namespaced_pod(NS, label_selector=SELECTOR).items
        ]
        raise AssertionError(
            f"{exc}\nlease: {lease}\npods: {pods}\n{standby}'s log:\n"
            f"{core.read_namespaced_pod_log(standby, NS)[-4000:]}"
        ) from None
    handover = time.monotonic() - start
    # The standby, or the replica the ReplicaSet starts in the deleted pod's place.
    assert successor == standby or successor not in (leader, standby)
    assert (coordination.read_namespaced_lease("headroom", NS).spec.lease_transitions or 0) > transitions
    print(f"leader hand-over after deleting the leader's pod: {handover:.1f} s (to {successor})")
    # docs/operations.md: after a SIGTERM the standby takes over within seconds (4-6 s measured).
    assert handover < 15
    # The new leader re-reads everything and finds the quotas right: no second write of any of them.
    time.sleep(20)
    assert _headroom_writes(core, governed) == writes_before
    wait_for(lambda: deployment_available(apps, 2), 120, "the replaced pod Available again")
