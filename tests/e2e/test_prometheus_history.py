"""History from real kube-state-metrics: the deployed operator derives a quota from series the exporter
really exports about pods that really run on the node, scraped by a real Prometheus.

Runs after test_operator_on_node.py (file order) on the same deployment, and on its own as well:
the Project asks for Enforce itself.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import kubernetes
import pytest
from headroom.shell.history.prometheus import DEFAULT_QUERIES, peak_query

from hack.localcluster.images import PAUSE_IMAGE
from hack.localcluster.ksm import KubeStateMetrics, ScrapingPrometheus
from hack.localcluster.kube import wait_for
from hack.localcluster.node import node_ip
from hack.localcluster.operator import custom, project_manifest

from .conftest import NodeCluster

NS = "headroom-system"
# The first test also waits for the image build (minutes when cold) and the cluster with its node.
pytestmark = pytest.mark.timeout(1200)
TEAM = "ksm-team"
# Three pods of 200m and 100Mi: the namespace's peak is 600m, 300Mi and 3 pods.
REPLICAS, CPU, MEMORY_MI = 3, "200m", 100
EXPECTED = {"requests.cpu": "720m", "requests.memory": "360Mi", "pods": "4"}  # peak + 20 %, rounded up


@pytest.fixture(scope="module")
def exporter(deployed: NodeCluster) -> Any:
    workdir = deployed.plane.workdir / "ksm"
    ksm = KubeStateMetrics(workdir, deployed.kubeconfig).start()
    # The operator's pod reaches Prometheus on the node's address (local delivery, no forwarding).
    prometheus = ScrapingPrometheus(workdir / "prometheus", ksm.target, host=node_ip()).start()
    try:
        yield ksm, prometheus
    finally:
        prometheus.stop()
        ksm.stop()


def _workload(core: kubernetes.client.CoreV1Api, apps: kubernetes.client.AppsV1Api) -> None:
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TEAM}})
    labels = {"app": "api"}
    container = {
        "name": "api",
        "image": PAUSE_IMAGE,
        "imagePullPolicy": "Never",
        "resources": {"requests": {"cpu": CPU, "memory": f"{MEMORY_MI}Mi"}},
    }
    apps.create_namespaced_deployment(
        TEAM,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api"},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
                },
            },
        },
    )

    def running() -> bool:
        pods = core.list_namespaced_pod(TEAM, label_selector="app=api").items
        return len([p for p in pods if p.status.phase == "Running"]) == REPLICAS

    wait_for(running, 120, f"{REPLICAS} pods of {TEAM} Running")


def _only_new_replicas_act(
    core: kubernetes.client.CoreV1Api, coordination: kubernetes.client.CoordinationV1Api
) -> bool:
    pods = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/name=headroom").items
    if any(p.metadata.deletion_timestamp for p in pods):
        return False
    if not all(
        any(e.name == "HEADROOM_HISTORY_SOURCE" and e.value == "prometheus" for e in p.spec.containers[0].env or [])
        for p in pods
    ):
        return False
    try:
        identity = coordination.read_namespaced_lease("headroom", NS).spec.holder_identity
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return True  # one replica, no leader election
        raise
    return bool(identity) and any(identity.startswith(f"{p.metadata.name}-") for p in pods)


def test_quota_derived_from_real_kube_state_metrics_series(deployed: NodeCluster, exporter: Any) -> None:
    ksm, prometheus = exporter
    admin = deployed.cluster.api_client()
    core, apps = kubernetes.client.CoreV1Api(admin), kubernetes.client.AppsV1Api(admin)
    _workload(core, apps)

    # The exporter itself exports the series the default queries read, for these pods.
    exported = ksm.metrics()
    for series in ("kube_pod_container_resource_requests{", "kube_pod_status_phase{"):
        assert any(line.startswith(series) and f'namespace="{TEAM}"' in line for line in exported.splitlines())

    # Headroom's own default queries, as it sends them, answer the namespace's real totals.
    expected_peaks = {
        "requests.cpu": Decimal("0.6"),
        "requests.memory": Decimal(REPLICAS * MEMORY_MI * 2**20),
        "pods": Decimal(REPLICAS),
    }

    def peaks_answered() -> bool:
        for resource, peak in expected_peaks.items():
            promql = peak_query(DEFAULT_QUERIES[resource], frozenset({TEAM}), 3600, "15s")
            result = prometheus.query(promql)
            if len(result) != 1 or Decimal(result[0]["value"][1]).quantize(Decimal("0.001")) != peak:
                return False
        return True

    wait_for(peaks_answered, 90, "Prometheus to answer Headroom's default queries with the pods' totals")

    # The deployed operator reads that Prometheus (the documented settings) ...
    deployed.kubectl(
        "-n",
        NS,
        "set",
        "env",
        "deployment/headroom",
        "HEADROOM_HISTORY_SOURCE=prometheus",
        f"HEADROOM_PROMETHEUS_URL={prometheus.url}",
        "HEADROOM_PROMETHEUS_STEP=15s",
    )
    deployed.kubectl("-n", NS, "rollout", "status", "deployment/headroom", "--timeout=240s")
    # With two replicas (after test_operator_on_node.py), an old pod may still be terminating and hold
    # the Lease, with the old history source: it would bootstrap the Project on no history at all.
    wait_for(
        lambda: _only_new_replicas_act(core, kubernetes.client.CoordinationV1Api(admin)),
        90,
        "the operator's old replicas gone and the Lease, if any, held by a new one",
    )
    start = time.monotonic()
    # ... and governs a Project of that namespace: its quota is the peak plus 20 %.
    custom(admin).create_cluster_custom_object(
        "headroom.dev",
        "v1alpha1",
        "projects",
        project_manifest(
            TEAM,
            [TEAM],
            quota={
                "resources": sorted(EXPECTED),
                "headroomPercent": 20,
                "enforcement": "Enforce",
                "lookback": "1h",
                "minimum": {"requests.cpu": "100m", "requests.memory": "64Mi", "pods": "1"},
            },
        ),
    )

    def derived() -> dict[str, str] | None:
        quotas = [q for q in core.list_namespaced_resource_quota(TEAM).items if q.metadata.name.startswith("headroom")]
        hard = dict(quotas[0].spec.hard) if quotas else {}
        return hard if all(hard.get(r) == v for r, v in EXPECTED.items()) else None

    try:
        wait_for(derived, 120, f"the quota of {TEAM} derived from Prometheus history: {EXPECTED}")
    except AssertionError:
        project = custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", TEAM)
        raise AssertionError(
            f"status: {project.get('status')}\nquotas: "
            f"{[q.spec.hard for q in core.list_namespaced_resource_quota(TEAM).items]}"
        ) from None
    print(f"quota of {TEAM} derived from kube-state-metrics history in {time.monotonic() - start:.1f} s")
    project = custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", TEAM)
    conditions = {c["type"]: c for c in project["status"]["conditions"]}
    assert conditions["HistoryAvailable"]["status"] == "True", conditions["HistoryAvailable"]
