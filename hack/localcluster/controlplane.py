"""A real local Kubernetes cluster: embedded etcd, kube-apiserver and kube-controller-manager, and
optionally one node (kube-scheduler, containerd, kubelet, kube-proxy; see `hack/localcluster/node.py`).

The Kubernetes components come from one Go binary built from `hack/controlplane/` (see its go.mod for
the Kubernetes release). This module builds the binary when it is missing or outdated, generates the
certificates, starts the components on free ports, waits until each one is ready and stops
them again. Tests use it through the session fixture in `tests/conftest.py` (no node) and
`tests/e2e/conftest.py` (a node); people use it through `make cluster-up` / `make cluster-down`,
that is `python -m hack.localcluster.controlplane up|down [--node]`.
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

from hack.localcluster import node as nodelib
from hack.localcluster.images import pause_archive
from hack.localcluster.pki import Pki, create_pki

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO / "hack" / "controlplane"
BINARY = REPO / ".cache" / "bin" / "controlplane"
PAUSE_BINARY = BINARY.with_name("pause")
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
    # The workload controllers that create pods, and post FailedCreate Events when the quota
    # refuses one (quota-denial incidents); without a node their pods stay Pending.
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
)
# What workloads on a node need: StatefulSets & co, Services' endpoints, node health.
NODE_CONTROLLERS = (
    "statefulset-controller",
    "daemonset-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
)

_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------- build


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.rglob("*")):
        if path.suffix in {".go", ".mod", ".sum", ".sh"}:
            digest.update(str(path.relative_to(SOURCE_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_binary(log: Path | None = None) -> Path:
    """Build the control-plane binary unless the cached one was built from the current sources."""
    stamp = BINARY.with_suffix(".sha256")
    digest = _source_digest()
    if BINARY.exists() and PAUSE_BINARY.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return BINARY
    if shutil.which("go") is None:
        raise ControlPlaneError("the Go toolchain is needed to build the control plane (go not on PATH)")
    print(
        f"building the control plane from {SOURCE_DIR} (a cold build takes many minutes)...",
        file=sys.stderr,
        flush=True,
    )
    out = open(log, "ab") if log else None  # noqa: SIM115 - closed below
    try:
        subprocess.run(
            ["bash", str(SOURCE_DIR / "build.sh"), str(BINARY)],
            check=True,
            stdout=out or sys.stderr,
            stderr=subprocess.STDOUT,
        )
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


def stop_process(
    process: subprocess.Popen[Any] | None, timeout: float = 20.0, sig: signal.Signals = signal.SIGTERM
) -> None:
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


def write_kubeconfig(
    path: Path, server: str, ca_cert: Path, user: dict[str, str], name: str = "headroom-local"
) -> Path:
    import base64

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode(),
                },
            }
        ],
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
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            start_new_session=True,
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
    """One running control plane, with one node if `node`. Use as a context manager or start()/stop()."""

    workdir: Path
    apiserver_flags: Sequence[str] = ()
    keep_workdir: bool = False
    node: bool = False
    # How often the quota controller recounts every quota. Short for the tests (quota status fresh
    # soon after deletions); the benchmark uses Kubernetes' default, as a real cluster runs it.
    quota_sync_period: str = "15s"
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)
    pki: Pki | None = None
    node_ip: str = "127.0.0.1"
    _reaper: tuple[subprocess.Popen[bytes], int] | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # --- lifecycle

    @property
    def node_dir(self) -> Path:
        return self.workdir / "node"

    def start(self, build_log: Path | None = None) -> ControlPlane:
        binary = ensure_binary(build_log)
        if self.node:
            missing = nodelib.missing_tools()
            if missing:
                raise ControlPlaneError(
                    f"the node needs Debian packages: {' '.join(missing)} (hack/setup.sh installs them)"
                )
            self.node_ip = nodelib.node_ip()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = create_pki(self.workdir / "pki")
        write_kubeconfig(self.kubeconfig, self.server, self.pki.ca_cert, _cert_user(self.pki, "headroom-admin"))
        self.components["etcd"] = Component(
            "etcd",
            [
                str(binary),
                "etcd",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-url=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-url=http://127.0.0.1:{self.etcd_peer_port}",
            ],
            self.log_path("etcd"),
        )
        self.components["apiserver"] = Component(
            "apiserver", [str(binary), "apiserver", *self._apiserver_args()], self.log_path("apiserver")
        )
        self.components["controller-manager"] = Component(
            "controller-manager",
            [
                str(binary),
                "controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS + (NODE_CONTROLLERS if self.node else ()))}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                "--secure-port=0",
                f"--resource-quota-sync-period={self.quota_sync_period}",
            ],
            self.log_path("controller-manager"),
        )
        try:
            self.start_component("etcd")
            self.start_component("apiserver")
            self.start_component("controller-manager")
            if self.node:
                try:
                    self._start_node(binary)
                except nodelib.NodeError as exc:
                    raise ControlPlaneError(str(exc)) from exc
        except BaseException:
            self.stop()
            raise
        return self

    # --- the node

    def _kubeconfig_for(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        assert self.pki is not None
        self.pki.issue_client(user, groups)
        return write_kubeconfig(
            self.workdir / f"{user.replace(':', '-')}.kubeconfig",
            self.server,
            self.pki.ca_cert,
            _cert_user(self.pki, user),
        )

    def _start_node(self, binary: Path) -> None:
        assert self.pki is not None
        paths = nodelib.NodePaths(self.node_dir)
        self.node_dir.mkdir(parents=True, exist_ok=True)
        # From here on, whatever happens to this process, the reaper removes what the node made.
        self._reaper = nodelib.start_reaper(self.node_dir, self.workdir / "node-cleanup.log")
        nodelib.prepare_host(paths)
        configs = nodelib.write_configs(
            paths,
            ca_cert=self.pki.ca_cert,
            kubelet_kubeconfig=self._kubeconfig_for(f"system:node:{nodelib.NODE_NAME}", ("system:nodes",)),
            proxy_kubeconfig=self._kubeconfig_for("system:kube-proxy"),
            kubelet_port=free_port(),
            proxy_metrics_port=free_port(),
            proxy_healthz_port=free_port(),
        )
        self.components["scheduler"] = Component(
            "scheduler",
            [
                str(binary),
                "scheduler",
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
            self.log_path("scheduler"),
        )
        self.components["containerd"] = Component(
            "containerd",
            [
                "containerd",
                f"--config={configs['containerd']}",
            ],
            self.log_path("containerd"),
        )
        self.components["kubelet"] = Component(
            "kubelet",
            [
                str(binary),
                "kubelet",
                f"--config={configs['kubelet']}",
                f"--kubeconfig={self.workdir / f'system-node-{nodelib.NODE_NAME}.kubeconfig'}",
                f"--root-dir={paths.kubelet_dir}",
                f"--cert-dir={paths.kubelet_dir / 'pki'}",
                f"--hostname-override={nodelib.NODE_NAME}",
                f"--node-ip={self.node_ip}",
            ],
            self.log_path("kubelet"),
        )
        self.components["proxy"] = Component(
            "proxy",
            [
                str(binary),
                "proxy",
                f"--config={configs['proxy']}",
            ],
            self.log_path("proxy"),
        )
        self.start_component("scheduler")
        self.start_component("containerd")
        self.start_component("kubelet")
        self.start_component("proxy")

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`ctr` against the node's containerd, in the kubelet's namespace."""
        socket_path = nodelib.NodePaths(self.node_dir).containerd_socket
        return subprocess.run(
            ["ctr", "--address", str(socket_path), "--namespace", "k8s.io", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def import_image(self, archive: Path) -> None:
        """Load an OCI or Docker archive into the node (nothing can be pulled here)."""
        self.ctr("images", "import", str(archive))

    def _apiserver_args(self) -> list[str]:
        assert self.pki is not None
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            *([] if self.node else ["--bind-address=127.0.0.1"]),
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki.serving_cert}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}",
            "--authorization-mode=Node,RBAC" if self.node else "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            f"--service-account-key-file={self.pki.sa_pub}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            *(
                self._node_apiserver_args()
                if self.node
                else [
                    # No kubelets here: nothing should try to reconcile the loopback endpoint.
                    "--endpoint-reconciler-type=none"
                ]
            ),
            *self.apiserver_flags,
        ]

    def _node_apiserver_args(self) -> list[str]:
        # Pods reach the API server through the `kubernetes` Service, whose endpoint is the node IP.
        assert self.pki is not None
        crt, key = self.pki.client_cert("headroom-admin")
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={self.node_ip}",
            f"--kubelet-client-certificate={crt}",
            f"--kubelet-client-key={key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def start_component(self, name: str) -> None:
        component = self.components[name]
        component.start()
        if self._reaper is not None and component.process is not None:
            nodelib.record_pid(nodelib.NodePaths(self.node_dir), name, component.process.pid)
        waiters = {
            "etcd": self._wait_etcd,
            "apiserver": self._wait_apiserver,
            "controller-manager": self._wait_controller_manager,
            "scheduler": self._wait_scheduler,
            "containerd": self._wait_containerd,
            "kubelet": self._wait_kubelet,
            "proxy": self._wait_proxy,
        }
        waiters[name](component)

    def stop_component(self, name: str) -> None:
        self.components[name].stop()

    def restart_apiserver(self, extra_flags: Sequence[str] | None = None) -> None:
        """Stop and start the API server on the same port (etcd keeps the data)."""
        self.stop_component("apiserver")
        if extra_flags is not None:
            self.apiserver_flags = tuple(extra_flags)
            self.components["apiserver"].args = [
                self.components["apiserver"].args[0],
                "apiserver",
                *self._apiserver_args(),
            ]
        self._wait_port_free(self.api_port)
        self.start_component("apiserver")

    def stop(self) -> None:
        for name in ("kubelet", "proxy", "scheduler", "containerd"):
            if name in self.components:
                self.components[name].stop()
        if self._reaper is not None:
            nodelib.stop_reaper(*self._reaper)
            self._reaper = None
        for name in ("controller-manager", "apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()
        for port in (self.api_port, self.etcd_port, self.etcd_peer_port):
            self._wait_port_free(port, timeout=10)
        if not self.keep_workdir:
            nodelib.remove_workdir(self.workdir)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"----- {name} (last {lines} lines)\n{c.tail(lines)}" for name, c in self.components.items())

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
        self._poll(
            component,
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            "running controllers",
            90,
        )

    def _wait_scheduler(self, component: Component) -> None:
        self._poll(component, lambda: True, "started", 5)

    def _wait_containerd(self, component: Component) -> None:
        socket_path = nodelib.NodePaths(self.node_dir).containerd_socket

        def serving() -> bool:
            if not socket_path.exists():
                return False
            try:
                self.ctr("version", timeout=10)
            except subprocess.CalledProcessError:
                return False
            return True

        self._poll(component, serving, "serving", 60)
        pause_archive(PAUSE_BINARY, self.node_dir / "pause.oci.tar")
        self.import_image(self.node_dir / "pause.oci.tar")

    def _wait_kubelet(self, component: Component) -> None:
        def ready() -> bool:
            status, body = self._get(f"/api/v1/nodes/{nodelib.NODE_NAME}")
            if status != 200:
                return False
            node = json.loads(body)
            conditions = node.get("status", {}).get("conditions", [])
            taints = [t["key"] for t in node.get("spec", {}).get("taints", []) or []]
            return (
                any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                and "node.kubernetes.io/not-ready" not in taints
            )

        self._poll(component, ready, "Ready", 120)

    def _wait_proxy(self, component: Component) -> None:
        port = json.loads((self.node_dir / "kube-proxy.json").read_text())["healthzBindAddress"]

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)

        self._poll(component, healthy, "healthy", 60)

    @staticmethod
    def _wait_port_free(port: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not _port_is_free(port):
            time.sleep(0.1)

    def version(self) -> str:
        status, body = self._get("/version")
        return str(json.loads(body)["gitVersion"]) if status == 200 else "unknown"


# --------------------------------------------------------------------------------------------- CLI


def _supervise(state_dir: Path, node: bool) -> int:
    """Run in the background for `make cluster-up`: start, then wait for SIGTERM and stop cleanly."""
    plane = ControlPlane(state_dir / "run", keep_workdir=False, node=node)
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


def cmd_up(state_dir: Path, node: bool) -> int:
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
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hack.localcluster.controlplane",
            "_supervise",
            "--state-dir",
            str(state_dir),
            f"--node={int(node)}",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(child.pid))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (state_dir / "ready").exists():
            what = "control plane and one node" if node else "control plane"
            print(
                f"{what} {(state_dir / 'ready').read_text()} is up; "
                f"logs in {state_dir / 'run'}\nexport KUBECONFIG={state_dir / 'kubeconfig'}"
            )
            return 0
        if (state_dir / "error").exists() or child.poll() is not None:
            print(
                (state_dir / "error").read_text()
                if (state_dir / "error").exists()
                else "the control plane supervisor exited",
                file=sys.stderr,
            )
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
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    print("control plane stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.localcluster.controlplane", description="Run a local Kubernetes control plane."
    )
    parser.add_argument("command", choices=["build", "up", "down", "_supervise", "run"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--node",
        type=int,
        choices=[0, 1],
        default=0,
        help="1: also start one node (scheduler, containerd, kubelet, kube-proxy)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(ensure_binary())
            return 0
        if args.command == "up":
            return cmd_up(args.state_dir, bool(args.node))
        if args.command == "down":
            return cmd_down(args.state_dir)
        if args.command == "_supervise":
            return _supervise(args.state_dir.resolve(), bool(args.node))
        # run: in the foreground until Ctrl-C, handy for debugging. A process started in the
        # background by a non-interactive shell inherits SIGINT *ignored*, and Python then never
        # raises KeyboardInterrupt: Ctrl-C (or a SIGINT from a test) must stop it all the same.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with ControlPlane(Path(tempfile.mkdtemp(prefix="headroom-cp-")), node=bool(args.node)) as plane:
            print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
