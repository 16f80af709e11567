"""The overcommit budget on the real API server, with the cluster's capacity from a real Prometheus.

The platform runs Headroom with `--max-overcommit requests.cpu=1.5` and a Prometheus that holds
kube-state-metrics' kube_node_status_allocatable (backfilled: 10 allocatable cores). A team asks for
far more than the cluster has and gets it signed off: the raise is held, with a condition and an
Event that say by how much, and nothing moves; a tenant (even an approver) cannot set the capacity
override; a platform approver can, for exactly that change, and then it applies. A decrease never
waits, however far past the budget the cluster is. `headroom capacity` shows the totals.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from headroom.core.quantity import format_quantity, parse_quantity
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest
from tests.harness.prometheus import Prometheus, _require
from tests.integration.test_tenant_sign_off import (
    APPROVERS,
    GROUP,
    PLURAL,
    PROJECT,
    TEAM,
    VERSION,
    _exists,
    approve,
    denied,
    edit_spec,
    get_project,
    governed,
    hard,
    make_namespace,
    patch,
    settled,
    team_rbac_only,  # noqa: F401 - a fixture, used by name
)

pytestmark = pytest.mark.integration
k8s = kubernetes.client
REPO = Path(__file__).resolve().parents[2]
PLATFORM = ["headroom:platform-approvers"]
OVERRIDE, OVERRIDE_BY = "headroom.dev/capacity-override", "headroom.dev/capacity-override-by"
ALLOCATABLE_CORES = 10


def _allocatable_history(prometheus: Prometheus, cores: int) -> None:
    """kube_node_status_allocatable of two nodes, as kube-state-metrics exports it, for the last two
    hours and the next two (so that the test never outlives its samples)."""
    now = int(datetime.now(UTC).timestamp())
    lines = ["# TYPE kube_node_status_allocatable gauge"]
    nodes = {"node-a": cores // 2, "node-b": cores - cores // 2}
    for node, cpu in nodes.items():
        for resource, unit, value in (("cpu", "core", cpu), ("memory", "byte", 32 * 2**30), ("pods", "integer", 110)):
            labels = f'job="kube-state-metrics",node="{node}",resource="{resource}",unit="{unit}"'
            lines += [
                f"kube_node_status_allocatable{{{labels}}} {value} {t}" for t in range(now - 7200, now + 7200, 60)
            ]
    source = prometheus.workdir / "allocatable.om"
    prometheus.data_dir.mkdir(parents=True, exist_ok=True)
    source.write_text("\n".join([*lines, "# EOF"]) + "\n")
    subprocess.run(
        [
            _require("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            str(source),
            str(prometheus.data_dir),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path / "prometheus")
    _allocatable_history(server, ALLOCATABLE_CORES)
    yield server.start()
    server.stop()


@pytest.fixture
def budgeted(
    admin: k8s.ApiClient,
    team_rbac_only: None,  # noqa: F811 - the fixture imported above
    prometheus: Prometheus,
    start_operator: Callable[..., OperatorProcess],
) -> Iterator[tuple[str, str, OperatorProcess]]:
    """Project "payments" (two namespaces governed at 2 cpu, 10 pods each) under a budget of 1.5 x 10 cores."""
    a, b = make_namespace(admin, "cap-a"), make_namespace(admin, "cap-b")
    operator = start_operator(
        f"--prometheus-url={prometheus.url}", "--max-overcommit=requests.cpu=1.5", "--resync-interval=5s"
    )
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, PROJECT)
        wait_for(lambda: not _exists(admin, PROJECT), 20, "an earlier payments Project to go")
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            PROJECT,
            [a, b],
            quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}},
        ),
    )
    assert governed(admin, a) == {"requests.cpu": "2", "pods": "10"}
    assert governed(admin, b) == {"requests.cpu": "2", "pods": "10"}
    yield a, b, operator
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, PROJECT)
    for ns in (a, b):
        with contextlib.suppress(ApiException):
            k8s.CoreV1Api(admin).delete_namespace(ns)


def _ask(cpu: str) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["namespaces"][0]["requested"] = {"requests.cpu": cpu}

    return change


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


def _events(admin: k8s.ApiClient, reason: str) -> list[str]:
    items = (
        k8s.CoreV1Api(admin)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={PROJECT},reason={reason}")
        .items
    )
    return [e.message for e in items]


def _override(client: k8s.ApiClient, change: str, who: str) -> None:
    patch(client, {"metadata": {"annotations": {OVERRIDE: change, OVERRIDE_BY: who}}})


def _governed_total(operator: OperatorProcess) -> Decimal:
    """What the operator publishes as the cluster's governed requests.cpu (every test's quotas count)."""
    return Decimal(str(operator.metric("headroom_capacity_governed_hard", {"resource": "requests.cpu"})))


def test_a_raise_past_the_budget_is_held_until_a_platform_approver_overrides_it(
    cluster: Cluster, admin: k8s.ApiClient, budgeted: tuple[str, str, OperatorProcess]
) -> None:
    a, _, operator = budgeted
    dana, bob = cluster.impersonate("dana", TEAM), cluster.impersonate("bob", APPROVERS)
    assert operator.metric("headroom_capacity_allocatable", {"resource": "requests.cpu"}) == ALLOCATABLE_CORES

    edit_spec(dana, "dana", _ask("100"))
    change = settled(admin)["pendingChange"]["id"]
    approve(bob, change, "bob")

    def held() -> dict[str, Any] | None:
        status = get_project(admin).get("status") or {}
        return status if (status.get("pendingChange") or {}).get("heldForCapacity") else None

    status = wait_for(held, 30, "the signed-off raise to be held by the budget")
    (excess,) = status["pendingChange"]["heldForCapacity"]
    total = parse_quantity(excess["total"])
    # The cluster's total as /metrics has it (every quota, ours at 2 + 2), with 100 instead of 2 here.
    wait_for(lambda: _governed_total(operator) == total - 98, 20, "the governed total on /metrics to agree")
    assert status["pendingChange"]["heldForCapacity"] == [
        {
            "resource": "requests.cpu",
            "total": format_quantity(total, "requests.cpu"),
            "budget": "1.5",
            "allocatable": "10",
            "over": format_quantity(total - 15, "requests.cpu"),
        }
    ]
    condition = _condition(status, "CapacityHeld")
    assert (condition["status"], condition["reason"]) == ("True", "OverBudget")
    assert f"by {format_quantity(total - 15, 'requests.cpu')}" in condition["message"]
    assert _condition(status, "ChangePending")["reason"] == "HeldForCapacity"
    assert hard(admin, a) == {"requests.cpu": "2", "pods": "10"}  # nothing moved, nothing shrank
    messages = wait_for(lambda: _events(admin, "ChangeHeld"), 20, "the ChangeHeld Event")
    assert len(messages) == 1 and change in messages[0] and "past the budget 1.5x (15)" in messages[0]
    # The approval is kept, not spent.
    assert get_project(admin)["metadata"]["annotations"]["headroom.dev/approved-change"] == change

    # Neither the team nor a reviewer may let it through; the requester may not either, even as a
    # platform approver (four eyes).
    assert "headroom:platform-approvers" in denied(lambda: _override(dana, change, "dana"))
    assert "headroom:platform-approvers" in denied(lambda: _override(bob, change, "bob"))
    dana_platform = cluster.impersonate("dana", [*TEAM, *PLATFORM])
    assert "four eyes" in denied(lambda: _override(dana_platform, change, "dana"))
    pat = cluster.impersonate("pat", PLATFORM)
    assert "own user name (pat)" in denied(lambda: _override(pat, change, "bob"))
    assert hard(admin, a) == {"requests.cpu": "2", "pods": "10"}

    _override(pat, change, "pat")
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "100", "pods": "10"}, 30, "the overridden raise")

    def applied() -> dict[str, Any] | None:
        # An annotation does not move the generation: wait for the status of the pass that applied it.
        status = get_project(admin).get("status") or {}
        return status if (status.get("lastAppliedChange") or {}).get("id") == change else None

    status = wait_for(applied, 20, "the status recording the applied change")
    assert "pendingChange" not in status
    assert _condition(status, "CapacityHeld")["status"] == "False"
    # Who let it past the budget stays with the change.
    assert (status["history"][-1]["approvedBy"], status["history"][-1]["capacityOverrideBy"]) == ("bob", "pat")

    # Far past the budget now, a decrease still applies at once.
    edit_spec(dana, "dana", _ask("50"))
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "50", "pods": "10"}, 30, "the decrease")
    assert "pendingChange" not in settled(admin)


def test_headroom_capacity_shows_the_totals_per_team_and_project(
    cluster: Cluster, admin: k8s.ApiClient, budgeted: tuple[str, str, OperatorProcess], prometheus: Prometheus
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "headroom.cli", "capacity", f"--kubeconfig={cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )

    settled(admin)
    done = run(f"--prometheus-url={prometheus.url}", "--max-overcommit=requests.cpu=1.5", "-o", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {(r["scope"], r["resource"]): r for r in report["rows"]}
    # payments: 2 + 2 cores of 10 allocatable, 10 + 10 pods of 220.
    assert rows[("project payments", "requests.cpu")] == {
        "scope": "project payments",
        "resource": "requests.cpu",
        "governed": "4",
        "allocatable": "10",
        "ratio": "0.40",
        "budget": "",
    }
    assert rows[("project payments", "pods")]["ratio"] == "0.09"
    assert rows[("team payments", "requests.cpu")]["governed"] == "4"
    cluster_cpu = rows[("cluster", "requests.cpu")]
    assert cluster_cpu["budget"] == "1.5" and cluster_cpu["allocatable"] == "10"

    table = run(f"--prometheus-url={prometheus.url}")
    assert table.returncode == 0, table.stderr
    assert f"Allocatable capacity from Prometheus {prometheus.url}" in table.stdout
    assert any(
        line.split()[:5] == ["project", "payments", "requests.cpu", "4", "10"] for line in table.stdout.splitlines()
    )

    # Without Prometheus the Nodes are read; none here (the control plane alone) means no ratio, not zero.
    nodes = run("-o", "json")
    if not k8s.CoreV1Api(admin).list_node().items:
        assert nodes.returncode == 0, nodes.stderr
        assert {r["ratio"] for r in json.loads(nodes.stdout)["rows"]} == {"-"}

    unreachable = run("--prometheus-url=http://127.0.0.1:9")
    assert unreachable.returncode == 7 and "cannot read the allocatable capacity" in unreachable.stderr
