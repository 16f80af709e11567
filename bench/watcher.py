"""The benchmark's own eyes: WATCHes (as the admin, which the audit policy ignores).

A watcher records, per key (a quota's namespace, a Project's name), the first moment an object
matching a predicate was seen, and that object. No polling: one LIST to start from a resource
version, then watch streams (re-listed only if the server says the version is too old).
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


def ready(obj: dict[str, Any]) -> bool:
    """A Project whose status says every namespace is governed."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Watcher:
    def __init__(
        self,
        lister: Callable[..., Any],
        args: tuple[Any, ...],
        label_selector: str,
        predicate: Predicate,
        key: Callable[[dict[str, Any]], str],
    ) -> None:
        self.lister, self.args = lister, args
        self.selector = label_selector
        self.predicate = predicate
        self.key = key
        self.first: dict[str, tuple[float, dict[str, Any]]] = {}  # namespace -> (time.time(), object)
        self.events = 0
        self.relists = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="quota-watch", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the benchmark's quota watch did not start")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _see(self, obj: dict[str, Any], at: float) -> None:
        key = self.key(obj)
        if key in self.first or not self.predicate(obj):
            return
        with self._lock:
            self.first.setdefault(key, (at, obj))

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.lister(
                        *self.args, label_selector=self.selector, _preload_content=False, _request_timeout=120
                    )
                    body = json.loads(listed.data)
                    now = time.time()
                    for item in body.get("items") or []:
                        self._see(item, now)
                    version = body["metadata"]["resourceVersion"]
                    self._ready.set()
                watch = kubernetes.watch.Watch()
                for event in watch.stream(
                    self.lister,
                    *self.args,
                    label_selector=self.selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=20,
                    deserialize=False,
                ):
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

    what = "objects"

    def wait_for(self, namespaces: set[str], timeout: float, progress: Callable[[str], None]) -> bool:
        deadline = time.monotonic() + timeout
        last_report = 0.0
        while time.monotonic() < deadline:
            with self._lock:
                missing = namespaces - self.first.keys()
            if not missing:
                return True
            if time.monotonic() - last_report > 15:
                progress(f"  {len(namespaces) - len(missing)}/{len(namespaces)} {self.what} seen")
                last_report = time.monotonic()
            time.sleep(0.2)
        return False


def quota_watcher(api: ApiClient, label_selector: str, predicate: Predicate) -> Watcher:
    """ResourceQuotas in every namespace, by namespace."""
    watcher = Watcher(
        kubernetes.client.CoreV1Api(api).list_resource_quota_for_all_namespaces,
        (),
        label_selector,
        predicate,
        lambda obj: obj.get("metadata", {}).get("namespace", ""),
    )
    watcher.what = "quotas"
    return watcher


def project_watcher(api: ApiClient, predicate: Predicate) -> Watcher:
    """Projects, by name."""
    watcher = Watcher(
        kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object,
        ("headroom.dev", "v1alpha1", "projects"),
        "",
        predicate,
        lambda obj: obj.get("metadata", {}).get("name", ""),
    )
    watcher.what = "Project statuses"
    return watcher
