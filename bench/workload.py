"""The benchmark's world: N project namespaces with a few Pending pods each, their history, the Projects.

Everything is deterministic in the project's index, so the history file, the fake Prometheus and
the check of the governed values all agree without sharing state.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import urllib3
from headroom.core.derivation import derive_namespace
from headroom.core.quantity import parse_quantity
from kubernetes.client import ApiClient, ApiException

k8s = kubernetes.client
T = TypeVar("T")

RUN_LABEL = "bench.headroom.dev/run"
BASELINE_LABEL = "bench.headroom.dev/quota"  # set to "baseline": the baseline's onboarding
RESOURCES = ("limits.cpu", "limits.memory", "pods", "requests.cpu", "requests.memory")
GI = 2**30

# Each pod: what it requests and what it may use. Pods stay Pending (there is no scheduler) and
# still count in quota, as Pending pods do.
POD_REQUESTS = {"cpu": "100m", "memory": "128Mi"}
POD_LIMITS = {"cpu": "200m", "memory": "256Mi"}


def name_of(index: int) -> str:
    return f"bench-{index:05d}"


def peaks_of(index: int) -> dict[str, Decimal]:
    """The namespace's peak over the lookback: cores, bytes, pods. Above the floors and current use,
    so that a quota governed from real history differs from one governed without it."""
    cpu = Decimal(1000 + 250 * (index % 8)) / 1000
    memory = Decimal((2 + index % 4) * GI)
    return {
        "requests.cpu": cpu,
        "requests.memory": memory,
        "limits.cpu": 2 * cpu,
        "limits.memory": 2 * memory,
        "pods": Decimal(12 + index % 6),
    }


def used_of(pods: int) -> dict[str, Decimal]:
    per = {
        "requests.cpu": parse_quantity(POD_REQUESTS["cpu"]),
        "requests.memory": parse_quantity(POD_REQUESTS["memory"]),
        "limits.cpu": parse_quantity(POD_LIMITS["cpu"]),
        "limits.memory": parse_quantity(POD_LIMITS["memory"]),
        "pods": Decimal(1),
    }
    return {r: v * pods for r, v in per.items()}


def expected_governed(index: int, pods: int) -> dict[str, Decimal]:
    """What Headroom must govern: the derivation from the peaks above (the operator's own module)."""
    used = used_of(pods)
    derivations = derive_namespace(RESOURCES, peaks_of(index), used, 20, {})
    return {r: max(d.recommended, used[r]) for r, d in derivations.items()}


def _text(value: Decimal, resource: str) -> str:
    if resource.endswith(".cpu"):
        return f"{int(value * 1000)}m"
    return str(int(value))


def write_history(path: Path, count: int, days: int) -> Path:
    """`days` daily samples per namespace and resource (below the peak), the most recent at the peak."""
    rng = random.Random(42)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = ["time,namespace,resource,value"]
    for index in range(count):
        namespace = name_of(index)
        for resource, peak in peaks_of(index).items():
            for day in range(days, 0, -1):
                value = peak if day == 1 else peak * Decimal(str(round(rng.uniform(0.5, 0.95), 3)))
                at = (now - timedelta(days=day) + timedelta(hours=1)).isoformat()
                rows.append(f"{at},{namespace},{resource},{_text(value, resource)}")
    path.write_text("\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------------------------- API calls


def client(kubeconfig: Path, pool: int = 64) -> ApiClient:
    config = k8s.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    config.connection_pool_maxsize = pool
    config.retries = 0
    return ApiClient(config)


_RETRYABLE = {403, 429, 500, 502, 503, 504}  # 403: the namespace's ServiceAccount is not there yet


def retrying(call: Callable[[], T], what: str, deadline_seconds: float = 300) -> T | None:
    """Retry transient failures generously (the control plane is busy); 409 AlreadyExists is done."""
    deadline = time.monotonic() + deadline_seconds
    delay = 0.2
    while True:
        try:
            return call()
        except ApiException as exc:
            if exc.status == 409:
                return None
            if exc.status not in _RETRYABLE or time.monotonic() > deadline:
                raise RuntimeError(f"{what}: HTTP {exc.status}: {exc.body}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from exc
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 5)


def pod(name: str) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels={"app": "bench"}),
        spec=k8s.V1PodSpec(
            automount_service_account_token=False,
            containers=[
                k8s.V1Container(
                    name="app",
                    image="registry.invalid/bench:1",
                    resources=k8s.V1ResourceRequirements(requests=dict(POD_REQUESTS), limits=dict(POD_LIMITS)),
                )
            ],
        ),
    )


def parallel(items: Iterable[T], action: Callable[[T], Any], workers: int) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(action, items))


def create_namespaces(
    api: ApiClient, count: int, pods: int, run_id: str, workers: int, progress: Callable[[str], None]
) -> float:
    """N namespaces, each with `pods` Pending pods. Returns the seconds it took."""
    core = k8s.CoreV1Api(api)
    done = [0]
    lock = threading.Lock()
    started = time.monotonic()

    def one(index: int) -> None:
        name = name_of(index)
        body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={RUN_LABEL: run_id}))
        retrying(lambda: core.create_namespace(body, _request_timeout=60), f"namespace {name}")
        for j in range(pods):
            retrying(
                lambda j=j: core.create_namespaced_pod(name, pod(f"app-{j}"), _request_timeout=60),
                f"pod {name}/app-{j}",
            )
        with lock:
            done[0] += 1
            if done[0] % max(1, count // 10) == 0:
                progress(f"  {done[0]}/{count} namespaces with {pods} pods each")

    parallel(range(count), one, workers)
    return time.monotonic() - started


def project_body(index: int) -> dict[str, Any]:
    name = name_of(index)
    return {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {"owner": {"team": f"team-{index % 50:02d}"}, "namespaces": [{"name": name}]},
    }


def create_projects(api: ApiClient, count: int, workers: int) -> dict[str, float]:
    """Create the Projects; returns, per namespace, the moment (time.time()) its create was sent."""
    custom = k8s.CustomObjectsApi(api)
    sent: dict[str, float] = {}

    def one(index: int) -> None:
        body = project_body(index)
        sent[name_of(index)] = time.time()
        retrying(
            lambda: custom.create_cluster_custom_object(
                "headroom.dev", "v1alpha1", "projects", body, _request_timeout=60
            ),
            f"project {name_of(index)}",
        )

    parallel(range(count), one, workers)
    return sent


def label_for_baseline(api: ApiClient, count: int, workers: int, value: str = "baseline") -> dict[str, float]:
    """The baseline's onboarding: label the namespace (`value`: which script it opts in to);
    returns when each label was sent."""
    core = k8s.CoreV1Api(api)
    sent: dict[str, float] = {}

    def one(index: int) -> None:
        name = name_of(index)
        sent[name] = time.time()
        retrying(
            lambda: core.patch_namespace(name, {"metadata": {"labels": {BASELINE_LABEL: value}}}, _request_timeout=60),
            f"label {name}",
        )

    parallel(range(count), one, workers)
    return sent
