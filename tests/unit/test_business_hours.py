import re
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from headroom.core.business_hours import (
    BUSINESS_HOURS_PATTERN,
    DEFAULT_BUSINESS_HOURS,
    HOLIDAY_PATTERN,
    SEARCH_HORIZON,
    BusinessHours,
    BusinessHoursError,
    add_business_days,
    is_open,
    next_opening,
    parse_business_hours,
)

BERLIN = ZoneInfo("Europe/Berlin")
LA = ZoneInfo("America/Los_Angeles")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def local(
    tz: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold)


def hours(text: str, holidays: tuple[str, ...] = ()) -> BusinessHours:
    return parse_business_hours(text, holidays)


# 2026-03-02 is a Monday; the weeks below are chosen around it and the 2026 DST changes.
MON, TUE, WED, THU, FRI, SAT, SUN = (date(2026, 3, 2) + timedelta(days=n) for n in range(7))


VALID_SPECS = [
    "Mon-Fri 09:00-17:00 Europe/Berlin",
    "Mon-Fri 09:00-17:00 UTC",
    "Mon-Fri 09:00-12:00 Europe/Berlin, Mon-Fri 13:00-17:00 Europe/Berlin",
    "Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC",
    "Mon-Thu 08:00-16:00 UTC,Fri 08:00-12:00 UTC",
    "Sat 10:00-14:00 UTC",
    "Fri-Mon 22:00-06:00 America/Port-au-Prince",
    "Fri-Fri 20:00-24:00 CET",
    "Mon-Sun 00:00-24:00 Etc/GMT+5",
    "Mon-Fri 09:00-17:00 Etc/GMT-14",
    "Mon-Fri 09:00-17:00 America/Argentina/Buenos_Aires",
    "Mon-Fri 22:00-06:00 UTC",
    "Mon-Fri 09:00-17:00 EST5EDT",
    "Tue 23:59-00:00 Asia/Kolkata",
    "  Mon-Fri 09:00-17:00 UTC  ,  Sat 10:00-12:00 UTC  ",
]


# ----------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text", [None, "", "   "])
def test_blank_spec_means_default(text: str | None) -> None:
    assert parse_business_hours(text) == parse_business_hours(DEFAULT_BUSINESS_HOURS)
    assert str(parse_business_hours(text)) == DEFAULT_BUSINESS_HOURS


@pytest.mark.parametrize("text", VALID_SPECS)
def test_valid_specs_parse_and_round_trip_through_str(text: str) -> None:
    parsed = parse_business_hours(text)
    assert parse_business_hours(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("Mon", {0}),
        ("Sat", {5}),
        ("Mon-Fri", {0, 1, 2, 3, 4}),
        ("Fri-Mon", {4, 5, 6, 0}),
        ("Sun-Mon", {6, 0}),
        ("Mon-Sun", set(range(7))),
        ("Wed-Wed", {2}),
    ],
)
def test_day_ranges_including_week_wrap(days: str, expected: set[int]) -> None:
    (rng,) = hours(f"{days} 09:00-17:00 UTC").ranges
    assert rng.weekdays == expected


def test_parsed_fields() -> None:
    first, second = hours("Mon-Thu 08:00-16:00 UTC, Fri 22:30-24:00 Etc/GMT+5").ranges
    assert (first.first_day, first.last_day, first.start, first.end, first.tz.key) == (0, 3, 480, 960, "UTC")
    assert (second.first_day, second.last_day, second.start, second.end) == (4, 4, 1350, 1440)
    assert second.tz.key == "Etc/GMT+5"
    assert not second.crosses_midnight
    assert hours("Mon 22:00-06:00 UTC").ranges[0].crosses_midnight
    assert hours("Mon 22:00-00:00 UTC").ranges[0].crosses_midnight


