"""The CLI where no cluster answers: short change ids, and errors as one line with an exit code by kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from headroom.shell import cli
from headroom.shell.cli import EXIT_CONFLICT, EXIT_UNREACHABLE, EXIT_USAGE, CliError, expand_change_id

REPO = Path(__file__).resolve().parents[2]
PENDING = "sha256:8d9d1a2b" + "0" * 56


@pytest.mark.parametrize(
    "given",
    [
        PENDING,
        "sha256:8d9d1a2b",
        "8d9d1a2b",
        "sha256:8d9d",
        "8D9D1A2B",
        "sha256:8d9d...",
        "sha256:8d9d\u2026",
        " 8d9d1a2b ",
    ],
)
def test_a_short_id_expands_to_the_pending_id(given: str) -> None:
    assert expand_change_id(given, PENDING) == PENDING


@pytest.mark.parametrize("given", ["sha256:8d9e", "sha256:" + "1" * 64, "8d9d1a2c"])
def test_an_id_that_is_not_the_pending_one_is_refused_with_the_one_that_is(given: str) -> None:
    with pytest.raises(CliError) as info:
        expand_change_id(given, PENDING)
    assert info.value.code == EXIT_CONFLICT
    assert f"the pending change is now {PENDING}" in str(info.value)


@pytest.mark.parametrize("given", ["sha256:8d9", "8d", "", "sha256:", "payments", "sha256:8d9d1a2g"])
def test_something_that_is_no_id_is_a_usage_error(given: str) -> None:
    with pytest.raises(CliError) as info:
        expand_change_id(given, PENDING)
    assert info.value.code == EXIT_USAGE
    assert "is not a change id" in str(info.value)


def headroom(*args: str, kubeconfig: str = "/nonexistent/kubeconfig") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADROOM_", "KUBERNETES_"))}
    return subprocess.run(
        [sys.executable, "-m", "headroom.cli", *args],
        capture_output=True,
        text=True,
        env={**env, "KUBECONFIG": kubeconfig},
        cwd=REPO,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_no_kubeconfig_says_what_to_pass() -> None:
    result = headroom("status", "payments")
    assert result.returncode == EXIT_USAGE
    line = one_line(result)
    assert "no usable kubeconfig (/nonexistent/kubeconfig" in line
    assert line.endswith("pass --kubeconfig and --context, or set KUBECONFIG")


def test_an_unreachable_api_server_is_one_line_and_its_own_exit_code(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "dead"
    kubeconfig.write_text("""apiVersion: v1
