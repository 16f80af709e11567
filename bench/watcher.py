"""The benchmark's own eyes: a WATCH on ResourceQuotas (as the admin, which the audit policy ignores).

It records, per namespace, the first moment a quota matching a predicate was seen, and that quota.
No polling: one LIST to start from a resource version, then watch streams (re-listed only if the
server says the version is too old).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, ApiException

Predicate = Callable[[dict[str, Any]], bool]


def governed(obj: dict[str, Any]) -> bool:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return annotations.get("headroom.dev/state") == "governed"


class QuotaWatcher:
    def __init__(self, api: ApiClient, label_selector: str, predicate: Predicate) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.selector = label_selector
        self.predicate = predicate
        self.first: dict[str, tuple[float, dict[str, Any]]] = {}  # namespace -> (time.time(), object)
        self.events = 0
        self.relists = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="quota-watch", daemon=True)

    def start(self) -> QuotaWatcher:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the benchmark's quota watch did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _see(self, obj: dict[str, Any], at: float) -> None:
        namespace = obj.get("metadata", {}).get("namespace", "")
        if namespace in self.first or not self.predicate(obj):
            return
        with self._lock:
            self.first.setdefault(namespace, (at, obj))

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.core.list_resource_quota_for_all_namespaces(
                        label_selector=self.selector, _preload_content=False, _request_timeout=120)
                    body = json.loads(listed.data)
                    now = time.time()
                    for item in body.get("items") or []:
                        self._see(item, now)
                    version = body["metadata"]["resourceVersion"]
                    self._ready.set()
                watch = kubernetes.watch.Watch()
                for event in watch.stream(self.core.list_resource_quota_for_all_namespaces,
                                          label_selector=self.selector, resource_version=version,
                                          allow_watch_bookmarks=True, timeout_seconds=20, deserialize=False):
                    now = time.time()
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self.events += 1
                        self._see(obj, now)
                    elif event.get("type") == "ERROR":
                        version = None
                        self.relists += 1
                        break
                    if self._stop.is_set():
                        watch.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:
                    version = None
                    self.relists += 1
                    continue
                self.errors.append(f"HTTP {exc.status}")
                time.sleep(1)
            except Exception as exc:  # the control plane is busy: keep watching
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(1)

    def count(self) -> int:
        with self._lock:
            return len(self.first)

    def wait_for(self, namespaces: set[str], timeout: float, progress: Callable[[str], None]) -> bool:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            with self._lock:
                missing = namespaces - self.first.keys()
            if not missing:
                return True
            if time.monotonic() - last_report > 15:
                progress(f"  {len(namespaces) - len(missing)}/{len(namespaces)} quotas seen")
                last_report = time.monotonic()
            time.sleep(0.2)
        return False