def test_holidays_parse_and_accept_dates() -> None:
    parsed = hours("Mon-Fri 09:00-17:00 UTC", ("2026-12-25", " 2026-12-24 "))
    assert parsed.holidays == {date(2026, 12, 25), date(2026, 12, 24)}
    assert parse_business_hours(None, [date(2026, 1, 1)]).holidays == {date(2026, 1, 1)}
    # A single string is one holiday, not a sequence of characters.
    assert parse_business_hours(None, "2026-01-01").holidays == {date(2026, 1, 1)}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("Mon-Fri 09:00-17:00 Mars/Olympus", ["unknown time zone", "'Mars/Olympus'"]),
        ("Mon-Fri 09:00-17:00 Europe", ["unknown time zone", "'Europe'"]),
        ("Mon-Fri 09:00-17:00 ../etc/passwd", ["unknown time zone"]),
        ("Mon-Fri 09:00-17:00 localtime", ["unknown time zone", "'localtime'"]),
        ("Mon-Fri 09:00-17:00 europe/berlin", ["unknown time zone"]),
        ("Mon-Fry 09:00-17:00 UTC", ["bad day", "'Fry'", "Mon, Tue"]),
        ("mon-fri 09:00-17:00 UTC", ["bad day", "'mon'"]),
        ("Monday 09:00-17:00 UTC", ["bad day", "'Monday'"]),
        ("Mon-Wed-Fri 09:00-17:00 UTC", ["bad day range", "'Mon-Wed-Fri'"]),
        ("Mon-Fri 9:00-17:00 UTC", ["bad time range", "'9:00-17:00'"]),
        ("Mon-Fri 09:00 UTC", ["bad time range", "'09:00'"]),
        ("Mon-Fri 0900-1700 UTC", ["bad time range"]),
        ("Mon-Fri 25:00-26:00 UTC", ["bad start time", "'25:00'"]),
        ("Mon-Fri 24:00-06:00 UTC", ["bad start time", "'24:00'"]),
        ("Mon-Fri 09:60-17:00 UTC", ["bad start time", "'09:60'"]),
        ("Mon-Fri 09:00-24:30 UTC", ["bad end time", "'24:30'"]),
        ("Mon-Fri 09:00-25:00 UTC", ["bad end time", "'25:00'"]),
        ("Mon-Fri 09:00-17:61 UTC", ["bad end time", "'17:61'"]),
        ("Mon-Fri 09:00-09:00 UTC", ["empty time range", "00:00-24:00"]),
        ("Mon-Fri 09:00-17:00", ["missing time zone", "range 1"]),
        ("Mon-Fri", ["expected '<days> <HH:MM>-<HH:MM> <zone>'"]),
        ("Mon-Fri 09:00-17:00 UTC extra", ["unexpected 'extra'"]),
        ("Mon-Fri 09:00-17:00 UTC,", ["range 2 is empty"]),
        (",Mon-Fri 09:00-17:00 UTC", ["range 1 is empty"]),
        ("Mon-Fri 09:00-17:00 UTC, Sat 10:00-12:00 Nowhere/City", ["range 2", "'Nowhere/City'"]),
    ],
)
def test_invalid_specs_name_the_bad_part(text: str, fragments: list[str]) -> None:
    with pytest.raises(BusinessHoursError) as caught:
        parse_business_hours(text)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("holiday", "fragment"),
    [
        ("2026-13-01", "no such calendar date"),
        ("2026-02-30", "no such calendar date"),
        ("20261225", "expected an ISO date"),
        ("Dec 25", "expected an ISO date"),
        ("2026-W52-5", "expected an ISO date"),
        ("", "expected an ISO date"),
    ],
)
def test_invalid_holidays(holiday: str, fragment: str) -> None:
    with pytest.raises(BusinessHoursError, match=fragment) as caught:
        parse_business_hours(None, [holiday])
    assert repr(holiday) in str(caught.value)


def test_datetime_is_not_a_holiday() -> None:
    with pytest.raises(BusinessHoursError, match="not a datetime"):
        parse_business_hours(None, [utc(2026, 12, 25)])


def test_business_hours_need_a_range() -> None:
    with pytest.raises(BusinessHoursError, match="at least one range"):
        BusinessHours(())


# ----------------------------------------------------------------------------------------------- pattern


