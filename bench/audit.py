"""The API server's own count of requests: an audit policy, a live tail of the log, and tallies.

The policy logs, at Metadata level only (no bodies), the requests of the two identities under test:
Headroom's ServiceAccount and the baseline's. Everything else (the benchmark's own setup, the
controllers) is level None and costs nothing. Each request is counted once, by `auditID`, at the
first stage the log holds for it (ResponseStarted for a watch, ResponseComplete otherwise), at its
`requestReceivedTimestamp`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HEADROOM_USER = "system:serviceaccount:headroom-system:headroom"
BASELINE_NAMESPACE = "headroom-bench"
BASELINE_USER = f"system:serviceaccount:{BASELINE_NAMESPACE}:baseline"
ACTORS = {HEADROOM_USER: "headroom", BASELINE_USER: "baseline"}

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["{HEADROOM_USER}", "{BASELINE_USER}"]
  - level: None
"""


@dataclass(frozen=True)
class Request:
    at: float  # requestReceivedTimestamp, Unix seconds
    actor: str  # headroom | baseline
    verb: str
    resource: str  # resource[/subresource], or "(discovery)" for non-resource URLs
    namespace: str
    name: str
    code: int

    @property
    def key(self) -> str:
        return f"{self.verb} {self.resource}"

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_event(event: dict[str, Any]) -> tuple[str, Request] | None:
    """(auditID, Request) for an event of an identity under test; None for anything else."""
    actor = ACTORS.get((event.get("user") or {}).get("username", ""))
    if actor is None:
        return None
    ref = event.get("objectRef") or {}
    resource = ref.get("resource") or ""
    if resource and ref.get("subresource"):
        resource += "/" + ref["subresource"]
    if not resource:
        resource = "(discovery)"  # /api, /apis, /version...: non-resource URLs
    code = int((event.get("responseStatus") or {}).get("code") or 0)
    return event["auditID"], Request(
        _timestamp(event["requestReceivedTimestamp"]),
        actor,
        event.get("verb", ""),
        resource,
        ref.get("namespace") or "",
        ref.get("name") or "",
        code,
    )


class AuditLog:
    """Writes the policy, gives the API server flags, and tails the log while the benchmark runs."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.policy_path = directory / "audit-policy.yaml"
        self.log_path = directory / "audit.log"
        self.policy_path.write_text(POLICY)
        self.requests: list[Request] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0
        self._partial = b""
        self.malformed = 0

    def apiserver_flags(self) -> list[str]:
        return [
            f"--audit-policy-file={self.policy_path}",
            f"--audit-log-path={self.log_path}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            # No rotation during a run: one file holds every request.
            "--audit-log-maxsize=100000",
            "--audit-log-maxbackup=0",
        ]

    # --- tail

    def start(self) -> AuditLog:
        self._thread = threading.Thread(target=self._tail, name="audit-tail", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._drain_file()

    def _tail(self) -> None:
        while not self._stop.is_set():
            self._drain_file()
            self._stop.wait(0.25)

    def _drain_file(self) -> None:
        with self._lock:
            try:
                with open(self.log_path, "rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read()
            except FileNotFoundError:
                return
            if not chunk:
                return
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()  # an incomplete last line waits for the rest
            for line in lines:
                if not line.strip():
                    continue
                try:
                    parsed = parse_event(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    self.malformed += 1
                    continue
                if parsed is None or parsed[0] in self._seen:
                    continue
                self._seen.add(parsed[0])
                self.requests.append(parsed[1])

    def sync(self, settle: float = 0.5) -> None:
        """Let the API server flush, then read everything written so far."""
        time.sleep(settle)
        self._drain_file()

    # --- queries

    def select(self, actor: str, start: float, end: float) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.actor == actor and start <= r.at < end]

    def last_request(
        self, actor: str, include_watch: bool = False, exclude: frozenset[str] = frozenset()
    ) -> float | None:
        """The moment of `actor`'s last request, watches and the resources in `exclude` aside."""
        with self._lock:
            for r in reversed(self.requests):
                if r.actor == actor and (include_watch or r.verb != "watch") and r.resource not in exclude:
                    return r.at
        return None

    def watched_resources(self, actor: str, since: float) -> set[str]:
        with self._lock:
            return {r.resource for r in self.requests if r.actor == actor and r.verb == "watch" and r.at >= since}


def writes_per_project(requests: list[Request]) -> dict[str, dict[int, int]]:
    """For each kind of write, how many projects got how many of it (namespace or Project name)."""
    per: dict[str, Counter[str]] = {}
    for r in requests:
        if r.write and r.resource != "events":
            per.setdefault(f"{r.verb} {r.resource}", Counter())[
                r.name if r.resource.startswith("projects") else r.namespace
            ] += 1
    return {key: dict(sorted(Counter(counts.values()).items())) for key, counts in sorted(per.items())}


def tally(requests: list[Request], projects: int, seconds: float | None = None) -> dict[str, Any]:
    """Counts by verb and resource, the totals that matter, and rates per project (per hour)."""
    by_key = Counter(r.key for r in requests)
    errors = Counter(f"{r.key} -> {r.code}" for r in requests if r.code >= 400)
    writes = sum(1 for r in requests if r.write)
    result: dict[str, Any] = {
        "total": len(requests),
        "writes": writes,
        "lists": sum(1 for r in requests if r.verb == "list"),
        "watches": sum(1 for r in requests if r.verb == "watch"),
        "gets": sum(1 for r in requests if r.verb == "get"),
        "by_verb_resource": dict(sorted(by_key.items())),
        "errors": dict(sorted(errors.items())),
        "per_project": round(len(requests) / projects, 3) if projects else None,
        "writes_per_project": round(writes / projects, 3) if projects else None,
    }
    if seconds:
        hours = seconds / 3600
        result["seconds"] = round(seconds, 1)
        result["per_second"] = round(len(requests) / seconds, 3)
        result["per_project_per_hour"] = round(len(requests) / projects / hours, 4) if projects else None
        result["writes_per_project_per_hour"] = round(writes / projects / hours, 4) if projects else None
        result["lists_per_hour"] = round(result["lists"] / hours, 2)
        if requests:
            per_second = Counter(int(r.at) for r in requests)
            result["peak_per_second"] = max(per_second.values())
    elif requests:
        per_second = Counter(int(r.at) for r in requests)
        result["peak_per_second"] = max(per_second.values())
    return result
