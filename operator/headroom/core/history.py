"""History as values: what a source is asked and answers, and the sampler's daily peaks.

The sources themselves (Prometheus, the sampler, a file) do I/O and live in headroom.shell.history.
The sampler keeps each namespace's daily peaks in an annotation of Headroom's own quota; encoding,
decoding and recording them is pure and lives here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Protocol

from headroom.core.quantity import canonical


@dataclass(frozen=True)
class PeakQuery:
    """Peaks wanted for these namespaces and resources over one lookback window ending at `now`."""

    namespaces: frozenset[str]
    resources: frozenset[str]
    lookback: timedelta
    now: datetime


@dataclass(frozen=True)
class HistoryResult:
    """Peaks by (namespace, resource).

    A key that is absent means "no history known", never zero. `error` says the source failed as a
    whole (nothing it returned may lower a quota); `partial` that some answers were incomplete.
    """

    peaks: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    error: str | None = None
    partial: bool = False
    queries: int = 0

    @property
    def complete(self) -> bool:
        return self.error is None and not self.partial

    def peak(self, namespace: str, resource: str) -> Decimal | None:
        return self.peaks.get((namespace, resource))


class HistorySource(Protocol):
    name: str

    async def peaks(self, query: PeakQuery) -> HistoryResult: ...


# --------------------------------------------------------------------------------------------- sampler

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