kind: Config
clusters: [{name: dead, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: dead, context: {cluster: dead, user: u}}]
current-context: dead
""")
    result = headroom("approve", "payments", "--yes", kubeconfig=str(kubeconfig))
    assert result.returncode == EXIT_UNREACHABLE
    assert "error: cannot read Project payments: the API server cannot be reached" in one_line(result)
    detailed = headroom("approve", "payments", "--yes", "-v", kubeconfig=str(kubeconfig))
    assert detailed.returncode == EXIT_UNREACHABLE
    assert detailed.stderr.startswith("error: cannot read Project payments") and "Traceback" in detailed.stderr


def test_impersonating_groups_needs_a_user() -> None:
    result = headroom("approve", "payments", "--as-group", "headroom:approvers")
    assert result.returncode == EXIT_USAGE
    assert one_line(result) == (
        "error: --as-group needs --as: the API server impersonates groups only together with a user"
    )


def test_plan_of_a_file_with_the_sampler_says_what_to_pass() -> None:
    result = headroom("plan", "-f", str(REPO / "manifests" / "samples" / "payments.yaml"))
    assert result.returncode == EXIT_USAGE
    line = one_line(result)
    assert "pass --history-source=prometheus --prometheus-url=URL or --history-source=file --history-file=FILE" in line


def test_request_without_a_namespace_asks_for_one() -> None:
    result = headroom("request", "payments", "requests.cpu=40")
    assert result.returncode == EXIT_USAGE
    assert one_line(result) == "error: which namespace? give it after the Project, or with -n NAMESPACE"


@pytest.mark.parametrize(
    ("setting", "flag"),
    [
        ("HEADROOM_LEADER_ELECT=maybe", "--leader-elect"),
        ("HEADROOM_API_QPS=nan", "--api-qps"),
        ("HEADROOM_PROMETHEUS_STEP=banana", "--prometheus-step"),
    ],
)
def test_run_refuses_invalid_configuration_in_one_line(setting: str, flag: str) -> None:
    name, _, value = setting.partition("=")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADROOM_", "KUBERNETES_"))}
    result = subprocess.run(
        [sys.executable, "-m", "headroom.cli", "run"],
        capture_output=True,
        text=True,
        env={**env, name: value},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == EXIT_USAGE
    assert one_line(result).startswith(f"error: invalid configuration: {flag}")


def test_run_without_a_cluster_says_where_it_looked() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADROOM_", "KUBERNETES_"))}
    result = subprocess.run(
        [sys.executable, "-m", "headroom.cli", "run", "--metrics-port=0", "--health-port=0"],
        capture_output=True,
        text=True,
        env={**env, "KUBECONFIG": "/nonexistent/kubeconfig"},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == EXIT_USAGE
    assert one_line(result).startswith("error: cannot find the cluster (")


def test_a_server_that_speaks_no_tls_is_unreachable(tmp_path: Path) -> None:
    """A wrong server in the kubeconfig (no TLS there): nothing answered, so exit 7 in one line."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve_garbage() -> None:  # speaks no TLS: the handshake fails
        for _ in range(8):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nnot tls")

    threading.Thread(target=serve_garbage, daemon=True).start()
    kubeconfig = tmp_path / "plain"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    try:
        result = headroom("status", "payments", kubeconfig=str(kubeconfig))
    finally:
        server.close()
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert one_line(result).startswith("error: cannot read Project payments:")


