"""When a namespace's quota will be full: the growth trend of its daily peaks, and where it meets `hard`.

Pure and exact: Decimal arithmetic in quantity.CONTEXT, days and moments passed in, nothing read.

The trend is a Theil-Sen line: its slope is the median of the slopes between every pair of days, its
intercept the median of what each day leaves over. Why not least squares: a daily-peak history holds
one-off spikes (a load test, a stuck rollout that doubled the pods for an hour, a batch job once a
month), and least squares lets one such day tilt the whole line, so one load test would announce a
full quota weeks early and page the owners for nothing. The median ignores up to ~29 % of days that
lie off the line whatever their size, needs no threshold for what counts as an outlier (trimming
would), and on an exactly linear history gives exactly that line, so a forecast can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext
from functools import lru_cache
from typing import Any

from headroom.core.conditions import rfc3339
from headroom.core.quantity import (
    CONTEXT,
    MI,
    QuantityError,
    format_quantity,
    parse_quantity,
    resource_kind,
    round_up,
)

# Fewer days than this give a growth rate but no date: a week is the shortest history in which a
# weekly rhythm (quiet weekends) does not pass for a trend.
MIN_DAYS = 7
# A trend that reaches the quota only after this long is no forecast anyone acts on (and a tiny
# positive slope would otherwise put the date past the year 9999).
MAX_AHEAD = timedelta(days=3650)

_DAY_SECONDS = 86_400
# What growthPerDay is published to: a unit a person reads (the date is computed from the exact slope).
_GROWTH_STEP = {"cpu": Decimal("0.001"), "memory": MI, "count": Decimal("0.01")}


@dataclass(frozen=True)
class Forecast:
    """The trend of one namespace's daily peaks of one resource.

    growth_per_day is the exact Theil-Sen slope (negative when use shrinks); full_at the moment the
    trend reaches `hard`, None when use is flat or shrinking, the history shorter than MIN_DAYS, no
    hard value is known, or that moment lies more than MAX_AHEAD past the last day. A full_at in the
    past means the trend has already passed `hard` (the quota holds use back, or a spike was cut off).
    """

    growth_per_day: Decimal
    full_at: datetime | None
    days: int  # completed days the trend was made of
    hard: Decimal | None = None  # the value the trend was measured against

    def published_growth(self, resource: str) -> Decimal:
        """growthPerDay as published: to a unit a person reads (whole millicores, Mi, hundredths)."""
        with localcontext(CONTEXT):
            return self.growth_per_day.quantize(_GROWTH_STEP[resource_kind(resource)], rounding=ROUND_HALF_EVEN)


def to_status(resource: str, trend: Forecast) -> dict[str, Any]:
    """status.namespaces[].forecast[resource]: growthPerDay, fullAt (when there is a date), days."""
    entry: dict[str, Any] = {"growthPerDay": format_quantity(trend.published_growth(resource), resource)}
    if trend.full_at is not None:
        entry["fullAt"] = rfc3339(trend.full_at)
    entry["days"] = trend.days
    return entry


def from_status(entry: Any, hard: Decimal | None = None) -> Forecast | None:
    """A published forecast read back (for `headroom status`); None when it is not one."""
    if not isinstance(entry, Mapping):
        return None
    try:
        growth = parse_quantity(str(entry["growthPerDay"]))
        full_at = entry.get("fullAt")
        moment = datetime.fromisoformat(str(full_at).replace("Z", "+00:00")) if full_at else None
        days = int(entry.get("days", MIN_DAYS))
    except (KeyError, ValueError, TypeError, QuantityError):
        return None
    return Forecast(growth, moment, days, hard)


def day_end(day: date, offset: timedelta = timedelta(0)) -> datetime:
    """When day `day` ends: 00:00 UTC of the next date, plus the namespace's day offset."""
    return datetime.combine(day + timedelta(days=1), time(0), UTC) + offset


def day_ended_between(
    daily: Mapping[date, Decimal], before: datetime, now: datetime, offset: timedelta = timedelta(0)
) -> bool:
    """Whether the day in progress at `before` has ended by `now` and has a peak in `daily`: the trend
    `forecast` gives then counts one more day, though `daily` itself did not change."""
    day = _day_at(before, offset)
    return day < _day_at(now, offset) and day in daily


def _day_at(moment: datetime, offset: timedelta) -> date:
    """The day in progress at `moment`, for a namespace whose days begin at 00:00 UTC + `offset`."""
    return (moment.astimezone(UTC) - offset).date()


def forecast(
    daily: Mapping[date, Decimal], hard: Decimal | None, now: datetime, offset: timedelta = timedelta(0)
) -> Forecast | None:
    """The trend of the days that have ended by `now`; None when fewer than two have.

    Only ended days count: the day in progress has a peak that is still climbing, and a forecast that
    changed with every reconcile of the same day would rewrite the status each time. Each day's peak
    stands at the end of its day, where a steady climb reaches it: a linear history gives its own line.
    """
    # Day d has ended when day_end(d) <= now, that is when d is before the date of now - offset
    # (one comparison a day rather than one moment a day: this runs at every reconcile).
    today = _day_at(now, offset)
    ended = sorted((day, value) for day, value in daily.items() if day < today)
    if len(ended) < 2:
        return None
    first = ended[0][0]
    slope, intercept = theil_sen(tuple((day - first).days for day, _ in ended), tuple(v for _, v in ended))
    full_at = None
    if len(ended) >= MIN_DAYS and slope > 0 and hard is not None:
        full_at = _crossing(slope, intercept, hard, day_end(first, offset))
    return Forecast(slope, full_at, len(ended), hard)


