"""What the operator's Events watch carries: the same watch, opened by the benchmark, bytes counted.

The audit log counts requests but not the bytes of a watch stream. This meter opens, as the admin
(whom the audit policy ignores), exactly the watch Headroom opens for quota denials (core/v1 Events,
fieldSelector reason=FailedCreate, bookmarks, 300 s per request) from a fresh resourceVersion, and
counts what the server sends on it: bytes, and events by type. The operator's own stream carries the
same, so this is its cost on the wire, measured without touching the operator.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from headroom.core.names import FAILED_CREATE_SELECTOR
from headroom.shell.denials_watch import watch_params
from headroom.shell.handlers import WATCH_SECONDS
from kubernetes.client import ApiClient, CoreV1Api


def _client_library_kwargs(query: dict[str, Any]) -> dict[str, Any]:
    """The operator's query parameters (fieldSelector=...) as the client library's keywords (field_selector=...)."""
    return {"watch": True, **{re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in query.items()}}


class EventsWatchMeter:
    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.bytes = 0
        self.requests = 0
        self.types: Counter[str] = Counter()
        self.list_bytes = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-watch-meter", daemon=True)
        self._started = 0.0
        self._stopped = 0.0

    def start(self) -> EventsWatchMeter:
        self._started = time.time()
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._stopped = time.time()
        self._thread.join(2)
        hours = max(self._stopped - self._started, 1e-9) / 3600
        return {
            "field_selector": FAILED_CREATE_SELECTOR,
            "seconds": round(self._stopped - self._started, 1),
            "initial_list_bytes": self.list_bytes,
            "watch_requests": self.requests,
            "watch_requests_per_hour": round(self.requests / hours, 2),
            "bytes": self.bytes,
            "bytes_per_hour": round(self.bytes / hours),
            "events_by_type": dict(self.types),
            "errors": self.errors[:5],
        }

    def _run(self) -> None:
        core = CoreV1Api(self.client)
        try:
            listed = core.list_event_for_all_namespaces(field_selector=FAILED_CREATE_SELECTOR, _preload_content=False)
            raw = listed.data
            self.list_bytes = len(raw)
            version = json.loads(raw)["metadata"]["resourceVersion"]
        except Exception as exc:  # reported, never fatal to the benchmark
            self.errors.append(f"list: {exc}")
            return
        from_now = False
        events: Any = core.list_event_for_all_namespaces  # raw response with _preload_content=False
        while not self._stop.is_set():
            # As the operator renews it (headroom.shell.denials_watch): from the last version while it
            # is recent, else from now, without initial events (Events carry no bookmarks).
            params = _client_library_kwargs(watch_params(None if from_now else version))
            self.requests += 1
            from_now = True
            try:
                response = events(**params, _preload_content=False, _request_timeout=(10, WATCH_SECONDS + 60))
                for line in response:
                    self.bytes += len(line)
                    item = json.loads(line)
                    self.types[item.get("type", "?")] += 1
                    if item.get("type") != "ERROR":
                        version = (item.get("object") or {}).get("metadata", {}).get("resourceVersion") or version
                        from_now = False
                    if self._stop.is_set():
                        break
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.errors.append(str(exc)[:200])
                time.sleep(1)
