"""What the watch streams have shown: the operator's whole view of the cluster, with its indexes.

Kopf's handlers (handlers.py) put what they see here; the reconciler reads it. Reconciling one
Project never costs a pass over every Project or quota in the cluster: the indexes answer instead.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Callable, ItemsView, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from headroom.core.denials import DeniedPod
from headroom.core.history import DailyPeaks, decode
from headroom.core.names import (
    DAILY_PEAKS_ANNOTATION,
    FIELD_MANAGER,
    GOVERNED_ANNOTATION,
    PROJECT_LABEL,
    PROMETHEUS_DAYS_ANNOTATION,
)


class IndexedDict(dict[str, dict[str, Any]]):
    """A dict that keeps an inverted index: index key -> the keys whose value names it.

    Reconciling one Project must not cost a pass over every Project or quota in the cluster (that
    is quadratic: at 3000 Projects a derivation cycle spent seconds of CPU in such passes).
    """

    def __init__(
        self,
        index_keys: Callable[[Mapping[str, Any]], set[str]],
        kept: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self._index_keys = index_keys
        self._kept = kept  # what of a value is kept (applied to every value put in)
        self._index: dict[str, set[str]] = {}

    def keys_for(self, index_key: str) -> set[str]:
        return set(self._index.get(index_key, ()))

    def _unindex(self, key: str) -> None:
        if key in self:
            for index_key in self._index_keys(super().__getitem__(key)):
                keys = self._index.get(index_key)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._index[index_key]

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        if self._kept is not None:
            value = self._kept(value)
        self._unindex(key)
        super().__setitem__(key, value)
        for index_key in self._index_keys(value):
            self._index.setdefault(index_key, set()).add(key)

    def __delitem__(self, key: str) -> None:
        self._unindex(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._unindex(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._index.clear()


class PackedStatus(Mapping[str, Any]):
    """A Project's status as the Store keeps it: compressed JSON, decoded when read.

    The status is Headroom's own output (conditions, forecasts, per-namespace figures). Parsed, it
    was most of what the Store held per Project: about 15 KB of a hundred objects, for 4 KB of JSON
    that compresses to about 1 KB (its keys and resource names repeat). Packing costs about 50 µs
    per status seen, decoding about 30 µs. A reconcile decodes it once (`unpacked`); the other
    readers (another Project's approved namespaces, the alert sinks) read a key now and then.
    """

    __slots__ = ("_packed", "observed_generation")

    def __init__(self, status: Mapping[str, Any]) -> None:
        self._packed = zlib.compress(json.dumps(status, separators=(",", ":")).encode(), 1)
        # Kept apart, undecoded: admission reads it for every Project woken at a start.
        self.observed_generation = _observed_generation(status)

    def decoded(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(zlib.decompress(self._packed))
        return value

    def __getitem__(self, key: str) -> Any:
        return self.decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.decoded())

    def __len__(self) -> int:
        return len(self.decoded())

    # One decoding per call, not one per key as Mapping's own would.
    def get(self, key: str, default: Any = None) -> Any:
        return self.decoded().get(key, default)

    def items(self) -> ItemsView[str, Any]:
        return self.decoded().items()

    def __repr__(self) -> str:
        return f"PackedStatus({self.decoded()!r})"


def packed(body: dict[str, Any]) -> dict[str, Any]:
    """The Project with its status packed (in place: it is the Store's own copy)."""
    status = body.get("status")
    if isinstance(status, Mapping) and not isinstance(status, PackedStatus):
        body["status"] = PackedStatus(status)
    return body


def unpacked(body: Mapping[str, Any]) -> dict[str, Any]:
    """A stored Project as a reconcile reads it: a shallow copy with its status decoded."""
    status = body.get("status")
    if isinstance(status, PackedStatus):
        return {**body, "status": status.decoded()}
    return dict(body)


def planned_generation(body: Mapping[str, Any]) -> int | None:
    """The generation of the Project's spec that a plan last answered (`status.observedGeneration`),
    without decoding a packed status."""
    status = body.get("status")
    if isinstance(status, PackedStatus):
        return status.observed_generation
    return _observed_generation(status) if isinstance(status, Mapping) else None


def _observed_generation(status: Mapping[str, Any]) -> int | None:
    generation = status.get("observedGeneration")
    return generation if isinstance(generation, int) else None


def _claimed_namespaces(body: Mapping[str, Any]) -> set[str]:
    return {
        str(ns.get("name"))
        for ns in (body.get("spec") or {}).get("namespaces") or []
        if isinstance(ns, Mapping) and ns.get("name")
    }


def _labelled_project(obj: Mapping[str, Any]) -> set[str]:
    project = (obj.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
    return {project} if project else set()


@dataclass
class Store:
    """What the watch streams have shown: the operator's whole view of the cluster."""

    # name -> Project, indexed by the namespaces it claims; its status packed (PackedStatus)
    projects: IndexedDict = field(default_factory=lambda: IndexedDict(_claimed_namespaces, packed))
    # namespace -> Headroom's quota, indexed by the Project its label names; of its managedFields only
    # the digest that drift detection reads (whatever put it here: a watch event, or the start-up list)
    quotas: IndexedDict = field(default_factory=lambda: IndexedDict(_labelled_project, with_managed_digest))
    limitranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    # namespace -> the Project its headroom.dev/project label names (only labelled namespaces)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    # namespace -> Event uid -> the latest quota denial in it (FailedCreate Events; kept while recent)
    denials: dict[str, dict[str, DeniedPod]] = field(default_factory=dict)
    # ReplicaSet uid -> its controller (kind, name), or None: looked up once per ReplicaSet refused
    owners: dict[str, tuple[str, str] | None] = field(default_factory=dict)

    def namespace_seen(self, name: str, label: str | None) -> None:
        """A namespace that exists, with the Project its label names (None: unlabelled)."""
        name = sys.intern(name)  # one copy, shared with the quotas and Projects that name it
        self.namespaces.add(name)
        if label is None:
            self.namespace_labels.pop(name, None)
        else:
            self.namespace_labels[name] = sys.intern(label)

    def recent_denials(self, namespaces: set[str], since: datetime) -> list[DeniedPod]:
        """The denials seen in `namespaces` at or after `since`; older ones are forgotten here."""
        found: list[DeniedPod] = []
        for ns in namespaces:
            kept = self.denials.get(ns)
            if not kept:
                continue
            for uid in [u for u, d in kept.items() if d.at < since]:
                del kept[uid]
            if not kept:
                del self.denials[ns]
            found.extend(kept.values())
        return found

    def projects_claiming(self, namespace: str) -> list[str]:
        return sorted(self.projects.keys_for(namespace))

    def quota_namespaces_of(self, project: str) -> set[str]:
        """Namespaces holding a quota labelled for `project` (some may have left its spec)."""
        return self.quotas.keys_for(project)

    def confirmed_claim(self, project: str, namespace: str) -> bool:
        """Whether another Project's claim on a namespace counts (claims.py has the rule; this is
        its view from outside: the label, Headroom's quota, or what that Project's status recorded)."""
        label = self.namespace_labels.get(namespace)
        if label is not None:
            return label == project
        quota = self.quotas.get(namespace)
        if quota is not None and (quota.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL) == project:
            return True
        body = self.projects.get(project) or {}
        approved = ((body.get("status") or {}).get("approved") or {}).get("namespaces") or ()
        return namespace in approved or body.get("metadata", {}).get("generation") == 1

    def claimed_by_others(self, project: str) -> dict[str, str]:
        """Namespaces of `project` that an older Project claims with a confirmed claim (oldest wins)."""
        body = self.projects.get(project) or {}

        def age(name: str) -> tuple[str, str]:
            meta = self.projects[name].get("metadata", {})
            return (str(meta.get("creationTimestamp") or "9999"), name)

        mine = age(project) if project in self.projects else ("", project)
        result: dict[str, str] = {}
        for ns in (body.get("spec") or {}).get("namespaces") or []:
            name = ns.get("name")
            rivals = [
                p
                for p in self.projects_claiming(name)
                if p != project and age(p) < mine and self.confirmed_claim(p, name)
            ]
            if rivals:
                result[name] = min(rivals, key=age)
        return result

    def released(self, namespaces: set[str], project: str) -> frozenset[str]:
        """Of `namespaces`, those whose Headroom quota belongs to another Project that no longer lists them."""
        out = set()
        for ns in namespaces:
            owner = _labelled_project(self.quotas.get(ns) or {})
            if owner and project not in owner and not any(p in self.projects_claiming(ns) for p in owner):
                out.add(ns)
        return frozenset(out)


def quota_daily_peaks(store: Store) -> Callable[[str], DailyPeaks]:
    """The sampler's daily peaks of a namespace, as kept on Headroom's quota there."""

    def of(namespace: str) -> DailyPeaks:
        quota = store.quotas.get(namespace) or {}
        return decode((quota.get("metadata", {}).get("annotations") or {}).get(DAILY_PEAKS_ANNOTATION))

    return of


def quota_prometheus_days(store: Store) -> Callable[[str], str | None]:
    """The Prometheus source's closed days of a namespace, as kept on Headroom's quota there."""

    def of(namespace: str) -> str | None:
        quota = store.quotas.get(namespace) or {}
        text = (quota.get("metadata", {}).get("annotations") or {}).get(PROMETHEUS_DAYS_ANNOTATION)
        return str(text) if text else None

    return of


# Strings up to this long are shared between the objects the Store keeps (see plain).
SHARED_TEXT = 64


def plain(body: Mapping[str, Any], keep_managed_fields: bool = True) -> dict[str, Any]:
    """A deep plain-dict copy: Kopf's bodies are live views that change under our feet.

    managedFields are copied only where asked (quotas, whose store keeps only their digest, see
    managed_digest): on Projects and LimitRanges they would be most of the memory the store holds.

    Keys and short strings are interned. Each parsed object brings its own copies of "metadata",
    "requests.cpu", its namespace's name and the like; at 1,500 Projects those copies were 16 of
    the 20 MiB of strings the Store held.
    """

    def copy(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                sys.intern(str(k)): copy(v) for k, v in value.items() if keep_managed_fields or k != "managedFields"
            }
        if isinstance(value, list):
            return [copy(v) for v in value]
        if isinstance(value, str) and len(value) <= SHARED_TEXT:
            return sys.intern(value)
        return value

    return dict(copy(body))


_GOVERNED_KEY = f"f:{GOVERNED_ANNOTATION}"


def managed_digest(entries: Any) -> list[dict[str, Any]]:
    """Of a quota's managedFields, what drift detection reads, in the same shape: the field managers
    other than Headroom's that own its spec (the quota controller's status updates do not) or its
    governed-values annotation. A quota only Headroom and the quota controller have written keeps
    none; a full copy was about half of each stored quota's memory."""
    digest = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping) or entry.get("manager") == FIELD_MANAGER:
            continue
        raw = entry.get("fieldsV1")
        fields: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        kept: dict[str, Any] = {}
        if "f:spec" in fields and entry.get("subresource") != "status":
            kept["f:spec"] = {}
        if isinstance(annotations, Mapping) and _GOVERNED_KEY in annotations:
            kept["f:metadata"] = {"f:annotations": {_GOVERNED_KEY: {}}}
        if kept:
            digest.append({"manager": entry.get("manager"), "subresource": entry.get("subresource"), "fieldsV1": kept})
    return digest


def with_managed_digest(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with its managedFields replaced by their digest (in place: it is the store's own copy)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        meta["managedFields"] = managed_digest(meta["managedFields"])
    return obj
