"""Fault injectors for the suite: a TCP proxy that can go silent, a Prometheus that misbehaves on
purpose, API-server outages on a dedicated control plane, its audit log, and a recorder that watches
a value for the whole length of a fault.

None of these stands in for the code under test: the operator runs as a real process against a real
API server; these only break the world around it in controlled ways.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import kubernetes
import yaml

from hack.localcluster.controlplane import ControlPlane, free_port
from hack.localcluster.kube import Cluster, apply_yaml, wait_for
from hack.localcluster.operator import OPERATOR_NAMESPACE, OperatorProcess, install_rbac

REPO = Path(__file__).resolve().parents[2]
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:headroom"


# ------------------------------------------------------------------------------------ TCP proxy


class _Pair:
    """One proxied connection: client <-> upstream, pumped by one thread."""

    def __init__(self, client: socket.socket, upstream: socket.socket, stalled: bool) -> None:
        self.client, self.upstream = client, upstream
        self.stalled = stalled
        self.closed = False
        self.thread = threading.Thread(target=self._pump, daemon=True, name="stalling-proxy-pair")

    def _pump(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        try:
            while not self.closed:
                if self.stalled:
                    # Silent, not closed: nothing is read or forwarded, both sockets stay open, the
                    # kernel keeps acknowledging until its buffers are full. Like a dead NAT entry.
                    time.sleep(0.1)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if self.stalled:
                    continue  # stalled while waiting: what arrived stays unread
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        self.close()
                        return
                    peers[sock].sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of `target` (host, port); TLS passes through untouched.

    `stall()` freezes every open connection without closing it (new connections still work unless
    `new_too`); `resume()` lets them flow again; `stop()` closes everything.
    """

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.accepted = 0
        self._pairs: list[_Pair] = []
        self._stall_new = False
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> StallingProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"stalling-proxy:{self.port}")
        self._thread.start()
        return self

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
                client.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                pair = _Pair(client, upstream, self._stall_new)
                self._pairs = [p for p in self._pairs if not p.closed] + [pair]
                self.accepted += 1
            pair.thread.start()

    def stall(self, new_too: bool = False) -> int:
        """Freeze every open connection; returns how many were frozen."""
        with self._lock:
            self._stall_new = new_too
            live = [p for p in self._pairs if not p.closed]
            for pair in live:
                pair.stalled = True
        time.sleep(0.5)  # every pump has seen the flag: nothing more goes through
        return len(live)

    def resume(self) -> None:
        with self._lock:
            self._stall_new = False
            for pair in self._pairs:
                pair.stalled = False

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for pair in self._pairs:
                pair.close()
            self._pairs = []
        if self._thread is not None:
            self._thread.join(2)

    def __enter__(self) -> StallingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kubeconfig_via(cluster: Cluster, server: str, path: Path) -> Cluster:
    """The same cluster and credentials, reached through another address (a proxy)."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return Cluster(path, cluster.plane)


# ------------------------------------------------------------------------------ fake Prometheus


_RESOURCE_OF = (
    ("kube_pod_container_resource_requests", 'resource="cpu"', "requests.cpu"),
    ("kube_pod_container_resource_requests", 'resource="memory"', "requests.memory"),
    ("kube_pod_container_resource_limits", 'resource="cpu"', "limits.cpu"),
    ("kube_pod_container_resource_limits", 'resource="memory"', "limits.memory"),
)
MODES = ("ok", "slow", "invalid-json", "nan", "partial", "error-500")


def _resource(query: str) -> str:
    if "count by (namespace)" in query:
        return "pods"
    for metric, marker, resource in _RESOURCE_OF:
        if metric in query and marker in query:
            return resource
    return "unknown"


class FakePrometheus:
    """An HTTP server that answers Headroom's peak queries in a chosen way (a fault injector).

    `ok`: a vector with `peaks[namespace][resource]` for every namespace asked about; `slow`: the
    same after `delay` seconds; `invalid-json`: HTTP 200 with a body that is not JSON; `nan`: every
    value NaN; `partial`: only the first namespace, with the `warnings` a partial answer carries;
    `error-500`: HTTP 500. A range query (`step` in the form) gets a matrix with the value at every step.
    """

    def __init__(self, peaks: Mapping[str, Mapping[str, str]], delay: float = 5.0) -> None:
        self.peaks = {ns: dict(values) for ns, values in peaks.items()}
        self.delay = delay
        self.mode = "ok"
        self.port = free_port()
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, resource, mode)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        self.mode = mode

    def seen(self, since: float = 0.0, mode: str | None = None) -> list[tuple[float, str, str]]:
        with self._lock:
            return [r for r in self.requests if r[0] >= since and (mode is None or r[2] == mode)]

    def _answer(self, form: Mapping[str, list[str]]) -> tuple[int, bytes]:
        query = (form.get("query") or [""])[0]
        at = float((form.get("time") or [time.time()])[0])
        resource = _resource(query)
        match = re.search(r'namespace=~"([^"]*)"', query)
        namespaces = sorted(match.group(1).split("|")) if match else []
        mode = self.mode
        with self._lock:
            self.requests.append((time.monotonic(), resource, mode))
        if mode == "slow":
            time.sleep(self.delay)
        if mode == "invalid-json":
            return 200, b"<html><body>upstream proxy error</body></html>"
        if mode == "error-500":
            return 500, b'{"status":"error","errorType":"internal","error":"store unavailable"}'
        if mode == "partial":
            namespaces = namespaces[:1]
        result = []
        for ns in namespaces:
            value = self.peaks.get(ns, {}).get(resource)
            if value is None:
                continue
            result.append({"metric": {"namespace": ns}, "value": [at, "NaN" if mode == "nan" else value]})
        body: dict[str, Any] = {"status": "success", "data": {"resultType": "vector", "result": result}}
        if "step" in form:
            # A range query (the days Headroom asks for at start-up): the same value at every step.
            start, end, step = (float(form[key][0]) for key in ("start", "end", "step"))
            steps = [start + i * step for i in range(int((end - start) // step) + 1)] if step > 0 else [end]
            matrix = [{"metric": s["metric"], "values": [[t, s["value"][1]] for t in steps]} for s in result]
            body["data"] = {"resultType": "matrix", "result": matrix}
        if mode == "partial":
            body["warnings"] = ["partial response: 1 of 2 stores unavailable"]
        return 200, json.dumps(body).encode()

    def start(self) -> FakePrometheus:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, form: Mapping[str, list[str]]) -> None:
                status, body = fake._answer(form)
                with contextlib.suppress(OSError):  # the client may have given up (timeout)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._reply(parse_qs(self.rfile.read(length).decode()))

            def do_GET(self) -> None:
                self._reply(parse_qs(self.path.partition("?")[2]))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name=f"fake-prometheus:{self.port}"
        ).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakePrometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------- a dedicated control plane

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One record per request, when it completes (watches too), and only for the operator.
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        # Status patches with their body: what changed, when a test expected no write.
        {
            "level": "Request",
            "users": [OPERATOR_USER],
            "resources": [{"group": "headroom.dev", "resources": ["projects/status"]}],
        },
        {"level": "Metadata", "users": [OPERATOR_USER]},
        {"level": "None"},
    ],
}


def audit_flags(workdir: Path) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
    ]


@dataclass(frozen=True)
class AuditRecord:
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    at: datetime
    uri: str
    body: Any = None  # the request body, where the policy records it (status patches)

    @property
    def write(self) -> bool:
        return self.verb in ("create", "update", "patch", "delete")


class AuditLog:
    """The API server's audit log of the operator's requests (see AUDIT_POLICY)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self, since: datetime | None = None) -> list[AuditRecord]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line being written
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            ref = event.get("objectRef") or {}
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since is not None and at < since:
                continue
            out.append(
                AuditRecord(
                    event.get("verb", ""),
                    ref.get("resource", ""),
                    ref.get("subresource", ""),
                    ref.get("namespace", ""),
                    ref.get("name", ""),
                    int((event.get("responseStatus") or {}).get("code") or 0),
                    at,
                    event.get("requestURI", ""),
                    event.get("requestObject"),
                )
            )
        return out

    def count(self, since: datetime | None = None, **match: Any) -> int:
        return sum(1 for r in self.records(since) if all(getattr(r, k) == v for k, v in match.items()))


