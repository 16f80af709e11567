"""`headroom review --from-cluster`: the evidence and what is in force come from the live Project's status."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest
from tests.harness.prometheus import Prometheus, ago, pod

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project_name(admin: k8s.ApiClient) -> Iterator[str]:
    name = f"review-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def review(cluster: Cluster, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headroom.cli", "review", "base", "head", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        cwd=cwd,
        timeout=60,
    )


def test_review_compares_with_what_is_governed_not_with_the_base_file(
    cluster: Cluster,
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """The base asked for 20 cores, never signed off: 6 are governed (a peak of 5 plus 20 %). Lowering the
    request to 10 looks like a decrease between the files, and is a raise from 6 for the cluster."""
    history = tmp_path / "history.csv"
    day = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    history.write_text(f"time,namespace,resource,value\n{day},{namespace},requests.cpu,5\n")
    start_operator("--history-source=file", f"--history-file={history}")
    quota = {"resources": ["requests.cpu"], "minimum": {"requests.cpu": "1"}}
    base = project_manifest(project_name, [{"name": namespace, "requested": {"requests.cpu": "20"}}], quota=quota)
    head = project_manifest(project_name, [{"name": namespace, "requested": {"requests.cpu": "10"}}], quota=quota)
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, base)

    def pending() -> bool:
        status = custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, project_name).get("status") or {}
        hard = next((e.get("hard") or {} for e in status.get("namespaces") or []), {})
        return bool(status.get("pendingChange")) and hard.get("requests.cpu") == "6"

    wait_for(pending, 60, "6 cores governed and the request of 20 pending")
    for side, body in (("base", base), ("head", head)):
        (tmp_path / side).mkdir()
        (tmp_path / side / "project.yaml").write_text(yaml.safe_dump(body))

    offline = review(cluster, tmp_path, "-o", "json")
    live = review(cluster, tmp_path, "--from-cluster", "-o", "json")

    assert offline.returncode == 0 and live.returncode == 0, offline.stderr + live.stderr
    offline_project = json.loads(offline.stdout)["projects"][0]
    assert offline_project["signOffNeeded"] is False
    live_project = json.loads(live.stdout)["projects"][0]
    assert live_project["signOffNeeded"] is True
    assert live_project["signOffReasons"] == [f"{namespace} requests.cpu from 6 to 10"]
    value = live_project["values"][0]
    assert (value["from"], value["to"], value["inForce"], value["peak"], value["recommended"]) == (
        "20",
        "10",
        "6",
        "5",
        "6",
    )
    markdown = review(cluster, tmp_path, "--from-cluster").stdout
    assert "| namespace | resource | from | to | governed | peak | used | recommended | forecast |" in markdown
    assert f"| {namespace} | `requests.cpu` | 20 | 10 | 6 | 5 |" in markdown
    assert "evidence: the live Projects' status" in markdown


def test_review_takes_peak_and_current_use_from_prometheus(
    tmp_path: Path, prometheus_factory: Callable[..., Prometheus]
) -> None:
    """kube-state-metrics series in a real Prometheus: a peak of 6 cores four hours ago, 1.5 now."""
    now = datetime.now(UTC).replace(microsecond=0)
    namespace = f"rv-{uuid.uuid4().hex[:6]}"
    prometheus = prometheus_factory(
        [
            *(
                pod(namespace, f"batch-{i}", ago(now, hours=5), ago(now, hours=4), app={"requests.cpu": "2"})
                for i in range(3)
            ),
            pod(namespace, "web", ago(now, hours=1), now, app={"requests.cpu": "1500m"}),
        ]
    )
    quota = {"resources": ["requests.cpu"], "minimum": {"requests.cpu": "1"}}
    for side, cores in (("base", "4"), ("head", "10")):
        body = project_manifest("batch", [{"name": namespace, "requested": {"requests.cpu": cores}}], quota=quota)
        (tmp_path / side).mkdir()
        (tmp_path / side / "batch.yaml").write_text(yaml.safe_dump(body))

    result = subprocess.run(
        [sys.executable, "-m", "headroom.cli", "review", "base", "head", f"--prometheus-url={prometheus.url}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert f"| {namespace} | `requests.cpu` | 4 | 10 | 6 | 1.5 | 7.2 | - |" in result.stdout
    assert f"evidence: Prometheus at {prometheus.url}" in result.stdout
