"""`headroom run` never loads a Kubernetes client library: Kopf would import `kubernetes` by itself
when it is installed (the terminal commands need it), and that library alone is about 34 MiB of the
operator's memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_operator_never_loads_the_kubernetes_client_library(tmp_path: Path) -> None:
    """`headroom run`, from start-up to its first attempts to reach the API server, imports none of the
    client libraries (Kopf would load `kubernetes` by itself: about 34 MiB of the operator's memory)."""
    history = tmp_path / "h.csv"
    history.write_text("time,namespace,resource,value\n")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
        users: [{{name: u, user: {{token: t}}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
        current-context: x
        """)
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO / 'operator'}:{REPO}", "KUBECONFIG": str(config)}
    args = ["run", "--history-source=file", f"--history-file={history}", "--metrics-port=0", "--health-port=0"]
    # As `headroom run` starts, plus a report of what was loaded when it exits (on SIGTERM, as in a Pod).
    report = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('LOADED', *sorted({m.split('.')[0] for m, v in sys.modules.items() if v})))\n"
        f"sys.argv = ['headroom', *{args!r}]\n"
        "runpy.run_module('headroom.cli', run_name='__main__')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", report],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        # Long enough for the login, the start-up lists and the watches to be tried and retried.
        out, _ = process.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert "Headroom starting" in out, out[-3000:]
    assert "cannot load quotas and namespaces yet" in out, out[-3000:]  # it got as far as asking
    loaded = set(next(line for line in out.splitlines() if line.startswith("LOADED")).split()[1:])
    assert {"kopf", "aiohttp", "headroom"} <= loaded
    assert not loaded & {"kubernetes", "kubernetes_asyncio", "pykube", "urllib3"}, sorted(loaded)