def test_plan_decides_as_the_operator_does(tmp_path: Path) -> None:
    """`headroom plan` calls the operator's planner: a floor fits one default container, and limits.X is
    never below requests.X (its own derivation used to forget both)."""
    project = tmp_path / "p.yaml"
    project.write_text("""
apiVersion: headroom.dev/v1alpha1
kind: Project
metadata: {name: search}
spec:
  owner: {team: search}
  namespaces: [{name: search}]
  quota:
    resources: [requests.memory, limits.memory, requests.ephemeral-storage]
    minimum: {requests.memory: 8Gi}
  defaults:
    requests: {ephemeral-storage: 30Gi}
""")
    history = tmp_path / "h.csv"
    history.write_text("time,namespace,resource,value\n")
    shown = headroom("plan", "-f", str(project), "--history-source=file", f"--history-file={history}", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    import json

    rows = {r["resource"]: r for r in json.loads(shown.stdout)}
    assert rows["requests.ephemeral-storage"]["recommended"] == "30Gi"
    assert rows["limits.memory"]["recommended"] == "8Gi" and rows["limits.memory"]["why"] == "at least requests.memory"


def test_the_operator_and_the_cli_find_credentials_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit KUBECONFIG wins over the Pod's ServiceAccount, for both (the operator used to try in-cluster
    credentials first, the CLI a kubeconfig first)."""
    from headroom.shell.apiclient import connection_info
    from headroom.shell.cli import api_client

    config = tmp_path / "kubeconfig"
    config.write_text("""
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://kubeconfig.example:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
""")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert api_client().configuration.host == "https://kubeconfig.example:6443"
    assert connection_info().server == "https://kubeconfig.example:6443"
    monkeypatch.delenv("KUBECONFIG")
    # In a Pod without its token: in-cluster, not ~/.kube.
    with pytest.raises(Exception, match=r"token|service"):
        api_client()
    with pytest.raises(Exception, match=r"token|service"):
        connection_info()


# ------------------------------------------------------------------------------ output for people


def _status_with_pending() -> dict[str, object]:
    full = "sha256:" + "4e0d2e29a1b2" + "c" * 52
    reason = (
        f"change {full} raises payments requests.cpu from 4800m to 6 and needs sign-off: no approval yet "
        f"(set annotation headroom.dev/approved-change={full} on the Project to approve it)"
    )
    return {
        "phase": "Pending",
        "namespaces": [
            {
                "name": "payments",
                "state": "Governed",
                "hard": {
                    "requests.cpu": "4800m",
                    "requests.memory": "2400Mi",
                    "requests.nvidia.com/gpu": "2",
                    "hugepages-2Mi": "1Gi",
                },
                "used": {
                    "requests.cpu": "4",
                    "requests.memory": "2516582400",
                    "requests.nvidia.com/gpu": "1",
                    "hugepages-2Mi": "0",
                },
                "recommended": {"requests.cpu": "5", "requests.memory": "2Gi"},
            }
        ],
        "pendingChange": {
            "id": full,
            "shortId": full[:19],
            "since": "2026-03-02T10:00:00Z",
            "reason": reason,
            "diff": [{"namespace": "payments", "resource": "requests.cpu", "from": "4800m", "to": "6"}],
        },
        "conditions": [{"type": "ChangePending", "status": "True", "reason": "AwaitingSignOff", "message": reason}],
    }


def test_status_shows_the_pending_id_once_and_each_row_in_one_unit(capsys: pytest.CaptureFixture[str]) -> None:
    status = _status_with_pending()
    cli._print_status("payments", status, status["conditions"])  # type: ignore[arg-type]
    out = capsys.readouterr().out
    full = status["pendingChange"]["id"]  # type: ignore[index]
    assert out.count(full) == 1, out
    assert f"pending change {full} since 2026-03-02T10:00:00Z" in out
    assert "payments requests.cpu from 4800m to 6000m" in out
    assert f"approved-change={full[:19]} on the Project" in out
    lines = out.splitlines()
    header = next(line for line in lines if "RESOURCE" in line)
    # Every value starts under its heading, whatever the length of the resource names.
    rows = lines[lines.index(header) + 1 : lines.index(header) + 5]
    assert [r.split()[0] for r in rows] == [
        "hugepages-2Mi",
        "requests.cpu",
        "requests.memory",
        "requests.nvidia.com/gpu",
    ]
    for row in rows:
        for column in ("HARD", "USED", "RECOMMENDED"):
            at = header.index(column)
            assert row[at - 1] == " " and row[at] != " ", (header, row)
    cpu = next(line for line in lines if line.strip().startswith("requests.cpu "))
    assert cpu.split()[1:] == ["4800m", "4000m", "5000m"]
    memory = next(line for line in lines if line.strip().startswith("requests.memory "))
    assert memory.split()[1:] == ["2400Mi", "2400Mi", "2048Mi"]


def test_plan_table_shows_a_raw_byte_peak_in_the_unit_of_its_row() -> None:
    row = {
        "project": "p",
        "namespace": "ns",
        "resource": "requests.memory",
        "peak": "1234567890",
        "headroom": "20%",
        "floor": "1Gi",
        "used": "1Gi",
        "recommended": "1413Mi",
        "hard": "1413Mi",
        "why": "x",
    }
    shown = cli._for_people(row)
    assert [shown[c] for c in ("peak", "floor", "used", "recommended", "hard")] == [
        "~1177.4Mi",
        "1024Mi",
        "1024Mi",
        "1413Mi",
        "1413Mi",
    ]
    cpu = {
        **row,
        "resource": "requests.cpu",
        "peak": "3300m",
        "floor": "1",
        "used": "2",
        "recommended": "3960m",
        "hard": "4",
    }
    assert [cli._for_people(cpu)[c] for c in ("peak", "floor", "used", "recommended", "hard")] == [
        "3300m",
        "1000m",
        "2000m",
        "3960m",
        "4000m",
    ]


def test_plan_shows_when_a_growing_namespace_will_be_full(tmp_path: Path) -> None:
    """A file history that climbs 400m a day: plan shows the trend and the date it reaches the quota."""
    import json
    from datetime import UTC, datetime, time, timedelta

    project = tmp_path / "p.yaml"
    project.write_text("""