@pytest.mark.parametrize("text", [*VALID_SPECS, DEFAULT_BUSINESS_HOURS])
def test_pattern_accepts_every_valid_example(text: str) -> None:
    assert re.fullmatch(BUSINESS_HOURS_PATTERN, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "always",
        "Mon-Fri",
        "Mon-Fri 09:00-17:00",
        "Mon-Fri 9:00-17:00 UTC",
        "Mon-Fri 09:00-24:30 UTC",
        "Mon-Fri 24:00-06:00 UTC",
        "Mon-Fri 25:00-26:00 UTC",
        "Mon-Fry 09:00-17:00 UTC",
        "mon-fri 09:00-17:00 UTC",
        "Mon-Wed-Fri 09:00-17:00 UTC",
        "Mon-Fri 09:00-17:00 UTC,",
        "Mon-Fri 09:00-17:00 UTC,,Sat 10:00-12:00 UTC",
        "Mon-Fri 09:00-17:00 /etc/passwd",
        "Mon-Fri 09:00-17:00 UTC extra",
        "Mon-Fri 09:00-17:00 Europe/",
        "Mon-Fri 09:00-17:00 UTC; rm -rf /",
        "Mon-Fri\t09:00-17:00 UTC",
    ],
)
def test_pattern_rejects_garbage(text: str) -> None:
    assert re.fullmatch(BUSINESS_HOURS_PATTERN, text) is None


@pytest.mark.parametrize("pattern", [BUSINESS_HOURS_PATTERN, HOLIDAY_PATTERN])
def test_patterns_stay_within_re2_and_cel_friendly(pattern: str) -> None:
    # No lookarounds, backreferences, possessive/atomic groups or backslashes (CEL string escaping).
    for construct in ("(?=", "(?!", "(?<", "(?>", "*+", "++", "?+", "\\"):
        assert construct not in pattern
    assert pattern.startswith("^")
    assert pattern.endswith("$")


def test_holiday_pattern() -> None:
    assert re.fullmatch(HOLIDAY_PATTERN, "2026-12-25")
    assert not re.fullmatch(HOLIDAY_PATTERN, "20261225")


# ---------------------------------------------------------------------------------------------- is_open


def test_weekdays_weekends_and_boundaries() -> None:
    office = hours("Mon-Fri 09:00-17:00 UTC")
    assert not is_open(office, utc(2026, 3, 2, 8, 59, 59))
    assert is_open(office, utc(2026, 3, 2, 9))  # opening is inclusive
    assert is_open(office, utc(2026, 3, 2, 16, 59, 59, 999999))
    assert not is_open(office, utc(2026, 3, 2, 17))  # closing is exclusive
    assert is_open(office, utc(2026, 3, 6, 12))  # Friday
    assert not is_open(office, utc(2026, 3, 7, 12))  # Saturday
    assert not is_open(office, utc(2026, 3, 8, 12))  # Sunday


def test_is_open_accepts_any_aware_zone() -> None:
    office = hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    assert is_open(office, datetime(2026, 3, 2, 3, 30, tzinfo=timezone(timedelta(hours=-5))))  # 09:30 CET
    assert not is_open(office, datetime(2026, 3, 2, 2, 30, tzinfo=timezone(timedelta(hours=-5))))


