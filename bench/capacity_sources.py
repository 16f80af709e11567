"""What it costs to know the cluster's allocatable capacity: a watch on Nodes against one PromQL query.

`python -m bench.capacity_sources --seconds 600` starts the local control plane with one real node,
then for the given time holds three streams open side by side and counts what each delivers:

* a full watch on Nodes (what `status.allocatable` needs: every kubelet status report arrives),
* a metadata-only watch on Nodes (cheap, but it does not carry `status.allocatable`),
* and, for comparison, the size of a Node object and of the answer to
  `sum by (resource) (kube_node_status_allocatable)` (one answer per resource, whatever the number
  of nodes).

`python -m bench.capacity_sources --prometheus-nodes 2500` measures the other side: a real Prometheus
holding the series of 2 500 nodes, asked the operator's query.

Each prints one JSON object; docs/capacity.md turns them into the figures at 2 500 nodes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes

from hack.localcluster.controlplane import ControlPlane

_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def _watch(client: kubernetes.client.ApiClient, accept: str | None, seconds: float, out: dict[str, Any]) -> None:
    """Count the events and bytes of one watch on Nodes (renewed until `seconds` have passed)."""
    headers = {"Accept": accept} if accept else {}
    deadline = time.monotonic() + seconds
    out.update(events=0, bytes=0, types={})
    version = ""
    while (left := deadline - time.monotonic()) > 1:
        params = {"watch": "true", "timeoutSeconds": str(int(left)), "allowWatchBookmarks": "true"}
        if version:
            params["resourceVersion"] = version
        query = "&".join(f"{k}={v}" for k, v in params.items())
        response = client.rest_client.pool_manager.request(
            "GET",
            f"{client.configuration.host}/api/v1/nodes?{query}",
            headers=headers,
            preload_content=False,
            timeout=left + 5,
        )
        for line in response:
            for chunk in line.splitlines():
                if not chunk.strip():
                    continue
                event = json.loads(chunk)
                out["bytes"] += len(chunk)
                kind = event.get("type", "?")
                out["types"][kind] = out["types"].get(kind, 0) + 1
                if kind != "BOOKMARK":
                    out["events"] += 1
                version = event.get("object", {}).get("metadata", {}).get("resourceVersion", version)


def measure(seconds: float) -> dict[str, Any]:
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="headroom-capacity-")), node=True)
    plane.start()
    try:
        client = kubernetes.config.new_client_from_config(str(plane.kubeconfig))
        core = kubernetes.client.CoreV1Api(client)
        deadline = time.monotonic() + 180
        while not core.list_node().items and time.monotonic() < deadline:
            time.sleep(1)
        node = core.list_node(_preload_content=False).data
        full: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        threads = [
            threading.Thread(target=_watch, args=(client, None, seconds, full)),
            threading.Thread(target=_watch, args=(client, _METADATA_ONLY, seconds, meta)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        items = json.loads(node)["items"]
        return {
            "seconds": seconds,
            "nodes": len(items),
            "node_object_bytes": len(json.dumps(items[0], separators=(",", ":"))) if items else None,
            "allocatable": items[0]["status"].get("allocatable") if items else None,
            "full_watch": full,
            "metadata_watch": meta,
        }
    finally:
        plane.stop()


def measure_prometheus(nodes: int, queries: int = 20) -> dict[str, Any]:
    """The other side: a real Prometheus holding kube_node_status_allocatable of `nodes` nodes (the
    last 15 minutes, one sample a minute, as kube-state-metrics would leave it), asked the operator's
    query: the answer's size and the time it takes, median of `queries`."""
    import statistics
    import subprocess
    import urllib.parse
    import urllib.request
    from datetime import UTC, datetime

    from headroom.shell.capacity import ALLOCATABLE_QUERY

    from tests.harness.prometheus import Prometheus, _require

    server = Prometheus(Path(tempfile.mkdtemp(prefix="headroom-capacity-prom-")))
    now = int(datetime.now(UTC).timestamp())
    lines = ["# TYPE kube_node_status_allocatable gauge"]
    for i in range(nodes):
        for resource, unit, value in (
            ("cpu", "core", 16),
            ("memory", "byte", 64 * 2**30),
            ("pods", "integer", 110),
            ("ephemeral_storage", "byte", 200 * 10**9),
        ):
            labels = f'job="kube-state-metrics",node="node-{i:05d}",resource="{resource}",unit="{unit}"'
            lines += [f"kube_node_status_allocatable{{{labels}}} {value} {t}" for t in range(now - 900, now + 1, 60)]
    server.data_dir.mkdir(parents=True)
    source = server.workdir / "allocatable.om"
    source.write_text("\n".join([*lines, "# EOF"]) + "\n")
    subprocess.run(
        [
            _require("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            str(source),
            str(server.data_dir),
        ],
        check=True,
        capture_output=True,
    )
    server.start()
    try:
        sizes, seconds = [], []
        for _ in range(queries):
            data = urllib.parse.urlencode({"query": ALLOCATABLE_QUERY, "time": str(now)}).encode()
            started = time.monotonic()
            with urllib.request.urlopen(f"{server.url}/api/v1/query", data=data, timeout=30) as resp:
                body = resp.read()
            seconds.append(time.monotonic() - started)
            sizes.append(len(body))
        return {
            "nodes": nodes,
            "answer_bytes": sizes[0],
            "answer": json.loads(body)["data"]["result"],
            "query_seconds_median": statistics.median(seconds),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity_sources")
    parser.add_argument("--seconds", type=float, default=600, help="how long to watch the local node")
    parser.add_argument(
        "--prometheus-nodes", type=int, default=0, help="measure the PromQL side at this many nodes instead"
    )
    args = parser.parse_args()
    result = measure_prometheus(args.prometheus_nodes) if args.prometheus_nodes else measure(args.seconds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
