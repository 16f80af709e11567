"""A real Prometheus for the suite, holding synthetic kube-state-metrics history.

History is described as pod segments (which pod of which namespace held which requests and limits,
in which phase, from when to when). `write_openmetrics` renders them as the kube-state-metrics v2
series Headroom queries, `promtool tsdb create-blocks-from openmetrics` backfills them into TSDB
blocks, and `Prometheus` serves those blocks on a free loopback port, with no scrape targets.

Facts this relies on (checked against Debian's Prometheus 2.42):

- Backfilled blocks are loaded when Prometheus starts and are queryable right away, also samples only
  a minute old (overlapping blocks are always allowed since 2.39; 2.42 has no
  --storage.tsdb.allow-overlapping-blocks any more). Blocks added while Prometheus runs appear only
  at its next periodic reload, about a minute later: write the history first, then start.
- The default retention (15d) would delete older blocks at start-up: `--storage.tsdb.retention.time`
  is set far beyond any lookback.
- `--max-block-duration` is a hidden flag of promtool 2.42 (not in `--help`); without it every 2h of
  history becomes a block of its own.
- Backfilled data has no staleness markers: a series stays visible for the query lookback delta
  (5m) after its last sample. Leave gaps of more than 5 minutes between pods that should not be
  counted together, or account for the overlap.
- A `max_over_time((...)[30d:1m])` subquery at time=now over backfilled data returns the peak.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from headroom.core.quantity import parse_quantity

from hack.localcluster.controlplane import _die_with_parent, free_port, stop_process

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
REQUESTS_METRIC = "kube_pod_container_resource_requests"
LIMITS_METRIC = "kube_pod_container_resource_limits"
PHASE_METRIC = "kube_pod_status_phase"
# Quota resource suffix -> (kube-state-metrics v2 `resource` label, `unit` label).
_KSM_RESOURCES: Mapping[str, tuple[str, str]] = {
    "cpu": ("cpu", "core"),
    "memory": ("memory", "byte"),
    "ephemeral-storage": ("ephemeral_storage", "byte"),
    "nvidia.com/gpu": ("nvidia_com_gpu", "integer"),  # an extended resource, as kube-state-metrics names it
}
# Labels a real scrape of kube-state-metrics adds; the queries must not depend on their absence.
_SCRAPE_LABELS = {"job": "kube-state-metrics", "instance": "10.0.0.7:8080"}

DEFAULT_BLOCK_DURATION = "720h"


class PrometheusError(RuntimeError):
    pass


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise PrometheusError(
            f"{tool} is not installed; it comes with Debian's `prometheus` package "
            "(apt-get install --no-install-recommends prometheus; .ci/run does this)"
        )
    return path


# --------------------------------------------------------------------------------------------- history


@dataclass(frozen=True)
class PodSegment:
    """One pod of one namespace, alive from `start` to `end` (inclusive) in one phase.

    `containers` maps a container name to its quota resources and quantities, for instance
    {"app": {"requests.cpu": "500m", "requests.memory": "256Mi", "limits.cpu": "1"}}. A pod that
    changes phase is two segments with the same pod name and adjacent times.
    """

    namespace: str
    pod: str
    start: datetime
    end: datetime
    containers: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: {"app": {}})
    phase: str = "Running"

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase {self.phase!r} is not one of {PHASES}")
        if self.end < self.start:
            raise ValueError(f"segment of {self.namespace}/{self.pod} ends before it starts")


def pod(
    namespace: str, name: str, start: datetime, end: datetime, phase: str = "Running", **containers: Mapping[str, str]
) -> PodSegment:
    """Shorthand: pod(ns, "web-1", t0, t1, app={"requests.cpu": "500m"}, sidecar={...})."""
    return PodSegment(namespace, name, start, end, dict(containers) or {"app": {}}, phase)


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def _number(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _timestamps(start: datetime, end: datetime, interval: int) -> Iterable[int]:
    # Aligned to the interval, so that a sample falls on every subquery step of that size.
    first = -(-int(start.timestamp()) // interval) * interval
    return range(first, int(end.timestamp()) + 1, interval)


def render_openmetrics(segments: Sequence[PodSegment], interval: int = 60) -> str:
    """The segments as kube-state-metrics v2 series, one sample per `interval` seconds.

    Every pod gets the five `kube_pod_status_phase` series (1 for its phase, 0 for the others), as
    kube-state-metrics exports them; every container resource gets a requests or limits series.
    """
    series: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)

    def put(metric: str, labels: Mapping[str, str], at: int, value: str) -> None:
        key = (metric, _labels({**labels, **_SCRAPE_LABELS}))
        before = series[key].get(at)
        if before is not None and before != value:
            raise ValueError(
                f"{metric}{{{key[1]}}} has two values at {at}: {before} and {value}; segments of one pod overlap"
            )
        series[key][at] = value

    for segment in segments:
        uid = f"uid-{segment.namespace}-{segment.pod}"
        pod_labels = {"namespace": segment.namespace, "pod": segment.pod, "uid": uid}
        for at in _timestamps(segment.start, segment.end, interval):
            for phase in PHASES:
                put(PHASE_METRIC, {**pod_labels, "phase": phase}, at, "1" if phase == segment.phase else "0")
            for container, resources in segment.containers.items():
                for resource, quantity in resources.items():
                    kind, _, name = resource.partition(".")
                    if kind not in ("requests", "limits") or name not in _KSM_RESOURCES:
                        raise ValueError(
                            f"{resource!r}: expected requests.<r> or limits.<r> with r in {sorted(_KSM_RESOURCES)}"
                        )
                    ksm_resource, unit = _KSM_RESOURCES[name]
                    metric = REQUESTS_METRIC if kind == "requests" else LIMITS_METRIC
                    put(
                        metric,
                        {
                            **pod_labels,
                            "container": container,
                            "node": "node-1",
                            "resource": ksm_resource,
                            "unit": unit,
                        },
                        at,
                        _number(parse_quantity(quantity)),
                    )

    lines: list[str] = []
    for metric in sorted({m for m, _ in series}):
        # OpenMetrics: one family per TYPE line, a series' samples together and in time order.
        lines.append(f"# TYPE {metric} gauge")
        for (name, labels), samples in sorted(series.items()):
            if name != metric:
                continue
            lines.extend(f"{metric}{{{labels}}} {value} {at}" for at, value in sorted(samples.items()))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(
    segments: Sequence[PodSegment],
    data_dir: Path,
    workdir: Path,
    interval: int = 60,
    block_duration: str = DEFAULT_BLOCK_DURATION,
) -> Path:
    """Write the segments as OpenMetrics and turn them into TSDB blocks in `data_dir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    source = workdir / f"history-{len(list(workdir.glob('history-*.om')))}.om"
    source.write_text(render_openmetrics(segments, interval))
    result = subprocess.run(
        [
            _require("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            f"--max-block-duration={block_duration}",
            str(source),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise PrometheusError(f"promtool could not backfill {source}:\n{result.stdout}{result.stderr}")
    return source


# --------------------------------------------------------------------------------------------- server


_CONFIG = """\
# No scrape targets: all data comes from backfilled blocks.
global:
  scrape_interval: 1m
  evaluation_interval: 1m
"""


@dataclass
class Prometheus:
    """One Prometheus on a fixed free port; stop() and start() again keep its port and data."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    flags: tuple[str, ...] = ()  # more command-line flags, e.g. ("--query.max-samples=5000",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def query_log(self) -> Path:
        return self.workdir / "queries.log"

    def asked(self) -> list[dict[str, Any]]:
        """The queries Prometheus evaluated, oldest first: each one's `params` (query, start, end,
        step; start == end for an instant query) and `stats` (timings, and samples when asked)."""
        try:
            lines = self.query_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def forget_asked(self) -> None:
        """Empty the query log (Prometheus appends to the file it holds open)."""
        if self.query_log.exists():
            with self.query_log.open("r+") as log:
                log.truncate(0)

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def backfill(self, segments: Sequence[PodSegment], interval: int = 60) -> Prometheus:
        """Add history; blocks are read when Prometheus starts, so call this before start()."""
        if self.running():
            raise PrometheusError("backfill before start(): a running Prometheus does not load new blocks")
        backfill(segments, self.data_dir, self.workdir, interval)
        return self

    def start(self, timeout: float = 30.0) -> Prometheus:
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        # Every query Prometheus evaluates is logged, so that a test can check what it was asked.
        config.write_text(_CONFIG + f"  query_log_file: {self.query_log}\n")
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [
                _require("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=400d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                *self.flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise PrometheusError(f"prometheus exited with {code} at start:\n{self.logs()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(f"prometheus not ready after {timeout}s:\n{self.logs()}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.process, timeout)
        self.process = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def query(self, promql: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """An instant query; returns data.result (for checks and for debugging a test)."""
        params = {"query": promql, "time": f"{(at or datetime.now(UTC)).timestamp():.3f}"}
        request = urllib.request.Request(
            f"{self.url}/api/v1/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    def logs(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def ago(now: datetime, **delta: float) -> datetime:
    """now minus a timedelta: ago(now, hours=3)."""
    return now - timedelta(**delta)