def test_naive_datetimes_are_refused() -> None:
    office = hours("Mon-Fri 09:00-17:00 UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(office, datetime(2026, 3, 2, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_opening(office, datetime(2026, 3, 2, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_days(office, datetime(2026, 3, 2, 10))


def test_range_across_midnight_belongs_to_its_start_day() -> None:
    nights = hours("Mon-Fri 22:00-06:00 UTC")
    assert not is_open(nights, utc(2026, 3, 2, 3))  # Mon 03:00: Sunday night never started
    assert not is_open(nights, utc(2026, 3, 2, 21, 59))
    assert is_open(nights, utc(2026, 3, 2, 22))  # opens Monday 22:00
    assert is_open(nights, utc(2026, 3, 3, 5, 59))
    assert not is_open(nights, utc(2026, 3, 3, 6))
    # Friday's shift runs into Saturday morning, and no shift starts on Saturday.
    assert is_open(nights, utc(2026, 3, 6, 23))
    assert is_open(nights, utc(2026, 3, 7, 5, 59))
    assert not is_open(nights, utc(2026, 3, 7, 6))
    assert not is_open(nights, utc(2026, 3, 7, 23))
    assert not is_open(nights, utc(2026, 3, 8, 23))


def test_end_at_midnight_and_whole_days() -> None:
    evening = hours("Fri 20:00-24:00 UTC")
    assert is_open(evening, utc(2026, 3, 6, 23, 59, 59))
    assert not is_open(evening, utc(2026, 3, 7, 0))
    same = hours("Fri 20:00-00:00 UTC")
    assert is_open(same, utc(2026, 3, 6, 23, 59, 59))
    assert not is_open(same, utc(2026, 3, 7, 0))
    always = hours("Mon-Sun 00:00-24:00 UTC")
    assert all(is_open(always, utc(2026, 3, 2) + timedelta(minutes=37 * n)) for n in range(400))


def test_multiple_ranges_with_lunch_break() -> None:
    split = hours("Mon-Fri 09:00-12:00 Europe/Berlin, Mon-Fri 13:00-17:00 Europe/Berlin")
    assert is_open(split, local(BERLIN, 2026, 3, 2, 11, 59))
    assert not is_open(split, local(BERLIN, 2026, 3, 2, 12, 30))
    assert is_open(split, local(BERLIN, 2026, 3, 2, 13))
    assert not is_open(split, local(BERLIN, 2026, 3, 2, 17))


def test_different_days_per_range() -> None:
    short_friday = hours("Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC")
    assert is_open(short_friday, utc(2026, 3, 5, 15))
    assert not is_open(short_friday, utc(2026, 3, 6, 15))
    assert is_open(short_friday, utc(2026, 3, 6, 11))


def test_ranges_in_different_zones() -> None:
    follow_the_sun = hours("Mon-Fri 09:00-17:00 Europe/Berlin, Mon-Fri 09:00-17:00 America/New_York")
    assert is_open(follow_the_sun, utc(2026, 3, 2, 8))  # 09:00 Berlin
    assert is_open(follow_the_sun, utc(2026, 3, 2, 20))  # 15:00 New York
    assert not is_open(follow_the_sun, utc(2026, 3, 2, 23))


@pytest.mark.parametrize(
    ("zone", "opening_utc"),
    [
        ("Etc/GMT+5", utc(2026, 3, 2, 14)),  # POSIX sign: GMT+5 is UTC-5
        ("Etc/GMT-14", utc(2026, 3, 1, 19)),  # Monday 09:00 at UTC+14 is Sunday in UTC
        ("America/Port-au-Prince", utc(2026, 3, 2, 14)),
        ("America/Argentina/Buenos_Aires", utc(2026, 3, 2, 12)),
        ("Asia/Kolkata", utc(2026, 3, 2, 3, 30)),
    ],
)
def test_zones_with_digits_dashes_and_depth(zone: str, opening_utc: datetime) -> None:
    office = hours(f"Mon-Fri 09:00-17:00 {zone}")
    assert next_opening(office, opening_utc - timedelta(hours=3)) == opening_utc
    assert not is_open(office, opening_utc - timedelta(seconds=1))
    assert is_open(office, opening_utc)


def test_holidays_close_ranges_starting_that_day() -> None:
    # 2026-12-24 is a Thursday, 2026-12-25 a Friday.
    office = hours("Mon-Fri 09:00-17:00 UTC", ("2026-12-25",))
    assert is_open(office, utc(2026, 12, 24, 12))
    assert not is_open(office, utc(2026, 12, 25, 12))
    assert next_opening(office, utc(2026, 12, 24, 18)) == utc(2026, 12, 28, 9)


def test_holiday_does_not_cut_a_shift_that_started_the_day_before() -> None:
    nights = hours("Mon-Fri 22:00-06:00 UTC", ("2026-12-25",))
    assert is_open(nights, utc(2026, 12, 25, 5))  # Thursday's shift
    assert not is_open(nights, utc(2026, 12, 25, 23))  # Friday's shift is off
    assert not is_open(nights, utc(2026, 12, 26, 5))


def test_holidays_are_dates_in_the_range_zone() -> None:
    berlin_days = hours("Mon-Sun 00:00-24:00 Europe/Berlin", ("2026-12-25",))
    # 23:30 UTC on the 24th is already the 25th in Berlin.
    assert is_open(berlin_days, utc(2026, 12, 24, 22, 59))
    assert not is_open(berlin_days, utc(2026, 12, 24, 23, 30))
    assert not is_open(berlin_days, utc(2026, 12, 25, 22, 59))
    assert is_open(berlin_days, utc(2026, 12, 25, 23))


# ---------------------------------------------------------------------------------------- next_opening


def test_next_opening_when_open_returns_the_instant_in_utc() -> None:
    office = hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    at = local(BERLIN, 2026, 3, 2, 10, 15, 30)
    result = next_opening(office, at)
    assert result == at
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (utc(2026, 3, 2, 6), utc(2026, 3, 2, 9)),  # before opening, same day
        (utc(2026, 3, 2, 17), utc(2026, 3, 3, 9)),  # at closing
        (utc(2026, 3, 6, 17, 30), utc(2026, 3, 9, 9)),  # Friday evening -> Monday
        (utc(2026, 3, 7, 12), utc(2026, 3, 9, 9)),  # Saturday
        (utc(2026, 3, 8, 23, 59, 59), utc(2026, 3, 9, 9)),  # Sunday night
    ],
)
def test_next_opening_over_nights_and_weekends(after: datetime, expected: datetime) -> None:
    result = next_opening(hours("Mon-Fri 09:00-17:00 UTC"), after)
    assert result == expected
    assert result.tzinfo is UTC


