"""Headroom's own history: daily peaks of each namespace's quota usage, kept on its ResourceQuota.

The operator already watches the ResourceQuotas it owns, and the API server keeps their
`status.used` current, so sampling costs no extra request and never lists pods. The peaks live in
an annotation of the quota itself (an object Headroom owns), so they survive operator restarts and
leave with the namespace. Only a new daily peak changes the annotation, so it adds at most a few
writes a day per namespace.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from headroom.history.base import HistoryResult, PeakQuery
from headroom.quantity import canonical

ANNOTATION = "headroom.dev/daily-peaks"
MAX_DAYS = 400

DailyPeaks = dict[str, dict[str, Decimal]]  # ISO date -> resource -> peak


def decode(text: str | None) -> DailyPeaks:
    """Tolerant: a damaged annotation loses its damaged entries, not the operator."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        return {}
    peaks: DailyPeaks = {}
    if not isinstance(raw, dict):
        return {}
    for day, values in raw.items():
        if not isinstance(values, dict):
            continue
        try:
            date.fromisoformat(day)
            parsed = {str(r): Decimal(str(v)) for r, v in values.items()}
        except (ValueError, InvalidOperation):
            continue
        peaks[day] = {r: v for r, v in parsed.items() if v.is_finite() and v >= 0}
    return peaks


def encode(peaks: DailyPeaks) -> str:
    return json.dumps({day: {r: canonical(v) for r, v in sorted(values.items())}
                       for day, values in sorted(peaks.items())}, separators=(",", ":"))


def record(peaks: DailyPeaks, used: Mapping[str, Decimal], today: date,
           keep_days: int = MAX_DAYS) -> DailyPeaks:
    """Raise today's peaks to `used`; drop days older than keep_days. Returns a new mapping."""
    oldest = (today - timedelta(days=keep_days)).isoformat()
    updated = {day: dict(values) for day, values in peaks.items() if day >= oldest}
    day = updated.setdefault(today.isoformat(), {})
    for resource, value in used.items():
        if value > day.get(resource, Decimal(-1)):
            day[resource] = value
    return updated


def peak_within(peaks: DailyPeaks, resource: str, now: datetime, lookback: timedelta) -> Decimal | None:
    start = (now - lookback).date().isoformat()
    values = [v[resource] for day, v in peaks.items() if day >= start and resource in v]
    return max(values) if values else None


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
