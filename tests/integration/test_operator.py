"""Headroom's core loop on a real API server: quotas and defaults applied, owned, converged, GitOps-safe."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"


def history_file(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    now = datetime.now(UTC)
    lines = ["time,namespace,resource,value"]
    lines += [f"{(now - timedelta(days=1)).isoformat()},{ns},{res},{value}" for ns, res, value in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_quota(admin: k8s.ApiClient, namespace: str) -> Any:
    return k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)


def governed_quota(admin: k8s.ApiClient, namespace: str, timeout: float = 40) -> Any:
    def probe() -> Any:
        try:
            quota = read_quota(admin, namespace)
        except ApiException:
            return None
        return quota if (quota.metadata.annotations or {}).get("headroom.dev/state") == "governed" else None

    return wait_for(probe, timeout, f"a governed quota in {namespace}")


def get_project(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def create_project(admin: k8s.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    return dict(custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body))


def condition(project: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (project.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


@pytest.fixture
def project_name(admin: k8s.ApiClient) -> Any:
    name = f"p-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def make_pod(name: str, cpu: str = "100m", memory: str = "64Mi") -> k8s.V1Pod:
    resources = {"cpu": cpu, "memory": memory}
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="app",
                    image="registry.invalid/app:1",
                    resources=k8s.V1ResourceRequirements(requests=resources, limits=resources),
                )
            ]
        ),
    )


def test_quota_and_defaults_are_derived_applied_and_owned(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    history = history_file(
        tmp_path / "h.csv",
        [(namespace, "requests.cpu", "3300m"), (namespace, "requests.memory", "1000Mi"), (namespace, "pods", "14")],
    )
    start_operator("--history-source=file", f"--history-file={history}")
    project = create_project(admin, project_manifest(project_name, [namespace]))

    quota = governed_quota(admin, namespace)
    # limits.cpu has no history and a floor of 2, but is never below requests.cpu (3960m).
    assert quota.spec.hard == {
        "requests.cpu": "3960m",
        "requests.memory": "1200Mi",
        "pods": "17",
        "limits.cpu": "3960m",
        "limits.memory": "2Gi",
    }
    assert quota.metadata.labels == {"app.kubernetes.io/managed-by": "headroom", "headroom.dev/project": project_name}
    assert [(o.kind, o.name, o.uid) for o in quota.metadata.owner_references] == [
        ("Project", project_name, project["metadata"]["uid"])
    ]
    assert ("headroom", "Apply") in {(m.manager, m.operation) for m in quota.metadata.managed_fields}

    limits = k8s.CoreV1Api(admin).read_namespaced_limit_range("headroom-defaults", namespace)
    assert limits.spec.limits[0].default_request == {"cpu": "100m", "memory": "128Mi"}
    assert limits.spec.limits[0].default == {"cpu": "1", "memory": "512Mi"}

    # A pod without requests is admitted: the LimitRange fills them in, so the quota does not reject it.
    created = k8s.CoreV1Api(admin).create_namespaced_pod(
        namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="bare"),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")]),
        ),
    )
    assert created.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "128Mi"}

    status = wait_for(
        lambda: (p := get_project(admin, project_name)).get("status", {}).get("phase") == "Ready" and p,
        20,
        "phase Ready",
    )["status"]
    entry = status["namespaces"][0]
    assert entry["peak"] == {"pods": "14", "requests.cpu": "3300m", "requests.memory": "1000Mi"}
    assert entry["recommended"]["requests.cpu"] == "3960m"
    assert entry["reasons"]["limits.cpu"] == "at least requests.cpu"
    assert entry["reasons"]["limits.memory"] == "no history: minimum"
    assert condition(get_project(admin, project_name), "Ready")["status"] == "True"


def test_operator_never_touches_a_projects_spec_annotations_or_finalizers(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    body = project_manifest(project_name, [namespace])
    body["metadata"]["annotations"] = {"example.com/owner": "payments"}  # type: ignore[index]
    created = create_project(admin, body)
    governed_quota(admin, namespace)
    wait_for(lambda: get_project(admin, project_name).get("status", {}).get("phase") == "Ready", 20, "Ready")
    project = get_project(admin, project_name)
    assert project["spec"] == created["spec"]
    assert project["metadata"].get("annotations") == {"example.com/owner": "payments"}
    assert not project["metadata"].get("finalizers")
    assert project["metadata"]["generation"] == 1
    managers = {(m["manager"], m.get("subresource")) for m in project["metadata"]["managedFields"]}
    assert all(sub == "status" for manager, sub in managers if manager == "headroom" or "kopf" in manager)


def test_deleting_the_project_removes_its_quota_and_limitrange(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    create_project(admin, project_manifest(project_name, [namespace]))
    governed_quota(admin, namespace)
    custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, project_name)
    core = k8s.CoreV1Api(admin)

    def gone() -> bool:
        return (
            not core.list_namespaced_resource_quota(namespace).items
            and not core.list_namespaced_limit_range(namespace).items
        )

    wait_for(gone, 60, "the garbage collector to remove the quota and LimitRange")


def test_a_namespace_created_later_gets_its_quota_when_it_appears(
    admin: k8s.ApiClient, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    later = f"later-{uuid.uuid4().hex[:6]}"
    create_project(admin, project_manifest(project_name, [later]))
    waiting = wait_for(
        lambda: (p := get_project(admin, project_name)).get("status", {}).get("phase") == "Waiting" and p,
        20,
        "phase Waiting",
    )
    assert "does not exist yet" in condition(waiting, "Ready")["message"]
    core = k8s.CoreV1Api(admin)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=later)))
    try:
        governed_quota(admin, later)
    finally:
        core.delete_namespace(later)


def test_a_namespace_claimed_twice_stays_with_the_first_project(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    create_project(admin, project_manifest(project_name, [namespace]))
    governed_quota(admin, namespace)
    second = f"{project_name}-b"
    create_project(admin, project_manifest(second, [namespace]))
    try:
        conflicted = wait_for(
            lambda: (
                "already governed by Project" in condition(get_project(admin, second), "Ready").get("message", "")
                and get_project(admin, second)
            ),
            20,
            "a conflict condition on the second Project",
        )
        assert project_name in condition(conflicted, "Ready")["message"]
        assert read_quota(admin, namespace).metadata.labels["headroom.dev/project"] == project_name
    finally:
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, second)


def test_current_use_above_the_derivation_wins(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    core = k8s.CoreV1Api(admin)
    for i in range(12):  # 12 pods: more than the pods minimum of 10
        core.create_namespaced_pod(namespace, make_pod(f"p{i}"))
    start_operator()
    create_project(admin, project_manifest(project_name, [namespace]))
    quota = governed_quota(admin, namespace)
    assert '"pods":"12"' in quota.metadata.annotations["headroom.dev/governed-hard"]
    assert quota.spec.hard["pods"] == "12"


def test_observe_mode_writes_nothing_that_changes_admission_or_pods(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    history = history_file(tmp_path / "h.csv", [(namespace, "requests.cpu", "3300m"), (namespace, "pods", "14")])
    operator = start_operator("--mode=observe", "--history-source=file", f"--history-file={history}")
    create_project(admin, project_manifest(project_name, [namespace]))
    project = wait_for(
        lambda: (p := get_project(admin, project_name)).get("status", {}).get("phase") == "Observing" and p,
        30,
        "phase Observing",
    )
    entry = project["status"]["namespaces"][0]
    assert entry["state"] == "Observed"
    assert entry["wouldApply"]["hard"]["requests.cpu"] == "3960m"  # 3300m + 20 %
    assert entry["wouldApply"]["hard"]["pods"] == "17"
    assert entry["wouldApply"]["limitRange"]["default"] == {"cpu": "1", "memory": "512Mi"}
    core = k8s.CoreV1Api(admin)
    # A pod that sets nothing is admitted as it is: no quota asks for requests, no defaults are injected.
    pod = core.create_namespaced_pod(
        namespace,
        k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name="bare"),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")]),
        ),
    )
    assert not pod.spec.containers[0].resources.limits and not pod.spec.containers[0].resources.requests
    assert core.list_namespaced_resource_quota(namespace).items == []
    assert core.list_namespaced_limit_range(namespace).items == []
    assert operator.metric("headroom_api_writes_total", {"kind": "resourcequota"}) == 0
    assert operator.metric("headroom_api_writes_total", {"kind": "limitrange"}) == 0


def test_a_restarted_operator_converges_without_writing(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    operator = start_operator()
    create_project(admin, project_manifest(project_name, [namespace]))
    governed_quota(admin, namespace)
    wait_for(lambda: get_project(admin, project_name).get("status", {}).get("phase") == "Ready", 20, "Ready")

    def versions() -> tuple[str, str, str]:
        limitrange = k8s.CoreV1Api(admin).read_namespaced_limit_range("headroom-defaults", namespace)
        return (
            read_quota(admin, namespace).metadata.resource_version,
            limitrange.metadata.resource_version,
            get_project(admin, project_name)["metadata"]["resourceVersion"],
        )

    # The first operator has converged once its writes have stopped: nothing changed for 3 s, and it
    # reconciled since its last write (on a loaded machine its last status write can come late).
    seen = {"versions": versions(), "since": time.monotonic()}

    def converged() -> bool:
        now = versions()
        if now != seen["versions"]:
            seen.update(versions=now, since=time.monotonic())
        return time.monotonic() - seen["since"] >= 3

    wait_for(converged, 60, "the first operator's writes to stop", interval=0.5)
    before = versions()
    status_before = get_project(admin, project_name).get("status")
    operator.stop()
    restarted = start_operator("--verbose")  # DEBUG says what a write would change, if one happens
    wait_for(
        lambda: restarted.metric("headroom_reconcile_duration_seconds_count") >= 1, 30, "a reconcile after restart"
    )
    time.sleep(5)
    after = get_project(admin, project_name)
    assert versions() == before, (status_before, after.get("status"))
    # The restarted operator reconciles every Project in the cluster, also those other tests left
    # behind (whose namespaces may be gone since): only writes for this Project count here.
    mine = [line for line in restarted.logs(100_000).splitlines() if f"Project {project_name}:" in line]
    assert not [line for line in mine if "status changes" in line], mine


def test_business_hours_in_an_unknown_zone_are_reported_in_a_condition(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    body = project_manifest(project_name, [namespace])
    body["spec"]["owner"]["businessHours"] = "Mon-Fri 09:00-17:00 Mars/Olympus_Mons"  # type: ignore[index]
    create_project(admin, body)  # the schema checks the shape; the zone database is the operator's
    governed_quota(admin, namespace)
    found = wait_for(
        lambda: condition(get_project(admin, project_name), "BusinessHoursValid"),
        20,
        "the BusinessHoursValid condition",
    )
    assert found["status"] == "False" and found["reason"] == "InvalidBusinessHours"
    assert "Mars/Olympus_Mons" in found["message"] and "Mon-Fri 09:00-17:00 UTC" in found["message"]