def test_next_opening_with_lunch_break_and_short_friday() -> None:
    split = hours("Mon-Fri 09:00-12:00 UTC, Mon-Fri 13:00-17:00 UTC")
    assert next_opening(split, utc(2026, 3, 2, 12, 5)) == utc(2026, 3, 2, 13)
    short_friday = hours("Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC")
    assert next_opening(short_friday, utc(2026, 3, 6, 12)) == utc(2026, 3, 9, 8)


def test_next_opening_for_overnight_and_wrapping_ranges() -> None:
    nights = hours("Mon-Fri 22:00-06:00 UTC")
    assert next_opening(nights, utc(2026, 3, 7, 6)) == utc(2026, 3, 9, 22)  # Saturday morning
    weekend = hours("Fri-Mon 18:00-08:00 UTC")
    assert next_opening(weekend, utc(2026, 3, 3, 8)) == utc(2026, 3, 6, 18)  # Tuesday -> Friday
    assert is_open(weekend, utc(2026, 3, 3, 7, 59))  # Monday's shift ends Tuesday 08:00


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # Europe/Berlin springs forward on Sunday 2026-03-29 (CET +1 -> CEST +2).
        (local(BERLIN, 2026, 3, 20, 18), local(BERLIN, 2026, 3, 23, 9)),
        (local(BERLIN, 2026, 3, 27, 18), local(BERLIN, 2026, 3, 30, 9)),
        # ... and falls back on Sunday 2026-10-25.
        (local(BERLIN, 2026, 10, 23, 18), local(BERLIN, 2026, 10, 26, 9)),
        # America/Los_Angeles springs forward 2026-03-08 and falls back 2026-11-01.
        (local(LA, 2026, 3, 6, 18), local(LA, 2026, 3, 9, 9)),
        (local(LA, 2026, 10, 30, 18), local(LA, 2026, 11, 2, 9)),
    ],
)
def test_opening_keeps_local_wall_time_across_dst(after: datetime, expected: datetime) -> None:
    tz = after.tzinfo
    assert isinstance(tz, ZoneInfo)
    office = hours(f"Mon-Fri 09:00-17:00 {tz.key}")
    result = next_opening(office, after)
    assert result == expected
    assert result.astimezone(tz).hour == 9


