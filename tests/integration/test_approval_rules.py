"""Rules for routine approvals on a real API server: a raise a rule covers is applied without a person,
with the rule's name and evidence in status, history, the Event and the metric; anything else waits."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"


def get_project(client: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(client).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def pods_hard(admin: k8s.ApiClient, namespace: str) -> str | None:
    quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
    return (quota.spec.hard or {}).get("pods")


def settled(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = get_project(admin, name)
        status = body.get("status") or {}
        return status if status.get("observedGeneration") == body["metadata"]["generation"] else None

    return wait_for(probe, 30, f"Project {name} to observe its latest generation")


def ask(client: k8s.ApiClient, project: str, pods: str) -> None:
    spec = get_project(client, project)["spec"]
    spec["namespaces"][0]["requested"] = {"pods": pods}
    body = {"metadata": {"annotations": {"headroom.dev/requested-by": "alice"}}, "spec": spec}
    custom(client).patch_cluster_custom_object(GROUP, VERSION, PLURAL, project, body)


@pytest.fixture
def ruled(
    admin: k8s.ApiClient,
    namespace: str,
    approval_policy: None,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> Iterator[tuple[str, OperatorProcess]]:
    """A Project at pods=10 and an operator whose rules let it step up by at most 5 pods at a time."""
    name = f"rules-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.yaml"
    rule = {"name": "small-pod-steps", "projects": [name], "resources": ["pods"], "maxStep": {"pods": "5"}}
    rules.write_text(yaml.safe_dump({"rules": [rule]}))
    history = tmp_path / "history.csv"
    history.write_text("time,namespace,resource,value\n")
    operator = start_operator("--history-source=file", f"--history-file={history}", f"--approval-rules-file={rules}")
    body = project_manifest(name, [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}})
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    wait_for(lambda: pods_hard(admin, namespace) == "10", 40, f"the governed quota in {namespace}")
    yield name, operator
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def test_a_raise_a_rule_covers_is_applied_without_a_person_and_one_beyond_it_waits(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str, ruled: tuple[str, OperatorProcess]
) -> None:
    project, operator = ruled
    alice = cluster.impersonate("alice")

    ask(alice, project, "15")
    wait_for(lambda: pods_hard(admin, namespace) == "15", 20, "the rule-approved raise")
    status = wait_for(
        lambda: (s := get_project(admin, project)["status"]).get("lastAppliedChange") and s, 20, "the applied record"
    )
    record = status["history"][-1]
    print(yaml.safe_dump({k: record[k] for k in ("approvedBy", "diff", "rule")}, sort_keys=False))
    assert record["approvedBy"] == "rule small-pod-steps"
    assert record["rule"] == {"rule": "small-pod-steps", "evidence": [f"{namespace} pods: step 5 <= 5"]}
    assert "pendingChange" not in status

    def applied_events() -> list[str]:
        events = k8s.CoreV1Api(admin).list_namespaced_event("default", field_selector=f"involvedObject.name={project}")
        return [e.message for e in events.items if e.reason == "ChangeApplied"]

    message = wait_for(applied_events, 20, "the ChangeApplied Event")[0]
    assert "approved by rule small-pod-steps" in message and "evidence:" in message
    # Counted once the reconcile that applied it is done (after its Events).
    wait_for(
        lambda: operator.metric("headroom_rule_approvals_total", {"rule": "small-pod-steps"}) == 1, 10, "the metric"
    )

    # A step of 15 is beyond the rule: it waits for a person, and the status says which figure failed.
    ask(alice, project, "30")
    status = settled(admin, project)
    reason = status["pendingChange"]["reason"]
    assert "needs sign-off" in reason and "a step of 15 is more than 5" in reason
    assert pods_hard(admin, namespace) == "15"
    print(reason)
