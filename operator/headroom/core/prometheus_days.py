"""Daily peaks for the Prometheus source: what to ask, how answers merge, what survives a restart.

The Prometheus source keeps, per (namespace, resource), the peak of every UTC day of the lookback.
A day is asked once; in steady state only the window since the last answer is asked, and the
lookback peak is the maximum of the kept days and that newest window. A day leaves the lookback by
being no longer read, without a query. Everything here is pure: the source does the I/O.

Days are UTC days. The oldest day of a lookback counts whole (a 30d lookback reads up to a day
more than 30 days back): conservative, never a lower peak. Lookbacks shorter than SHORT_LOOKBACK are
asked directly every cycle instead, where a whole day more would change the answer and asking the
window costs little anyway.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from headroom.core.history import LARGEST_THOUSANDTHS, THOUSANDTHS, DaySeries
from headroom.core.quantity import canonical

DAY = timedelta(days=1)
SHORT_LOOKBACK = timedelta(days=2)

Key = tuple[str, str]  # (namespace, resource)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def align(moment: datetime, step: timedelta) -> datetime:
    """The last subquery evaluation point at or before `moment` (Prometheus aligns them to the epoch)."""
    seconds = int(moment.timestamp())
    step_s = int(step.total_seconds())
    return datetime.fromtimestamp(seconds - seconds % step_s, UTC)


_MISSING = -2  # a day not answered
_NO_SERIES = -1  # a day answered: no series
_SCALE = THOUSANDTHS  # millicores, and bytes and counts to three places


def _stored(value: Decimal) -> int:
    # Rounded up, never down: a kept peak is never lower than the one Prometheus answered.
    return min(LARGEST_THOUSANDTHS, int((value * _SCALE).to_integral_value(rounding=ROUND_CEILING)))


class DayPeaks(Mapping[date, Decimal | None]):
    """One key's peak per day, compact: 8 bytes a day in an array, where a dict of Decimals costs
    about 170 (3 000 namespaces x 5 resources x 31 days: about 5 MiB rather than 80). Values are kept
    to a thousandth (a millicore; bytes and counts exactly), rounded up. Read-only once built."""

    __slots__ = ("_first", "_values")

    def __init__(self, items: Mapping[date, Decimal | None] | None = None) -> None:
        self._first = 0
        self._values = array("q")
        for day, value in sorted((items or {}).items()):
            self._set(day, value)

    def _set(self, day: date, value: Decimal | None) -> None:
        ordinal = day.toordinal()
        if not self._values:
            self._first = ordinal
        if ordinal < self._first:
            self._values = array("q", [_MISSING] * (self._first - ordinal)) + self._values
            self._first = ordinal
        index = ordinal - self._first
        if index >= len(self._values):
            self._values.extend([_MISSING] * (index + 1 - len(self._values)))
        self._values[index] = _NO_SERIES if value is None else _stored(value)

    def __getitem__(self, day: date) -> Decimal | None:
        index = day.toordinal() - self._first
        if not 0 <= index < len(self._values) or self._values[index] == _MISSING:
            raise KeyError(day)
        raw = self._values[index]
        return None if raw == _NO_SERIES else Decimal(raw) / _SCALE

    def __iter__(self) -> Iterator[date]:
        return (date.fromordinal(self._first + i) for i, raw in enumerate(self._values) if raw != _MISSING)

    def __len__(self) -> int:
        return sum(1 for raw in self._values if raw != _MISSING)

    def __contains__(self, day: object) -> bool:
        # Mapping's own goes through __getitem__ and builds a Decimal: a derivation cycle asks this
        # for every day of every key, hundreds of thousands of times.
        if not isinstance(day, date):
            return False
        index = day.toordinal() - self._first
        return 0 <= index < len(self._values) and self._values[index] != _MISSING

    def span(self, oldest: date, newest: date) -> tuple[int, array[int]] | None:
        """The stored values of the days oldest..newest (ordinal of the first, values), or None when
        one of them was never answered: read straight from the array, no Decimal made on the way."""
        if newest < oldest:
            return oldest.toordinal(), array("q")
        low, high = oldest.toordinal() - self._first, newest.toordinal() - self._first
        if low < 0 or high >= len(self._values):
            return None
        values = self._values[low : high + 1]
        return None if _MISSING in values else (oldest.toordinal(), values)

    def replaced(self, day: date, value: Decimal | None) -> DayPeaks:
        copy = DayPeaks()
        copy._first, copy._values = self._first, array("q", self._values)
        copy._set(day, value)
        return copy

    def since(self, oldest: date) -> DayPeaks:
        drop = oldest.toordinal() - self._first
        if drop <= 0:
            return self
        copy = DayPeaks()
        copy._first, copy._values = oldest.toordinal(), self._values[drop:]
        return copy


@dataclass(slots=True)
class KeyDays:
    """What is known of one (namespace, resource).

    `days` maps each answered day to its peak (None: asked, no series that day). Days before the day
    of `through` are complete; the day of `through` is open and holds the peak up to `through`.
    """

    days: DayPeaks = field(default_factory=DayPeaks)
    through: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.days, DayPeaks):
            self.days = DayPeaks(self.days)


@dataclass(frozen=True, order=True)
class Window:
    """The peak over [start, end], asked as one subquery evaluated at `end`; never crosses a midnight
    except to end exactly on one. A whole day is start = midnight, end = the next midnight."""

    start: datetime
    end: datetime

    @property
    def whole_day(self) -> bool:
        return self.start == midnight(utc_day(self.start)) and self.end - self.start == DAY

    @property
    def day(self) -> date:
        return utc_day(self.start)


def _split_at_midnights(start: datetime, end: datetime) -> list[Window]:
    windows = []
    while start < end:
        next_midnight = midnight(utc_day(start) + DAY)
        stop = min(end, next_midnight)
        windows.append(Window(start, stop))
        start = stop
    return windows


def first_day(end: datetime, lookback: timedelta) -> date:
    return utc_day(end - lookback)


def windows_wanted(kept: KeyDays | None, end: datetime, lookback: timedelta) -> list[Window]:
    """The windows to ask for one key so that every day of the lookback ending at `end` is known.

    Days of the lookback never answered (start-up, a new namespace, a longer lookback) are whole-day
    windows; after that only the time since `through` is asked, split at midnights so that each
    answer belongs to one day. `end` is aligned to the subquery step by the caller.
    """
    oldest = first_day(end, lookback)
    if kept is None or kept.through is None or utc_day(kept.through) < oldest:
        return _split_at_midnights(midnight(oldest), end)
    through = utc_day(kept.through)
    complete = kept.days.span(oldest, through - DAY) is not None  # the usual case: no gap to fill
    missing = (
        []
        if complete
        else [Window(midnight(day), midnight(day) + DAY) for day in _days(oldest, through) if day not in kept.days]
    )
    # The point at `through` is asked again: Prometheus may have ingested a late scrape for it.
    return missing + _split_at_midnights(kept.through, end)


def _days(first: date, stop: date) -> Iterable[date]:
    """first, first + 1, ..., stop - 1."""
    day = first
    while day < stop:
        yield day
        day += DAY


def merge(kept: KeyDays | None, window: Window, value: Decimal | None) -> KeyDays:
    """Record one complete answer for one key: `value` is the window's peak, None when no series.

    Answers of one day only raise its peak, never lower it (a whole day's answer is at least any
    part of it). `through` is moved by `advance`, once every window of the key was answered.
    """
    kept = kept if kept is not None else KeyDays()
    before = kept.days.get(window.day)
    if value is None:
        return KeyDays(kept.days.replaced(window.day, before), kept.through)
    return KeyDays(kept.days.replaced(window.day, value if before is None else max(before, value)), kept.through)


def advance(kept: KeyDays, end: datetime) -> KeyDays:
    return KeyDays(kept.days, max(kept.through, end) if kept.through is not None else end)


def _newest(end: datetime) -> date:
    """The last day a lookback ending at `end` reads: a window ending on a midnight belongs to the
    day before it."""
    day = utc_day(end)
    return day - DAY if end == midnight(day) else day


def peak(kept: KeyDays | None, end: datetime, lookback: timedelta) -> tuple[bool, Decimal | None]:
    """(known, peak) over the lookback ending at `end`: known when answers reach `end` and every day
    of the lookback was answered; the peak is None when no day had a series (unknown, never zero)."""
    if kept is None or kept.through is None or kept.through < end:
        return False, None
    span = kept.days.span(first_day(end, lookback), _newest(end))
    if span is None:
        return False, None
    top = max(span[1], default=_NO_SERIES)  # stored values are never negative: the markers are
    return True, None if top == _NO_SERIES else Decimal(top) / _SCALE


def lookback_days(kept: KeyDays, end: datetime, lookback: timedelta) -> DaySeries:
    """Each day's peak over the lookback ending at `end` (days with no series left out): the days
    `peak` takes its maximum of, so the two always agree."""
    span = kept.days.span(first_day(end, lookback), _newest(end))
    if span is None:
        return DaySeries({})
    return DaySeries.of_thousandths(*span)  # the same thousandths: _SCALE is THOUSANDTHS


def prune(kept: KeyDays, end: datetime, keep: timedelta) -> KeyDays:
    """Days older than the longest lookback kept leave memory (and, at its next write, the annotation)."""
    oldest = first_day(end, keep)
    return KeyDays(kept.days.since(oldest), kept.through)


def closed_days(kept: KeyDays) -> dict[date, Decimal | None]:
    """The complete days: all before the day `through` is in (a day ends with the window that
    reaches the next midnight, whose day is then the open one)."""
    if kept.through is None:
        return {}
    return {d: v for d, v in kept.days.items() if d < utc_day(kept.through)}


# --------------------------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Ask:
    """One question to Prometheus for one resource and a set of namespaces: either whole days
    (a range query of daily maxima, evaluated at each following midnight) or one window."""

    resource: str
    namespaces: frozenset[str]
    first: date | None = None  # whole days first..last
    last: date | None = None
    window: Window | None = None

    @property
    def days(self) -> int:
        if self.first is None or self.last is None:
            return 0
        return (self.last - self.first).days + 1


def plan_asks(wanted: Mapping[Key, list[Window]], max_days: int, max_namespaces: int, max_pattern: int) -> list[Ask]:
    """Group the keys' windows into as few questions as Prometheus' limits allow.

    Keys with the same window (all of them, in steady state) share one question; runs of whole days
    become range queries of at most `max_days` days; every question names at most `max_namespaces`
    namespaces and a regex of at most `max_pattern` characters.
    """
    by_window: dict[tuple[str, Window], set[str]] = {}
    for (namespace, resource), windows in wanted.items():
        for window in windows:
            by_window.setdefault((resource, window), set()).add(namespace)
    # Whole days: one range per resource and namespace group, cut into runs of consecutive days.
    days: dict[tuple[str, frozenset[str]], set[date]] = {}
    asks: list[Ask] = []
    grouped: dict[tuple[str, date], set[str]] = {}
    for (resource, window), namespaces in sorted(by_window.items()):
        if window.whole_day:
            grouped[(resource, window.day)] = namespaces
        else:
            asks.extend(
                Ask(resource, chunk, window=window) for chunk in chunks(namespaces, max_namespaces, max_pattern)
            )
    for (resource, day), names in grouped.items():
        days.setdefault((resource, frozenset(names)), set()).add(day)
    for (resource, group), wanted_days in sorted(days.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]))):
        for first, last in _runs(sorted(wanted_days), max_days):
            asks.extend(
                Ask(resource, chunk, first=first, last=last) for chunk in chunks(group, max_namespaces, max_pattern)
            )
    return asks


def _runs(days: list[date], max_days: int) -> Iterable[tuple[date, date]]:
    start = prev = days[0]
    for day in days[1:]:
        if day != prev + DAY or (day - start).days >= max_days:
            yield start, prev
            start = day
        prev = day
    yield start, prev


def chunks(namespaces: Iterable[str], max_namespaces: int, max_pattern: int) -> list[frozenset[str]]:
    """Sorted namespaces cut so that each chunk's `a|b|c` regex stays within bounds."""
    chunks: list[frozenset[str]] = []
    current: list[str] = []
    length = 0
    for namespace in sorted(namespaces):
        extra = len(namespace) + (1 if current else 0)
        if current and (len(current) >= max_namespaces or length + extra > max_pattern):
            chunks.append(frozenset(current))
            current, length, extra = [], 0, len(namespace)
        current.append(namespace)
        length += extra
    if current:
        chunks.append(frozenset(current))
    return chunks


