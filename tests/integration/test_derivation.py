"""Quotas derived from real Prometheus history: exact values, floors, current use, outages, `plan`.

Each test backfills kube-state-metrics v2 series into its own Prometheus (tests/harness/prometheus.py)
and runs the operator against it with --history-source=prometheus, as in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from headroom.core import prometheus_days as days
from headroom.core.history import day_offset
from headroom.core.quantity import parse_quantity
from headroom.shell.history.prometheus import DEFAULT_QUERIES
from kubernetes.client import ApiException

from hack.localcluster.kube import wait_for
from hack.localcluster.operator import REPO, OperatorProcess, custom, project_manifest
from tests.harness.prometheus import PodSegment, Prometheus, ago, pod

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"

# Floors far below every peak, so that what is asserted is the peak plus headroom.
LOW_MINIMUM = {
    "requests.cpu": "100m",
    "requests.memory": "64Mi",
    "limits.cpu": "100m",
    "limits.memory": "64Mi",
    "pods": "1",
}


# --------------------------------------------------------------------------------------------- history


def peak_history(ns: str, now: datetime) -> list[PodSegment]:
    """A namespace whose peaks are known exactly, each at a different moment of the last day.

    requests.cpu 3300m, requests.memory 1000Mi, limits.cpu 3333m, limits.memory 1001Mi, pods 7. The
    CPU sums use terms whose float64 sum is exact in any order (see the float-noise test below).
    Around them: lower moments, pods that must not count (Succeeded, Failed, another namespace whose
    name starts with this one, a larger peak older than the 30-day lookback) and a low present.
    Epochs are an hour apart, so the 5-minute staleness of backfilled series never joins two.
    """

    def epoch(hours: float) -> tuple[datetime, datetime]:
        return ago(now, hours=hours), ago(now, hours=hours) + timedelta(minutes=30)

    ancient, lower, cpu_peak, memory_peak, pods_peak = (
        (ago(now, days=35), ago(now, days=35) + timedelta(minutes=30)),
        epoch(30),
        epoch(20),
        epoch(10),
        epoch(5),
    )
    huge = {"requests.cpu": "40", "requests.memory": "40Gi", "limits.cpu": "80", "limits.memory": "80Gi"}
    return [
        # 35 days ago, outside the lookback: far above everything since.
        pod(ns, "ancient", *ancient, app=huge),
        *(pod(ns, f"ancient-{i}", *ancient) for i in range(12)),
        # Lower: cpu 1000m/2, memory 600Mi/800Mi, 2 pods.
        *(
            pod(
                ns,
                f"lower-{i}",
                *lower,
                app={"requests.cpu": "500m", "requests.memory": "300Mi", "limits.cpu": "1", "limits.memory": "400Mi"},
            )
            for i in range(2)
        ),
        # The CPU peak: 1300m + 1000m + 500m + 500m requests, 2000m + 1000m + 333m limits, one pod Pending.
        pod(
            ns,
            "batch-1",
            *cpu_peak,
            app={"requests.cpu": "1300m", "requests.memory": "200Mi", "limits.cpu": "2", "limits.memory": "250Mi"},
        ),
        pod(
            ns,
            "batch-2",
            *cpu_peak,
            app={"requests.cpu": "1", "requests.memory": "200Mi", "limits.cpu": "1", "limits.memory": "250Mi"},
        ),
        pod(
            ns,
            "batch-3",
            *cpu_peak,
            "Pending",
            app={"requests.cpu": "500m", "requests.memory": "100Mi", "limits.cpu": "333m", "limits.memory": "150Mi"},
            sidecar={"requests.cpu": "500m", "requests.memory": "100Mi"},
        ),
        # Finished pods keep their request series in kube-state-metrics; they hold nothing.
        pod(ns, "job-done", *cpu_peak, "Succeeded", app=huge),
        pod(ns, "job-failed", *cpu_peak, "Failed", app=huge),
        # The memory peak: 500Mi + 500Mi requests, 500Mi + 501Mi limits.
        pod(
            ns,
            "cache-1",
            *memory_peak,
            app={"requests.cpu": "250m", "requests.memory": "500Mi", "limits.cpu": "500m", "limits.memory": "500Mi"},
        ),
        pod(
            ns,
            "cache-2",
            *memory_peak,
            app={"requests.cpu": "250m", "requests.memory": "500Mi", "limits.cpu": "500m", "limits.memory": "501Mi"},
        ),
        # The pods peak: 7 pods, 2 of them still Pending (they hold their requests too).
        *(
            pod(
                ns,
                f"web-{i}",
                *pods_peak,
                "Pending" if i >= 5 else "Running",
                app={"requests.cpu": "100m", "requests.memory": "64Mi", "limits.cpu": "200m", "limits.memory": "128Mi"},
            )
            for i in range(7)
        ),
        # A namespace whose name starts with this one: a regex without anchors would add it.
        *(pod(f"{ns}-shadow", f"big-{i}", *cpu_peak, app=huge) for i in range(12)),
        # The present: far below the peaks.
        pod(
            ns,
            "web-now",
            ago(now, minutes=30),
            ago(now, minutes=1),
            app={"requests.cpu": "200m", "requests.memory": "100Mi", "limits.cpu": "400m", "limits.memory": "200Mi"},
        ),
    ]


PEAKS = {
    "requests.cpu": "3300m",
    "requests.memory": "1000Mi",
    "limits.cpu": "3333m",
    "limits.memory": "1001Mi",
    "pods": "7",
}
# peak x 1.2, rounded up to whole millicores, whole Mi, whole pods.
DERIVED = {
    "requests.cpu": "3960m",
    "requests.memory": "1200Mi",
    "limits.cpu": "4",  # 3333m x 1.2 = 3999.6m -> 4000m
    "limits.memory": "1202Mi",  # 1001Mi x 1.2 = 1201.2Mi -> 1202Mi
    "pods": "9",
}  # 7 x 1.2 = 8.4 -> 9


def simple_history(ns: str, now: datetime, cpu: str = "1", memory: str = "500Mi", pods: int = 1) -> list[PodSegment]:
    """`pods` pods three hours ago whose requests and limits add up to cpu and memory each."""
    share = {
        "requests.cpu": str(parse_quantity(cpu) / pods),
        "limits.cpu": str(parse_quantity(cpu) / pods),
        "requests.memory": str(parse_quantity(memory) / pods),
        "limits.memory": str(parse_quantity(memory) / pods),
    }
    return [pod(ns, f"app-{i}", ago(now, hours=3), ago(now, hours=2), app=share) for i in range(pods)]


# --------------------------------------------------------------------------------------------- helpers


def prometheus_args(prometheus: Prometheus, *extra: str) -> list[str]:
    return [
        "--history-source=prometheus",
        f"--prometheus-url={prometheus.url}",
        "--prometheus-step=1m",
        "--prometheus-timeout=5",
        *extra,
    ]


@pytest.fixture
def create_project(admin: k8s.ApiClient) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create a Project with a unique name; it is deleted when the test ends."""
    names: list[str] = []

    def create(namespaces: list[str], **spec: Any) -> dict[str, Any]:
        name = f"d-{uuid.uuid4().hex[:8]}"
        names.append(name)
        return dict(
            custom(admin).create_cluster_custom_object(
                GROUP, VERSION, PLURAL, project_manifest(name, namespaces, **spec)
            )
        )

    yield create
    for name in names:
        with contextlib.suppress(ApiException):
            custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def get_project(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def condition(project: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (project.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def wait_condition(
    admin: k8s.ApiClient, name: str, kind: str, status: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        project = get_project(admin, name)
        found = condition(project, kind)
        return project if (found.get("status"), found.get("reason")) == (status, reason) else None

    try:
        return wait_for(probe, timeout, f"{kind}={status} ({reason}) on Project {name}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; conditions now: {get_project(admin, name).get('status', {}).get('conditions')}"
        ) from None


def read_quota(admin: k8s.ApiClient, namespace: str) -> Any:
    try:
        return k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def quota_in_state(admin: k8s.ApiClient, namespace: str, state: str, timeout: float = 40) -> Any:
    def probe() -> Any:
        quota = read_quota(admin, namespace)
        return quota if quota and (quota.metadata.annotations or {}).get("headroom.dev/state") == state else None

    return wait_for(probe, timeout, f"a {state} quota in {namespace}")


def quota_facts(quota: Any) -> tuple[dict[str, str], str | None, str | None]:
    annotations = quota.metadata.annotations or {}
    return dict(quota.spec.hard), annotations.get("headroom.dev/state"), annotations.get("headroom.dev/governed-hard")


def hold(seconds: float, check: Callable[[], None], interval: float = 1.0) -> None:
    """Assert that `check` keeps passing for `seconds` (for things that must NOT change)."""
    deadline = time.monotonic() + seconds
    while True:
        check()
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def namespace_status(project: dict[str, Any]) -> dict[str, Any]:
    (entry,) = project["status"]["namespaces"]
    return dict(entry)


def run_plan(project: dict[str, Any], prometheus: Prometheus, tmp_path: Path) -> dict[str, dict[str, str]]:
    """`headroom plan -f FILE --history-source=prometheus ... -o json`, as a person runs it: rows by resource."""
    file = tmp_path / f"{project['metadata']['name']}.yaml"
    manifest = {k: project[k] for k in ("apiVersion", "kind")}
    manifest["metadata"] = {"name": project["metadata"]["name"]}
    manifest["spec"] = project["spec"]
    file.write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "headroom.cli",
            "plan",
            "-f",
            str(file),
            "--history-source=prometheus",
            f"--prometheus-url={prometheus.url}",
            "--prometheus-step=1m",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, f"headroom plan failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    rows = json.loads(result.stdout)
    return {row["resource"]: row for row in rows}


def make_pod(name: str, requests: dict[str, str], limits: dict[str, str]) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="app",
                    image="registry.invalid/app:1",
                    resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
                )
            ]
        ),
    )


