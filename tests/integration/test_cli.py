"""`headroom request | approve | status | plan` against the cluster, as real users with their own credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes
import pytest
import yaml
from headroom.core.changes import change_id
from headroom.core.spec import parse_project

from hack.localcluster.controlplane import write_kubeconfig
from hack.localcluster.kube import Cluster, apply_yaml, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
REPO = Path(__file__).resolve().parents[2]


def user_kubeconfig(cluster: Cluster, user: str, groups: tuple[str, ...], path: Path) -> Path:
    """A kubeconfig with a client certificate: the CLI authenticates like any kubectl user."""
    if cluster.plane is None or cluster.plane.pki is None:
        pytest.skip("needs the local control plane's CA to issue user certificates")
    import base64

    crt, key = cluster.plane.pki.issue_client(user, groups)
    return write_kubeconfig(
        path,
        cluster.plane.server,
        cluster.plane.pki.ca_cert,
        {
            "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        },
    )


def headroom(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headroom.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        cwd=REPO,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """An error as a person sees it: exactly one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_request_approve_and_status_from_a_terminal(
    cluster: Cluster,
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    approval_policy: None,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    apply_yaml(admin, REPO / "manifests" / "approval" / "approvers-rbac.yaml")
    owner = user_kubeconfig(cluster, "alice", ("payments-devs",), tmp_path / "alice")
    reviewer = user_kubeconfig(cluster, "bob", ("headroom:approvers",), tmp_path / "bob")
    history = tmp_path / "history.csv"
    history.write_text(
        f"time,namespace,resource,value\n{(datetime.now(UTC) - timedelta(days=1)).isoformat()},"
        f"{namespace},requests.cpu,5\n"
    )
    start_operator("--history-source=file", f"--history-file={history}")
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        "headroom.dev",
        "v1alpha1",
        "projects",
        project_manifest(name, [namespace], quota={"resources": ["requests.cpu", "pods"]}),
    )
    core = k8s.CoreV1Api(admin)
    wait_for(
        lambda: core.read_namespaced_resource_quota("headroom", namespace).spec.hard.get("requests.cpu") == "6",
        40,
        "the derived quota (5 cores + 20 %)",
    )

    requested = headroom(owner, "request", name, namespace, "requests.cpu=9")
    assert requested.returncode == 0, requested.stderr
    assert "awaits sign-off" in requested.stdout
    pending = wait_for(
        lambda: (
            custom(admin)
            .get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name)
            .get("status", {})
            .get("pendingChange")
            or {}
        ).get("id"),
        20,
        "the pending change",
    )

    # What a reviewer reads before signing off: the 71-character id once, and the short form that
    # `kubectl get projects` shows in its Pending column (the API server renders the column).
    shown = headroom(reviewer, "status", name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count(pending) == 1, shown.stdout
    assert f"pending change {pending} since" in shown.stdout
    assert f"    {namespace} requests.cpu from 6 to 9" in shown.stdout
    request = admin.param_serialize(
        "GET",
        f"/apis/headroom.dev/v1alpha1/projects/{name}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
    )
    response = admin.call_api(*request)
    response.read()
    columns = json.loads(response.data)
    names = [c["name"] for c in columns["columnDefinitions"]]
    assert columns["rows"][0]["cells"][names.index("Pending")] == pending[:19]

    # The owner may not read quotas: the diff still shows what is governed now (from the Project's
    # status), not "currently unlimited"; then the sign-off policy's sentence is the one error line.
    not_allowed = headroom(owner, "approve", name, "--yes")
    assert not_allowed.returncode == 4  # forbidden
    assert f"{namespace} requests.cpu from 6 to 9" in not_allowed.stdout
    assert "unlimited" not in not_allowed.stdout
    line = one_line_error(not_allowed)
    assert line.startswith(
        f"error: cannot approve {pending} on Project {name}: only members of group "
        "headroom:approvers may sign off a change"
    )
    assert "ValidatingAdmissionPolicy" not in line and "HTTP" not in line

    stale = headroom(reviewer, "approve", name, "--id", "sha256:" + "1" * 64, "--yes")
    assert stale.returncode == 6  # conflict: another change is pending
    assert f"the pending change is now {pending}" in one_line_error(stale)
    stale_short = headroom(reviewer, "approve", name, "--id", "sha256:1111", "--yes")
    assert stale_short.returncode == 6
    assert f"the pending change is now {pending}" in one_line_error(stale_short)

    # The short form of the id (as docs and `kubectl get projects` abbreviate it) approves the full id.
    approved = headroom(reviewer, "approve", name, "--id", pending[:15], "--yes")
    assert approved.returncode == 0, approved.stderr
    assert f"{namespace} requests.cpu from 6 to 9" in approved.stdout
    assert f"approved {pending} as bob" in approved.stdout
    annotations = custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name)["metadata"][
        "annotations"
    ]
    assert annotations["headroom.dev/approved-change"] == pending
    wait_for(
        lambda: core.read_namespaced_resource_quota("headroom", namespace).spec.hard["requests.cpu"] == "9",
        20,
        "the approved raise",
    )

    def recorded() -> dict[str, object] | None:
        status = json.loads(headroom(reviewer, "status", name, "-o", "json").stdout)
        return status if (status.get("lastAppliedChange") or {}).get("id") == pending else None

    status = wait_for(recorded, 20, "headroom status to show the applied change")
    # Nothing is pending any more: approving again is refused, not a sign-off of the applied id.
    again = headroom(reviewer, "approve", name, "--yes")
    assert again.returncode == 6
    assert f"Project {name} has no pending change" in one_line_error(again)
    assert "approved-change" not in again.stdout
    assert status["lastAppliedChange"]["approvedBy"] == "bob"  # type: ignore[index]
    table = headroom(reviewer, "status", name)
    assert f"applied {pending}" in table.stdout and "by bob" in table.stdout

    plan = headroom(reviewer, "plan", name, "-o", "json", "--history-source=file", f"--history-file={history}")
    assert plan.returncode == 0, plan.stderr
    rows = {row["resource"]: row for row in json.loads(plan.stdout)}
    assert rows["requests.cpu"]["peak"] == "5" and rows["requests.cpu"]["recommended"] == "6"
    assert rows["requests.cpu"]["hard"] == "9"


