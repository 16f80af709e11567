"""A real local Kubernetes control plane: embedded etcd, kube-apiserver and kube-controller-manager.

The three components come from one Go binary built from `hack/controlplane/` (see its go.mod for the
Kubernetes release). This module builds the binary when it is missing or outdated, generates the
certificates, starts the components on free loopback ports, waits until each one is ready and stops
them again. Tests use it through the session fixture in `tests/conftest.py`; people use it through
`make cluster-up` / `make cluster-down`, that is `python -m tests.harness.controlplane up|down`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.pki import Pki, create_pki

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO / "hack" / "controlplane"
BINARY = REPO / ".cache" / "bin" / "controlplane"
DEFAULT_STATE_DIR = REPO / ".cluster"

CONTROLLERS = (
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "resourcequota-controller",
    "root-ca-certificate-publisher-controller",
    # Fills the aggregated admin/edit/view ClusterRoles, as in any real cluster.
    "clusterrole-aggregation-controller",
)

_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------- build


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.iterdir()):
        if path.suffix in {".go", ".mod", ".sum", ".sh"}:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_binary(log: Path | None = None) -> Path:
    """Build the control-plane binary unless the cached one was built from the current sources."""
    stamp = BINARY.with_suffix(".sha256")
    digest = _source_digest()
    if BINARY.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return BINARY
    if shutil.which("go") is None:
        raise ControlPlaneError("the Go toolchain is needed to build the control plane (go not on PATH)")
    print(f"building the control plane from {SOURCE_DIR} (a cold build takes many minutes)...",
          file=sys.stderr, flush=True)
    out = open(log, "ab") if log else None  # noqa: SIM115 - closed below
    try:
        subprocess.run(["bash", str(SOURCE_DIR / "build.sh"), str(BINARY)], check=True,
                       stdout=out or sys.stderr, stderr=subprocess.STDOUT)
    except subprocess.CalledProcessError as exc:
        raise ControlPlaneError(f"building the control plane failed (exit {exc.returncode})") from exc
    finally:
        if out:
            out.close()
    stamp.write_text(digest + "\n")
    return BINARY


# --------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # The components must not outlive the process that started them, even when it is SIGKILLed.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 20.0,
                 sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal a child and reap it; SIGKILL if it does not exit in time. Every harness stops its children so."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def write_kubeconfig(path: Path, server: str, ca_cert: Path, user: dict[str, str],
                     name: str = "headroom-local") -> Path:
    import base64

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode()}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _cert_user(pki: Pki, user: str) -> dict[str, str]:
    import base64

    crt, key = pki.client_cert(user)
    return {
        "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }


# --------------------------------------------------------------------------------------------- control plane


@dataclass
class Component:
    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, start_new_session=True,
        )
        log.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.process, timeout)
        self.process = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ControlPlane:
    """One running control plane. Use as a context manager or call start()/stop()."""

    workdir: Path
    apiserver_flags: Sequence[str] = ()
    keep_workdir: bool = False
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)
    pki: Pki | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # --- lifecycle

    def start(self, build_log: Path | None = None) -> ControlPlane:
        binary = ensure_binary(build_log)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = create_pki(self.workdir / "pki")
        write_kubeconfig(self.kubeconfig, self.server, self.pki.ca_cert,
                         _cert_user(self.pki, "headroom-admin"))
        self.components["etcd"] = Component("etcd", [
            str(binary), "etcd", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-url=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-url=http://127.0.0.1:{self.etcd_peer_port}",
        ], self.log_path("etcd"))
        self.components["apiserver"] = Component("apiserver", [
            str(binary), "apiserver", *self._apiserver_args()], self.log_path("apiserver"))
        self.components["controller-manager"] = Component("controller-manager", [
            str(binary), "controller-manager",
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            "--secure-port=0",
            # Quicker full resyncs keep quota status fresh after deletions in tests.
            "--resource-quota-sync-period=15s",
        ], self.log_path("controller-manager"))
        try:
            self.start_component("etcd")
            self.start_component("apiserver")
            self.start_component("controller-manager")
        except BaseException:
            self.stop()
            raise
        return self

    def _apiserver_args(self) -> list[str]:
        assert self.pki is not None
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki.serving_cert}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-account-key-file={self.pki.sa_pub}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No kubelets here: nothing should try to reconcile the loopback endpoint.
            "--endpoint-reconciler-type=none",
            *self.apiserver_flags,
        ]

    def start_component(self, name: str) -> None:
        component = self.components[name]
        component.start()
        waiters = {"etcd": self._wait_etcd, "apiserver": self._wait_apiserver,
                   "controller-manager": self._wait_controller_manager}
        waiters[name](component)

    def stop_component(self, name: str) -> None:
        self.components[name].stop()

    def restart_apiserver(self, extra_flags: Sequence[str] | None = None) -> None:
        """Stop and start the API server on the same port (etcd keeps the data)."""
        self.stop_component("apiserver")
        if extra_flags is not None:
            self.apiserver_flags = tuple(extra_flags)
            self.components["apiserver"].args = [
                self.components["apiserver"].args[0], "apiserver", *self._apiserver_args()]
        self._wait_port_free(self.api_port)
        self.start_component("apiserver")

    def stop(self) -> None:
        for name in ("controller-manager", "apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()
        for port in (self.api_port, self.etcd_port, self.etcd_peer_port):
            self._wait_port_free(port, timeout=10)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"----- {name} (last {lines} lines)\n{c.tail(lines)}"
                         for name, c in self.components.items())

    # --- readiness

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(*map(str, self.pki.client_cert("headroom-admin")))
        return ctx

    def _poll(self, component: Component, probe: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not component.running():
                raise ControlPlaneError(f"{component.name} exited while starting:\n{component.tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                if probe():  # type: ignore[operator]
                    return
            time.sleep(0.2)
        raise ControlPlaneError(f"{component.name} not {what} after {timeout:.0f}s:\n{component.tail()}")

    def _wait_etcd(self, component: Component) -> None:
        def healthy() -> bool:
            url = f"http://127.0.0.1:{self.etcd_port}/health"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.load(resp).get("health") == "true"

        self._poll(component, healthy, "healthy", 60)

    def _get(self, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl_context()) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _wait_apiserver(self, component: Component) -> None:
        self._poll(component, lambda: self._get("/readyz")[0] == 200, "ready", 120)

    def _wait_controller_manager(self, component: Component) -> None:
        # The ServiceAccount controller creating `default` proves the controllers run.
        self._poll(component,
                   lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                   "running controllers", 90)

    @staticmethod
    def _wait_port_free(port: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not _port_is_free(port):
            time.sleep(0.1)

    def version(self) -> str:
        status, body = self._get("/version")
        return str(json.loads(body)["gitVersion"]) if status == 200 else "unknown"


# --------------------------------------------------------------------------------------------- CLI


def _supervise(state_dir: Path) -> int:
    """Run in the background for `make cluster-up`: start, then wait for SIGTERM and stop cleanly."""
    plane = ControlPlane(state_dir / "run", keep_workdir=False)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        plane.start(build_log=state_dir / "build.log")
    except ControlPlaneError as exc:
        (state_dir / "error").write_text(str(exc))
        plane.stop()
        return 1
    shutil.copy(plane.kubeconfig, state_dir / "kubeconfig")
    (state_dir / "ready").write_text(plane.version())
    while not stopping:
        time.sleep(0.5)
        dead = [n for n, c in plane.components.items() if not c.running()]
        if dead:
            (state_dir / "error").write_text(f"{', '.join(dead)} exited:\n{plane.logs()}")
            break
    plane.stop()
    for name in ("ready", "kubeconfig", "pid"):
        (state_dir / name).unlink(missing_ok=True)
    return 0


def cmd_up(state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = state_dir / "pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), 0)
            print(f"already running; export KUBECONFIG={state_dir / 'kubeconfig'}")
            return 0
    ensure_binary()
    for name in ("ready", "error"):
        (state_dir / name).unlink(missing_ok=True)
    log = open(state_dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen([sys.executable, "-m", "tests.harness.controlplane", "_supervise",
                              "--state-dir", str(state_dir)],
                             cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    pid_file.write_text(str(child.pid))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (state_dir / "ready").exists():
            print(f"control plane {(state_dir / 'ready').read_text()} is up; "
                  f"logs in {state_dir / 'run'}\nexport KUBECONFIG={state_dir / 'kubeconfig'}")
            return 0
        if (state_dir / "error").exists() or child.poll() is not None:
            print((state_dir / "error").read_text() if (state_dir / "error").exists()
                  else "the control plane supervisor exited", file=sys.stderr)
            pid_file.unlink(missing_ok=True)
            return 1
        time.sleep(0.5)
    print("the control plane did not become ready within 300s", file=sys.stderr)
    return 1


def cmd_down(state_dir: Path) -> int:
    pid_file = state_dir / "pid"
    if not pid_file.exists():
        print("no control plane is running")
        return 0
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    print("control plane stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.controlplane",
                                     description="Run a local Kubernetes control plane.")
    parser.add_argument("command", choices=["build", "up", "down", "_supervise", "run"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(ensure_binary())
            return 0
        if args.command == "up":
            return cmd_up(args.state_dir)
        if args.command == "down":
            return cmd_down(args.state_dir)
        if args.command == "_supervise":
            return _supervise(args.state_dir)
        # run: in the foreground until Ctrl-C, handy for debugging. A process started in the
        # background by a non-interactive shell inherits SIGINT *ignored*, and Python then never
        # raises KeyboardInterrupt: Ctrl-C (or a SIGINT from a test) must stop it all the same.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with ControlPlane(Path(tempfile.mkdtemp(prefix="headroom-cp-"))) as plane:
            print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
