"""A tiny stand-in for Prometheus that counts the history queries Headroom makes.

It answers `POST /api/v1/query` with an instant vector (and `/api/v1/query_range`, the days Headroom
asks at start-up, with the same value at every step): for each namespace named in the query's
`namespace=~"..."` alternation, the same peak the history file holds (workload.peaks_of), so that
switching Headroom from the file to Prometheus changes no quota and no status. Every query is
recorded with the moment it arrived, the resource it asked for and how many namespaces it covered.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from bench.workload import peaks_of

_NAMESPACES = re.compile(r'namespace=~"([^"]*)"')


def resource_of(promql: str) -> str:
    if "count by (namespace)" in promql:
        return "pods"
    kind = "requests" if "kube_pod_container_resource_requests" in promql else "limits"
    if 'resource="cpu"' in promql:
        return f"{kind}.cpu"
    if 'resource="memory"' in promql:
        return f"{kind}.memory"
    return f"{kind}.other"


@dataclass(frozen=True)
class Query:
    at: float
    resource: str
    namespaces: int
    bytes: int


class FakePrometheus:
    def __init__(self) -> None:
        self.queries: list[Query] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0]
                if path not in ("/api/v1/query", "/api/v1/query_range"):
                    self.send_error(404)
                    return
                form = parse_qs(raw.decode())
                promql = (form.get("query") or [""])[0]
                body = outer.answer(promql, len(raw))
                if path.endswith("_range"):
                    start, end, step = (float((form.get(k) or ["0"])[0]) for k in ("start", "end", "step"))
                    body = _as_matrix(body, start, end, step)
                self._reply(body)

            def _reply(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-prometheus", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakePrometheus:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, promql: str, size: int) -> dict[str, Any]:
        resource = resource_of(promql)
        match = _NAMESPACES.search(promql)
        namespaces = [ns for ns in (match.group(1).split("|") if match else []) if ns]
        with self._lock:
            self.queries.append(Query(time.time(), resource, len(namespaces), size))
        result = []
        for ns in namespaces:
            try:
                index = int(ns.rsplit("-", 1)[1])
            except (IndexError, ValueError):
                continue
            peak = peaks_of(index).get(resource)
            if peak is not None:
                result.append({"metric": {"namespace": ns}, "value": [time.time(), str(peak)]})
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def since(self, start: float) -> list[Query]:
        with self._lock:
            return [q for q in self.queries if q.at >= start]


def _as_matrix(body: dict[str, Any], start: float, end: float, step: float) -> dict[str, Any]:
    times = [start + i * step for i in range(int((end - start) // step) + 1)] if step > 0 else [end]
    result = [
        {"metric": sample["metric"], "values": [[t, sample["value"][1]] for t in times]}
        for sample in body["data"]["result"]
    ]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def cycles(queries: list[Query], gap: float = 3.0) -> list[list[Query]]:
    """Group queries into bursts: a derivation cycle asks for every resource within moments."""
    groups: list[list[Query]] = []
    for query in sorted(queries, key=lambda q: q.at):
        if groups and query.at - groups[-1][-1].at <= gap:
            groups[-1].append(query)
        else:
            groups.append([query])
    return groups
