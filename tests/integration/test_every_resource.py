"""Every resource a ResourceQuota enforces, on a real API server: GPUs, storage classes, load balancers, counts.

A GPU quota is derived from a history file (whole GPUs, rounded up), applied, and enforced by the API
server's quota admission; a GPU raise waits for sign-off like any other.
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
from kubernetes.client import ApiException

from hack.localcluster.kube import user_name, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
GPU = "requests.nvidia.com/gpu"
GOLD = "gold.storageclass.storage.k8s.io/requests.storage"


@pytest.fixture
def project_name(admin: k8s.ApiClient) -> Iterator[str]:
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def governed_hard(admin: k8s.ApiClient, namespace: str) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        try:
            quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
        except ApiException:
            return None
        governed = (quota.metadata.annotations or {}).get("headroom.dev/state") == "governed"
        return dict(quota.spec.hard) if governed else None

    return wait_for(probe, 40, f"a governed quota in {namespace}")


def gpu_pod(name: str, gpus: int) -> k8s.V1Pod:
    # Extended resources are requested whole and with limits equal to requests.
    resources = {"cpu": "100m", "memory": "64Mi", "nvidia.com/gpu": str(gpus)}
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="train",
                    image="registry.invalid/train:1",
                    resources=k8s.V1ResourceRequirements(requests=resources, limits=resources),
                )
            ]
        ),
    )


def test_a_gpu_quota_is_derived_from_a_history_file_applied_and_enforced(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    day = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    history = tmp_path / "history.csv"
    history.write_text(
        "time,namespace,resource,value\n"
        f"{day},{namespace},requests.cpu,2\n"
        f"{day},{namespace},{GPU},3\n"
        f"{day},{namespace},{GOLD},100Gi\n"
        f"{day},{namespace},services.loadbalancers,2\n"
    )
    start_operator("--history-source=file", f"--history-file={history}")
    resources = ["requests.cpu", GPU, GOLD, "services.loadbalancers", "count/jobs.batch"]
    body = project_manifest(
        project_name,
        [namespace],
        quota={"resources": resources, "minimum": {"requests.cpu": "1", "services.loadbalancers": "1"}},
    )
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)

    # 3 GPUs x 1.2 is 3.6: 4 whole GPUs. 100Gi x 1.2 is 120Gi; 2 load balancers x 1.2 is 3; jobs have
    # no history and the floor of a count.
    assert governed_hard(admin, namespace) == {
        "requests.cpu": "2400m",
        GPU: "4",
        GOLD: "120Gi",
        "services.loadbalancers": "3",
        "count/jobs.batch": "10",
    }

    core = k8s.CoreV1Api(admin)
    core.create_namespaced_pod(namespace, gpu_pod("fits", 4))
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, gpu_pod("too-many", 1))
    assert refused.value.status == 403
    assert "exceeded quota: headroom" in refused.value.body and "requests.nvidia.com/gpu" in refused.value.body

    # A GPU raise is a raise: it waits for sign-off, published with its diff.
    raise_gpus = {
        "metadata": {"annotations": {"headroom.dev/requested-by": user_name(admin)}},
        "spec": {"namespaces": [{"name": namespace, "requested": {GPU: 8}}]},
    }
    custom(admin).patch_cluster_custom_object(GROUP, VERSION, PLURAL, project_name, raise_gpus)

    def pending() -> dict[str, Any] | None:
        status = custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, project_name).get("status") or {}
        return status.get("pendingChange") or None

    change = wait_for(pending, 30, "the GPU raise pending")
    assert change["diff"] == [{"namespace": namespace, "resource": GPU, "from": "4", "to": "8"}]
    assert governed_hard(admin, namespace)[GPU] == "4"
