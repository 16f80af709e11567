"""Measure the local control plane: build time, binary size, start time, memory, version.

    python -m hack.measure_controlplane [--cold] [--starts 3]

--cold builds with empty Go build and module caches in a temporary directory (what a fresh CI
machine pays); without it the cached binary is used (or built with the normal caches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from hack.localcluster.controlplane import BINARY, SOURCE_DIR, ControlPlane, ensure_binary


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cold_build() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GOCACHE": f"{tmp}/gocache", "GOMODCACHE": f"{tmp}/gomod", "GOFLAGS": "-modcacherw"}
        started = time.monotonic()
        subprocess.run(
            ["bash", str(SOURCE_DIR / "build.sh"), f"{tmp}/controlplane"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also time a build from empty caches")
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, object] = {}
    if args.cold:
        result["cold_build_seconds"] = round(cold_build(), 1)
    started = time.monotonic()
    ensure_binary()
    result["cached_build_check_seconds"] = round(time.monotonic() - started, 2)
    result["binary_bytes"] = BINARY.stat().st_size
    starts, rss = [], {}
    for _ in range(args.starts):
        plane = ControlPlane(Path(tempfile.mkdtemp(prefix="headroom-measure-")))
        t0 = time.monotonic()
        plane.start()
        starts.append(time.monotonic() - t0)
        time.sleep(5)  # let the controllers settle before reading memory
        rss = {name: rss_kib(c.process.pid) // 1024 for name, c in plane.components.items() if c.process}
        result["kubernetes_version"] = plane.version()
        plane.stop()
    result["warm_start_seconds"] = {"median": round(statistics.median(starts), 2), "all": [round(s, 2) for s in starts]}
    result["rss_mib"] = {**rss, "total": sum(rss.values())}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
