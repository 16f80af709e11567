"""`make demo`: Headroom on a local control plane, with the sample Projects and a file of history.

1. starts the local control plane (built from hack/controlplane on first use),
2. installs the CRD, Headroom's RBAC and the sign-off policy from manifests/,
3. creates the sample namespaces with a few pods, and 30 days of history in a CSV file,
4. runs the operator as its ServiceAccount (`headroom run --history-source=file`),
5. applies manifests/samples/ and shows the derived quotas, the pending raise, and its sign-off.

Then it keeps running until Ctrl-C (or exits at once with --once), with the KUBECONFIG to explore.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes
import yaml

from hack.localcluster.controlplane import ControlPlane
from hack.localcluster.kube import Cluster, apply_yaml, wait_for
from hack.localcluster.operator import OperatorProcess, install_rbac

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"
k8s = kubernetes.client

# Typical daily peaks of the sample namespaces (cores, bytes, pods), with some noise.
PROFILE = {
    "payments": {
        "requests.cpu": 22.0,
        "requests.memory": 60 * 2**30,
        "limits.cpu": 30.0,
        "limits.memory": 80 * 2**30,
        "pods": 48,
        "count/jobs.batch": 0,
    },
    "payments-batch": {
        "requests.cpu": 6.0,
        "requests.memory": 12 * 2**30,
        "limits.cpu": 8.0,
        "limits.memory": 16 * 2**30,
        "pods": 30,
        "count/jobs.batch": 12,
    },
    "search": {"requests.cpu": 10.0, "requests.memory": 40 * 2**30, "limits.memory": 48 * 2**30, "pods": 24},
    "search-indexer": {
        "requests.cpu": 3.0,
        "requests.memory": 8 * 2**30,
        "limits.memory": 12 * 2**30,
        "pods": 6,
        "requests.ephemeral-storage": 120 * 2**30,
    },
}


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def write_history(path: Path, days: int = 30, seed: int = 7) -> Path:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = ["time,namespace,resource,value"]
    for day in range(days, 0, -1):
        at = now - timedelta(days=day)
        for namespace, peaks in PROFILE.items():
            for resource, peak in peaks.items():
                value = peak * rng.uniform(0.55, 1.0)
                if resource.endswith(".cpu"):
                    text = f"{round(value * 1000)}m"
                elif resource in ("pods",) or resource.startswith("count/"):
                    text = str(round(value))
                else:
                    text = str(round(value))
                rows.append(f"{at.isoformat()},{namespace},{resource},{text}")
    path.write_text("\n".join(rows) + "\n")
    return path


def headroom(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "headroom.cli", *args],
        capture_output=True,
        text=True,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    return result.stdout + result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="show everything, then stop (used by the tests)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="headroom-demo-"))

    say("starting a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)")
    plane = ControlPlane(workdir / "cluster")
    plane.start()
    cluster = Cluster(plane.kubeconfig, plane)
    admin = cluster.api_client()
    operator: OperatorProcess | None = None
    try:
        print(f"Kubernetes {plane.version()} at {plane.server}")
        say("installing the Project CRD, Headroom's RBAC and the sign-off policy (manifests/)")
        apply_yaml(admin, REPO / "crds" / "projects.headroom.dev.yaml")
        install_rbac(cluster)
        apply_yaml(admin, REPO / "manifests" / "approval" / "policy.yaml")
        apply_yaml(admin, REPO / "manifests" / "approval" / "approvers-rbac.yaml")
        time.sleep(1)

        say("sample namespaces, with some pods already running in payments")
        apply_yaml(admin, SAMPLES / "namespaces.yaml")
        core = k8s.CoreV1Api(admin)
        for i in range(3):
            core.create_namespaced_pod(
                "payments",
                k8s.V1Pod(
                    metadata=k8s.V1ObjectMeta(name=f"api-{i}"),
                    spec=k8s.V1PodSpec(
                        containers=[
                            k8s.V1Container(
                                name="api",
                                image="registry.invalid/payments-api:1",
                                resources=k8s.V1ResourceRequirements(
                                    requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "3", "memory": "6Gi"}
                                ),
                            )
                        ]
                    ),
                ),
            )

        history = write_history(workdir / "history.csv")
        say(f"30 days of usage history written to {history}")
        operator = OperatorProcess(
            cluster, workdir / "operator", args=["--history-source=file", f"--history-file={history}", "--mode=enforce"]
        )
        operator.start()
        say("Headroom is running as its ServiceAccount; applying manifests/samples (payments, search)")
        for name in ("payments.yaml", "search.yaml"):
            apply_yaml(admin, SAMPLES / name)

        projects = k8s.CustomObjectsApi(admin)

        def settled() -> bool:
            for name in ("payments", "search"):
                status = projects.get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name).get("status")
                if not status or status.get("phase") not in ("Ready", "Pending", "Observing"):
                    return False
            return True

        wait_for(settled, 60, "the sample Projects to be governed")
        time.sleep(1)
        say("kubectl get projects")
        print(_get_projects(plane.kubeconfig))
        say("headroom plan (what each quota is, and why)")
        print(headroom(plane.kubeconfig, "plan", "--history-source=file", f"--history-file={history}"))
        say("the ResourceQuota Headroom applied in namespace payments")
        quota = core.read_namespaced_resource_quota("headroom", "payments")
        print(yaml.safe_dump({"spec": {"hard": quota.spec.hard}, "status": {"used": quota.status.used}}))
        say("payments asks for requests.cpu=40 (a raise): it waits for sign-off")
        print(headroom(plane.kubeconfig, "status", "payments"))

        say("a reviewer (group headroom:approvers) signs the change off")
        status = projects.get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", "payments")["status"]
        change = status["pendingChange"]["id"]
        reviewer = cluster.impersonate("reviewer@example.com", ["headroom:approvers"])
        k8s.CustomObjectsApi(reviewer).patch_cluster_custom_object(
            "headroom.dev",
            "v1alpha1",
            "projects",
            "payments",
            {
                "metadata": {
                    "annotations": {
                        "headroom.dev/approved-change": change,
                        "headroom.dev/approved-by": "reviewer@example.com",
                    }
                }
            },
        )
        wait_for(
            lambda: core.read_namespaced_resource_quota("headroom", "payments").spec.hard["requests.cpu"] == "40",
            30,
            "the approved raise",
        )
        time.sleep(1.5)
        print(headroom(plane.kubeconfig, "status", "payments"))

        if args.once:
            say("done")
            return 0
        say("the demo cluster keeps running; in another shell:")
        print(
            f"  export KUBECONFIG={plane.kubeconfig}\n  kubectl get projects\n"
            f"  python -m headroom.cli status search\n  operator log: {operator.log_path}\nCtrl-C stops everything."
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        return 0
    finally:
        if operator is not None:
            operator.stop()
        plane.stop()


def _get_projects(kubeconfig: Path) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "projects"], capture_output=True, text=True
    )
    return result.stdout + result.stderr


if __name__ == "__main__":
    sys.exit(main())