def install_crds_and_rbac(cluster: Cluster) -> None:
    admin = cluster.api_client()
    ext = kubernetes.client.ApiextensionsV1Api(admin)
    for crd in apply_yaml(admin, REPO / "crds" / "projects.headroom.dev.yaml"):
        name = crd["metadata"]["name"]

        def established(name: str = name) -> bool:
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, 30, f"CRD {name} established")
    install_rbac(cluster)


@contextlib.contextmanager
def dedicated_cluster(workdir: Path, apiserver_flags: Sequence[str] = ()) -> Iterator[tuple[Cluster, AuditLog]]:
    """A control plane of its own (audited), with the CRD and the operator's RBAC, for tests that
    stop, restart or throttle its API server without disturbing the suite's shared cluster."""
    flags = [*audit_flags(workdir / "audit"), *apiserver_flags]
    plane = ControlPlane(workdir / "plane", apiserver_flags=flags)
    plane.start()
    try:
        cluster = Cluster(plane.kubeconfig, plane)
        install_crds_and_rbac(cluster)
        yield cluster, AuditLog(workdir / "audit" / "audit.log")
    finally:
        plane.stop()


def stop_apiserver(plane: ControlPlane) -> float:
    """Take the API server down now (it stops listening at once; a slow exit is cut short).
    Returns the monotonic time it went down. etcd keeps every object."""
    component = plane.components["apiserver"]
    assert component.process is not None
    component.process.terminate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", plane.api_port)) != 0:
                break
        time.sleep(0.05)
    down = time.monotonic()
    component.stop(timeout=3)  # lingering graceful shutdown: not worth waiting 20 s for
    return down


