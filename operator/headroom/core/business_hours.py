"""Business-hours calendars in the notation kube-downscaler users already know.

A calendar is one or more comma-separated ranges ``<days> <HH:MM>-<HH:MM> <IANA zone>``::

    Mon-Fri 09:00-17:00 Europe/Berlin
    Mon-Fri 09:00-12:00 Europe/Berlin, Mon-Fri 13:00-17:00 Europe/Berlin
    Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC
    Fri-Mon 22:00-06:00 America/Port-au-Prince

Rules:

* Days are ``Mon`` .. ``Sun`` (exact spelling), a single day or an inclusive range; a range may wrap the
  week (``Fri-Mon`` = Fri, Sat, Sun, Mon).
* Times are local wall-clock times in the range's own zone, so a 09:00 opening stays 09:00 local across
  DST changes. ``24:00`` is allowed as an end. An end at or before the start means the range crosses
  midnight; such a range belongs to the day it *starts* on (``Mon-Fri 22:00-06:00`` opens Mon 22:00
  and its last occurrence ends Sat 06:00).
* A wall time that does not exist (spring-forward gap) maps to the first valid instant after the gap;
  an ambiguous one (fall-back) means its first occurrence (``fold=0``). A range lying entirely inside
  a gap therefore does not open that day.
* Holidays are ISO dates interpreted in each range's own zone: a range whose occurrence *starts* on a
  holiday does not open that occurrence (a Thu 22:00-06:00 shift still runs into a Friday holiday).

Everything here is pure: instants are always passed in, never read from a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "BUSINESS_HOURS_PATTERN",
    "DAY_NAMES",
    "DEFAULT_BUSINESS_HOURS",
    "HOLIDAY_PATTERN",
    "SEARCH_HORIZON",
    "BusinessHours",
    "BusinessHoursError",
    "TimeRange",
    "add_business_days",
    "is_open",
    "next_opening",
    "parse_business_hours",
]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DEFAULT_BUSINESS_HOURS = "Mon-Fri 09:00-17:00 UTC"

#: How far ``next_opening``/``add_business_days`` look ahead before declaring that a calendar never
#: opens. Two years covers any realistic holiday list while keeping a misconfiguration cheap to detect.
SEARCH_HORIZON = timedelta(days=731)

_MINUTES_PER_DAY = 24 * 60

# The pattern is assembled from pieces so the CRD regex and the parser cannot drift apart. It avoids
# backslashes, lookarounds and backreferences on purpose: it has to survive YAML, CEL string escaping and
# RE2 (CEL's `matches`) unchanged. It checks structure only; zone names are validated by the parser.
_DAY_RE = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_START_RE = "([01][0-9]|2[0-3]):[0-5][0-9]"
_END_RE = f"({_START_RE}|24:00)"
_ZONE_RE = "[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*"
_RANGE_RE = f"{_DAY_RE}(-{_DAY_RE})? +{_START_RE}-{_END_RE} +{_ZONE_RE}"
#: Anchored explicitly because CEL's ``matches`` is a partial match.
BUSINESS_HOURS_PATTERN = f"^ *{_RANGE_RE}( *, *{_RANGE_RE})* *$"
#: One holiday: an ISO calendar date.
HOLIDAY_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

_TIMES_RE = re.compile("([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
_EXPECTED_RANGE = "expected '<days> <HH:MM>-<HH:MM> <zone>', e.g. 'Mon-Fri 09:00-17:00 Europe/Berlin'"
# These resolve on some hosts but mean "whatever this machine is set to", which would make a calendar
# behave differently per node.
_HOST_DEPENDENT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class BusinessHoursError(ValueError):
    """A business-hours specification (or holiday list) is invalid, or the calendar never opens."""


@dataclass(frozen=True)
class TimeRange:
    """One ``<days> <start>-<end> <zone>`` range.

    ``start``/``end`` are minutes after local midnight; ``end`` may be 1440 (24:00). ``end <= start``
    means the range ends on the following day.
    """

    first_day: int  # 0 = Monday, as datetime.weekday()
    last_day: int
    start: int
    end: int
    tz: ZoneInfo

    @property
    def weekdays(self) -> frozenset[int]:
        span = (self.last_day - self.first_day) % 7
        return frozenset((self.first_day + offset) % 7 for offset in range(span + 1))

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def __str__(self) -> str:
        days = DAY_NAMES[self.first_day]
        if self.last_day != self.first_day:
            days += "-" + DAY_NAMES[self.last_day]
        return f"{days} {_format_minute(self.start)}-{_format_minute(self.end)} {self.tz.key}"


@dataclass(frozen=True)
class BusinessHours:
    """A parsed calendar; build it with :func:`parse_business_hours`."""

    ranges: tuple[TimeRange, ...]
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.ranges:
            raise BusinessHoursError("business hours need at least one range")

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.ranges)


@dataclass(frozen=True)
class _Interval:
    """One concrete occurrence of a range: ``[start, end)`` in UTC, opened on local date ``day``."""

    start: datetime
    end: datetime
    day: date
    tz: ZoneInfo


# --------------------------------------------------------------------------------------------- parsing


def parse_business_hours(text: str | None, holidays: Iterable[str | date] = ()) -> BusinessHours:
    """Parse a calendar; ``None`` or blank text means :data:`DEFAULT_BUSINESS_HOURS`.

    Raises :class:`BusinessHoursError` naming the offending range and part.
    """
    if text is None or not text.strip():
        text = DEFAULT_BUSINESS_HOURS
    ranges = tuple(_parse_range(part.strip(), index) for index, part in enumerate(text.split(","), 1))
    return BusinessHours(ranges, _parse_holidays(holidays))


def _parse_range(part: str, index: int) -> TimeRange:
    where = f"business hours range {index} ({part!r})"
    if not part:
        raise BusinessHoursError(f"business hours range {index} is empty (stray comma?); {_EXPECTED_RANGE}")
    tokens = part.split()
    if len(tokens) == 2 and _TIMES_RE.fullmatch(tokens[1]):
        raise BusinessHoursError(f"{where}: missing time zone; {_EXPECTED_RANGE}")
    if len(tokens) > 3:
        raise BusinessHoursError(f"{where}: unexpected {' '.join(tokens[3:])!r}; {_EXPECTED_RANGE}")
    if len(tokens) != 3:
        raise BusinessHoursError(f"{where}: {_EXPECTED_RANGE}")
    days, times, zone = tokens
    first_day, last_day = _parse_days(days, where)
    start, end = _parse_times(times, where)
    return TimeRange(first_day, last_day, start, end, _parse_zone(zone, where))


def _parse_days(text: str, where: str) -> tuple[int, int]:
    names = text.split("-")
    if len(names) > 2:
        raise BusinessHoursError(f"{where}: bad day range {text!r}; expected 'Mon' or 'Mon-Fri'")
    numbers = []
    for name in names:
        if name not in DAY_NAMES:
            raise BusinessHoursError(f"{where}: bad day {name!r}; expected one of {', '.join(DAY_NAMES)}")
        numbers.append(DAY_NAMES.index(name))
    return numbers[0], numbers[-1]


def _parse_times(text: str, where: str) -> tuple[int, int]:
    match = _TIMES_RE.fullmatch(text)
    if match is None:
        raise BusinessHoursError(f"{where}: bad time range {text!r}; expected HH:MM-HH:MM, e.g. 09:00-17:00")
    start_h, start_m, end_h, end_m = (int(g) for g in match.groups())
    if start_h > 23 or start_m > 59:
        raise BusinessHoursError(f"{where}: bad start time {text.split('-')[0]!r}; expected 00:00..23:59")
    if end_h > 24 or end_m > 59 or (end_h == 24 and end_m != 0):
        raise BusinessHoursError(f"{where}: bad end time {text.split('-')[1]!r}; expected 00:00..24:00")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise BusinessHoursError(f"{where}: empty time range {text!r}; use 00:00-24:00 for a whole day")
    return start, end


def _parse_zone(name: str, where: str) -> ZoneInfo:
    problem = f"{where}: unknown time zone {name!r}; expected an IANA name such as Europe/Berlin"
    if re.fullmatch(_ZONE_RE, name) is None or name in _HOST_DEPENDENT_ZONES:
        raise BusinessHoursError(problem)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError covers directory names such as "Europe"; ValueError covers path tricks.
        raise BusinessHoursError(problem) from None


def _parse_holidays(holidays: Iterable[str | date]) -> frozenset[date]:
    if isinstance(holidays, str):
        # A bare string would otherwise be iterated character by character.
        holidays = [holidays]
    parsed = set()
    for item in holidays:
        if isinstance(item, datetime):
            raise BusinessHoursError(f"bad holiday {item!r}; expected a date, not a datetime")
        if isinstance(item, date):
            parsed.add(item)
            continue
        text = str(item).strip()
        # fromisoformat alone would also accept "20261225" and week dates; the CRD promises YYYY-MM-DD.
        if re.fullmatch(HOLIDAY_PATTERN, text) is None:
            raise BusinessHoursError(f"bad holiday {item!r}; expected an ISO date like 2026-12-25")
        try:
            parsed.add(date.fromisoformat(text))
        except ValueError:
            raise BusinessHoursError(f"bad holiday {item!r}; no such calendar date") from None
    return frozenset(parsed)


def _format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


# ------------------------------------------------------------------------------------------- instants


def _to_utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    """The naive local wall-clock reading of an instant."""
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def _resolve(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time (gap -> end of gap, ambiguous -> first occurrence)."""
    candidate = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(candidate, tz) == wall:
        return candidate
    # In a gap PEP 495 maps fold=1 to an instant before the jump and fold=0 to one after it. The first
    # valid instant is the jump itself, found by bisecting on whole seconds (transitions are on seconds).
    low = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    high = math.ceil(candidate.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), tz) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _occurrence(rng: TimeRange, day: date) -> _Interval | None:
    start = _resolve(datetime.combine(day, time()) + timedelta(minutes=rng.start), rng.tz)
    end_day = day + timedelta(days=1) if rng.crosses_midnight else day
    end = _resolve(datetime.combine(end_day, time()) + timedelta(minutes=rng.end), rng.tz)
    if end <= start:
        return None  # the whole range fell into a DST gap
    return _Interval(start, end, day, rng.tz)