def test_dst_utc_values_explicitly() -> None:
    berlin = hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    assert next_opening(berlin, utc(2026, 3, 21)) == utc(2026, 3, 23, 8)  # CET
    assert next_opening(berlin, utc(2026, 3, 28)) == utc(2026, 3, 30, 7)  # CEST
    assert next_opening(berlin, utc(2026, 10, 24)) == utc(2026, 10, 26, 8)  # CET again
    la = hours("Mon-Fri 09:00-17:00 America/Los_Angeles")
    assert next_opening(la, utc(2026, 3, 7, 12)) == utc(2026, 3, 9, 16)  # PDT
    assert next_opening(la, utc(2026, 2, 28, 12)) == utc(2026, 3, 2, 17)  # PST
    assert next_opening(la, utc(2026, 10, 31, 12)) == utc(2026, 11, 2, 17)  # PST again


def test_nonexistent_opening_moves_to_end_of_gap() -> None:
    # 02:30 does not exist on 2026-03-29 in Berlin; the first valid instant after the gap is 03:00 CEST.
    early = hours("Sun 02:30-05:00 Europe/Berlin")
    assert next_opening(early, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert not is_open(early, utc(2026, 3, 29, 0, 59, 59))
    assert is_open(early, utc(2026, 3, 29, 1))
    assert not is_open(early, utc(2026, 3, 29, 3))  # 05:00 CEST
    # Los Angeles: 02:15 on 2026-03-08 -> 03:00 PDT.
    la = hours("Sun 02:15-04:00 America/Los_Angeles")
    assert next_opening(la, utc(2026, 3, 7, 12)) == utc(2026, 3, 8, 10)


def test_ambiguous_opening_uses_first_occurrence() -> None:
    # 02:30 happens twice on 2026-10-25 in Berlin: first at CEST (00:30 UTC), then CET (01:30 UTC).
    early = hours("Sun 02:30-05:00 Europe/Berlin")
    assert next_opening(early, utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 0, 30)
    assert is_open(early, local(BERLIN, 2026, 10, 25, 2, 15, fold=1))  # between the two 02:30s
    # 01:30 happens twice on 2026-11-01 in Los Angeles: first at PDT (08:30 UTC).
    la = hours("Sun 01:30-04:00 America/Los_Angeles")
    assert next_opening(la, utc(2026, 10, 31, 12)) == utc(2026, 11, 1, 8, 30)


def test_ranges_spanning_a_transition_have_real_length() -> None:
    fall = hours("Sun 00:00-06:00 Europe/Berlin")
    assert is_open(fall, utc(2026, 10, 25, 4, 30))  # 05:30 CET: a 7-hour Sunday morning
    assert not is_open(fall, utc(2026, 10, 25, 5))  # 06:00 CET
    spring = hours("Sat 22:00-06:00 Europe/Berlin")
    assert is_open(spring, utc(2026, 3, 28, 21))  # 22:00 CET
    assert is_open(spring, utc(2026, 3, 29, 3, 59))  # 05:59 CEST
    assert not is_open(spring, utc(2026, 3, 29, 4))  # 06:00 CEST: only 7 hours that night
    la_night = hours("Sat 22:00-06:00 America/Los_Angeles")
    assert is_open(la_night, utc(2026, 11, 1, 13, 59))  # 05:59 PST, a 9-hour night
    assert not is_open(la_night, utc(2026, 11, 1, 14))


def test_range_inside_the_gap_skips_that_day() -> None:
    ghost = hours("Sun 02:00-03:00 Europe/Berlin")
    assert next_opening(ghost, utc(2026, 3, 22, 12)) == utc(2026, 3, 29, 0, 0) + timedelta(days=7)
    assert next_opening(ghost, utc(2026, 3, 15, 12)) == utc(2026, 3, 22, 1)  # a normal CET Sunday


def test_next_opening_skips_holidays_on_weekdays() -> None:
    office = hours("Mon-Fri 09:00-17:00 UTC", ("2026-12-24", "2026-12-25", "2026-12-28"))
    assert next_opening(office, utc(2026, 12, 23, 17)) == utc(2026, 12, 29, 9)


def test_calendar_that_never_opens_raises() -> None:
    mondays = [(date(2026, 3, 2) + timedelta(weeks=n)).isoformat() for n in range(200)]
    closed = hours("Mon 09:00-17:00 UTC", tuple(mondays))
    with pytest.raises(BusinessHoursError, match="do not open within"):
        next_opening(closed, utc(2026, 3, 1))
    with pytest.raises(BusinessHoursError, match="do not open within"):
        add_business_days(closed, utc(2026, 3, 1))


def test_calendar_opening_late_within_the_horizon() -> None:
    mondays = [(date(2026, 3, 2) + timedelta(weeks=n)).isoformat() for n in range(52)]
    rare = hours("Mon 09:00-17:00 UTC", tuple(mondays))
    assert next_opening(rare, utc(2026, 3, 1)) == utc(2027, 3, 1, 9)
    assert timedelta(days=730) <= SEARCH_HORIZON


def test_next_opening_is_the_earliest_over_all_ranges() -> None:
    mixed = hours("Mon-Fri 09:00-17:00 Europe/Berlin, Mon-Fri 09:00-17:00 America/New_York")
    assert next_opening(mixed, utc(2026, 3, 2, 16, 30)) == utc(2026, 3, 2, 16, 30)  # NY still open
    assert next_opening(mixed, utc(2026, 3, 2, 22)) == utc(2026, 3, 3, 8)  # Berlin opens first


# ----------------------------------------------------------------------------------- add_business_days


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (utc(2026, 3, 2, 10, 30), utc(2026, 3, 3, 10, 30)),  # Mon -> Tue, same wall time
        (utc(2026, 3, 6, 10, 30), utc(2026, 3, 9, 10, 30)),  # Fri -> Mon
        (utc(2026, 3, 2, 9), utc(2026, 3, 3, 9)),  # at opening
        (utc(2026, 3, 2, 16, 59), utc(2026, 3, 3, 16, 59)),  # just before closing
        (utc(2026, 3, 6, 18), utc(2026, 3, 9, 9)),  # closed Friday evening -> Monday opening
        (utc(2026, 3, 7, 11), utc(2026, 3, 9, 9)),  # Saturday -> Monday opening
        (utc(2026, 3, 2, 8), utc(2026, 3, 3, 9)),  # before Monday opening -> Tuesday (a later date)
        (utc(2026, 3, 2, 17), utc(2026, 3, 3, 9)),  # at closing (closed) -> next opening
    ],
)
def test_add_one_business_day(start: datetime, expected: datetime) -> None:
    result = add_business_days(hours("Mon-Fri 09:00-17:00 UTC"), start)
    assert result == expected
    assert result.tzinfo is UTC