def halves(ask: Ask) -> list[Ask]:
    """An ask cut in two (by days first, then by namespaces) when Prometheus refuses it as too big;
    empty when it cannot be cut further."""
    if ask.first is not None and ask.last is not None and ask.days > 1:
        middle = ask.first + timedelta(days=ask.days // 2 - 1)
        return [
            Ask(ask.resource, ask.namespaces, first=ask.first, last=middle),
            Ask(ask.resource, ask.namespaces, first=middle + DAY, last=ask.last),
        ]
    if len(ask.namespaces) > 1:
        names = sorted(ask.namespaces)
        cut = len(names) // 2
        return [
            Ask(ask.resource, frozenset(part), ask.first, ask.last, ask.window) for part in (names[:cut], names[cut:])
        ]
    return []


# --------------------------------------------------------------------------------------------- persistence


def encode_days(states: Mapping[str, KeyDays]) -> str | None:
    """One namespace's closed days (resource -> state) as the annotation kept on its quota.

    {"from": first day, "to": last day, "peaks": {day: {resource: peak}}}: every resource listed in
    "resources" is known for every day from..to; a resource missing from a day had no series.
    """
    closed = {resource: closed_days(state) for resource, state in states.items()}
    closed = {r: days for r, days in closed.items() if days}
    if not closed:
        return None
    # Only the span every resource knows completely, so that a decoded day is never half-known.
    first = max(min(days) for days in closed.values())
    last = min(max(days) for days in closed.values())
    if last < first:
        return None
    span = list(_days(first, last + DAY))
    if any(day not in days for days in closed.values() for day in span):
        return None
    peaks = {
        day.isoformat(): {r: canonical(v) for r, days in sorted(closed.items()) if (v := days[day]) is not None}
        for day in span
    }
    text = {"from": first.isoformat(), "to": last.isoformat(), "resources": sorted(closed), "peaks": peaks}
    return json.dumps(text, separators=(",", ":"), sort_keys=True)


_MOST_DAYS = 400  # no lookback is longer; an annotation claiming more is damaged


def decode_days(text: str | None) -> dict[str, KeyDays]:
    """The annotation back as states (resource -> state), open from the midnight after its last
    day. Tolerant: a damaged annotation is worth nothing, and nothing is read from it."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
        first, last = date.fromisoformat(raw["from"]), date.fromisoformat(raw["to"])
        resources = [str(r) for r in raw["resources"]]
        peaks = raw["peaks"]
        if not 0 <= (last - first).days <= _MOST_DAYS:
            return {}
        found: dict[str, dict[date, Decimal | None]] = {r: {} for r in resources}
        for day in _days(first, last + DAY):
            values = peaks.get(day.isoformat(), {})
            for resource in resources:
                value = Decimal(str(values[resource])) if resource in values else None
                if value is not None and (not value.is_finite() or value < 0):
                    return {}
                found[resource][day] = value
    except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation):
        return {}
    return {r: KeyDays(DayPeaks(by_day), midnight(last + DAY)) for r, by_day in found.items()}


def persisted_through(text: str | None) -> date | None:
    states = decode_days(text)
    closed = [max(s.days) for s in states.values() if s.days]
    return min(closed) if closed else None


WRITE_WINDOW = timedelta(hours=1)


def write_due(current: str | None, now: datetime, offset: timedelta) -> bool:
    """Whether a namespace's annotation is due a rewrite: in the hour after the namespace's own
    moment of the day (`offset` after midnight UTC, see history.day_offset), when it does not yet
    hold the day before. So at most one write per namespace per day, spread over the day: never one
    burst at midnight, nor one at an upgrade (every quota without the annotation at once).
    Until then a restart asks Prometheus again for what is not kept: the start-up cost, no more."""
    slot = midnight(utc_day(now - offset)) + offset
    if now - slot >= WRITE_WINDOW:
        return False
    through = persisted_through(current)
    return through is None or through < utc_day(slot) - DAY


def day_range(first: date, last: date) -> list[date]:
    return list(_days(first, last + DAY))
