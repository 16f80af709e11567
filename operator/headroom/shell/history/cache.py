"""Peaks from the history source, asked once per cycle for every namespace at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from headroom.core.history import HistoryResult, HistorySource, PeakQuery
from headroom.shell.metrics import Metrics

log = logging.getLogger("headroom")


class HistoryCache:
    """Peaks from the history source, refreshed once per cycle for every namespace at once.

    A Project seen between cycles waits for a short batch window, so that a burst of new Projects
    costs one query per resource, not one per Project.

    A slow source must not hold up reconciles that already have answers (an approved change, a quota
    to restore): when every wanted peak has been answered before, `get` waits at most `stale_wait`
    for a refresh, then returns what is known and calls `on_refresh` once the refresh is done.
    A partial answer (the source's warnings, values that are not numbers) is treated as a failure:
    the last good answers stay, and the condition says why.
    """

    def __init__(
        self,
        source: HistorySource,
        max_age: timedelta,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_window: float = 0.5,
        stale_wait: float = 2.0,
    ) -> None:
        self.source, self.max_age, self.metrics, self.clock = source, max_age, metrics, clock
        self.batch_window = batch_window
        self.stale_wait = stale_wait
        self._results: dict[tuple[str, str, timedelta], tuple[datetime, Decimal | None]] = {}
        self._errors: dict[timedelta, tuple[datetime, str | None, bool]] = {}
        self._wanted: dict[timedelta, set[tuple[str, str]]] = {}
        self._batch: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    def _fresh(self, keys: set[tuple[str, str]], lookback: timedelta, now: datetime) -> bool:
        return all(
            (ns, r, lookback) in self._results and now - self._results[(ns, r, lookback)][0] < self.max_age
            for ns, r in keys
        )

    async def get(
        self,
        namespaces: set[str],
        resources: set[str],
        lookback: timedelta,
        on_refresh: Callable[[], None] | None = None,
    ) -> HistoryResult:
        keys = {(ns, r) for ns in namespaces for r in resources}
        if not getattr(self.source, "remote", True):
            # A local source (the sampler) costs nothing to ask and is always current.
            return await self.source.peaks(
                PeakQuery(frozenset(namespaces), frozenset(resources), lookback, self.clock())
            )
        if not self._fresh(keys, lookback, self.clock()):
            done = self._want(keys, lookback)
            if not all((ns, r, lookback) in self._results for ns, r in keys):
                # Nothing known yet: a quota is never bootstrapped on a guess, and a status never
                # says "no history" for a namespace the source was not even asked about.
                asked = self.clock()
                while True:
                    await done.wait()
                    if all((ns, r, lookback) in self._results for ns, r in keys):
                        break
                    failed_at, error, _ = self._errors.get(lookback, (asked, None, False))
                    if error is not None and failed_at >= asked:
                        break  # the source failed: the answer says so
                    # These keys came while a batch was already being fetched: the next batch.
                    done = self._want(keys, lookback)
            else:
                refreshed = asyncio.ensure_future(done.wait())
                await asyncio.wait({refreshed}, timeout=self.stale_wait)
                if not refreshed.done():
                    # Answer with what is known; come back when the refresh tells something new.
                    seen = self._answer(keys, lookback)
                    if on_refresh is not None:
                        refreshed.add_done_callback(
                            lambda _: on_refresh() if self._answer(keys, lookback) != seen else None
                        )
        return self._answer(keys, lookback)

    def _want(self, keys: set[tuple[str, str]], lookback: timedelta) -> asyncio.Event:
        """Add keys to the next batch (starting one if none is open); its completion event."""
        self._wanted.setdefault(lookback, set()).update(keys)
        if self._batch is None or self._batch.done():
            self._done = asyncio.Event()
            self._batch = asyncio.create_task(self._fetch_batch())
        return self._done

    def _answer(self, keys: set[tuple[str, str]], lookback: timedelta) -> HistoryResult:
        peaks = {
            (ns, r): value
            for ns, r in keys
            if (value := self._results.get((ns, r, lookback), (None, None))[1]) is not None
        }
        _, error, partial = self._errors.get(lookback, (self.clock(), None, False))
        return HistoryResult(peaks=peaks, error=error, partial=partial)

    async def refresh_all(self, wanted: Mapping[timedelta, set[tuple[str, str]]]) -> None:
        for lookback, keys in wanted.items():
            self._wanted.setdefault(lookback, set()).update(keys)
        await self._fetch(delay=0)

    async def _fetch_batch(self) -> None:
        await self._fetch(delay=self.batch_window)

    async def _fetch(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        # The keys and the event that their waiters hold are taken together: keys wanted from now on
        # belong to a fresh event and a new batch. (Sharing one event across snapshots let a refresh
        # complete it early, and a waiter then spun on an event that was already set.)
        wanted, self._wanted = self._wanted, {}
        done, self._done = self._done, asyncio.Event()
        if self._batch is asyncio.current_task():
            self._batch = None
        try:
            for lookback, keys in wanted.items():
                now = self.clock()
                query = PeakQuery(frozenset(ns for ns, _ in keys), frozenset(r for _, r in keys), lookback, now)
                started = time.monotonic()
                try:
                    result = await self.source.peaks(query)
                except Exception as exc:  # a source bug must not stop reconciling
                    log.exception("history source %s failed", self.source.name)
                    result = HistoryResult(error=f"{type(exc).__name__}: {exc}")
                self.metrics.history_queries.labels(self.source.name).inc(result.queries)
                self.metrics.history_duration.observe(time.monotonic() - started)
                if result.error is None and result.partial:
                    # Some series were missing or garbage: what is missing is unknown, not zero, and
                    # an incomplete answer must not bootstrap a quota. Keep the last good answers.
                    result = HistoryResult(
                        error=f"{self.source.name} gave a partial answer (warnings, or "
                        "values that are not numbers); the last complete answer is kept",
                        partial=True,
                        queries=result.queries,
                    )
                if result.error is None:
                    for key in keys:
                        self._results[(*key, lookback)] = (now, result.peaks.get(key))
                # On error the previous answers stay: unknown is never zero.
                self._errors[lookback] = (now, result.error, result.partial)
        finally:
            done.set()
