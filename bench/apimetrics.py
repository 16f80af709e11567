"""What the API server itself spends, from its own /metrics: bytes it served and its CPU time.

Request counts treat a LIST of 3 000 pods like a GET of one object; `apiserver_response_sizes` (the
bytes of every response body, by verb and resource) and `process_cpu_seconds_total` (the
kube-apiserver process, which in the local cluster runs apart from etcd and the controllers) say
what the requests cost. Both are server-wide: a phase's delta also holds the controllers' and the
benchmark's own small requests, which are the same for every contender, so the phases compare.

A watch stream is recorded once, when it ends, with every byte it carried since it was opened: a
phase's WATCH bytes are those of the streams (anyone's: the controllers', the benchmark's, the
contender's) that happened to end in it, opened perhaps long before, during an onboarding of
thousands. They are kept apart from the answered requests (`answered_bytes`), which belong to the
phase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import kubernetes

WATCH = "WATCH "
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Snapshot:
    cpu_seconds: float = 0.0
    bytes_by_request: dict[str, float] = field(default_factory=dict)  # "VERB resource" -> bytes
    count_by_request: dict[str, float] = field(default_factory=dict)


def parse(text: str) -> Snapshot:
    snap = Snapshot()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels_text, value = match.groups()
        if name == "process_cpu_seconds_total":
            snap.cpu_seconds = float(value)
        elif name in ("apiserver_response_sizes_sum", "apiserver_response_sizes_count"):
            labels = dict(_LABEL.findall(labels_text or ""))
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            key = f"{labels.get('verb', '')} {resource}"
            target = snap.bytes_by_request if name.endswith("_sum") else snap.count_by_request
            target[key] = target.get(key, 0.0) + float(value)
    return snap


def scrape(api: kubernetes.client.ApiClient) -> Snapshot | None:
    """None if the API server would not say (the benchmark goes on without these figures)."""
    try:
        response = api.call_api("GET", f"{api.configuration.host}/metrics", _request_timeout=30)
        response.read()
        return parse(response.data.decode())
    except Exception:
        return None


def between(start: Snapshot | None, end: Snapshot | None, seconds: float, projects: int) -> dict[str, Any] | None:
    """The API server's bytes served and CPU seconds in a phase, in total and per Project per hour."""
    if start is None or end is None or seconds <= 0:
        return None
    by_request = {
        key: round(value - start.bytes_by_request.get(key, 0.0))
        for key, value in end.bytes_by_request.items()
        if value - start.bytes_by_request.get(key, 0.0) > 0
    }
    total = sum(by_request.values())
    watch = sum(v for k, v in by_request.items() if k.startswith(WATCH))
    cpu = end.cpu_seconds - start.cpu_seconds
    hours = seconds / 3600
    return {
        "seconds": round(seconds, 1),
        "bytes_served": total,
        "bytes_by_request": dict(sorted(by_request.items(), key=lambda kv: -kv[1])[:12]),
        "bytes_per_project_per_hour": round(total / projects / hours, 1) if projects else None,
        **_apart(total, watch, projects, hours),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_hour": round(cpu / hours, 1),
    }


def split_watches(served: dict[str, Any], projects: int) -> None:
    """For a result recorded before WATCH bytes were kept apart: the split, from the largest requests
    it kept (twelve). A WATCH beyond them stays among the answered bytes, which are then an upper
    bound (`answered_bytes_upper_bound`)."""
    if "answered_bytes" in served or not served.get("seconds") or not projects:
        return
    watch = sum(v for k, v in (served.get("bytes_by_request") or {}).items() if k.startswith(WATCH))
    served.update(
        _apart(served.get("bytes_served") or 0, watch, projects, served["seconds"] / 3600),
        answered_bytes_upper_bound=len(served.get("bytes_by_request") or {}) >= 12,
    )


def _apart(total: float, watch: float, projects: int, hours: float) -> dict[str, Any]:
    """Answered bytes and watch-stream bytes, in all and per Project per hour."""
    return {
        "answered_bytes": total - watch,
        "watch_bytes": watch,
        "answered_bytes_per_project_per_hour": round((total - watch) / projects / hours, 1) if projects else None,
        "watch_bytes_per_project_per_hour": round(watch / projects / hours, 1) if projects else None,
    }
