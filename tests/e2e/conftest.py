"""End-to-end: Headroom's own image, deployed from manifests/, on a real node of the local cluster.

One cluster with a node (hack/localcluster/node.py) for the e2e package, separate from the
node-less control plane of the integration tests. The image is built from the unchanged
operator/Dockerfile (hack/image/build.sh) and imported into the node; `hack/deploy.sh` applies
manifests/ as `make deploy` does.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

from hack.localcluster.controlplane import REPO, ControlPlane
from hack.localcluster.kube import Cluster

IMAGE_ARCHIVE = REPO / ".cache" / "image" / "headroom-dev.oci.tar"


@dataclass
class NodeCluster:
    plane: ControlPlane
    cluster: Cluster
    timings: dict[str, float]

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def kubectl(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def deploy(self, action: str = "apply") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run(
            [str(REPO / "hack" / "deploy.sh"), action, "headroom:dev"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"hack/deploy.sh {action} failed:\n{result.stdout}\n{result.stderr}\n"
                f"{self.kubectl('-n', 'headroom-system', 'get', 'pods,events', check=False).stdout}"
            )
        return result


def _build_image(timings: dict[str, float]) -> Path:
    start = time.monotonic()
    result = subprocess.run(
        [str(REPO / "hack" / "image" / "build.sh"), str(IMAGE_ARCHIVE)], capture_output=True, text=True, timeout=1200
    )
    if result.returncode != 0:
        raise AssertionError(f"building the operator image failed:\n{result.stdout}\n{result.stderr}")
    timings["image build s"] = time.monotonic() - start
    print(result.stderr.strip())
    return IMAGE_ARCHIVE


@pytest.fixture(scope="package")
def node_cluster() -> Iterator[NodeCluster]:
    if os.environ.get("HEADROOM_TEST_KUBECONFIG"):
        pytest.skip("end-to-end tests run on the local cluster's own node, not on HEADROOM_TEST_KUBECONFIG")
    timings: dict[str, float] = {}
    archive = _build_image(timings)
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="headroom-e2e-")), node=True)
    start = time.monotonic()
    plane.start()
    timings["cluster with node start s"] = time.monotonic() - start
    try:
        start = time.monotonic()
        plane.import_image(archive)
        timings["image import s"] = time.monotonic() - start
        yield NodeCluster(plane, Cluster(plane.kubeconfig, plane), timings)
    finally:
        print("e2e timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        plane.stop()


@pytest.fixture(scope="package")
def node_admin(node_cluster: NodeCluster) -> kubernetes.client.ApiClient:
    return node_cluster.cluster.api_client()


@pytest.fixture(scope="package")
def deployed(node_cluster: NodeCluster) -> NodeCluster:
    """manifests/ applied as `make deploy` does, and the rollout finished."""
    start = time.monotonic()
    node_cluster.deploy("apply")
    node_cluster.timings["deploy to Available s"] = time.monotonic() - start
    return node_cluster
