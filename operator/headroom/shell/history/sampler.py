"""Headroom's own history: daily peaks of each namespace's quota usage, kept on its ResourceQuota.

The operator already watches the ResourceQuotas it owns, and the API server keeps their
`status.used` current, so sampling costs no extra request and never lists pods. The peaks live in
an annotation of the quota itself (an object Headroom owns), so they survive operator restarts and
leave with the namespace. Only a new daily peak changes the annotation, so it adds at most a few
writes a day per namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from headroom.core.history import DailyPeaks, HistoryResult, PeakQuery, peak_within


class SamplerHistory:
    """Reads the daily peaks that the reconciler keeps on each namespace's quota."""

    name = "sampler"
    remote = False

    def __init__(self, peaks_of: Callable[[str], DailyPeaks]) -> None:
        self._peaks_of = peaks_of

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        found: dict[tuple[str, str], Decimal] = {}
        for namespace in query.namespaces:
            daily = self._peaks_of(namespace)
            for resource in query.resources:
                value = peak_within(daily, resource, query.now, query.lookback)
                if value is not None:
                    found[(namespace, resource)] = value
        return HistoryResult(peaks=found)