apiVersion: headroom.dev/v1alpha1
kind: Project
metadata: {name: web}
spec:
  owner: {team: web}
  namespaces: [{name: web}]
  quota: {resources: [requests.cpu]}
""")
    today = datetime.now(UTC).date()
    first = today - timedelta(days=10)
    lines = ["time,namespace,resource,value"]
    for i in range(10):  # 1 core, 1.4, ... 4.6 at noon of each of the ten days before today
        lines.append(f"{first + timedelta(days=i)}T12:00:00Z,web,requests.cpu,{1000 + 400 * i}m")
    history = tmp_path / "h.csv"
    history.write_text("\n".join(lines) + "\n")
    shown = headroom("plan", "-f", str(project), "--history-source=file", f"--history-file={history}", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    # A new Project is bound by its recommendation: 4.6 cores + 20 % = 5520m. The first day's peak
    # stands at its end (first + 1 day, 00:00 UTC); 5.52 is reached (5.52 - 1) / 0.4 = 11.3 days later.
    assert row["recommended"] == "5520m"
    full = datetime.combine(first + timedelta(days=1), time(0), UTC) + timedelta(days=11, hours=7, minutes=12)
    assert full.date() == today + timedelta(days=2)
    assert row["forecast"].endswith(f"({full.date().isoformat()}) at +400m/day"), row["forecast"]
    days = round((full - datetime.now(UTC)) / timedelta(days=1))  # 1 or 2, by the time of day
    assert row["forecast"].startswith(f"full in ~{days} day"), row["forecast"]
    table = headroom("plan", "-f", str(project), "--history-source=file", f"--history-file={history}")
    assert "FORECAST" in table.stdout and f"({full.date().isoformat()}) at +400m/day" in table.stdout


def test_status_shows_each_forecast_beside_its_resource(capsys: pytest.CaptureFixture[str]) -> None:
    status = {
        "phase": "Governed",
        "namespaces": [
            {
                "name": "web",
                "state": "Governed",
                "hard": {"requests.cpu": "8", "pods": "20"},
                "used": {"requests.cpu": "5", "pods": "6"},
                "recommended": {"requests.cpu": "6", "pods": "10"},
                "forecast": {
                    "requests.cpu": {"growthPerDay": "400m", "fullAt": "2099-12-11T06:00:00Z", "days": 14},
                    "pods": {"growthPerDay": "-0.25", "days": 14},
                },
            }
        ],
    }
    cli._print_status("web", status, [])
    out = capsys.readouterr().out
    cpu = next(line for line in out.splitlines() if line.strip().startswith("requests.cpu "))
    assert "full in ~" in cpu and "(2099-12-11) at +400m/day" in cpu
    pods = next(line for line in out.splitlines() if line.strip().startswith("pods "))
    assert pods.rstrip().endswith("shrinking at -0.25/day")


def test_cpu_reads_in_one_unit_down_a_table() -> None:
    """requests.cpu in cores and limits.cpu in millicores side by side is hard to compare: one unit for all."""
    rows = [
        {"resource": "requests.cpu", "hard": "4", "used": "2", "recommended": "6"},
        {"resource": "limits.cpu", "hard": "4800m", "used": "-", "recommended": "6"},
        {"resource": "requests.memory", "hard": "2Gi", "used": "1Gi", "recommended": "2Gi"},
    ]
    shown = cli._one_cpu_unit([dict(r) for r in rows], ["hard", "used", "recommended"])
    assert [shown[0][c] for c in ("hard", "used", "recommended")] == ["4000m", "2000m", "6000m"]
    assert [shown[1][c] for c in ("hard", "used", "recommended")] == ["4800m", "-", "6000m"]
    assert shown[2] == rows[2]
    whole = [{"resource": "requests.cpu", "hard": "4000m"}, {"resource": "limits.cpu", "hard": "8"}]
    assert [r["hard"] for r in cli._one_cpu_unit(whole, ["hard"])] == ["4", "8"]
