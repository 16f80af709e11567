"""The audit trail on a real API server: a held raise and its application are JSON lines in the log."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"


@pytest.fixture
def project_name(admin: k8s.ApiClient) -> Iterator[str]:
    name = f"audit-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def audit_records(operator: OperatorProcess, project: str) -> list[dict[str, Any]]:
    """The log's audit lines for one Project: each a whole line of JSON."""
    found = []
    for line in operator.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"audit":"headroom"' in line:
            record = json.loads(line)
            if record["project"] == project:
                found.append(record)
    return found


def test_a_held_and_then_applied_raise_are_audit_lines(
    cluster: Cluster,
    admin: k8s.ApiClient,
    approval_policy: None,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    history = tmp_path / "history.csv"
    history.write_text("time,namespace,resource,value\n")
    operator = start_operator("--history-source=file", f"--history-file={history}")
    body = project_manifest(project_name, [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}})
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    wait_for(
        lambda: (
            (custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, project_name).get("status") or {}).get(
                "phase"
            )
            == "Ready"
        ),
        60,
        "the Project Ready",
    )

    raise_pods = {
        "metadata": {"annotations": {"headroom.dev/requested-by": "alice"}},
        "spec": {"namespaces": [{"name": namespace, "requested": {"pods": "30"}}]},
    }
    # Asked and signed off by the people named, as the shipped admission policy insists.
    custom(cluster.impersonate("alice")).patch_cluster_custom_object(GROUP, VERSION, PLURAL, project_name, raise_pods)
    held = wait_for(
        lambda: [r for r in audit_records(operator, project_name) if r["action"] == "held"], 30, "a held record"
    )
    change = held[0]["changeId"]
    assert change.startswith("sha256:") and held[0]["requestedBy"] == "alice" and held[0]["approvedBy"] is None
    assert held[0]["diff"] == [{"namespace": namespace, "resource": "pods", "from": "10", "to": "30"}]
    assert "needs sign-off" in held[0]["why"]

    approve = {"metadata": {"annotations": {"headroom.dev/approved-change": change, "headroom.dev/approved-by": "bob"}}}
    approver = custom(cluster.impersonate("bob", ["headroom:approvers"]))
    approver.patch_cluster_custom_object(GROUP, VERSION, PLURAL, project_name, approve)
    applied = wait_for(
        lambda: [r for r in audit_records(operator, project_name) if r["action"] == "applied"], 30, "an applied record"
    )
    assert len(applied) == 1
    record = applied[0]
    assert (record["changeId"], record["requestedBy"], record["approvedBy"]) == (change, "alice", "bob")
    assert record["diff"] == held[0]["diff"] and record["appliedAt"]
    # Beside its Event: the same change, said once to people and once to the audit trail.
    events = k8s.CoreV1Api(admin).list_namespaced_event(
        "default", field_selector=f"involvedObject.name={project_name},reason=ChangeApplied"
    )
    assert [e.message for e in events.items] == [record["why"]]
