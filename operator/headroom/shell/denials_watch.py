"""The watch on quota denials: the FailedCreate Events of the whole cluster, selected by the API server.

Why not through Kopf, like the other watches: the API server keeps no watch cache for Events (its
default --watch-cache-sizes has events at 0), so an Events watch is served straight from etcd and
carries no bookmarks. Kopf would take the silence of a quiet cluster for a dead stream after its
inactivity timeout (75 s) and reconnect four times as often, and resuming from a resourceVersion
older than etcd's last compaction (every 5 minutes) fails with 410 Gone, after which Kopf re-lists.
On a quiet cluster that is a LIST every few minutes, for nothing.

This watch instead:

* lists once at start (paged), so that denials that went on while the operator was down are seen;
* renews each watch request after WATCH_SECONDS from the last resourceVersion it saw, while that
  version is recent enough not to be compacted away;
* once it is older (nothing happened for minutes), renews "from now" (sendInitialEvents=false,
  resourceVersionMatch=NotOlderThan: no initial events, no LIST). The stream was open until the
  moment before, so only a Event written in that instant could be missed, and the controllers post
  a denial again at their next retry;
* after an error (the API server gone, a dropped connection) waits a jittered backoff and then
  resumes from its version if still recent, else lists again: what happened meanwhile is read;
* a server that refuses sendInitialEvents (the WatchList feature off) gets the resume-or-list
  behaviour only.

The stream is read by a task of its own; each event is handed, in order, to Runtime.denial_seen,
which keeps the ones that matter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from headroom.core.names import FAILED_CREATE_SELECTOR
from headroom.shell.apiclient import ApiClient, ApiException
from headroom.shell.backoff import backoff_delays
from headroom.shell.handlers import WATCH_SECONDS
from headroom.shell.kube import list_pages

log = logging.getLogger("headroom.denials")

# A resourceVersion this young is safely newer than etcd's last compaction (the API server compacts
# every 5 minutes, keeping at least the last 5 minutes): resuming from it cannot get 410 Gone.
FRESH_SECONDS = 150.0
# No bookmarks come on an Events watch: silence until the server ends the request is normal. A
# connection that died silently is noticed this long after the request's own end at the latest.
READ_GRACE_SECONDS = 30
PAGE = 500
EVENTS = "/api/v1/events"

Handler = Callable[[str | None, dict[str, Any]], Coroutine[Any, Any, None]]


def watch_params(version: str | None) -> dict[str, Any]:
    """The Events watch request's query: resumed from `version`, or from now (None) without initial
    events, since Events carry no bookmarks and an old version may be compacted away."""
    params: dict[str, Any] = {
        "fieldSelector": FAILED_CREATE_SELECTOR,
        "allowWatchBookmarks": True,
        "timeoutSeconds": WATCH_SECONDS,
    }
    if version is None:
        params.update(sendInitialEvents=False, resourceVersionMatch="NotOlderThan")
    else:
        params["resourceVersion"] = version
    return params


class DenialWatch:
    def __init__(self, client: ApiClient, handle: Handler, count: Callable[[str], None] = lambda _: None) -> None:
        self.client = client
        self.handle, self.count = handle, count
        self.version: str | None = None
        self.version_at = 0.0
        self.from_now_supported = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> DenialWatch:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="denial-watch")
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _remember(self, version: str | None) -> None:
        if version:
            self.version, self.version_at = version, time.monotonic()

    async def _list(self) -> None:
        version: str | None = None
        pages = list_pages(self.client, EVENTS, PAGE, timeout=(10, 60), fieldSelector=FAILED_CREATE_SELECTOR)
        async for page in pages:
            self.count("list")
            for item in page.items:
                await self.handle(None, item)  # in order, and never faster than they are taken
            version = page.resource_version
        self._remember(version)  # the last page's: the watch resumes after everything listed

    async def _watch(self, from_now: bool) -> bool:
        """One watch request until the server ends it; False when the version was too old (410)."""
        params = watch_params(None if from_now else self.version)
        self.count("from-now" if from_now else "resume")
        async for item in self.client.watch(EVENTS, params, timeout=(10, WATCH_SECONDS + READ_GRACE_SECONDS)):
            kind, obj = item.get("type"), item.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return False
                raise ApiException(int(obj.get("code") or 0), str(obj.get("message")))
            self._remember((obj.get("metadata") or {}).get("resourceVersion"))
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                await self.handle(kind, obj)
        return True

    async def _run(self) -> None:
        delays = backoff_delays(base=1.0, cap=60.0)
        clean = False  # the last request ended as the server meant it to
        while True:
            try:
                fresh = self.version is not None and time.monotonic() - self.version_at < FRESH_SECONDS
                if not fresh and not (clean and self.from_now_supported):
                    await self._list()
                    fresh = True
                try:
                    clean = await self._watch(from_now=not fresh)
                except ApiException as exc:
                    if fresh or exc.status not in (400, 403, 422):
                        raise
                    # This API server does not take sendInitialEvents: resume or list from now on.
                    log.info("the API server refuses watches from now (%s); resuming or listing instead", exc.reason)
                    self.from_now_supported, clean = False, False
                    continue
                if not clean:
                    self.version = None  # 410 Gone: list again
                delays = backoff_delays(base=1.0, cap=60.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                clean = False
                delay = next(delays)
                log.warning("watch of FailedCreate Events failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