def start_apiserver(plane: ControlPlane, flags: Sequence[str] | None = None) -> float:
    """Start the API server again on the same port (optionally with other flags); returns the
    monotonic time it was ready.

    The controller manager is restarted too, as its supervisor would in a real cluster: the harness
    runs it without leader election, so it does not exit when it loses the API server, and its
    resource-quota controller does not always recover from failed discovery (new quotas then never
    get a status.used)."""
    if flags is not None:
        plane.apiserver_flags = tuple(flags)
        plane.components["apiserver"].args = [
            plane.components["apiserver"].args[0],
            "apiserver",
            *plane._apiserver_args(),
        ]
    plane._wait_port_free(plane.api_port)
    plane.start_component("apiserver")
    ready = time.monotonic()
    plane.components["controller-manager"].stop(timeout=3)
    plane.start_component("controller-manager")
    return ready


def bump_etcd_revision(plane: ControlPlane, times: int = 3) -> None:
    """Write a key outside Kubernetes' prefix straight into etcd (its JSON gateway), so that etcd's
    revision moves past every resourceVersion a client holds. A watch resumed from one of them after
    an API server restart then ends with 410 Gone."""
    for i in range(times):
        body = json.dumps(
            {
                "key": base64.b64encode(b"/headroom-tests/bump").decode(),
                "value": base64.b64encode(str(i).encode()).decode(),
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{plane.etcd_port}/v3/kv/put",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200


# ------------------------------------------------------------------------------------- observing


@dataclass
class Recorder:
    """Samples `probe()` every `interval` in a thread, for the whole length of a fault; errors (an
    API server that is down) are recorded as None."""

    probe: Callable[[], Any]
    interval: float = 0.5
    samples: list[tuple[float, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Recorder:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    value = self.probe()
                except Exception:
                    value = None
                self.samples.append((time.monotonic(), value))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True, name="recorder")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def values(self) -> list[Any]:
        return [v for _, v in self.samples if v is not None]


def wait_log(operator: OperatorProcess, text: str, timeout: float = 30) -> str:
    """Wait until the operator's current log holds `text`; returns the first line that does."""

    def probe() -> str | None:
        if not operator.log_path.exists():
            return None
        return next((line for line in operator.log_path.read_text(errors="replace").splitlines() if text in line), None)

    return wait_for(probe, timeout, f"{text!r} in the operator's log")


def health(operator: OperatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=3) as resp:
        return dict(json.loads(resp.read()))


def metric(operator: OperatorProcess, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The operator's metric, or None while its endpoint is not up."""
    try:
        return operator.metric(name, labels)
    except OSError:
        return None


def now_utc() -> datetime:
    # Audit timestamps have microseconds; a small margin keeps a request made "now" on the right side.
    return datetime.now(UTC)