def test_add_business_days_counts_and_validates() -> None:
    office = hours("Mon-Fri 09:00-17:00 UTC")
    assert add_business_days(office, utc(2026, 3, 5, 10), days=2) == utc(2026, 3, 9, 10)
    assert add_business_days(office, utc(2026, 3, 2, 10), days=5) == utc(2026, 3, 9, 10)
    assert add_business_days(office, utc(2026, 3, 7, 10), days=0) == utc(2026, 3, 7, 10)
    with pytest.raises(ValueError, match="days must be >= 0"):
        add_business_days(office, utc(2026, 3, 2, 10), days=-1)


def test_add_business_day_skips_holidays() -> None:
    office = hours("Mon-Fri 09:00-17:00 UTC", ("2026-12-25",))
    assert add_business_days(office, utc(2026, 12, 24, 14)) == utc(2026, 12, 28, 14)


def test_add_business_day_keeps_wall_time_across_dst() -> None:
    berlin = hours("Mon-Fri 09:00-17:00 Europe/Berlin")
    assert add_business_days(berlin, local(BERLIN, 2026, 3, 27, 10)) == local(BERLIN, 2026, 3, 30, 10)
    assert add_business_days(berlin, local(BERLIN, 2026, 10, 23, 16)) == local(BERLIN, 2026, 10, 26, 16)
    la = hours("Mon-Fri 09:00-17:00 America/Los_Angeles")
    assert add_business_days(la, local(LA, 2026, 3, 6, 9, 45)) == local(LA, 2026, 3, 9, 9, 45)
    assert add_business_days(la, local(LA, 2026, 10, 30, 12)) == local(LA, 2026, 11, 2, 12)


