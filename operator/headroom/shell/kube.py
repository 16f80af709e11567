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
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import aiohttp

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
from headroom.shell.apiclient import REQUEST_TIMEOUT, ApiClient, ApiException
from headroom.shell.backoff import backoff_delays

log = logging.getLogger("headroom")

_APPLY = "application/apply-patch+yaml"
_MERGE = "application/merge-patch+json"
# Worth another try later; everything else (4xx) is a bug or a refusal that retrying won't fix.
RETRYABLE_STATUSES = frozenset({0, 409, 429, 500, 502, 503, 504})
# The API server did not answer at all (or said it is not serving yet): worth retrying as soon as it
# shows signs of life again, rather than after a long backoff.
UNREACHABLE_STATUSES = frozenset({0, 502, 503, 504})
# A write answered slower than this means the API server is queueing us (APF) or is busy: slow down.
SLOW_WRITE_SECONDS = 1.0
# Additive increase: a quick answer raises the rate by this much divided by the rate, so that at full
# speed the rate climbs by this many writes per second every second.
RATE_INCREASE = 2.0
THROTTLED_ATTEMPTS = 6  # tries of one write that keeps getting 429, before the reconcile fails

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


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUSES
    return isinstance(exc, OSError | TimeoutError | aiohttp.ClientError)


def is_unreachable(exc: BaseException) -> bool:
    """A failure to reach the API server (refused, reset, timed out, not serving), not a refusal."""
    if isinstance(exc, ApiException):
        return exc.status in UNREACHABLE_STATUSES
    return isinstance(exc, OSError | TimeoutError | aiohttp.ClientError)


def retry_after(exc: ApiException) -> float:
    """The server's Retry-After in seconds (1 if absent or unreadable), at most a minute."""
    try:
        return min(60.0, max(0.0, float(exc.headers.get("Retry-After") or 1)))
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


def _quotas(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/resourcequotas"


def _limitranges(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/limitranges"


def _timestamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeWriter:
    def __init__(self, client: ApiClient, qps: float = 20.0, burst: int = 40, component: str = COMPONENT) -> None:
        self.client = client
        self.limiter = TokenBucket(qps, burst)
        self.component = component
        self.instance = uuid.uuid4().hex[:8]
        self.writes = WriteCounter()

    async def _call(self, kind: str, request: Callable[[], Awaitable[object]]) -> None:
        delays = backoff_delays(base=1.0, cap=10.0)
        for attempt in range(1, THROTTLED_ATTEMPTS + 1):
            await self.limiter.take(WRITE_PRIORITY.get() + (AFTER_ENFORCEMENT if kind in _BOOKKEEPING else 0))
            self.writes.add(kind)
            started = time.monotonic()
            try:
                await request()
            except ApiException as exc:
                if exc.status == 429:
                    self.limiter.throttled()
                else:
                    self.limiter.answered(time.monotonic() - started)
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
                self.limiter.answered(time.monotonic() - started)
                return
        raise AssertionError("unreachable")

    async def _apply(self, path: str, manifest: Mapping[str, Any]) -> None:
        # The answer is read and let go unparsed: no write's caller reads it (the watch brings the
        # object back), and parsing it would only make a transient copy of every object written.
        await self.client.request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": True},
            body=manifest,
            content_type=_APPLY,
            parse=False,
        )

    async def apply_quota(self, project: Mapping[str, Any], desired: DesiredQuota) -> None:
        path = f"{_quotas(desired.namespace)}/{QUOTA_NAME}"
        await self._call("apply-resourcequota", lambda: self._apply(path, quota_manifest(project, desired)))

    async def apply_limitrange(self, project: Mapping[str, Any], desired: DesiredLimitRange) -> None:
        path = f"{_limitranges(desired.namespace)}/{LIMITRANGE_NAME}"
        await self._call("apply-limitrange", lambda: self._apply(path, limitrange_manifest(project, desired)))

    async def delete_owned(self, namespace: str) -> None:
        for kind, path in (
            ("delete-resourcequota", f"{_quotas(namespace)}/{QUOTA_NAME}"),
            ("delete-limitrange", f"{_limitranges(namespace)}/{LIMITRANGE_NAME}"),
        ):
            try:
                await self._call(kind, functools.partial(self.client.request, "DELETE", path, parse=False))
            except ApiException as exc:
                if exc.status != 404:
                    raise

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(
            "patch-project-status",
            lambda: self.client.request(
                "PATCH",
                f"/apis/{GROUP}/{VERSION}/{PLURAL}/{name}/status",
                body={"status": dict(patch)},
                content_type=_MERGE,
                parse=False,
            ),
        )

    async def post_event(self, project: Mapping[str, Any], event: Event) -> None:
        """Events are best effort: losing one must never fail a reconcile."""
        meta = project["metadata"]
        now = _timestamp(datetime.now(UTC))
        reference = {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta.get("uid")}
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": "default"},
            "involvedObject": {k: v for k, v in reference.items() if v is not None},
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "action": event.reason,
        }
        with contextlib.suppress(ApiException, OSError, TimeoutError, aiohttp.ClientError):
            await self._call(
                "create-event",
                lambda: self.client.request("POST", "/api/v1/namespaces/default/events", body=body, parse=False),
            )


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


class ListPage(NamedTuple):
    """One page of a paged LIST: its items as plain dicts, and the list's resourceVersion (a watch
    resumes from the last page's)."""

    items: list[dict[str, Any]]
    resource_version: str | None


async def list_pages(
    client: ApiClient,
    path: str,
    limit: int = LIST_PAGE,
    timeout: tuple[float, float] = REQUEST_TIMEOUT,
    **params: Any,
) -> AsyncIterator[ListPage]:
    """A LIST, page by page (limit/continue)."""
    token: str | None = None
    while True:
        body = await client.request("GET", path, params={**params, "limit": limit, "continue": token}, timeout=timeout)
        meta = body.get("metadata") or {}
        yield ListPage(list(body.get("items") or []), meta.get("resourceVersion"))
        token = meta.get("continue") or None
        del body
        if not token:
            return