def _intervals(hours: BusinessHours, low: datetime, high: datetime) -> list[_Interval]:
    """All occurrences overlapping ``[low, high)``, ordered by opening."""
    found = []
    for rng in hours.ranges:
        weekdays = rng.weekdays
        # An occurrence that started the previous local day can still be running at `low`.
        day = low.astimezone(rng.tz).date() - timedelta(days=1)
        last = high.astimezone(rng.tz).date()
        while day <= last:
            if day.weekday() in weekdays and day not in hours.holidays:
                interval = _occurrence(rng, day)
                if interval is not None and interval.start < high and interval.end > low:
                    found.append(interval)
            day += timedelta(days=1)
    found.sort(key=lambda i: (i.start, i.end))
    return found


def _openings_from(hours: BusinessHours, after: datetime) -> Iterator[_Interval]:
    """Occurrences opening at or after ``after``, in order, up to :data:`SEARCH_HORIZON`."""
    limit = after + SEARCH_HORIZON
    low = after
    # Two-week chunks keep the common case (opening within days) cheap without an unbounded generator.
    while low < limit:
        high = min(low + timedelta(days=14), limit)
        for interval in _intervals(hours, low, high):
            if interval.start >= low:
                yield interval
        low = high


def _never_opens(hours: BusinessHours, after: datetime) -> BusinessHoursError:
    return BusinessHoursError(
        f"business hours {str(hours)!r} do not open within {SEARCH_HORIZON.days} days after "
        f"{after.isoformat()} (every day a holiday?)"
    )


