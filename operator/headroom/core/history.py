"""History as values: what a source is asked and answers, and the sampler's daily peaks.

The sources themselves (Prometheus, the sampler, a file) do I/O and live in headroom.shell.history.
The sampler keeps each namespace's daily peaks in an annotation of Headroom's own quota; encoding,
decoding and recording them is pure and lives here.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    """Peaks by (namespace, resource), and where the source knows them, the daily peaks behind them.

    A key that is absent means "no history known", never zero. `error` says the source failed as a
    whole (nothing it returned may lower a quota); `partial` that some answers were incomplete.

    `daily` holds, per (namespace, resource), the peak of each day over the lookback (what forecasts
    are made of); a key absent from it means the source does not know daily peaks, not that there were
    none. A day is the 24 hours from 00:00 UTC of its date plus the namespace's `day_offsets` entry
    (absent: 00:00 UTC exactly); the sampler's days begin at a moment of their own (see day_offset).
    """

    peaks: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    error: str | None = None
    partial: bool = False
    queries: int = 0
    daily: Mapping[tuple[str, str], Mapping[date, Decimal]] = field(default_factory=dict)
    day_offsets: Mapping[str, timedelta] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.error is None and not self.partial

    def peak(self, namespace: str, resource: str) -> Decimal | None:
        return self.peaks.get((namespace, resource))


# Daily peaks are kept in thousandths (a millicore; bytes and counts exactly) where they are whole
# thousandths, as they always are for requests, limits and counts.
THOUSANDTHS = 1000
_THOUSANDTHS = Decimal(THOUSANDTHS)
_NONE = -1  # a day without a value, in a series kept in thousandths
LARGEST_THOUSANDTHS = 2**63 - 1  # the most an array of thousandths holds


def _thousandths(values: Iterable[Decimal | None]) -> array[int] | None:
    """The values in thousandths, or None when one of them is not a whole thousandth (or negative)."""
    out = array("q")
    for value in values:
        if value is None:
            out.append(_NONE)
            continue
        scaled = value * _THOUSANDTHS
        if not scaled.is_finite() or scaled < 0 or scaled > LARGEST_THOUSANDTHS or scaled != scaled.to_integral_value():
            return None
        if Decimal(int(scaled)) / _THOUSANDTHS != value:
            return None  # more digits than the context keeps: kept as it is
        out.append(int(scaled))
    return out


class DaySeries(Mapping[date, Decimal]):
    """Daily peaks of one namespace and resource, as kept between history cycles: the values of
    consecutive days from the first day known, in an array of thousandths (8 bytes a day; a Decimal
    is about 100, and 3,000 namespaces x 5 resources x 31 days of them were 65 MiB), or in a tuple
    when a value is finer than that. A value read is made then, equal to the one put in."""

    __slots__ = ("_first", "_len", "_values")

    _values: array[int] | tuple[Decimal | None, ...]

    def __init__(self, days: Mapping[date, Decimal]) -> None:
        ordinals = {day.toordinal(): value for day, value in days.items()}
        self._first = min(ordinals, default=0)
        values: list[Decimal | None] = [None] * (max(ordinals, default=-1) - self._first + 1)
        for ordinal, value in ordinals.items():
            values[ordinal - self._first] = value
        self._values = _thousandths(values) or tuple(values)
        self._len = len(ordinals)

    @classmethod
    def of_thousandths(cls, first: int, values: Sequence[int]) -> DaySeries:
        """From the values of consecutive days in thousandths, the first of them at ordinal `first`;
        a negative value is a day without one."""
        low = next((i for i, value in enumerate(values) if value >= 0), len(values))
        high = next((i for i in range(len(values) - 1, low - 1, -1) if values[i] >= 0), low - 1)
        series = cls.__new__(cls)
        series._first = first + low if high >= low else 0
        series._values = array("q", (value if value >= 0 else _NONE for value in values[low : high + 1]))
        series._len = sum(1 for value in series._values if value != _NONE)
        return series

    def __eq__(self, other: object) -> bool:
        # Kept and answered series are compared for every key of every cycle: arrays, not dicts.
        if isinstance(other, DaySeries) and type(self._values) is type(other._values):
            return self._first == other._first and self._values == other._values
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, day: date) -> Decimal:
        index = day.toordinal() - self._first
        if not 0 <= index < len(self._values):
            raise KeyError(day)
        value = self._values[index]
        if value is None or value == _NONE:
            raise KeyError(day)
        return Decimal(value) / _THOUSANDTHS if isinstance(value, int) else value

    def __iter__(self) -> Iterator[date]:
        absent = _NONE if isinstance(self._values, array) else None
        return (date.fromordinal(self._first + i) for i, value in enumerate(self._values) if value != absent)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"DaySeries({dict(self)!r})"


class HistorySource(Protocol):
    name: str

    async def peaks(self, query: PeakQuery) -> HistoryResult: ...


# --------------------------------------------------------------------------------------------- sampler

# How far back the sampler keeps peaks when nobody says (no Project's lookback is known): an
# annotation recorded before keeping was tied to the lookback may hold this much.
MAX_DAYS = 400

DailyPeaks = dict[str, dict[str, Decimal]]  # day label (ISO date) -> resource -> peak

_DAY = timedelta(days=1)


def day_offset(namespace: str) -> timedelta:
    """Where a namespace's sampler day begins, after 00:00 UTC: a fixed point of the day per namespace.

    With one midnight for everyone, the first reconcile after it starts a new day in every quota's
    annotation at once (a burst of one write per namespace, which also queues new Projects behind
    it). Each namespace's day begins at its own moment instead, spread evenly over the 24 hours by a
    stable hash of its name (the same in every process and after every restart), so a day's
    bookkeeping costs about N / 86 400 writes a second rather than N in one burst. A day is still
    24 hours and its peak still the highest use seen in them, so no peak is ever dropped or split.
    """
    digest = hashlib.sha256(namespace.encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:4], "big") % 86_400)


def sampler_day(now: datetime, offset: timedelta = timedelta(0)) -> date:
    """The label of the sampler day holding `now`: day d runs from d 00:00 UTC + offset for 24 hours."""
    return (now - offset).date()


def keep_days(lookback: timedelta) -> int:
    """Days of peaks that answer every question over `lookback` (see peak_within): the day holding
    now - lookback is today - ceil(lookback) at the earliest, so nothing older is ever read."""
    return max(1, math.ceil(lookback / _DAY))


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
    return json.dumps(
        {day: {r: canonical(v) for r, v in sorted(values.items())} for day, values in sorted(peaks.items())},
        separators=(",", ":"),
    )


def record(peaks: DailyPeaks, used: Mapping[str, Decimal], today: date, keep_days: int = MAX_DAYS) -> DailyPeaks:
    """Raise today's peaks to `used`; drop days older than keep_days. Returns a new mapping."""
    oldest = (today - timedelta(days=keep_days)).isoformat()
    updated = {day: dict(values) for day, values in peaks.items() if day >= oldest}
    day = updated.setdefault(today.isoformat(), {})
    for resource, value in used.items():
        if value > day.get(resource, Decimal(-1)):
            day[resource] = value
    return updated