def test_add_business_day_round_the_clock_calendar_is_a_calendar_day() -> None:
    always = hours("Mon-Sun 00:00-24:00 Europe/Berlin")
    assert add_business_days(always, local(BERLIN, 2026, 3, 3, 15)) == local(BERLIN, 2026, 3, 4, 15)
    # Over the spring-forward Sunday the wall time, not the elapsed time, is preserved.
    assert add_business_days(always, local(BERLIN, 2026, 3, 28, 12)) == local(BERLIN, 2026, 3, 29, 12)
    assert add_business_days(always, local(BERLIN, 2026, 10, 24, 12)) == local(BERLIN, 2026, 10, 25, 12)


def test_add_business_day_offset_counts_from_first_opening_of_the_day() -> None:
    split = hours("Mon-Fri 09:00-12:00 UTC, Mon-Fri 13:00-17:00 UTC")
    assert add_business_days(split, utc(2026, 3, 2, 14)) == utc(2026, 3, 3, 14)
    assert add_business_days(split, utc(2026, 3, 2, 11)) == utc(2026, 3, 3, 11)
    # Closed (lunch): offset 0, so the next business day's first opening.
    assert add_business_days(split, utc(2026, 3, 2, 12, 30)) == utc(2026, 3, 3, 9)


def test_add_business_day_clamps_into_a_shorter_day() -> None:
    short_friday = hours("Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC")
    assert add_business_days(short_friday, utc(2026, 3, 5, 15)) == utc(2026, 3, 6, 11, 59)
    assert add_business_days(short_friday, utc(2026, 3, 5, 9)) == utc(2026, 3, 6, 9)
    # A gap inside the target day moves the result to the next opening that day.
    odd = hours("Mon 09:00-17:00 UTC, Tue 09:00-10:00 UTC, Tue 15:00-16:00 UTC")
    assert add_business_days(odd, utc(2026, 3, 2, 12)) == utc(2026, 3, 3, 15)


def test_add_business_day_over_midnight_shifts() -> None:
    nights = hours("Mon-Fri 22:00-06:00 UTC")
    assert add_business_days(nights, utc(2026, 3, 2, 23)) == utc(2026, 3, 3, 23)
    # Tuesday 02:00 belongs to Monday's shift, so one business day later is Wednesday 02:00.
    assert add_business_days(nights, utc(2026, 3, 3, 2)) == utc(2026, 3, 4, 2)
    # Saturday 05:00 belongs to Friday's shift -> Monday's shift, 7 hours in.
    assert add_business_days(nights, utc(2026, 3, 7, 5)) == utc(2026, 3, 10, 5)


def test_add_business_day_with_overlapping_ranges_still_moves_forward() -> None:
    overlap = hours("Mon 22:00-10:00 UTC, Tue 08:00-09:20 UTC")
    start = utc(2026, 3, 3, 9, 25)  # inside Monday's shift, after Tuesday's short range closed
    result = add_business_days(overlap, start)
    assert result > start
    assert is_open(overlap, result)
    assert result == utc(2026, 3, 9, 22) + timedelta(hours=11, minutes=25)


def test_add_business_day_result_is_always_open() -> None:
    calendars = [
        hours("Mon-Fri 09:00-17:00 Europe/Berlin"),
        hours("Mon-Fri 09:00-12:00 UTC, Mon-Fri 13:00-17:00 UTC"),
        hours("Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC", ("2026-03-12",)),
        hours("Mon-Fri 22:00-06:00 America/Los_Angeles"),
        hours("Fri-Mon 20:00-04:00 Etc/GMT-14"),
    ]
    for calendar in calendars:
        for step in range(0, 24 * 14, 5):
            start = utc(2026, 3, 1) + timedelta(hours=step, minutes=7)
            result = add_business_days(calendar, start)
            assert result > start
            assert is_open(calendar, result), (str(calendar), start, result)
            assert result - start <= timedelta(days=5), (str(calendar), start, result)