# -------------------------------------------------------------------------------------------- queries


def is_open(hours: BusinessHours, at: datetime) -> bool:
    """Whether ``at`` (timezone-aware) falls inside an occurrence; openings inclusive, closings not."""
    moment = _to_utc(at, "at")
    return any(i.start <= moment < i.end for i in _intervals(hours, moment, moment + timedelta(microseconds=1)))


def next_opening(hours: BusinessHours, after: datetime) -> datetime:
    """The earliest instant ``>= after`` at which ``hours`` are open, in UTC.

    Returns ``after`` itself (converted to UTC) when already open. Raises :class:`BusinessHoursError`
    when nothing opens within :data:`SEARCH_HORIZON`.
    """
    moment = _to_utc(after, "after")
    if is_open(hours, moment):
        return moment
    # Not open now, so no occurrence contains `moment`: the first one opening later is the answer.
    for interval in _openings_from(hours, moment):
        return interval.start
    raise _never_opens(hours, moment)


def add_business_days(hours: BusinessHours, start: datetime, days: int = 1) -> datetime:
    """``start`` moved forward by ``days`` business days, in UTC; used to repeat a still-firing alert.

    One step works on *business days*: the local date an occurrence starts on (in its range's zone),
    so a 22:00-06:00 shift is one business day even though it spans two dates.

    1. The reference day and offset: if ``start`` is open, the reference day is the business day of
       the occurrence containing it (the earliest-opened one if several overlap) and the offset is the
       wall-clock time elapsed since that day's first opening (so a lunch break between two ranges
       does not shift the result). If ``start`` is closed, the reference day is ``start``'s own local
       date and the offset is zero.
    2. The target day is the first business day after the reference day; the result is its first
       opening plus the offset, as local wall-clock time (so 10:30 stays 10:30 across DST).
    3. Clamped into the target day: no later than one minute before its last closing (e.g. Thu 15:00
       -> Fri 11:59 when Friday closes at 12:00), and moved to the next opening if it lands in a
       break. Should that not be after ``start`` (only with overlapping ranges), the following
       business day is used.

    Examples for ``Mon-Fri 09:00-17:00``: Mon 10:30 -> Tue 10:30; Fri 10:30 -> Mon 10:30; Fri 18:00
    or Sat 11:00 -> Mon 09:00; Mon 08:00 -> Tue 09:00 (Monday is not *after* Monday). ``days=0``
    returns ``start`` unchanged; negative ``days`` raise ``ValueError``.
    """
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    result = _to_utc(start, "start")
    for _ in range(days):
        result = _next_business_day(hours, result)
    return result


