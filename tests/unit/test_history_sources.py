"""History sources: the file reader, the sampler's daily peaks, and the pure parts of the Prometheus source."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from headroom.core.history import DaySeries, HistoryResult, PeakQuery, decode, encode, peak_within, record
from headroom.core.quantity import GI, MI, round_up
from headroom.shell.history.file import FileHistory
from headroom.shell.history.prometheus import DEFAULT_QUERIES, _denoise, peak_query
from headroom.shell.history.sampler import SamplerHistory

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def query(
    namespaces: set[str] | None = None,
    resources: set[str] | None = None,
    lookback: timedelta = timedelta(days=7),
    now: datetime = NOW,
) -> PeakQuery:
    return PeakQuery(
        frozenset(namespaces or {"ns"}), frozenset(resources or {"requests.cpu", "requests.memory"}), lookback, now
    )


def read(path: Path, q: PeakQuery | None = None) -> HistoryResult:
    return asyncio.run(FileHistory(path).peaks(q or query()))


def csv_file(tmp_path: Path, *rows: str, header: str = "time,namespace,resource,value") -> Path:
    path = tmp_path / "history.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# --------------------------------------------------------------------------------------------- file


def test_csv_peak_is_the_maximum_per_namespace_and_resource(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "2026-03-09T10:00:00Z,ns,requests.cpu,1500m",
        "2026-03-09T11:00:00Z,ns,requests.cpu,2",
        "2026-03-09T12:00:00Z,ns,requests.cpu,1800m",
        "2026-03-09T12:00:00Z,ns,requests.memory,1Gi",
        "2026-03-09T13:00:00Z,ns,requests.memory,512Mi",
        "2026-03-09T13:00:00Z,other,requests.cpu,64",
    )
    result = read(path, query({"ns", "other"}))
    assert result.error is None
    assert result.complete
    assert result.peaks == {
        ("ns", "requests.cpu"): D(2),
        ("ns", "requests.memory"): GI,
        ("other", "requests.cpu"): D(64),
    }


def test_namespaces_and_resources_outside_the_query_are_ignored(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "2026-03-09T10:00:00Z,ns,requests.cpu,1",
        "2026-03-09T10:00:00Z,elsewhere,requests.cpu,100",
        "2026-03-09T10:00:00Z,ns,limits.cpu,100",
    )
    result = read(path)
    assert result.peaks == {("ns", "requests.cpu"): D(1)}
    # No sample for requests.memory: unknown (absent), never zero.
    assert result.peak("ns", "requests.memory") is None


def test_times_with_zones_and_unix_seconds(tmp_path: Path) -> None:
    # All three are 2026-03-09T10:00Z, one day and two hours before NOW; with a 1-day lookback
    # (window from 2026-03-09T12:00Z) none of them counts, and the sample at 12:00Z exactly does.
    path = csv_file(
        tmp_path,
        "2026-03-09T10:00:00Z,ns,requests.cpu,5",
        "2026-03-09T12:00:00+02:00,ns,requests.cpu,6",
        f"{1773050400},ns,requests.cpu,7",
        "2026-03-09T07:00:00-05:00,ns,requests.cpu,3",
    )
    # 1773050400 = 2026-03-09T10:00:00Z: 20521 days since 1970 (56 years, 14 leap days, 67 days of 2026)
    # x 86400 + 10 x 3600.
    assert (20454 + 31 + 28 + 8) * 86400 + 10 * 3600 == 1773050400
    assert read(path, query(lookback=timedelta(days=1))).peaks == {("ns", "requests.cpu"): D(3)}
    assert read(path, query(lookback=timedelta(days=2))).peaks == {("ns", "requests.cpu"): D(7)}


def test_fractional_unix_seconds(tmp_path: Path) -> None:
    path = csv_file(tmp_path, f"{NOW.timestamp() - 0.5},ns,requests.cpu,250m")
    assert read(path, query(lookback=timedelta(seconds=1))).peaks == {("ns", "requests.cpu"): D("0.25")}


def test_lookback_window_bounds(tmp_path: Path) -> None:
    week_ago = NOW - timedelta(days=7)
    path = csv_file(
        tmp_path,
        f"{(week_ago - timedelta(seconds=1)).isoformat()},ns,requests.cpu,100",  # just outside
        f"{week_ago.isoformat()},ns,requests.cpu,9",  # start of the window: in
        f"{NOW.isoformat()},ns,requests.cpu,4",  # now: in
        f"{(NOW + timedelta(seconds=1)).isoformat()},ns,requests.cpu,50",  # future: out
    )
    assert read(path).peaks == {("ns", "requests.cpu"): D(9)}


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text(
        json.dumps(
            [
                {"time": "2026-03-08T00:00:00Z", "namespace": "ns", "resource": "requests.memory", "value": "1500Mi"},
                {"time": 1773050400, "namespace": "ns", "resource": "requests.memory", "value": "2Gi"},
                {"time": "2026-03-09T00:00:00+01:00", "namespace": "ns", "resource": "requests.cpu", "value": 3},
            ]
        )
    )
    assert read(path).peaks == {("ns", "requests.memory"): 2 * GI, ("ns", "requests.cpu"): D(3)}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("yesterday,ns,requests.cpu,1", "yesterday"),
        ("2026-03-09T10:00:00,ns,requests.cpu,1", "no time zone"),
        ("2026-03-09T10:00:00Z,ns,requests.cpu,lots", "lots"),
    ],
)
def test_bad_rows_give_a_clear_error_naming_the_line(tmp_path: Path, row: str, expected: str) -> None:
    path = csv_file(tmp_path, "2026-03-09T09:00:00Z,ns,requests.cpu,1", row)
    result = read(path)
    assert result.error is not None
    assert expected in result.error
    assert f"{path}:3" in result.error  # the header is line 1
    assert result.peaks == {}


def test_missing_column_gives_a_clear_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "2026-03-09T09:00:00Z,ns,requests.cpu", header="time,namespace,resource")
    result = read(path)
    assert result.error is not None
    assert "missing column" in result.error
    assert "value" in result.error


def test_short_csv_row_gives_a_clear_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "2026-03-09T09:00:00Z,ns,requests.cpu")
    result = read(path)
    assert result.error is not None
    assert f"{path}:2" in result.error


def test_json_sample_that_is_not_an_object_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text('[["2026-03-09T09:00:00Z", "ns", "requests.cpu", "1"]]')
    result = read(path)
    assert result.error is not None


def test_out_of_range_unix_time_gives_a_clear_error(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "1e20,ns,requests.cpu,1")
    result = read(path)
    assert result.error is not None
    assert "1e20" in result.error


def test_negative_value_is_refused(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "2026-03-09T09:00:00Z,ns,requests.cpu,-2")
    result = read(path)
    assert result.error is not None
    assert "-2" in result.error


def test_json_that_is_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text('{"time": "2026-03-09T09:00:00Z"}')
    result = read(path)
    assert result.error is not None
    assert "list" in result.error


def test_json_that_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text("[{")
    assert read(path).error is not None


def test_missing_file(tmp_path: Path) -> None:
    result = read(tmp_path / "nope.csv")
    assert result.error is not None
    assert "nope.csv" in result.error
    assert not result.complete


def test_file_is_reread_on_every_query(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "2026-03-09T09:00:00Z,ns,requests.cpu,1")
    assert read(path).peaks == {("ns", "requests.cpu"): D(1)}
    csv_file(tmp_path, "2026-03-09T09:00:00Z,ns,requests.cpu,2")
    assert read(path).peaks == {("ns", "requests.cpu"): D(2)}


# --------------------------------------------------------------------------------------------- sampler

TODAY = date(2026, 3, 10)


def test_record_starts_today() -> None:
    assert record({}, {"pods": D(3)}, TODAY) == {"2026-03-10": {"pods": D(3)}}


def test_record_raises_todays_peaks_only_upward() -> None:
    peaks = {"2026-03-10": {"requests.cpu": D(2), "pods": D(5)}}
    updated = record(peaks, {"requests.cpu": D("1.5"), "pods": D(8), "requests.memory": 512 * MI}, TODAY)
    assert updated == {"2026-03-10": {"requests.cpu": D(2), "pods": D(8), "requests.memory": 512 * MI}}
    # The input is not modified.
    assert peaks == {"2026-03-10": {"requests.cpu": D(2), "pods": D(5)}}


def test_record_leaves_earlier_days_alone() -> None:
    peaks = {"2026-03-09": {"pods": D(1)}}
    assert record(peaks, {"pods": D(9)}, TODAY) == {"2026-03-09": {"pods": D(1)}, "2026-03-10": {"pods": D(9)}}


def test_record_drops_days_older_than_keep_days() -> None:
    peaks = {"2026-03-02": {"pods": D(1)}, "2026-03-03": {"pods": D(2)}, "2026-03-09": {"pods": D(3)}}
    # keep_days=7 from 2026-03-10: 2026-03-03 is the oldest day kept.
    updated = record(peaks, {"pods": D(4)}, TODAY, keep_days=7)
    assert sorted(updated) == ["2026-03-03", "2026-03-09", "2026-03-10"]


def test_encode_decode_round_trip() -> None:
    peaks = {
        "2026-03-09": {"requests.cpu": D("1.5"), "requests.memory": GI},
        "2026-03-10": {"pods": D(12), "requests.cpu": D("0.25")},
    }
    text = encode(peaks)
    assert decode(text) == peaks
    # Compact and in a stable order, so an unchanged mapping never causes a write.
    assert text == (
        '{"2026-03-09":{"requests.cpu":"1.5","requests.memory":"1073741824"},'
        '"2026-03-10":{"pods":"12","requests.cpu":"0.25"}}'
    )
    assert encode(decode(text)) == text


@pytest.mark.parametrize("text", [None, "", "not json", "[1, 2]", '"text"', "42", "{"])
def test_decode_tolerates_garbage(text: str | None) -> None:
    assert decode(text) == {}


def test_decode_keeps_what_is_intact() -> None:
    text = json.dumps(
        {
            "2026-03-08": {"pods": "3"},
            "2026-13-45": {"pods": "4"},  # not a date
            "yesterday": {"pods": "5"},
            "2026-03-09": "broken",
            "2026-03-10": {"pods": "many"},
        }
    )
    assert decode(text) == {"2026-03-08": {"pods": D(3)}}


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-1"])
def test_decode_drops_values_that_cannot_be_usage(bad: str) -> None:
    peaks = decode(json.dumps({"2026-03-10": {"pods": bad, "requests.cpu": "2"}}))
    assert all(v.is_finite() and v >= 0 for day in peaks.values() for v in day.values()), peaks
    # And recording today's use over it keeps working.
    record(peaks, {"pods": D(3)}, TODAY)


def test_peak_within_honours_the_lookback() -> None:
    peaks = {
        "2026-03-06": {"pods": D(50)},
        "2026-03-07": {"pods": D(20)},
        "2026-03-10": {"pods": D(8)},
        "2026-03-09": {"requests.cpu": D(4)},
    }
    # 3 days back from 2026-03-10 12:00 is 2026-03-07 12:00: that whole day counts, the 6th does not.
    assert peak_within(peaks, "pods", NOW, timedelta(days=3)) == D(20)
    assert peak_within(peaks, "pods", NOW, timedelta(days=4)) == D(50)
    assert peak_within(peaks, "pods", NOW, timedelta(hours=1)) == D(8)
    assert peak_within(peaks, "requests.memory", NOW, timedelta(days=30)) is None


def test_sampler_history_reads_each_namespace() -> None:
    daily = {
        "a": {"2026-03-09": {"pods": D(4), "requests.cpu": D(2)}, "2026-03-10": {"pods": D(6)}},
        "b": {"2026-01-01": {"pods": D(99)}},  # older than the lookback
    }
    asked: list[str] = []

    def peaks_of(namespace: str) -> dict[str, dict[str, Decimal]]:
        asked.append(namespace)
        return daily.get(namespace, {})

    result = asyncio.run(
        SamplerHistory(peaks_of).peaks(
            query({"a", "b", "c"}, {"pods", "requests.cpu", "requests.memory"}, timedelta(days=30))
        )
    )
    assert result.peaks == {("a", "pods"): D(6), ("a", "requests.cpu"): D(2)}
    assert result.error is None
    assert sorted(asked) == ["a", "b", "c"]
    # The days behind each peak, for forecasts: only where a peak is known, only within the lookback.
    assert result.daily == {
        ("a", "pods"): {date(2026, 3, 9): D(4), date(2026, 3, 10): D(6)},
        ("a", "requests.cpu"): {date(2026, 3, 9): D(2)},
    }


def test_sampler_daily_peaks_follow_the_namespace_day_offset() -> None:
    """The sampler's days begin at each namespace's own moment: the days it reports are the ones its
    peak is taken over, and it says where they begin."""
    from headroom.core.history import day_offset

    namespace = "team-a"
    offset = day_offset(namespace)
    now = datetime(2026, 3, 10, tzinfo=UTC) + offset + timedelta(hours=1)  # an hour into the day of the 10th
    daily = {namespace: {"2026-03-06": {"pods": D(1)}, "2026-03-07": {"pods": D(2)}, "2026-03-10": {"pods": D(3)}}}
    # Three days back is an hour into the sampler day of the 7th: the 7th counts, the 6th does not.
    result = asyncio.run(
        SamplerHistory(lambda ns: daily.get(ns, {})).peaks(query({namespace}, {"pods"}, timedelta(days=3), now))
    )
    assert result.daily == {(namespace, "pods"): {date(2026, 3, 7): D(2), date(2026, 3, 10): D(3)}}
    assert result.day_offsets == {namespace: offset}
    assert result.peaks == {(namespace, "pods"): max(result.daily[(namespace, "pods")].values())}


def test_file_daily_peaks_are_the_peak_of_each_utc_day(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "2026-03-08T23:59:59Z,ns,requests.cpu,3",
        "2026-03-09T00:00:00Z,ns,requests.cpu,1",
        "2026-03-09T10:00:00+02:00,ns,requests.cpu,2",  # 08:00 UTC: still the 9th
        "2026-03-10T01:00:00+02:00,ns,requests.cpu,5",  # 23:00 UTC on the 9th
        "2026-03-10T11:00:00Z,ns,requests.cpu,4",
        "2026-03-01T11:00:00Z,ns,requests.cpu,9",  # older than the lookback
    )
    result = read(path, query(resources={"requests.cpu", "requests.memory"}))
    assert result.daily == {
        ("ns", "requests.cpu"): {date(2026, 3, 8): D(3), date(2026, 3, 9): D(5), date(2026, 3, 10): D(4)}
    }
    assert result.day_offsets == {}  # UTC days
    assert ("ns", "requests.memory") not in result.daily  # no samples: unknown, not an empty history


def test_the_oldest_day_of_a_file_lookback_counts_whole_so_it_holds_still_between_resyncs(tmp_path: Path) -> None:
    """The window starts mid-day on the 3rd; that day's peak (at 02:00, before the start) stays its
    peak for as long as the day is in the lookback, so the days and the forecast do not drift."""
    path = csv_file(
        tmp_path,
        "2026-03-03T02:00:00Z,ns,pods,9",
        "2026-03-03T20:00:00Z,ns,pods,4",
        "2026-03-04T12:00:00Z,ns,pods,5",
    )
    seen = [
        read(path, query(resources={"pods"}, now=NOW + timedelta(minutes=minutes))).daily[("ns", "pods")]
        for minutes in (0, 5, 300, 600)  # the window's start passes 12:00, 12:05, 17:00 and 22:00 on the 3rd
    ]
    assert all(days == {date(2026, 3, 3): D(9), date(2026, 3, 4): D(5)} for days in seen)
    # The peak over the window is still the window's own: 02:00 on the 3rd is outside it.
    assert read(path, query(resources={"pods"})).peaks == {("ns", "pods"): D(5)}


# --------------------------------------------------------------------------------------------- Prometheus


def test_peak_query_wraps_the_template_in_a_max_over_time_subquery() -> None:
    template = 'sum by (namespace) (my_metric{{namespace=~"{namespaces}"}})'
    promql = peak_query(template, frozenset({"web", "api"}), 7 * 86400, "5m")
    # Namespaces sorted, so the same set always gives the same query; 7 days = 604800 s.
    assert promql == 'max_over_time((sum by (namespace) (my_metric{namespace=~"api|web"}))[604800s:5m])'


def test_default_requests_cpu_query() -> None:
    promql = peak_query(DEFAULT_QUERIES["requests.cpu"], frozenset({"ns"}), 3600, "1m")
    assert promql == (
        "max_over_time((sum by (namespace) (kube_pod_container_resource_requests"
        '{resource="cpu", unit="core", namespace=~"ns"} * on (namespace, pod) group_left () '
        'max by (namespace, pod) (kube_pod_status_phase{phase=~"Pending|Running", namespace=~"ns"} == 1)))'
        "[3600s:1m])"
    )


def test_default_pods_query_counts_live_pods() -> None:
    promql = peak_query(DEFAULT_QUERIES["pods"], frozenset({"ns"}), 60, "30s")
    assert promql == (
        "max_over_time((count by (namespace) (max by (namespace, pod) (kube_pod_status_phase"
        '{phase=~"Pending|Running", namespace=~"ns"} == 1)))[60s:30s])'
    )


def test_default_memory_and_limits_queries_use_their_series() -> None:
    memory = peak_query(DEFAULT_QUERIES["requests.memory"], frozenset({"ns"}), 60, "1m")
    limits = peak_query(DEFAULT_QUERIES["limits.cpu"], frozenset({"ns"}), 60, "1m")
    assert 'kube_pod_container_resource_requests{resource="memory", unit="byte"' in memory
    assert 'kube_pod_container_resource_limits{resource="cpu", unit="core"' in limits


@pytest.mark.parametrize(
    "bad", ["Payments", "a.b", "a_b", 'x"} or vector(1) #', "-lead", "trail-", "", "a" * 64, "ns|.*"]
)
def test_peak_query_refuses_what_is_not_a_namespace_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not namespace names"):
        peak_query(DEFAULT_QUERIES["pods"], frozenset({"good", bad}), 60, "1m")


def test_peak_query_accepts_the_longest_dns_label() -> None:
    name = "a" + "-" * 61 + "z"
    assert f'namespace=~"{name}"' in peak_query(DEFAULT_QUERIES["pods"], frozenset({name}), 60, "1m")


@pytest.mark.parametrize(
    ("raw", "resource", "expected"),
    [
        ("3.3000000000000003", "requests.cpu", "3.3"),  # 1.1 + 1.1 + 1.1 in float64
        ("0.30000000000000004", "limits.cpu", "0.3"),
        ("1073741824.0000002", "requests.memory", "1073741824"),
        ("6.999999999999999", "pods", "7"),
        ("0.0000004", "requests.cpu", "0"),  # below a millionth of a core: noise
        ("0.1234565", "requests.cpu", "0.123456"),  # halves go to even
        ("0.1234575", "requests.cpu", "0.123458"),
    ],
)
def test_denoise_drops_float_noise(raw: str, resource: str, expected: str) -> None:
    assert _denoise(D(raw), resource) == D(expected)


def test_denoised_peak_does_not_gain_a_millicore() -> None:
    noisy = D("3.3000000000000003")
    # Without denoising, 3.3000000000000003 x 1.2 = 3.96000000000000036 rounds up to 3961m.
    assert round_up(noisy * D("1.2"), "requests.cpu") == D("3.961")
    assert round_up(_denoise(noisy, "requests.cpu") * D("1.2"), "requests.cpu") == D("3.96")


def test_prometheus_asks_kube_state_metrics_for_gpus_by_their_label() -> None:
    """kube-state-metrics writes nvidia.com/gpu as resource="nvidia_com_gpu", unit="integer"."""
    from headroom.shell.history.prometheus import DEFAULT_QUERIES, query_for

    gpu = query_for("requests.nvidia.com/gpu", DEFAULT_QUERIES)
    assert gpu is not None and 'resource="nvidia_com_gpu", unit="integer"' in gpu
    pages = query_for("requests.hugepages-2Mi", DEFAULT_QUERIES)
    assert pages is not None and 'resource="hugepages_2Mi", unit="byte"' in pages
    assert query_for("requests.cpu", DEFAULT_QUERIES) == DEFAULT_QUERIES["requests.cpu"]
    assert query_for("memory", DEFAULT_QUERIES) == DEFAULT_QUERIES["requests.memory"]  # the same in a quota
    # No series counts these per namespace: unknown, never zero.
    assert query_for("count/jobs.batch", DEFAULT_QUERIES) is None
    assert query_for("gold.storageclass.storage.k8s.io/requests.storage", DEFAULT_QUERIES) is None


def test_kept_daily_peaks_answer_as_the_days_they_were_made_from() -> None:
    days = {date(2026, 11, 28): Decimal("1.5"), date(2026, 12, 1): Decimal("0"), date(2026, 11, 30): Decimal("2")}
    kept = DaySeries(days)
    assert kept == days and days == kept  # equal both ways, so an unchanged answer is seen as unchanged
    assert list(kept) == sorted(days)  # oldest first, and a day with no peak is not a day of zero
    assert len(kept) == 3 and date(2026, 11, 29) not in kept and kept.get(date(2026, 11, 29)) is None
    assert kept[date(2026, 12, 1)] == Decimal("0")  # a peak of zero is a peak
    assert DaySeries({}) == {} and len(DaySeries({})) == 0
    assert DaySeries(days) != {**days, date(2026, 12, 2): Decimal("1")}
    # Kept compact or not, a series gives back exactly the values put in, finer ones included.
    fine = {date(2026, 11, 28): Decimal("0.0001"), date(2026, 11, 29): Decimal("134217728")}
    assert DaySeries(fine) == fine and dict(DaySeries(fine)) == fine and DaySeries(fine) != DaySeries(days)
    huge = {date(2026, 11, 28): Decimal("1.0000000000000000000000000001")}
    assert DaySeries(huge)[date(2026, 11, 28)] == huge[date(2026, 11, 28)]
    assert DaySeries({date(2026, 11, 28): Decimal("0.1")}) == DaySeries({date(2026, 11, 28): Decimal("0.100")})


class CountingFileHistory(FileHistory):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    def _read(self, queries: list[PeakQuery]) -> list[HistoryResult]:
        self.reads += 1
        return super()._read(queries)


def test_questions_asked_while_the_file_is_read_share_the_next_read_and_each_gets_its_own_answer(
    tmp_path: Path,
) -> None:
    # A burst of new Projects asks about one namespace each: reading the whole file for each of
    # them at once starved the operator at 10,000 namespaces.
    rows = [f"{(NOW - timedelta(days=d)).isoformat()},ns-{i},requests.cpu,{i + d}" for i in range(30) for d in (1, 9)]
    path = csv_file(tmp_path, *rows)
    source = CountingFileHistory(path)
    questions = [query({f"ns-{i}"}, {"requests.cpu"}, lookback=timedelta(days=7 if i % 2 else 30)) for i in range(30)]

    async def ask_all() -> list[HistoryResult]:
        return await asyncio.gather(*(source.peaks(q) for q in questions))

    answers = asyncio.run(ask_all())
    assert source.reads <= 2
    for i, answer in enumerate(answers):
        # its own namespace only, over its own lookback: 30 days see the sample of 9 days ago
        assert answer.peaks == {(f"ns-{i}", "requests.cpu"): D(i + 1 if i % 2 else i + 9)}
        assert answer == asyncio.run(FileHistory(path).peaks(questions[i]))  # as if asked alone


def test_an_asker_that_goes_away_does_not_take_the_others_answers_with_it(tmp_path: Path) -> None:
    path = csv_file(tmp_path, f"{NOW.isoformat()},a,requests.cpu,1", f"{NOW.isoformat()},b,requests.cpu,2")
    source = FileHistory(path)

    async def run() -> HistoryResult:
        gone = asyncio.create_task(source.peaks(query({"a"}, {"requests.cpu"})))
        stays = asyncio.create_task(source.peaks(query({"b"}, {"requests.cpu"})))
        await asyncio.sleep(0)
        gone.cancel()
        return await stays

    assert asyncio.run(run()).peaks == {("b", "requests.cpu"): D(2)}


def test_a_bad_row_fails_only_the_questions_that_want_it_even_when_read_together(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "2026-03-09T09:00:00Z,a,requests.cpu,1", "2026-03-09T09:00:00Z,b,requests.cpu,lots")
    source = FileHistory(path)

    async def ask() -> list[HistoryResult]:
        return await asyncio.gather(*(source.peaks(query({ns}, {"requests.cpu"})) for ns in ("a", "b")))

    good, bad = asyncio.run(ask())
    assert good.error is None and good.peaks == {("a", "requests.cpu"): D(1)}
    assert bad.error is not None and "lots" in bad.error and f"{path}:3" in bad.error
    assert bad.peaks == {}