def _crossing(slope: Decimal, intercept: Decimal, hard: Decimal, origin: datetime) -> datetime | None:
    """The moment the line intercept + slope * days (days after `origin`) reaches `hard`, to the second
    before: a forecast may be early by a second, never late."""
    with localcontext(CONTEXT):
        seconds = ((hard - intercept) / slope * _DAY_SECONDS).to_integral_value(rounding=ROUND_FLOOR)
    if seconds > int(MAX_AHEAD.total_seconds()):
        return None
    return origin + timedelta(seconds=int(seconds))


def _median(values: Sequence[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    with localcontext(CONTEXT):
        return (ordered[middle - 1] + ordered[middle]) / 2


# Keyed by the days themselves (day numbers and peaks, in two flat tuples that share the peaks'
# Decimals: about 1 KiB an entry for 30 days, 4 MiB when full): a Project reconciled again on the
# same day asks the same question, and the answer costs O(days²) exact divisions (0.5 to 0.9 ms for
# 29 days on a loaded 2-core machine, against 0.014 ms for a forecast whose trend is cached).
@lru_cache(maxsize=4096)
def theil_sen(xs: tuple[int, ...], ys: tuple[Decimal, ...]) -> tuple[Decimal, Decimal]:
    """(slope, intercept) of the Theil-Sen line through points (xs[i], ys[i]) with distinct xs (two or more)."""
    points = tuple(zip(xs, ys, strict=True))
    with localcontext(CONTEXT):
        slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1 :] if x2 != x1]
        slope = _median(slopes)
        intercept = _median([y - slope * x for x, y in points])
    return slope, intercept


def days_until(full_at: datetime, now: datetime) -> int:
    """Whole days from now to full_at, to the nearest ("full in ~9 days"); 0 when it is past."""
    seconds = (full_at - now).total_seconds()
    return max(0, int((seconds + _DAY_SECONDS / 2) // _DAY_SECONDS))


def describe(resource: str, forecast: Forecast, now: datetime) -> str:
    """One line for people: "full in ~9 days (2026-12-11) at +400m/day", "flat", "shrinking at -1/day"."""
    growth = forecast.published_growth(resource)
    rate = f"{'+' if growth > 0 else ''}{format_quantity(growth, resource)}/day"
    if forecast.full_at is not None:
        if forecast.full_at <= now:
            return f"full now by the trend (reached on {forecast.full_at.date().isoformat()}) at {rate}"
        days = days_until(forecast.full_at, now)
        return f"full in ~{days} day{'s' if days != 1 else ''} ({forecast.full_at.date().isoformat()}) at {rate}"
    if forecast.growth_per_day <= 0:
        return "flat" if growth == 0 else f"shrinking at {rate}"
    if forecast.days < MIN_DAYS:
        return f"growing at {rate} (a date after {MIN_DAYS} days of history; {forecast.days} so far)"
    if forecast.hard is None:
        return f"growing at {rate}"
    return f"growing at {rate}, not full within {MAX_AHEAD.days // 365} years"


def covering(trend: Forecast, until: datetime, headroom_percent: int, resource: str) -> Decimal | None:
    """The hard value that keeps the trend inside the quota until `until`: the trend's value then, plus
    the Project's headroom (as every quota is its peak plus headroom), rounded up to a unit a person
    sets. None without a date (nothing to cover)."""
    if trend.full_at is None or trend.hard is None:
        return None
    with localcontext(CONTEXT):
        # The trend is at `hard` on full_at, and grows growth_per_day a day from there.
        days = Decimal(int((until - trend.full_at).total_seconds())) / _DAY_SECONDS
        peak = max(trend.hard, trend.hard + trend.growth_per_day * days)
        return round_up(peak * (100 + headroom_percent) / 100, resource)


@dataclass(frozen=True)
class ForecastAlert:
    """What a forecast alert tells the owners, for one namespace and resource."""

    project: str
    team: str
    namespace: str
    resource: str
    horizon_days: int
    headroom_percent: int


def alert_text(alert: ForecastAlert, trend: Forecast | None, now: datetime, firing: bool) -> str:
    """The sentence every sink carries: the trend, the date, and the `headroom request` that covers the
    horizon (firing); that the date left the horizon (resolved)."""
    who = f"Project {alert.project} (team {alert.team}): {alert.namespace} {alert.resource}"
    if not firing:
        return f":white_check_mark: {who} is no longer forecast to reach its quota within {alert.horizon_days} days" + (
            f" ({describe(alert.resource, trend, now)})." if trend else "."
        )
    if trend is None or trend.full_at is None or trend.hard is None:
        return f":crystal_ball: {who} is forecast to reach its quota within {alert.horizon_days} days."
    until = now + timedelta(days=alert.horizon_days)
    amount = covering(trend, until, alert.headroom_percent, alert.resource)
    quota = format_quantity(trend.hard, alert.resource)
    command = (
        f"headroom request {alert.project} {alert.namespace} {alert.resource}={format_quantity(amount, alert.resource)}"
        if amount is not None
        else ""
    )
    growth = format_quantity(trend.published_growth(alert.resource), alert.resource)
    days = days_until(trend.full_at, now)
    when = "now" if trend.full_at <= now else f"in ~{days} day{'s' if days != 1 else ''}"
    return (
        f":crystal_ball: {who} will be full {when}: growing at +{growth}/day, the trend of its daily peaks "
        f"reaches the quota of {quota} on {trend.full_at.date().isoformat()}. To cover the next "
        f"{alert.horizon_days} days (to {until.date().isoformat()}, with {alert.headroom_percent}% headroom), "
        f"ask for a raise: {command}"
    )
