"""Alert receivers for the suite: an HTTP webhook run in a thread, and a real Alertmanager process.

`WebhookReceiver` records every POST (JSON body, headers, the status it answered) and can be told to
fail the next N requests or to be down (not listening at all). `Alertmanager` runs Debian's
`prometheus-alertmanager` binary on a free loopback port, with clustering off, and reads its alerts
back through the v2 API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from hack.localcluster.controlplane import _die_with_parent, free_port, stop_process

ALERTMANAGER_BINARIES = ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")


# ------------------------------------------------------------------------------------------- webhook


@dataclass(frozen=True)
class Request:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    status: int
    received: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.raw or b"null")
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that records every POST; use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._failures: list[tuple[int, Any]] = []  # (status, where) for the next matching requests
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        if self._server is not None:
            return self
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status = receiver._record(self.path, dict(self.headers.items()), raw)
                body = b'{"ok": true}' if 200 <= status < 300 else b'{"error": "told to fail"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        deadline = time.monotonic() + 10
        while True:
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:  # the port of a receiver that was just "down" may linger briefly
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"webhook-receiver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def down(self) -> None:
        """Stop listening: connections are refused until up()."""
        self.stop()

    def up(self) -> None:
        """Listen again, on the same port."""
        self.start()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- behaviour

    def fail_next(self, count: int, status: int = 500, where: Any = None) -> None:
        """Answer the next `count` requests (only those whose JSON body matches `where`, if given) with
        `status`; they are recorded, but not ok."""
        with self._lock:
            self._failures.extend([(status, where)] * count)

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> int:
        request = Request(path, headers, raw, 200)
        with self._lock:
            for index, (status, where) in enumerate(self._failures):
                if where is None or _matches(request.json, where):
                    del self._failures[index]
                    request = Request(path, headers, raw, status, request.received)
                    break
            self._requests.append(request)
            return request.status

    # --- what was received

    def requests(self, where: Any = None) -> list[Request]:
        """Every POST so far (oldest first), optionally only those whose JSON body satisfies `where`."""
        with self._lock:
            seen = list(self._requests)
        if where is None:
            return seen
        return [r for r in seen if _matches(r.json, where)]

    def delivered(self, where: Any = None) -> list[Request]:
        """The POSTs answered with 2xx: the deliveries that succeeded."""
        return [r for r in self.requests(where) if r.ok]

    def payloads(self, where: Any = None, ok_only: bool = True) -> list[Any]:
        return [r.json for r in (self.delivered(where) if ok_only else self.requests(where))]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._failures.clear()


def _matches(body: Any, where: Any) -> bool:
    """`where` is a predicate or a dict of top-level fields the JSON body must have."""
    if callable(where):
        try:
            return bool(where(body))
        except (KeyError, TypeError, IndexError):
            return False
    if not isinstance(body, dict):
        return False
    return all(body.get(k) == v for k, v in where.items())


# --------------------------------------------------------------------------------------- alertmanager


class AlertmanagerError(RuntimeError):
    pass


def alertmanager_binary() -> str | None:
    for candidate in ALERTMANAGER_BINARIES:
        found = shutil.which(candidate) if "/" not in candidate else (candidate if Path(candidate).exists() else None)
        if found:
            return found
    return None


@dataclass
class Alertmanager:
    """A real Alertmanager on 127.0.0.1; optionally routes every alert to a webhook (`forward_to`)."""

    workdir: Path
    forward_to: str | None = None
    port: int = field(default_factory=free_port)
    binary: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertmanager.log"

    def config(self) -> dict[str, Any]:
        receiver: dict[str, Any] = {"name": "default"}
        if self.forward_to:
            receiver["webhook_configs"] = [{"url": self.forward_to, "send_resolved": True}]
        return {
            "route": {
                "receiver": "default",
                "group_by": ["alertname", "project", "namespace", "resource"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "24h",
            },
            "receivers": [receiver],
        }

    def start(self, timeout: float = 30) -> Alertmanager:
        binary = self.binary or alertmanager_binary()
        if binary is None:
            raise AlertmanagerError(
                "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Empty disables clustering; otherwise it binds 0.0.0.0:9094 and gossips.
                "--cluster.listen-address=",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise AlertmanagerError(f"alertmanager exited with {self.process.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AlertmanagerError(f"alertmanager not ready after {timeout}s:\n{self.logs()}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 15) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout)

    def __enter__(self) -> Alertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- API

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        query = urllib.parse.urlencode(params or {}, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}{'?' + query if query else ''}", timeout=5) as resp:
            return json.loads(resp.read())

    def alerts(self, active: bool | None = None, **labels: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts, filtered by exact label matchers (e.g. project="payments").

        Alertmanager leaves out alerts whose endsAt has passed: a resolved alert is simply not listed.
        """
        params: dict[str, Any] = {"filter": [f'{k}="{v}"' for k, v in sorted(labels.items())]}
        if active is not None:
            params["active"] = "true" if active else "false"
        return list(self._get("/api/v2/alerts", params))

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with contextlib.closing(urllib.request.urlopen(request, timeout=5)):
            pass
