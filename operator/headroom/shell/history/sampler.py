"""Headroom's own history: daily peaks of each namespace's quota usage, kept on its ResourceQuota.

The operator already watches the ResourceQuotas it owns, and the API server keeps their
`status.used` current, so sampling costs no extra request and never lists pods. The peaks live in
an annotation of the quota itself (an object Headroom owns), so they survive operator restarts and
leave with the namespace. Only a new daily peak changes the annotation: one write when a namespace's
day begins (at its own moment of the day, see `day_offset`, so not all at midnight), and one more
whenever use climbs above the day's peak so far. Days older than the longest lookback that the
Project may use are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

from headroom.core.history import DailyPeaks, HistoryResult, PeakQuery, day_offset, days_within, peak_within


class SamplerHistory:
    """Reads the daily peaks that the reconciler keeps on each namespace's quota."""

    name = "sampler"
    remote = False

    def __init__(self, peaks_of: Callable[[str], DailyPeaks]) -> None:
        self._peaks_of = peaks_of

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        found: dict[tuple[str, str], Decimal] = {}
        days: dict[tuple[str, str], dict[date, Decimal]] = {}
        offsets: dict[str, timedelta] = {}
        for namespace in query.namespaces:
            daily = self._peaks_of(namespace)
            offset = offsets[namespace] = day_offset(namespace)  # the namespace's own sampler day
            for resource in query.resources:
                value = peak_within(daily, resource, query.now, query.lookback, offset)
                if value is not None:
                    found[(namespace, resource)] = value
                    days[(namespace, resource)] = days_within(daily, resource, query.now, query.lookback, offset)
        return HistoryResult(peaks=found, daily=days, day_offsets=offsets)
