"""Writes to the Kubernetes API: server-side apply of owned objects, status patches, Events.

Reads never happen here: the operator learns the cluster's state from watch streams only. Every
write waits for a token from a client-side rate limiter (QPS and burst), so that a burst of
reconciles cannot become a burst of API requests. The limiter's rate adapts (AIMD, like TCP's
congestion window): halved when the API server answers 429 or slowly, raised again a little with
every quick answer, never above --api-qps; the API server's own priority and fairness (manifests/
apf.yaml) does the pacing, and Headroom follows it. Every request has a timeout (a connection that
went silent without closing must not hold a write forever), and a 429 from an overloaded API server
is retried here, after its Retry-After plus jitter, before the reconcile is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import itertools
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import kubernetes
import urllib3
from kubernetes.client import ApiClient, ApiException

from headroom.core.names import (
    API_VERSION,
    COMPONENT,
    FIELD_MANAGER,
    GROUP,
    KIND,
    LIMITRANGE_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PLURAL,
    PROJECT_LABEL,
    QUOTA_NAME,
    VERSION,
)
from headroom.core.planning import DesiredLimitRange, DesiredQuota, Event
from headroom.shell.backoff import backoff_delays

log = logging.getLogger("headroom")

_APPLY = "application/apply-patch+yaml"
_MERGE = "application/merge-patch+json"
# Worth another try later; everything else (4xx) is a bug or a refusal that retrying won't fix.
RETRYABLE_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504})
# The API server did not answer at all (or said it is not serving yet): worth retrying as soon as it
# shows signs of life again, rather than after a long backoff.
UNREACHABLE_STATUSES = frozenset({0, 502, 503, 504})
# (connect, read) seconds for one request. Writes take milliseconds; the read timeout leaves room for
# an API server that queues requests under load (API Priority and Fairness) before answering.
REQUEST_TIMEOUT = (10.0, 20.0)
# A write answered slower than this means the API server is queueing us (APF) or is busy: slow down.
SLOW_WRITE_SECONDS = 1.0
# Additive increase: a quick answer raises the rate by this much divided by the rate, so that at full
# speed the rate climbs by this many writes per second every second.
RATE_INCREASE = 2.0
THROTTLED_ATTEMPTS = 6  # tries of one write that keeps getting 429, before the reconcile fails
# A kept-alive connection idle for longer may have died without a word (a NAT entry, a proxy); the
# first write after a quiet spell opens a new one rather than wait out REQUEST_TIMEOUT on a dead one.
IDLE_CONNECTION_SECONDS = 30.0

T = TypeVar("T")


# Which write goes first when writes queue at the rate limiter: lower first. A reconcile sets the
# priority of its Project; writes without one (Events posted on the side) queue behind them in order.
WRITE_PRIORITY: contextvars.ContextVar[float] = contextvars.ContextVar("headroom_write_priority", default=math.inf)
# Status writes and Events queue behind every quota and LimitRange write (onboarding and enforcement
# first): a new Project's quota does not wait for the status of Projects seen before it.
AFTER_ENFORCEMENT = 1e12
_BOOKKEEPING = frozenset({"patch-project-status", "create-event"})


@dataclass(order=True)
class _Ticket:
    priority: float
    sequence: int
    granted: bool = field(default=False, compare=False)
    cancelled: bool = field(default=False, compare=False)
    wake: asyncio.Event = field(default_factory=lambda: asyncio.Event(), compare=False)


class TokenBucket:
    """Client-side rate limit for writes: `rate` per second sustained, `burst` at once.

    The rate adapts between `floor` and the configured `ceiling`: `throttled()` (a 429, or an answer
    slower than SLOW_WRITE_SECONDS) halves it, at most once a second so that one burst of refusals
    counts once, and leaves no saved-up burst; `answered()` of a quick write raises it additively.

    Waiting writes are served by priority, then in arrival order. With thousands of new Projects at
    once, first-come-first-served per *write* would interleave everyone's writes, so that every
    Project finished only near the end; served per *Project*, the first ones are done in seconds.
    One waiter at a time holds the lock and hands out tokens (to whoever is first in line, itself
    or not); the others sleep until they are served or handed the lock.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, floor: float | None = None
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self.ceiling = rate
        self.floor = min(rate, floor if floor is not None else 1.0)
        self._last_cut = -math.inf
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self._queue: list[_Ticket] = []
        self._sequence = itertools.count()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def throttled(self) -> None:
        """The API server pushed back: halve the rate (multiplicative decrease)."""
        now = self._clock()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        self._refill()
        self.rate = max(self.floor, self.rate / 2)
        self._tokens = min(self._tokens, 1.0)

    def answered(self, seconds: float) -> None:
        """A write succeeded in `seconds`: slow down if that was slow, else speed up a little."""
        if seconds >= SLOW_WRITE_SECONDS:
            self.throttled()
            return
        if self.rate < self.ceiling:
            self._refill()
            self.rate = min(self.ceiling, self.rate + RATE_INCREASE / self.rate)

    def _serve(self) -> None:
        while self._queue and self._tokens >= 1:
            head = heapq.heappop(self._queue)
            if head.cancelled:
                continue
            self._tokens -= 1
            head.granted = True
            head.wake.set()

    def _hand_over(self) -> None:
        while self._queue and self._queue[0].cancelled:
            heapq.heappop(self._queue)
        if self._queue:
            self._queue[0].wake.set()

    async def take(self, priority: float = math.inf) -> None:
        ticket = _Ticket(priority, next(self._sequence))
        heapq.heappush(self._queue, ticket)
        try:
            while not ticket.granted:
                if self._lock.locked():
                    ticket.wake.clear()
                    await ticket.wake.wait()  # served, or handed the lock
                    continue
                async with self._lock:
                    while not ticket.granted:
                        self._refill()
                        self._serve()
                        if not ticket.granted:
                            await asyncio.sleep((1 - self._tokens) / self.rate)
                self._hand_over()
        except BaseException:
            if ticket.granted:
                self._tokens = min(self.burst, self._tokens + 1)  # cancelled after all: give it back
            ticket.cancelled = True
            self._hand_over()
            raise


