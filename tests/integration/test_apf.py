"""manifests/apf.yaml on the real API server: Headroom's requests are paced by a priority level of
their own (limited, queuing), not by the catch-all one, and everyone else's stay where they were."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from hack.localcluster.kube import Cluster, apply_yaml, client_from_kubeconfig, wait_for
from hack.localcluster.operator import OPERATOR_NAMESPACE

REPO = Path(__file__).resolve().parents[2]
LEVEL_HEADER = "X-Kubernetes-PF-PriorityLevel-UID"


@pytest.fixture
def apf(
    admin: kubernetes.client.ApiClient, rbac_installed: None
) -> Iterator[kubernetes.client.FlowcontrolApiserverV1Api]:
    flow = kubernetes.client.FlowcontrolApiserverV1Api(admin)
    apply_yaml(admin, REPO / "manifests" / "apf.yaml")
    try:
        yield flow
    finally:
        # The session's other tests run the operator without it, as they did before.
        flow.delete_flow_schema("headroom")
        flow.delete_priority_level_configuration("headroom")


def _level_of(api: kubernetes.client.ApiClient) -> str:
    """The priority level the API server put one of this client's requests in (its response header)."""
    response = kubernetes.client.CoreV1Api(api).list_resource_quota_for_all_namespaces(limit=1, _preload_content=False)
    return str(response.headers.get(LEVEL_HEADER))


def test_headroom_requests_queue_in_their_own_limited_priority_level(
    cluster: Cluster,
    admin: kubernetes.client.ApiClient,
    apf: kubernetes.client.FlowcontrolApiserverV1Api,
    tmp_path: Path,
) -> None:
    level = apf.read_priority_level_configuration("headroom")
    assert level.spec.type == "Limited"
    assert level.spec.limited.limit_response.type == "Queue"  # waits past its seats, not refused at once

    def schema_in_force() -> bool:
        conditions = apf.read_flow_schema("headroom").status.conditions or []
        return any(c.type == "Dangling" and c.status == "False" for c in conditions)

    wait_for(schema_in_force, 30, "the FlowSchema names an existing priority level")

    operator = client_from_kubeconfig(
        cluster.service_account_kubeconfig(OPERATOR_NAMESPACE, "headroom", tmp_path / "operator.kubeconfig")
    )
    wait_for(lambda: _level_of(operator) == level.metadata.uid, 30, "Headroom's requests in its priority level")
    # The cluster's admin (and so every other identity) is not moved into it.
    assert _level_of(admin) != level.metadata.uid
