"""Forecasts: the Theil-Sen trend of daily peaks and the moment it reaches the quota, in exact numbers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext

import pytest
from headroom.core.forecast import MIN_DAYS, Forecast, day_end, days_until, describe, forecast, theil_sen
from headroom.core.quantity import CONTEXT

D = Decimal
FIRST = date(2026, 12, 1)


def linear(days: int, start: str, per_day: str, first: date = FIRST) -> dict[date, Decimal]:
    return {first + timedelta(days=i): D(start) + D(per_day) * i for i in range(days)}


def after(days: int, hours: int = 0, first: date = FIRST) -> datetime:
    """A moment `days` whole days after the first day ended."""
    return day_end(first) + timedelta(days=days, hours=hours)


def test_a_linear_history_gives_the_exact_date() -> None:
    # 1 core on Dec 1, +400m every day; the quota is 8 cores. The peak of Dec 1 is reached at its end
    # (Dec 2 00:00), and 8 cores 7 / 0.4 = 17.5 days later: Dec 19, 12:00 UTC.
    daily = linear(10, "1", "0.4")
    result = forecast(daily, D(8), after(9, hours=6))
    assert result == Forecast(D("0.4"), datetime(2026, 12, 19, 12, 0, tzinfo=UTC), 10, D(8))


def test_memory_in_bytes_gives_the_exact_second() -> None:
    # 1Gi + 100Mi a day, quota 3Gi: (2048Mi / 100Mi) days = 20.48 days = 20 days 11:31:12.
    mi = 1024**2
    daily = {FIRST + timedelta(days=i): D(1024 * mi + 100 * mi * i) for i in range(8)}
    result = forecast(daily, D(3 * 1024 * mi), after(8))
    assert result is not None
    assert result.growth_per_day == D(100 * mi)
    assert result.full_at == datetime(2026, 12, 22, 11, 31, 12, tzinfo=UTC)
    assert result.published_growth("requests.memory") == D(100 * mi)


def test_the_day_offset_moves_every_day_end_and_so_the_date() -> None:
    offset = timedelta(hours=5, minutes=30)
    result = forecast(linear(10, "1", "0.4"), D(8), after(10), offset)
    assert result is not None and result.full_at == datetime(2026, 12, 19, 17, 30, tzinfo=UTC)


def test_one_spike_does_not_move_the_forecast() -> None:
    """A load test on one day (ten times the usual peak) leaves the trend exactly where it was."""
    daily = linear(14, "1", "0.4")
    clean = forecast(daily, D(10), after(14))
    daily[FIRST + timedelta(days=9)] = D(45)
    spiked = forecast(daily, D(10), after(14))
    assert clean is not None and spiked is not None and clean.full_at is not None and spiked.full_at is not None
    # Stated tolerance: one spike in 14 days moves the slope by at most 5 % and the date by at most a day.
    assert abs(spiked.growth_per_day - D("0.4")) <= D("0.02")
    assert abs(spiked.full_at - clean.full_at) <= timedelta(days=1)
    # Least squares on the same days would have more than doubled the growth (and so halved the time left):
    xs = list(range(14))
    ys = [daily[FIRST + timedelta(days=x)] for x in xs]
    mean_x, mean_y = D(sum(xs)) / 14, sum(ys) / 14
    ls_slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    assert ls_slope > D("0.8")


def test_noise_stays_within_the_stated_tolerance() -> None:
    """±10 % day-to-day noise (a fixed pattern, so the test is exact) around +400m/day from 4 cores:
    the slope stays within 10 % of 400m and the date within two days of the noiseless one."""
    pattern = [D(p) for p in ("0.1", "-0.08", "0.05", "-0.1", "0.02", "0.09", "-0.04", "-0.07", "0.06", "0", "-0.03")]
    daily = {FIRST + timedelta(days=i): (D(4) + D("0.4") * i) * (1 + pattern[i % len(pattern)]) for i in range(21)}
    noiseless = forecast(linear(21, "4", "0.4"), D(16), after(21))
    noisy = forecast(daily, D(16), after(21))
    assert noiseless is not None and noisy is not None and noiseless.full_at and noisy.full_at
    assert abs(noisy.growth_per_day - D("0.4")) <= D("0.04")
    assert abs(noisy.full_at - noiseless.full_at) <= timedelta(days=2)


@pytest.mark.parametrize(
    ("daily", "growth"),
    [
        (linear(14, "3", "0"), D(0)),
        (linear(14, "9", "-0.25"), D("-0.25")),
    ],
    ids=["flat", "shrinking"],
)
def test_flat_and_shrinking_use_gives_no_date(daily: dict[date, Decimal], growth: Decimal) -> None:
    result = forecast(daily, D(10), after(14))
    assert result is not None
    assert result.growth_per_day == growth
    assert result.full_at is None


def test_fewer_than_seven_days_give_a_growth_but_no_date() -> None:
    six = forecast(linear(MIN_DAYS - 1, "1", "0.4"), D(8), after(6))
    assert six is not None and six.growth_per_day == D("0.4") and six.full_at is None
    seven = forecast(linear(MIN_DAYS, "1", "0.4"), D(8), after(7))
    assert seven is not None and seven.full_at == datetime(2026, 12, 19, 12, 0, tzinfo=UTC)


def test_the_day_in_progress_does_not_count() -> None:
    """Its peak is still climbing: counting it would change the forecast at every reconcile."""
    daily = linear(8, "1", "0.4")
    daily[FIRST + timedelta(days=8)] = D("0.1")  # the day in progress, early in the morning
    during = forecast(daily, D(8), after(7, hours=3))
    assert during is not None and during.days == 8
    assert during == forecast(linear(8, "1", "0.4"), D(8), after(7, hours=23))
    assert forecast({FIRST: D(1)}, D(8), after(3)) is None  # one day is no trend


def test_a_day_counts_from_the_second_it_ends() -> None:
    offset = timedelta(hours=7, seconds=13)
    daily = linear(8, "1", "0.4")
    last_end = day_end(FIRST + timedelta(days=7), offset)
    before = forecast(daily, D(8), last_end - timedelta(seconds=1), offset)
    at = forecast(daily, D(8), last_end, offset)
    assert before is not None and before.days == 7
    assert at is not None and at.days == 8


def test_no_hard_value_gives_no_date() -> None:
    result = forecast(linear(10, "1", "0.4"), None, after(10))
    assert result is not None and result.full_at is None and result.growth_per_day == D("0.4")


def test_a_tiny_growth_that_takes_decades_gives_no_date() -> None:
    result = forecast(linear(10, "1", "0.000001"), D(8), after(10))
    assert result is not None and result.growth_per_day > 0 and result.full_at is None


def test_gaps_in_the_history_are_measured_in_days() -> None:
    # Days 0, 2, 5, 6, 9, 10, 13 of a +400m/day climb (the operator was down in between).
    daily = {FIRST + timedelta(days=i): D(1) + D("0.4") * i for i in (0, 2, 5, 6, 9, 10, 13)}
    result = forecast(daily, D(8), after(14))
    assert result is not None and result.full_at == datetime(2026, 12, 19, 12, 0, tzinfo=UTC)


def test_theil_sen_on_an_even_number_of_slopes_takes_the_middle_of_the_two() -> None:
    # Slopes between (0,0), (1,1), (2,4): 1, 2, 3 -> 2; intercept: median(0, -1, 0) = 0.
    assert theil_sen((0, 1, 2), (D(0), D(1), D(4))) == (D(2), D(0))
    # (0,0), (1,2), (3,3), (4,7): slopes 2, 1, 1.75, 0.5, 1.666..., 4 -> median (1.666... + 1.75) / 2
    slope, _ = theil_sen((0, 1, 3, 4), (D(0), D(2), D(3), D(7)))
    with localcontext(CONTEXT):
        assert abs(slope - (D(5) / 3 + D("1.75")) / 2) < D("1e-190")


def test_describe_says_what_a_person_needs() -> None:
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    full = Forecast(D("0.4"), datetime(2026, 12, 11, 3, 0, tzinfo=UTC), 14, D(8))
    assert describe("requests.cpu", full, now) == "full in ~9 days (2026-12-11) at +400m/day"
    assert describe("pods", Forecast(D("0.25"), None, 3, D(50)), now) == (
        "growing at +0.25/day (a date after 7 days of history; 3 so far)"
    )
    assert describe("pods", Forecast(D(0), None, 14, D(50)), now) == "flat"
    assert describe("requests.memory", Forecast(D(-(1024**2) * 64), None, 14, D(1)), now) == "shrinking at -64Mi/day"
    past = Forecast(D("0.4"), datetime(2026, 11, 30, tzinfo=UTC), 14, D(8))
    assert describe("requests.cpu", past, now) == "full now by the trend (reached on 2026-11-30) at +400m/day"
    assert days_until(datetime(2026, 12, 2, 20, 59, tzinfo=UTC), now) == 0
    assert days_until(datetime(2026, 12, 2, 21, 0, tzinfo=UTC), now) == 1
