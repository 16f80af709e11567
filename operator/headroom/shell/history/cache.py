"""Peaks from the history source, asked once per cycle for every namespace at once."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from headroom.core.forecast import day_ended_between
from headroom.core.history import DaySeries, HistoryResult, HistorySource, PeakQuery
from headroom.shell.metrics import Metrics

log = logging.getLogger("headroom")


# A batch opened after this many batch windows without one waits only FIRST_WINDOW seconds: enough
# for the questions of one event loop pass to join it, and a single new Project is not held back.
QUIET_BATCHES = 4
FIRST_WINDOW = 0.02
# Keys handled between two turns of the event loop, here and in the prometheus source's passes: a
# cycle covers every namespace and resource of the cluster, tens of thousands of keys, seconds of
# work in one go otherwise.
YIELD_EVERY = 500


@dataclass
class _Batch:
    """One question to the source: the keys that joined it before it was sent, and the future that
    everyone who joined awaits. A batch takes keys only while it is open; once it is being fetched,
    new keys open the next batch, so no waiter can ever hold an answer that leaves its keys out."""

    wanted: dict[timedelta, set[tuple[str, str]]] = field(default_factory=dict)
    answered: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class HistoryCache:
    """Peaks from the history source, refreshed once per cycle for every namespace at once.

    A Project seen between cycles joins the open batch, sent after a short window, so that a burst of
    new Projects costs one query per resource, not one per Project (single flight); the first batch
    after a quiet spell is sent at once.

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
        # The last answer for each (namespace, resource, lookback), and when it was asked. Apart, so
        # that a cycle whose answer did not change allocates nothing that lives on (new copies of
        # every answer, made among the source's transient parsing, fragment the heap).
        self._values: dict[tuple[str, str, timedelta], Decimal | None] = {}
        self._asked: dict[tuple[str, str, timedelta], datetime] = {}
        # Daily peaks, kept and replaced exactly as the peaks are: a failed answer never shrinks them.
        self._daily: dict[tuple[str, str, timedelta], Mapping[date, Decimal]] = {}
        self._day_offsets: dict[str, timedelta] = {}
        self._errors: dict[timedelta, tuple[datetime, str | None, bool]] = {}
        self._open: _Batch | None = None
        self._last_opened = -math.inf  # the event loop's time when the last batch was opened
        self._sending: set[asyncio.Task[set[str]]] = set()  # batches being sent (kept: a task needs a reference)

    def _fresh(self, keys: set[tuple[str, str]], lookback: timedelta, now: datetime) -> bool:
        return all(
            (asked := self._asked.get((ns, r, lookback))) is not None and now - asked < self.max_age for ns, r in keys
        )

    def _known(self, keys: set[tuple[str, str]], lookback: timedelta) -> bool:
        return all((ns, r, lookback) in self._values for ns, r in keys)

    async def get(
        self,
        namespaces: set[str],
        resources: set[str],
        lookback: timedelta,
        on_refresh: Callable[[], None] | None = None,
        stale_wait: float | None = None,
    ) -> HistoryResult:
        keys = {(ns, r) for ns in namespaces for r in resources}
        if not getattr(self.source, "remote", True):
            # A local source (the sampler) costs nothing to ask and is always current.
            return await self.source.peaks(
                PeakQuery(frozenset(namespaces), frozenset(resources), lookback, self.clock())
            )
        if self._fresh(keys, lookback, self.clock()):
            return self._answer(keys, lookback)
        answered = self._join({lookback: keys}).answered
        if not self._known(keys, lookback):
            # Nothing known yet: a quota is never bootstrapped on a guess, and a status never says
            # "no history" for a namespace the source was not even asked about. The batch we joined
            # holds our keys, so its answer (or its error) is ours.
            await asyncio.shield(answered)
        else:
            await asyncio.wait({answered}, timeout=self.stale_wait if stale_wait is None else stale_wait)
            if not answered.done() and on_refresh is not None:
                # Answer with what is known; come back when the refresh tells something new.
                seen = self._answer(keys, lookback)
                answered.add_done_callback(lambda _: on_refresh() if self._answer(keys, lookback) != seen else None)
        return self._answer(keys, lookback)

    def _join(self, wanted: Mapping[timedelta, set[tuple[str, str]]]) -> _Batch:
        """Add keys to the open batch, opening one (sent after the batch window) if there is none."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            loop = asyncio.get_running_loop()
            # The first question after a quiet spell (one new Project) goes almost at once; while
            # questions keep coming (a burst of new Projects), each batch waits the whole window.
            quiet = loop.time() - self._last_opened >= QUIET_BATCHES * self.batch_window
            self._last_opened = loop.time()
            window = min(self.batch_window, FIRST_WINDOW) if quiet else self.batch_window
            loop.call_later(window, self._send_later, batch)
        for lookback, keys in wanted.items():
            batch.wanted.setdefault(lookback, set()).update(keys)
        return batch

    def _send_later(self, batch: _Batch) -> None:
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _answer(self, keys: set[tuple[str, str]], lookback: timedelta) -> HistoryResult:
        peaks = {(ns, r): value for ns, r in keys if (value := self._values.get((ns, r, lookback))) is not None}
        daily = {(ns, r): days for ns, r in keys if (days := self._daily.get((ns, r, lookback))) is not None}
        offsets = {ns: self._day_offsets[ns] for ns, _ in keys if ns in self._day_offsets}
        _, error, partial = self._errors.get(lookback, (self.clock(), None, False))
        return HistoryResult(peaks=peaks, error=error, partial=partial, daily=daily, day_offsets=offsets)

    async def refresh_all(self, wanted: Mapping[timedelta, set[tuple[str, str]]]) -> set[str]:
        """Ask now for everything wanted (the derivation cycle). Returns the namespaces whose answer
        changed (a peak, a day, or the source's error).

        A batch opened meanwhile (a new Project's question) goes on its own, after its window: joined
        to the cycle's, its Project waited for the answer about every namespace of the cluster."""
        batch = _Batch()
        for lookback, keys in wanted.items():
            batch.wanted[lookback] = set(keys)
        return await self._send(batch)

    async def _send(self, batch: _Batch) -> set[str]:
        if batch is self._open:
            self._open = None  # from now on, new keys open the next batch
        changed: set[str] = set()
        try:
            for lookback, keys in batch.wanted.items():
                changed |= await self._ask(lookback, keys)
        finally:
            if not batch.answered.done():
                batch.answered.set_result(None)
        return changed

    async def _ask(self, lookback: timedelta, keys: set[tuple[str, str]]) -> set[str]:
        """Ask the source; the namespaces whose answer differs from the one kept before."""
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
            # Some series were missing or garbage: what is missing is unknown, not zero, and an
            # incomplete answer must not bootstrap a quota. Keep the last good answers.
            result = HistoryResult(
                error=f"{self.source.name} gave a partial answer (warnings, or values that are not numbers); "
                "the last complete answer is kept",
                partial=True,
                queries=result.queries,
            )
        changed: set[str] = set()
        if result.error is None:
            for count, key in enumerate(keys, 1):
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let a new Project's reconcile in between
                kept = (*key, lookback)
                value = result.peaks.get(key)
                if kept not in self._values or self._values[kept] != value:
                    changed.add(key[0])
                    self._values[kept] = value
                before = self._asked.get(kept)
                self._asked[kept] = now
                days = result.daily.get(key)
                if days is None:
                    if self._daily.pop(kept, None) is not None:
                        changed.add(key[0])
                    continue
                if self._daily.get(kept) != days:
                    changed.add(key[0])
                    self._daily[kept] = days if isinstance(days, DaySeries) else DaySeries(days)
                offset = result.day_offsets.get(key[0]) or self._day_offsets.get(key[0]) or timedelta(0)
                if before is not None and day_ended_between(days, before, now, offset):
                    # The same answer, but a day of it ended: forecasts count ended days only, so the
                    # trend changes with the clock (the file source's days never change by themselves).
                    changed.add(key[0])
            for namespace, offset in result.day_offsets.items():
                self._day_offsets[namespace] = offset
        # On error the previous answers stay: unknown is never zero.
        _, error_before, partial_before = self._errors.get(lookback, (now, None, False))
        if (error_before, partial_before) != (result.error, result.partial):
            changed |= {ns for ns, _ in keys}  # the condition that tells it changes everywhere
        self._errors[lookback] = (now, result.error, result.partial)
        return changed