def _timed(timing: list[float], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """fn(...) in the worker thread, its duration appended to `timing` (the API server's answer
    time, without the wait for a free thread), whether it returned or raised.

    The answer is read and let go unparsed: no write's caller reads it (the watch brings the object
    back), and turning it into the client library's model objects cost more CPU than the request,
    plus a transient copy of every object written."""
    started = time.monotonic()
    try:
        response = fn(*args, _preload_content=False, **kwargs)
        try:
            response.read()  # drained, so that its connection goes back to the pool
        finally:
            response.release_conn()
    finally:
        timing.append(time.monotonic() - started)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUSES or exc.status is None
    return isinstance(
        exc, OSError | TimeoutError | kubernetes.client.exceptions.OpenApiException
    ) or exc.__class__.__module__.startswith("urllib3")


def is_unreachable(exc: BaseException) -> bool:
    """A failure to reach the API server (refused, reset, timed out, not serving), not a refusal."""
    if isinstance(exc, ApiException):
        return exc.status is None or exc.status in UNREACHABLE_STATUSES
    return isinstance(exc, OSError | TimeoutError) or exc.__class__.__module__.startswith("urllib3")


def retry_after(exc: ApiException) -> float:
    """The server's Retry-After in seconds (1 if absent or unreadable), at most a minute."""
    headers = exc.headers or {}
    try:
        return min(60.0, max(0.0, float(headers.get("Retry-After") or 1)))
    except (TypeError, ValueError):
        return 1.0


def owner_reference(project: Mapping[str, Any]) -> dict[str, Any]:
    meta = project["metadata"]
    # blockOwnerDeletion stays off: it would need delete rights on Projects, which Headroom lacks.
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def _labels(project: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: project}


def quota_manifest(project: Mapping[str, Any], desired: DesiredQuota) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": desired.namespace,
            "labels": _labels(project["metadata"]["name"]),
            "annotations": dict(desired.annotations),
            "ownerReferences": [owner_reference(project)],
        },
        "spec": {"hard": dict(desired.hard)},
    }


def limitrange_manifest(project: Mapping[str, Any], desired: DesiredLimitRange) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {
            "name": LIMITRANGE_NAME,
            "namespace": desired.namespace,
            "labels": _labels(project["metadata"]["name"]),
            "ownerReferences": [owner_reference(project)],
        },
        "spec": {
            "limits": [
                {"type": "Container", "default": dict(desired.default), "defaultRequest": dict(desired.default_request)}
            ]
        },
    }