# --------------------------------------------------------------------------------------------- tests


def test_quota_is_exactly_the_peak_plus_headroom_rounded_up(
    admin: k8s.ApiClient,
    namespace: str,
    create_project: Callable[..., dict[str, Any]],
    tmp_path: Path,
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    prometheus = prometheus_factory(peak_history(namespace, datetime.now(UTC)))
    # The traps are armed: counting finished pods, or looking back further, would give other peaks.
    requests_cpu = f'sum(kube_pod_container_resource_requests{{namespace="{namespace}", resource="cpu"}})'
    assert float(prometheus.query(f"max_over_time({requests_cpu}[30d:1m])")[0]["value"][1]) > 80
    live_cpu = f"max_over_time(({DEFAULT_QUERIES['requests.cpu']})[40d:1m])".format(namespaces=namespace)
    assert prometheus.query(live_cpu)[0]["value"][1] == "40"
    start_operator(*prometheus_args(prometheus))
    project = create_project([namespace], quota={"headroomPercent": 20, "minimum": LOW_MINIMUM})

    quota = quota_in_state(admin, namespace, "governed")
    assert quota.spec.hard == DERIVED
    assert json.loads(quota.metadata.annotations["headroom.dev/governed-hard"]) == {
        r: str(parse_quantity(v)) for r, v in DERIVED.items()
    }

    name = project["metadata"]["name"]
    status = wait_condition(admin, name, "HistoryAvailable", "True", "HistoryFound")
    entry = namespace_status(status)
    assert entry["state"] == "Governed"
    assert entry["peak"] == PEAKS
    assert entry["recommended"] == DERIVED
    assert entry["hard"] == DERIVED
    assert entry["reasons"] == dict.fromkeys(DERIVED, "peak+20%")
    assert condition(status, "Ready")["status"] == "True"


def test_plan_prints_the_values_the_operator_applies(
    admin: k8s.ApiClient,
    namespace: str,
    create_project: Callable[..., dict[str, Any]],
    tmp_path: Path,
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    prometheus = prometheus_factory(peak_history(namespace, datetime.now(UTC)))
    start_operator(*prometheus_args(prometheus))
    project = create_project([namespace], quota={"headroomPercent": 20, "minimum": LOW_MINIMUM})
    applied = quota_in_state(admin, namespace, "governed").spec.hard

    rows = run_plan(project, prometheus, tmp_path)

    assert {r: row["recommended"] for r, row in rows.items()} == applied == DERIVED
    assert {r: row["peak"] for r, row in rows.items()} == PEAKS
    assert {r: row["why"] for r, row in rows.items()} == dict.fromkeys(DERIVED, "peak+20%")


def test_float_noise_in_a_summed_cpu_peak_does_not_add_a_millicore(
    namespace: str, tmp_path: Path, prometheus_factory: Callable[..., Prometheus]
) -> None:
    now = datetime.now(UTC)
    prometheus = prometheus_factory(
        [
            pod(namespace, f"worker-{i}", ago(now, hours=3), ago(now, hours=2), app={"requests.cpu": "1100m"})
            for i in range(3)
        ]
    )
    summed = prometheus.query(
        f'sum(kube_pod_container_resource_requests{{namespace="{namespace}"}})', ago(now, hours=2, minutes=30)
    )[0]["value"][1]
    if summed != "3.3000000000000003":
        pytest.skip(f"this Prometheus sums 3 x 1.1 without float noise ({summed})")
    project = project_manifest(
        "float-noise", [namespace], quota={"resources": ["requests.cpu"], "minimum": {"requests.cpu": "100m"}}
    )

    rows = run_plan(project, prometheus, tmp_path)

    assert rows["requests.cpu"]["peak"] == "3300m"
    assert rows["requests.cpu"]["recommended"] == "3960m"


@pytest.mark.parametrize("lookback", ["6h", "30d"], ids=["one-subquery", "daily-peaks"])
def test_gpu_peaks_come_from_kube_state_metrics(
    namespace: str, tmp_path: Path, prometheus_factory: Callable[..., Prometheus], lookback: str
) -> None:
    """resource="nvidia_com_gpu": 3 GPUs at the peak, 3.6 with headroom, 4 whole GPUs recommended."""
    now = datetime.now(UTC)
    gpu = {"requests.cpu": "1", "requests.nvidia.com/gpu": "1", "limits.nvidia.com/gpu": "1"}
    prometheus = prometheus_factory(
        [
            *(pod(namespace, f"train-{i}", ago(now, hours=3), ago(now, hours=2), app=gpu) for i in range(3)),
            pod(namespace, "done", ago(now, hours=3), ago(now, hours=2), "Succeeded", app=gpu),
            pod(namespace, "eval", ago(now, hours=1), ago(now, minutes=30), app=gpu),
        ]
    )
    project = project_manifest(
        "gpus", [namespace], quota={"resources": ["requests.nvidia.com/gpu"], "lookback": lookback}
    )

    rows = run_plan(project, prometheus, tmp_path)

    assert rows["requests.nvidia.com/gpu"]["peak"] == "3"
    assert rows["requests.nvidia.com/gpu"]["recommended"] == "4"


def test_floor_and_current_use_win_over_a_lower_peak(
    admin: k8s.ApiClient,
    namespace: str,
    create_project: Callable[..., dict[str, Any]],
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    # History: 1 cpu, 500Mi, 1 pod -> peak + 20% is 1200m, 600Mi, 2 pods.
    prometheus = prometheus_factory(simple_history(namespace, datetime.now(UTC), cpu="1", memory="500Mi"))
    # Already running before the Project: 2700m requests, 3 cpu limits, 3 pods (all above peak + 20%),
    # 300Mi memory requests (below the 2Gi minimum) and 450Mi memory limits (below peak + 20%).
    # There is no scheduler: the pods stay Pending, and the quota counts them as it counts any pod.
    core = k8s.CoreV1Api(admin)
    for i in range(3):
        core.create_namespaced_pod(
            namespace, make_pod(f"running-{i}", {"cpu": "900m", "memory": "100Mi"}, {"cpu": "1", "memory": "150Mi"})
        )
    start_operator(*prometheus_args(prometheus))
    project = create_project([namespace], quota={"minimum": {**LOW_MINIMUM, "requests.memory": "2Gi"}})

    quota = quota_in_state(admin, namespace, "governed")
    # limits.memory: peak + 20 % is 600Mi, but a limit is never below the request beside it (2Gi).
    assert quota.spec.hard == {
        "requests.cpu": "2700m",
        "requests.memory": "2Gi",
        "limits.cpu": "3",
        "limits.memory": "2Gi",
        "pods": "3",
    }
    entry = namespace_status(
        wait_condition(admin, project["metadata"]["name"], "HistoryAvailable", "True", "HistoryFound")
    )
    assert entry["reasons"] == {
        "requests.cpu": "current use",
        "requests.memory": "minimum",
        "limits.cpu": "current use",
        "limits.memory": "at least requests.memory",
        "pods": "current use",
    }
    assert entry["used"] == {
        "requests.cpu": "2700m",
        "requests.memory": "300Mi",
        "limits.cpu": "3",
        "limits.memory": "450Mi",
        "pods": "3",
    }
    # Governed at current use: full, but nothing already running is over its quota.
    assert quota.status.used == {
        "requests.cpu": "2700m",
        "requests.memory": "300Mi",
        "limits.cpu": "3",
        "limits.memory": "450Mi",
        "pods": "3",
    }


def test_namespace_without_series_gets_the_minimum_and_says_so(
    admin: k8s.ApiClient,
    namespace: str,
    create_project: Callable[..., dict[str, Any]],
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    # Prometheus answers, with history for other namespaces only.
    prometheus = prometheus_factory(simple_history(f"{namespace}-other", datetime.now(UTC), cpu="30", pods=3))
    start_operator(*prometheus_args(prometheus))
    project = create_project([namespace])

    quota = quota_in_state(admin, namespace, "governed")
    # The built-in floors.
    assert quota.spec.hard == {
        "requests.cpu": "1",
        "requests.memory": "1Gi",
        "limits.cpu": "2",
        "limits.memory": "2Gi",
        "pods": "10",
    }
    status = wait_condition(admin, project["metadata"]["name"], "HistoryAvailable", "False", "NoHistory")
    assert namespace in condition(status, "HistoryAvailable")["message"]
    assert condition(status, "Ready")["status"] == "True"
    entry = namespace_status(status)
    assert not entry.get("peak")
    assert set(entry["reasons"].values()) == {"no history: minimum"}


def test_prometheus_outage_leaves_governed_quota_alone_until_it_answers_again(
    admin: k8s.ApiClient,
    namespace: str,
    create_project: Callable[..., dict[str, Any]],
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    prometheus = prometheus_factory(simple_history(namespace, datetime.now(UTC), cpu="5", memory="5Gi", pods=5))
    operator = start_operator(*prometheus_args(prometheus, "--resync-interval=5s"))
    name = create_project([namespace], quota={"minimum": LOW_MINIMUM})["metadata"]["name"]
    governed = quota_facts(quota_in_state(admin, namespace, "governed"))
    assert governed[0] == {
        "requests.cpu": "6",
        "requests.memory": "6Gi",
        "limits.cpu": "6",
        "limits.memory": "6Gi",
        "pods": "6",
    }
    wait_condition(admin, name, "HistoryAvailable", "True", "HistoryFound")

    def unchanged() -> None:
        # Missing data read as zero would lower every value to the (low) minimum.
        assert quota_facts(read_quota(admin, namespace)) == governed

    prometheus.stop()
    stopped = time.monotonic()
    # The next resync with a new step to ask about (--prometheus-step=1m: within a minute; a cycle
    # with nothing new since the last answer asks nothing) finds no history and says so ...
    status = wait_condition(admin, name, "HistoryAvailable", "False", "HistoryUnavailable", timeout=90)
    assert "unavailable" in condition(status, "HistoryAvailable")["message"]
    assert condition(status, "Ready")["status"] == "True"
    # ... and keeps the quota as it is, resync after resync.
    hold(max(5.0, 20 - (time.monotonic() - stopped)), unchanged)

    # A restart of the operator during the outage has nothing cached, and still changes nothing.
    operator.stop()
    operator.start()

    def reconciled_without_history() -> bool:
        try:
            return (
                # Prometheus asked (once a cycle while it is unreachable: the rest of the cycle is skipped)
                operator.metric("headroom_history_queries_total") >= 1
                and operator.metric("headroom_reconcile_duration_seconds_count") >= 1
            )
        except OSError:
            return False  # its metrics endpoint is not up yet

    wait_for(reconciled_without_history, 30, "a reconcile of the restarted operator")
    hold(5, unchanged)
    assert condition(get_project(admin, name), "HistoryAvailable")["reason"] == "HistoryUnavailable"

    prometheus.start()
    status = wait_condition(admin, name, "HistoryAvailable", "True", "HistoryFound", timeout=30)
    unchanged()
    assert namespace_status(status)["hard"] == governed[0]


def test_prometheus_down_at_bootstrap_keeps_counting_and_never_guesses(
    admin: k8s.ApiClient,
    namespace: str,
    create_project: Callable[..., dict[str, Any]],
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    prometheus = prometheus_factory(
        simple_history(namespace, datetime.now(UTC), cpu="5", memory="5Gi", pods=5), start=False
    )
    start_operator(*prometheus_args(prometheus, "--resync-interval=5s"))
    name = create_project([namespace], quota={"minimum": LOW_MINIMUM})["metadata"]["name"]

    quota_in_state(admin, namespace, "counting")
    status = wait_condition(admin, name, "HistoryAvailable", "False", "HistoryUnavailable")
    assert namespace_status(status)["state"] == "Counting"
    assert condition(status, "Ready")["status"] == "False"

    def still_counting() -> None:
        quota = read_quota(admin, namespace)
        hard, state, governed = quota_facts(quota)
        assert (state, governed) == ("counting", None)
        # Counting values are far above any real use: nothing is blocked, nothing is guessed.
        assert set(hard) == {"requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"}
        assert all(parse_quantity(v) >= 10**6 for v in hard.values()), hard

    hold(8, still_counting)

    prometheus.start()
    quota = quota_in_state(admin, namespace, "governed", timeout=30)
    assert quota.spec.hard == {
        "requests.cpu": "6",
        "requests.memory": "6Gi",
        "limits.cpu": "6",
        "limits.memory": "6Gi",
        "pods": "6",
    }
    wait_condition(admin, name, "HistoryAvailable", "True", "HistoryFound")


def _namespace_due_now(prefix: str, now: datetime) -> str:
    """A namespace name whose daily write of the kept days falls due now: its own moment of the day
    (a hash of its name) passed less than 40 minutes ago, so the write window holds the test."""
    for i in range(100_000):
        name = f"{prefix}-{i}"
        offset = day_offset(name)
        slot = days.midnight(days.utc_day(now - offset)) + offset
        if timedelta(0) <= now - slot < timedelta(minutes=40):
            return name
    raise AssertionError("no namespace name falls due now")


def test_prometheus_days_kept_on_the_quota_spare_prometheus_after_a_restart(
    admin: k8s.ApiClient,
    create_project: Callable[..., dict[str, Any]],
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    now = datetime.now(UTC)
    namespace = _namespace_due_now(f"t-days-{uuid.uuid4().hex[:6]}", now)
    core = k8s.CoreV1Api(admin)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    try:
        # 6 CPUs two days ago, 2 today: the peak over a 3-day lookback is the old day's.
        old_day = days.midnight(days.utc_day(now) - timedelta(days=2)) + timedelta(hours=3)
        prometheus = prometheus_factory(
            [
                pod(namespace, "batch", old_day, old_day + timedelta(minutes=30), app={"requests.cpu": "6"}),
                pod(namespace, "web", ago(now, hours=1), ago(now, minutes=50), app={"requests.cpu": "2"}),
            ]
        )
        args = prometheus_args(prometheus, "--resync-interval=5s")
        operator = start_operator(*args)
        quota = {"resources": ["requests.cpu"], "lookback": "3d", "minimum": {"requests.cpu": "100m"}}
        name = create_project([namespace], quota=quota)["metadata"]["name"]
        governed = quota_in_state(admin, namespace, "governed")
        assert governed.spec.hard == {"requests.cpu": "7200m"}  # 6 + 20 %

        # Its closed days are written on the quota, through yesterday.
        def kept() -> str | None:
            text = (read_quota(admin, namespace).metadata.annotations or {}).get("headroom.dev/prometheus-days")
            return text if text and days.persisted_through(text) == days.utc_day(now) - timedelta(days=1) else None

        text = wait_for(kept, 30, "the kept days on the quota")
        assert days.decode_days(text)["requests.cpu"].days[days.utc_day(old_day)] == 6

        operator.stop()
        asked_before = len(prometheus.asked())
        operator = start_operator(*args)
        wait_for(
            lambda: (
                operator.metric("headroom_history_queries_total") >= 1
                and operator.metric("headroom_reconcile_duration_seconds_count") >= 1
            ),
            30,
            "a reconcile of the restarted operator",
        )
        wait_condition(admin, name, "HistoryAvailable", "True", "HistoryFound")
        assert read_quota(admin, namespace).spec.hard == {"requests.cpu": "7200m"}
        # After the restart Prometheus was asked about today only: no day the quota keeps.
        midnight = days.midnight(days.utc_day(now))
        for entry in prometheus.asked()[asked_before:]:
            query, params = entry["params"]["query"], entry["params"]
            if not query.startswith("max_over_time(") or namespace not in query:
                # The daily probe for recording rules, the capacity model's queries, and the days
                # of Projects other tests left behind (the restarted operator governs them too).
                continue
            assert params["step"] == 0, f"a range query after the restart: {query}"
            evaluated = datetime.fromisoformat(params["end"].replace("Z", "+00:00"))
            seconds = int(query.rsplit("[", 1)[1].split("s:", 1)[0])
            assert evaluated - timedelta(seconds=seconds) >= midnight, query
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)
