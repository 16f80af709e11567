"""`headroom request | approve | status | plan` against the cluster, as real users with their own credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes
import pytest

from tests.harness.controlplane import write_kubeconfig
from tests.harness.kube import Cluster, apply_yaml, wait_for
from tests.harness.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
REPO = Path(__file__).resolve().parents[2]


def user_kubeconfig(cluster: Cluster, user: str, groups: tuple[str, ...], path: Path) -> Path:
    """A kubeconfig with a client certificate: the CLI authenticates like any kubectl user."""
    if cluster.plane is None or cluster.plane.pki is None:
        pytest.skip("needs the local control plane's CA to issue user certificates")
    import base64

    crt, key = cluster.plane.pki.issue_client(user, groups)
    return write_kubeconfig(path, cluster.plane.server, cluster.plane.pki.ca_cert, {
        "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode()})


def headroom(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "headroom.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig)}, cwd=REPO, timeout=60)


def test_request_approve_and_status_from_a_terminal(
        cluster: Cluster, admin: k8s.ApiClient, namespace: str, tmp_path: Path, approval_policy: None,
        start_operator: Callable[..., OperatorProcess]) -> None:
    apply_yaml(admin, REPO / "manifests" / "approval" / "approvers-rbac.yaml")
    owner = user_kubeconfig(cluster, "alice", ("payments-devs",), tmp_path / "alice")
    reviewer = user_kubeconfig(cluster, "bob", ("headroom:approvers",), tmp_path / "bob")
    history = tmp_path / "history.csv"
    history.write_text(f"time,namespace,resource,value\n{(datetime.now(UTC) - timedelta(days=1)).isoformat()},"
                       f"{namespace},requests.cpu,5\n")
    start_operator("--history-source=file", f"--history-file={history}")
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object("headroom.dev", "v1alpha1", "projects", project_manifest(
        name, [namespace], quota={"resources": ["requests.cpu", "pods"]}))
    core = k8s.CoreV1Api(admin)
    wait_for(lambda: core.read_namespaced_resource_quota("headroom", namespace).spec.hard.get("requests.cpu") == "6",
             40, "the derived quota (5 cores + 20 %)")

    requested = headroom(owner, "request", name, namespace, "requests.cpu=9")
    assert requested.returncode == 0, requested.stderr
    assert "awaits sign-off" in requested.stdout
    pending = wait_for(lambda: (custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name)
                                .get("status", {}).get("pendingChange") or {}).get("id"), 20, "the pending change")

    not_allowed = headroom(owner, "approve", name, "--yes")
    assert not_allowed.returncode != 0
    assert "only members of group headroom:approvers" in not_allowed.stderr

    stale = headroom(reviewer, "approve", name, "--id", "sha256:" + "1" * 64, "--yes")
    assert stale.returncode == 2
    assert f"the pending change is now {pending}" in stale.stderr

    approved = headroom(reviewer, "approve", name, "--id", pending, "--yes")
    assert approved.returncode == 0, approved.stderr
    assert f"{namespace} requests.cpu" in approved.stdout and f"approved {pending} as bob" in approved.stdout
    wait_for(lambda: core.read_namespaced_resource_quota("headroom", namespace).spec.hard["requests.cpu"] == "9",
             20, "the approved raise")

    def recorded() -> dict[str, object] | None:
        status = json.loads(headroom(reviewer, "status", name, "-o", "json").stdout)
        return status if (status.get("lastAppliedChange") or {}).get("id") == pending else None

    status = wait_for(recorded, 20, "headroom status to show the applied change")
    assert status["lastAppliedChange"]["approvedBy"] == "bob"  # type: ignore[index]
    table = headroom(reviewer, "status", name)
    assert f"applied {pending}" in table.stdout and "by bob" in table.stdout

    plan = headroom(reviewer, "plan", name, "-o", "json", "--history-source=file", f"--history-file={history}")
    assert plan.returncode == 0, plan.stderr
    rows = {row["resource"]: row for row in json.loads(plan.stdout)}
    assert rows["requests.cpu"]["peak"] == "5" and rows["requests.cpu"]["recommended"] == "6"
    assert rows["requests.cpu"]["hard"] == "9"
