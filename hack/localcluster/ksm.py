"""Real kube-state-metrics scraped by a real Prometheus, for history read from live series.

kube-state-metrics is built from its Go module at the release `hack/kube-state-metrics/go.mod` pins
and watches the cluster like any exporter; Prometheus (Debian's) scrapes it every few seconds, with
the scrape configuration kube-prometheus uses for it (`honor_labels`). Nothing is written by hand:
what Headroom's default queries read is what the exporter exports.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hack.localcluster.controlplane import REPO, _die_with_parent, free_port, stop_process

SOURCE_DIR = REPO / "hack" / "kube-state-metrics"
BINARY = REPO / ".cache" / "bin" / "kube-state-metrics"


class ExporterError(RuntimeError):
    pass


def ensure_binary() -> Path:
    """Build kube-state-metrics unless the cached binary was built from the current go.mod/go.sum."""
    digest = hashlib.sha256(
        b"".join((SOURCE_DIR / n).read_bytes() for n in ("go.mod", "go.sum", "build.sh"))
    ).hexdigest()
    stamp = BINARY.with_suffix(".sha256")
    if BINARY.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return BINARY
    result = subprocess.run(
        ["bash", str(SOURCE_DIR / "build.sh"), str(BINARY)], capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        raise ExporterError(f"building kube-state-metrics failed:\n{result.stdout}\n{result.stderr}")
    stamp.write_text(digest + "\n")
    return BINARY


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def _wait(probe: Any, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ExporterError(f"{what} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if probe():
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ExporterError(f"{what} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@dataclass
class KubeStateMetrics:
    workdir: Path
    kubeconfig: Path
    port: int = field(default_factory=free_port)
    telemetry_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> KubeStateMetrics:
        binary = ensure_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "kube-state-metrics.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    f"--kubeconfig={self.kubeconfig}",
                    "--host=127.0.0.1",
                    f"--port={self.port}",
                    "--telemetry-host=127.0.0.1",
                    f"--telemetry-port={self.telemetry_port}",
                    "--resources=pods,namespaces,resourcequotas",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        _wait(
            lambda: b"kube_pod_info" in _get(f"http://{self.target}/metrics"),
            self.process,
            "kube-state-metrics",
            log_path,
            60,
        )
        return self

    def metrics(self) -> str:
        return _get(f"http://{self.target}/metrics").decode()

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


@dataclass
class ScrapingPrometheus:
    """Prometheus scraping one kube-state-metrics every `interval` seconds, listening on `host`."""

    workdir: Path
    target: str
    host: str = "127.0.0.1"
    interval: int = 5
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ScrapingPrometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ExporterError("prometheus is not installed (hack/setup.sh installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": f"{self.interval}s", "evaluation_interval": f"{self.interval}s"},
                    "scrape_configs": [
                        {
                            "job_name": "kube-state-metrics",
                            "honor_labels": True,
                            "static_configs": [{"targets": [self.target]}],
                        }
                    ],
                }
            )
        )
        log_path = self.workdir / "prometheus.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        _wait(lambda: _get(f"{self.url}/-/ready") is not None, self.process, "prometheus", log_path, 30)
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=params, method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise ExporterError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


if __name__ == "__main__":
    print(ensure_binary())