def test_kubectl_global_flags_select_kubeconfig_context_and_identity(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str, tmp_path: Path, approval_policy: None
) -> None:
    """`kubectl headroom` takes kubectl's flags: a reviewer acts through another context and identity."""
    apply_yaml(admin, REPO / "manifests" / "approval" / "approvers-rbac.yaml")
    # A kubeconfig whose current context is a dead server: only --context reaches the cluster.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    live = config["current-context"]
    config["clusters"].append({"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"].append({"name": "dead", "context": {"cluster": "dead", "user": config["users"][0]["name"]}})
    config["current-context"] = "dead"
    kubeconfig = tmp_path / "two-contexts"
    kubeconfig.write_text(yaml.safe_dump(config))
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        "headroom.dev",
        "v1alpha1",
        "projects",
        project_manifest(name, [namespace], quota={"resources": ["requests.cpu", "pods"]}),
    )
    nowhere = tmp_path / "no-such-kubeconfig"

    unreachable = headroom(kubeconfig, "status", name)
    assert unreachable.returncode == 7
    assert "the API server cannot be reached" in one_line_error(unreachable)

    # NAMESPACE given with -n, after the values, as kubectl users write it; KUBECONFIG points nowhere.
    requested = headroom(
        nowhere,
        "request",
        name,
        "requests.cpu=9",
        "-n",
        namespace,
        "--kubeconfig",
        str(kubeconfig),
        "--context",
        live,
        "--as",
        "alice",
    )
    assert requested.returncode == 0, requested.stderr
    spec = custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name)["spec"]
    assert spec["namespaces"][0]["requested"] == {"requests.cpu": "9"}
    # The flags also work before the subcommand.
    shown = headroom(nowhere, "--kubeconfig", str(kubeconfig), "--context", live, "status", name)
    assert shown.returncode == 0, shown.stderr
    # Headroom publishes the pending change; without an operator here, write what it would.
    body = custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name)
    pending = change_id(parse_project(body))
    custom(admin).patch_cluster_custom_object_status(
        "headroom.dev",
        "v1alpha1",
        "projects",
        name,
        {
            "status": {
                "pendingChange": {
                    "id": pending,
                    "since": "2026-01-01T00:00:00Z",
                    "reason": "waits for sign-off",
                    "diff": [{"namespace": namespace, "resource": "requests.cpu", "from": "6", "to": "9"}],
                }
            }
        },
    )

    not_a_reviewer = headroom(
        nowhere, "--kubeconfig", str(kubeconfig), "--context", live, "--as", "mallory", "approve", name, "--yes"
    )
    assert not_a_reviewer.returncode == 4
    assert "only members of group headroom:approvers may sign off" in one_line_error(not_a_reviewer)

    # Both groups are sent as groups of their own: the policy sees headroom:approvers.
    approved = headroom(
        nowhere,
        "--kubeconfig",
        str(kubeconfig),
        "--context",
        live,
        "approve",
        name,
        "--as",
        "bob",
        "--as-group",
        "payments-devs",
        "--as-group",
        "headroom:approvers",
        "--id",
        pending.removeprefix("sha256:")[:8],
        "--yes",
    )
    assert approved.returncode == 0, approved.stderr
    assert f"approved {pending} as bob" in approved.stdout
    assert f"{namespace} requests.cpu from 6 to 9" in approved.stdout
    annotations = custom(admin).get_cluster_custom_object("headroom.dev", "v1alpha1", "projects", name)["metadata"][
        "annotations"
    ]
    assert annotations["headroom.dev/approved-change"] == pending
    assert annotations["headroom.dev/approved-by"] == "bob"


