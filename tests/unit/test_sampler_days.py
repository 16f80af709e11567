"""The sampler's days: kept as far back as the lookback needs, begun at each namespace's own moment.

A quota's daily-peaks annotation changes (one write) when its namespace's day begins or its use
climbs above the day's peak. These tests hold the sampler to what a platform would notice: no burst
of writes at midnight, no peak lost within the lookback, and no annotation growing past it.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from headroom.core.history import (
    DailyPeaks,
    day_offset,
    keep_days,
    peak_within,
    record,
    recorded,
    sampler_day,
)

D = Decimal
MIDNIGHT = datetime(2026, 3, 10, tzinfo=UTC)
NAMESPACES = [f"team-{i}" for i in range(1000)]


def steady_peaks(namespace: str, now: datetime) -> DailyPeaks:
    """A namespace whose use has been 3 pods since long ago, recorded up to its current day."""
    today = sampler_day(now, day_offset(namespace))
    return {(today - timedelta(days=d)).isoformat(): {"pods": D(3)} for d in range(30)}


def test_a_days_bookkeeping_is_spread_over_the_day_not_written_at_midnight() -> None:
    """1 000 quotas with unchanging use, reconciled every 5 minutes for a day: each writes its
    annotation once that day, and no 5-minute cycle writes more than a few (no midnight burst)."""
    start = MIDNIGHT - timedelta(minutes=5)
    peaks = {ns: steady_peaks(ns, start) for ns in NAMESPACES}
    per_cycle = []
    for cycle in range(1, 24 * 12 + 1):
        now = start + timedelta(minutes=5 * cycle)
        writes = 0
        for ns in NAMESPACES:
            changed = recorded(peaks[ns], {"pods": D(3)}, sampler_day(now, day_offset(ns)), keep_days(timedelta(30)))
            if changed is not None:
                peaks[ns], writes = changed, writes + 1
        per_cycle.append(writes)
    assert sum(per_cycle) == len(NAMESPACES)  # one new day each, no more
    # Evenly spread, 1 000 / 288 cycles is about 3.5 a cycle; all at midnight would be 1 000.
    assert max(per_cycle) <= 15, sorted(per_cycle)[-5:]


def test_a_namespaces_day_begins_at_the_same_moment_in_every_process() -> None:
    assert day_offset("payments") == day_offset("payments")
    assert all(timedelta(0) <= day_offset(ns) < timedelta(days=1) for ns in NAMESPACES)
    # The name, not the process's hash seed, decides: a fixed value, checked once.
    assert (
        day_offset("payments").total_seconds()
        == int.from_bytes(hashlib.sha256(b"payments").digest()[:4], "big") % 86_400
    )


def test_nothing_to_write_when_use_stays_within_todays_peak() -> None:
    today = date(2026, 3, 10)
    peaks = {"2026-03-10": {"pods": D(5), "requests.cpu": D(2)}}
    assert recorded(peaks, {"pods": D(5), "requests.cpu": D("1.5")}, today, 30) is None
    assert recorded(peaks, {"pods": D(6)}, today, 30) == {"2026-03-10": {"pods": D(6), "requests.cpu": D(2)}}
    # A resource not seen today yet is new today: written.
    assert recorded(peaks, {"requests.memory": D(1)}, today, 30) is not None


def test_old_days_leave_with_the_next_write_not_in_a_write_of_their_own() -> None:
    """A year of peaks (kept before keeping followed the lookback) is not rewritten at once after an
    upgrade: it is trimmed to the lookback when the namespace's next day begins."""
    today = date(2026, 3, 10)
    year = {(today - timedelta(days=d)).isoformat(): {"pods": D(d % 7)} for d in range(400)}
    assert recorded(year, {"pods": D(0)}, today, keep_days(timedelta(days=30))) is None
    trimmed = recorded(year, {"pods": D(0)}, today + timedelta(days=1), keep_days(timedelta(days=30)))
    assert trimmed is not None and len(trimmed) == 31


def test_keeping_follows_the_lookback() -> None:
    assert keep_days(timedelta(days=30)) == 30
    assert keep_days(timedelta(hours=36)) == 2
    assert keep_days(timedelta(minutes=5)) == 1
    peaks: DailyPeaks = {}
    for d in range(365):
        peaks = record(peaks, {"pods": D(1)}, date(2025, 1, 1) + timedelta(days=d), keep_days(timedelta(days=30)))
    assert len(peaks) == 31  # not 365 (55 KiB per quota after a year, before)


def test_no_peak_within_the_lookback_is_ever_lost() -> None:
    """A spike at any moment counts, for every namespace's day offset, as long as it lies within the
    lookback, also after days beyond the lookback were dropped; and it is gone at most one day
    after it left the lookback (a day counts while any part of it is within the lookback)."""
    rng = random.Random(13)
    for _ in range(2000):
        namespace = f"ns-{rng.randrange(10**6)}"
        offset = day_offset(namespace)
        lookback = timedelta(seconds=rng.randrange(3600, 90 * 86400))
        spike_at = MIDNIGHT + timedelta(seconds=rng.randrange(0, 86400 * 3))
        peaks = record({}, {"pods": D(9)}, sampler_day(spike_at, offset), keep_days(lookback))
        later = spike_at + timedelta(seconds=rng.randrange(0, int(lookback.total_seconds()) + 1))
        # Every sample after the spike records a lower use, and drops what the lookback no longer needs.
        step = timedelta(hours=6)
        moment = spike_at + step
        while moment <= later:
            peaks = record(peaks, {"pods": D(1)}, sampler_day(moment, offset), keep_days(lookback))
            moment += step
        peaks = record(peaks, {"pods": D(1)}, sampler_day(later, offset), keep_days(lookback))
        assert peak_within(peaks, "pods", later, lookback, offset) == D(9), (namespace, lookback, spike_at, later)
        gone_by = spike_at + lookback + timedelta(days=1)
        assert peak_within(peaks, "pods", gone_by, lookback, offset) in (D(1), None)


def test_days_recorded_by_utc_date_still_count_after_the_switch_to_offsets() -> None:
    """Annotations written before days had offsets are labelled by UTC date: read with an offset,
    each of their days counts at least as long as it did."""
    offset = timedelta(hours=7)
    peaks = {"2026-03-01": {"pods": D(9)}}
    lookback = timedelta(days=5)
    # The UTC reading counted this day up to 2026-03-06 23:59; with the offset, still then.
    assert peak_within(peaks, "pods", datetime(2026, 3, 6, 23, 59, tzinfo=UTC), lookback) == D(9)
    assert peak_within(peaks, "pods", datetime(2026, 3, 6, 23, 59, tzinfo=UTC), lookback, offset) == D(9)


def test_the_sampler_keeps_gpu_peaks_like_any_other_quota_resource() -> None:
    """The quota controller reports requests.nvidia.com/gpu in status.used; the sampler's days keep it."""
    from headroom.core.history import decode, encode, peak_within, recorded

    gpu = "requests.nvidia.com/gpu"
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    first = recorded({}, {gpu: Decimal(3), "requests.cpu": Decimal(2)}, (now - timedelta(days=2)).date(), 31)
    assert first is not None
    later = recorded(decode(encode(first)), {gpu: Decimal(1)}, now.date(), 31)
    assert later is not None
    assert peak_within(decode(encode(later)), gpu, now, timedelta(days=30)) == Decimal(3)
    assert peak_within(decode(encode(later)), gpu, now, timedelta(hours=12)) == Decimal(1)
