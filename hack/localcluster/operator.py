"""Run Headroom as its ServiceAccount, with the RBAC from manifests/, as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import yaml

from hack.localcluster.controlplane import _die_with_parent, free_port, stop_process
from hack.localcluster.kube import Cluster, apply_yaml

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "headroom-system"


def install_rbac(cluster: Cluster) -> None:
    """The namespace, ServiceAccount and (Cluster)Roles exactly as manifests/ ships them."""
    admin = cluster.api_client()
    for name in ("namespace.yaml", "rbac.yaml"):
        apply_yaml(admin, REPO / "manifests" / name)


@dataclass
class OperatorProcess:
    cluster: Cluster
    workdir: Path
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    as_service_account: bool = True
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def kubeconfig(self) -> Path:
        if not self.as_service_account:
            return self.cluster.kubeconfig
        return self.cluster.service_account_kubeconfig(
            OPERATOR_NAMESPACE, "headroom", self.workdir / "operator.kubeconfig"
        )

    def start(self) -> OperatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig()), "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "headroom.cli",
                "run",
                f"--metrics-port={self.metrics_port}",
                f"--health-port={self.health_port}",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self

    def stop(self, kill: bool = False) -> None:
        stop_process(self.process, 20, signal.SIGKILL if kill else signal.SIGTERM)
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self, lines: int = 60) -> str:
        out = []
        for i in range(1, self.starts + 1):
            path = self.workdir / f"operator-{i}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"----- operator run {i}\n" + "\n".join(tail))
        return "\n".join(out)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
                continue
            total += float(value)
        return total


def project_manifest(name: str, namespaces: list[dict[str, object]] | list[str], **spec: object) -> dict[str, object]:
    ns_list = [{"name": n} if isinstance(n, str) else n for n in namespaces]
    body: dict[str, object] = {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {"owner": {"team": spec.pop("team", name)}, "namespaces": ns_list, **spec},
    }
    return body


def custom(cluster_or_client: Cluster | kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    client = cluster_or_client.api_client() if isinstance(cluster_or_client, Cluster) else cluster_or_client
    return kubernetes.client.CustomObjectsApi(client)


def dump(obj: object) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