def test_errors_are_one_line_with_an_exit_code_by_kind(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str, tmp_path: Path, approval_policy: None
) -> None:
    owner = user_kubeconfig(cluster, "alice", ("payments-devs",), tmp_path / "alice")
    stranger = user_kubeconfig(cluster, "eve", (), tmp_path / "eve")
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        "headroom.dev",
        "v1alpha1",
        "projects",
        project_manifest(name, [namespace], quota={"resources": ["requests.cpu", "pods"]}),
    )

    missing = headroom(owner, "status", f"{name}-nope")
    assert missing.returncode == 3
    assert one_line_error(missing) == f"error: Project {name}-nope not found (kubectl get projects lists them)"

    # The CRD's own message (422), not a JSON body.
    invalid = headroom(owner, "request", name, namespace, "requests.gpu=1")
    assert invalid.returncode == 5
    line = one_line_error(invalid)
    assert line.startswith(f"error: cannot request a change of Project {name}: ")
    assert "spec.namespaces[].requested keys must be quota resource names" in line

    # RBAC (403): what was refused, and what to do.
    forbidden = headroom(stranger, "plan", name, "--history-source=file", f"--history-file={_empty_history(tmp_path)}")
    assert forbidden.returncode == 4
    line = one_line_error(forbidden)
    assert (
        f'cannot read ResourceQuota headroom in {namespace}: resourcequotas "headroom" is forbidden: User "eve"' in line
    )
    assert line.endswith("ask for access, or act as someone who has it (--as, --context)")

    # -v: the server's answer and the traceback, for whoever debugs it.
    verbose = headroom(owner, "request", name, namespace, "requests.gpu=1", "-v")
    assert verbose.returncode == 5
    assert verbose.stderr.startswith("error: cannot request a change of Project")
    assert "HTTP 422" in verbose.stderr and "Traceback" in verbose.stderr

    nothing = headroom(owner, "approve", name, "--yes")
    assert nothing.returncode == 6
    assert one_line_error(nothing).startswith(f"error: Project {name} has no pending change")


def _empty_history(tmp_path: Path) -> Path:
    path = tmp_path / "empty.csv"
    path.write_text("time,namespace,resource,value\n")
    return path


def test_plan_reads_the_samplers_peaks_from_the_quotas(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str, tmp_path: Path, approval_policy: None
) -> None:
    """`headroom plan` with its default history (the sampler) shows the peaks the operator sampled."""
    apply_yaml(admin, REPO / "manifests" / "approval" / "approvers-rbac.yaml")
    reviewer = user_kubeconfig(cluster, "bob", ("headroom:approvers",), tmp_path / "bob")
    owner = user_kubeconfig(cluster, "alice", ("payments-devs",), tmp_path / "alice")
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        "headroom.dev",
        "v1alpha1",
        "projects",
        project_manifest(name, [namespace], quota={"resources": ["requests.cpu", "pods"]}),
    )
    today = datetime.now(UTC).date()
    peaks = {
        (today - timedelta(days=3)).isoformat(): {"requests.cpu": "27.5", "pods": "40"},
        today.isoformat(): {"requests.cpu": "12", "pods": "7"},
    }
    # The quota as the operator keeps it: its sampled daily peaks in an annotation.
    k8s.CoreV1Api(admin).create_namespaced_resource_quota(
        namespace,
        k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(
                name="headroom",
                labels={"app.kubernetes.io/managed-by": "headroom", "headroom.dev/project": name},
                annotations={"headroom.dev/daily-peaks": json.dumps(peaks)},
            ),
            spec=k8s.V1ResourceQuotaSpec(hard={"requests.cpu": "33", "pods": "48"}),
        ),
    )

    plan = headroom(reviewer, "plan", name, "-o", "json")
    assert plan.returncode == 0, plan.stderr
    rows = {row["resource"]: row for row in json.loads(plan.stdout)}
    assert rows["requests.cpu"]["peak"] == "27500m" or rows["requests.cpu"]["peak"] == "27.5"
    assert rows["requests.cpu"]["recommended"] == "33"
    assert rows["pods"]["peak"] == "40" and rows["pods"]["recommended"] == "48"
    assert "no history" not in plan.stdout

    # -n shows one namespace; one that no Project governs is "not found".
    other = headroom(reviewer, "plan", name, "-n", "not-governed", "-o", "json")
    assert other.returncode == 3
    assert one_line_error(other) == "error: no Project governs namespace not-governed"

    # Someone who cannot read the quotas is told in one line what to pass instead.
    blind = headroom(owner, "plan", name)
    assert blind.returncode == 4
    line = one_line_error(blind)
    assert "the sampler's peaks are kept on the quotas" in line
    assert "--history-source=prometheus --prometheus-url=URL or --history-source=file --history-file=FILE" in line