def _next_business_day(hours: BusinessHours, start: datetime) -> datetime:
    containing = [i for i in _intervals(hours, start, start + timedelta(microseconds=1)) if i.start <= start]
    floor: date | None = None
    offset = timedelta(0)
    search_from = start
    if containing:
        own = containing[0]
        floor = own.day
        anchor = _business_day(hours, own)[0]
        offset = _wall(start, anchor.tz) - _wall(anchor.start, anchor.tz)
        search_from = own.start
    for candidate in _openings_from(hours, search_from):
        limit = floor if floor is not None else _wall(start, candidate.tz).date()
        if candidate.day <= limit:
            continue
        day_intervals = _business_day(hours, candidate)
        closing = max(i.end for i in day_intervals)
        target = _resolve(_wall(candidate.start, candidate.tz) + offset, candidate.tz)
        target = max(candidate.start, min(target, closing - timedelta(minutes=1)))
        result = next_opening(hours, target)
        if result > start:
            return result
        floor = candidate.day
    raise _never_opens(hours, start)


def _business_day(hours: BusinessHours, member: _Interval) -> list[_Interval]:
    """All occurrences opened on the same local date as ``member`` (ranges in other zones included)."""
    window = _intervals(hours, member.start - timedelta(days=2), member.start + timedelta(days=3))
    return [i for i in window if i.day == member.day]