def recorded(peaks: DailyPeaks, used: Mapping[str, Decimal], today: date, keep_days: int) -> DailyPeaks | None:
    """The peaks to write after seeing `used` on `today`, or None when nothing needs writing.

    Something needs writing only when today is a new day or `used` is above today's peak so far.
    Days older than keep_days leave with that write, never in one of their own: a quota whose
    annotation holds more days than its lookback needs (kept before keeping followed the lookback,
    or before the lookback was shortened) sheds them when its own day next begins, not all quotas
    in one burst on the first reconcile after an upgrade.
    """
    if today.isoformat() in peaks and all(
        value <= peaks[today.isoformat()].get(resource, Decimal(-1)) for resource, value in used.items()
    ):
        return None
    return record(peaks, used, today, keep_days)


def peak_within(
    peaks: DailyPeaks, resource: str, now: datetime, lookback: timedelta, offset: timedelta = timedelta(0)
) -> Decimal | None:
    """The highest daily peak of every sampler day that overlaps [now - lookback, now].

    Days recorded before days had offsets (labelled by UTC date) begin, read this way, `offset`
    later than they did: they count a little longer, never less.
    """
    start = sampler_day(now - lookback, offset).isoformat()
    values = [v[resource] for day, v in peaks.items() if day >= start and resource in v]
    return max(values) if values else None


def days_within(
    peaks: DailyPeaks, resource: str, now: datetime, lookback: timedelta, offset: timedelta = timedelta(0)
) -> dict[date, Decimal]:
    """Each sampler day's peak of `resource` over the days that overlap [now - lookback, now]: the same
    days peak_within takes its maximum of, so the daily peaks and the peak always agree."""
    start = sampler_day(now - lookback, offset).isoformat()
    return {date.fromisoformat(day): v[resource] for day, v in sorted(peaks.items()) if day >= start and resource in v}