@dataclass
class WriteCounter:
    """Counts the writes Headroom makes, by kind; the benchmark and the metrics read it."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


def api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """Credentials the way Kubernetes controllers and kubectl find them, for the operator and the CLI alike.

    An explicit kubeconfig or context first, then $KUBECONFIG, then the Pod's ServiceAccount when
    running in a cluster, then ~/.kube/config (controller-runtime's order). A missing or broken
    kubeconfig that was asked for is an error, never silently replaced by another identity.
    """
    config = kubernetes.client.Configuration()
    # The client library reads $KUBECONFIG once, at import: read it now.
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if not (path or context) and "KUBERNETES_SERVICE_HOST" in os.environ:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=config
        )
    return ApiClient(config)


class KubeWriter:
    def __init__(self, client: ApiClient, qps: float = 20.0, burst: int = 40, component: str = COMPONENT) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.limiter = TokenBucket(qps, burst)
        self.component = component
        self.instance = uuid.uuid4().hex[:8]
        self.writes = WriteCounter()
        self._last_request = time.monotonic()

    def _fresh_connections_after_idle(self) -> None:
        now = time.monotonic()
        if now - self._last_request > IDLE_CONNECTION_SECONDS:
            with contextlib.suppress(AttributeError):
                self.core.api_client.rest_client.pool_manager.clear()
        self._last_request = now

    async def _call(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        delays = backoff_delays(base=1.0, cap=10.0)
        for attempt in range(1, THROTTLED_ATTEMPTS + 1):
            await self.limiter.take(WRITE_PRIORITY.get() + (AFTER_ENFORCEMENT if kind in _BOOKKEEPING else 0))
            self.writes.add(kind)
            self._fresh_connections_after_idle()
            timing: list[float] = []
            try:
                await asyncio.to_thread(
                    functools.partial(_timed, timing, fn, *args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
                )
            except ApiException as exc:
                if exc.status == 429:
                    self.limiter.throttled()
                elif timing:
                    self.limiter.answered(timing[0])
                if exc.status != 429 or attempt == THROTTLED_ATTEMPTS:
                    raise
                # Throttled: wait at least what the server asks, plus jitter so that the writes
                # refused together do not come back together.
                delay = retry_after(exc) + next(delays)
                log.info(
                    "%s throttled by the API server (429); retrying in %.1fs, writes now at most %.1f/s",
                    kind,
                    delay,
                    self.limiter.rate,
                )
                await asyncio.sleep(delay)
            else:
                if timing:
                    self.limiter.answered(timing[0])
                return
        raise AssertionError("unreachable")

    async def apply_quota(self, project: Mapping[str, Any], desired: DesiredQuota) -> None:
        await self._call(
            "apply-resourcequota",
            self.core.patch_namespaced_resource_quota,
            QUOTA_NAME,
            desired.namespace,
            quota_manifest(project, desired),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=_APPLY,
        )

    async def apply_limitrange(self, project: Mapping[str, Any], desired: DesiredLimitRange) -> None:
        await self._call(
            "apply-limitrange",
            self.core.patch_namespaced_limit_range,
            LIMITRANGE_NAME,
            desired.namespace,
            limitrange_manifest(project, desired),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=_APPLY,
        )

    async def delete_owned(self, namespace: str) -> None:
        for kind, fn, name in (
            ("delete-resourcequota", self.core.delete_namespaced_resource_quota, QUOTA_NAME),
            ("delete-limitrange", self.core.delete_namespaced_limit_range, LIMITRANGE_NAME),
        ):
            try:
                await self._call(kind, fn, name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(
            "patch-project-status",
            self.custom.patch_cluster_custom_object_status,
            GROUP,
            VERSION,
            PLURAL,
            name,
            {"status": dict(patch)},
            _content_type=_MERGE,
        )

    async def post_event(self, project: Mapping[str, Any], event: Event) -> None:
        """Events are best effort: losing one must never fail a reconcile."""
        meta = project["metadata"]
        now = datetime.now(UTC)
        body = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace="default"),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=API_VERSION, kind=KIND, name=meta["name"], uid=meta.get("uid")
            ),
            reason=event.reason,
            message=event.message[:1024],
            type=event.type,
            source=kubernetes.client.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=self.instance,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            action=event.reason,
        )
        # urllib3's errors (timeouts, refused connections) are not OSErrors.
        with contextlib.suppress(ApiException, OSError, urllib3.exceptions.HTTPError):
            await self._call("create-event", self.core.create_namespaced_event, "default", body)


async def retrying(action: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Retry transient API failures (409, 429, 5xx, connection errors) with jittered backoff."""
    delays = backoff_delays()
    for attempt in range(attempts):
        try:
            return await action()
        except Exception as exc:
            if attempt + 1 >= attempts or not is_retryable(exc):
                raise
            await asyncio.sleep(next(delays))
    raise AssertionError("unreachable")


# Items per page of a start-up LIST: the API server serves it in chunks (as kubectl does), so the
# operator never holds more than one page of raw JSON and parsed items on top of what it keeps. At a
# restart seven lists run at once (Kopf's four and the Store's three), a page of each in memory: at
# 500 items (kubectl's size) those pages made the restart's high-water mark (1,500 Projects: 171 MiB,
# against 145 MiB at 100). 100 costs five times the requests, about 7 per 100 namespaces, once per start.
LIST_PAGE = 100


async def list_pages(fn: Any, limit: int = LIST_PAGE, **kwargs: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """A LIST, page by page (limit/continue), each page's items as plain dicts."""
    token: str | None = None
    while True:
        extra = {"_continue": token} if token else {}
        response = await asyncio.to_thread(
            fn, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, limit=limit, **extra, **kwargs
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        yield list(body.get("items") or [])
        token = (body.get("metadata") or {}).get("continue") or None
        del body
        if not token:
            return
