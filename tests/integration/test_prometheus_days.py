"""The Prometheus source's daily peaks against a real Prometheus: what it asks and what it answers.

History is backfilled into a real Prometheus (tests/harness/prometheus.py); the source is asked as
the operator asks it, with the clock injected (PeakQuery.now), and Prometheus' query log says what
it was asked. Days are UTC days; the oldest day of a lookback counts whole.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from headroom.core import prometheus_days as days
from headroom.core.history import PeakQuery
from headroom.shell.history.cache import HistoryCache
from headroom.shell.history.prometheus import DEFAULT_QUERIES, DEFAULT_RULES, PrometheusHistory
from headroom.shell.metrics import Metrics

from tests.harness.prometheus import PodSegment, Prometheus, pod

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
NS = "daily-team"
LOOKBACK = timedelta(days=3)
RESOURCES = frozenset({"pods", "requests.cpu"})
CPU = {"requests.cpu": "1"}


def _t0() -> datetime:
    """Noon-ish a day ago: the source is asked at t0, then up to a day later, all in the past."""
    return days.align(datetime.now(UTC) - timedelta(days=1, hours=1), timedelta(minutes=1))


def _history(t0: datetime) -> list[PodSegment]:
    """Pods of 1 CPU, at 01:00 of each day: 5 on day D-3, 2 on D-2, 3 on D-1, and 1 just before t0
    on D (the day of t0). 40 on D-10, far outside every lookback."""
    d = days.utc_day(t0)
    segments: list[PodSegment] = []
    for back, count in ((10, 40), (3, 5), (2, 2), (1, 3)):
        start = days.midnight(d - timedelta(days=back)) + timedelta(hours=1)
        segments += [pod(NS, f"d{back}-{i}", start, start + timedelta(minutes=30), app=CPU) for i in range(count)]
    return [*segments, pod(NS, "today", t0 - timedelta(minutes=30), t0 - timedelta(minutes=20), app=CPU)]


def _source(prometheus: Prometheus, **extra: Any) -> PrometheusHistory:
    return PrometheusHistory(prometheus.url, step="1m", timeout=10, attempts=1, rules={}, **extra)


def _ask(source: PrometheusHistory, now: datetime, lookback: timedelta = LOOKBACK) -> Any:
    return asyncio.run(source.peaks(PeakQuery(frozenset({NS}), RESOURCES, lookback, now)))


def _windows(entries: list[dict[str, Any]]) -> list[tuple[datetime, datetime, bool]]:
    """(first point read, evaluation time, range query?) of each logged query."""
    out = []
    for entry in entries:
        params = entry["params"]
        start, end = (datetime.fromisoformat(params[k].replace("Z", "+00:00")) for k in ("start", "end"))
        match = re.search(r"\[(\d+)s:1m\]\)$", params["query"])
        assert match, params["query"]
        out.append((start - timedelta(seconds=int(match.group(1))), end, params["step"] > 0))
    return out


@pytest.fixture
def history(prometheus_factory: Callable[..., Prometheus]) -> tuple[Prometheus, datetime]:
    t0 = _t0()
    return prometheus_factory(_history(t0)), t0


def test_start_up_asks_every_day_once_and_finds_the_lookback_peak(history: tuple[Prometheus, datetime]) -> None:
    prometheus, t0 = history
    result = _ask(_source(prometheus), t0)
    assert result.complete
    # Day D-3 counts whole (its pods were at 01:00, before t0's time of day three days back).
    assert result.peaks == {(NS, "pods"): Decimal(5), (NS, "requests.cpu"): Decimal(5)}
    # Each day's peak, for forecasts: D-3..D-1 and today so far; D-10 is outside the lookback.
    d = days.utc_day(t0)
    assert result.daily[(NS, "pods")] == {
        d - timedelta(days=3): 5,
        d - timedelta(days=2): 2,
        d - timedelta(days=1): 3,
        d: 1,
    }
    asked = _windows(prometheus.asked())
    # Whole days D-3..D-1 in one range query per resource, today since midnight in one instant query.
    assert sorted((r, end) for _, end, r in asked) == sorted(
        [(True, days.midnight(days.utc_day(t0)))] * 2 + [(False, t0)] * 2
    )
    assert min(first for first, _, _ in asked) == days.midnight(days.utc_day(t0) - timedelta(days=3))


def test_steady_cycle_asks_only_the_window_since_the_last_answer(history: tuple[Prometheus, datetime]) -> None:
    prometheus, t0 = history
    source = _source(prometheus)
    _ask(source, t0)
    before = len(prometheus.asked())
    result = _ask(source, t0 + timedelta(minutes=5))
    assert result.peaks == {(NS, "pods"): Decimal(5), (NS, "requests.cpu"): Decimal(5)}
    asked = _windows(prometheus.asked()[before:])
    assert asked == [(t0, t0 + timedelta(minutes=5), False)] * 2


def test_a_day_leaves_the_lookback_without_a_query(history: tuple[Prometheus, datetime]) -> None:
    prometheus, t0 = history
    source = _source(prometheus)
    assert _ask(source, t0).peaks[(NS, "pods")] == 5
    before = len(prometheus.asked())
    # A day later D-3 (5 pods) is out of the lookback: D-1's 3 pods are the peak.
    result = _ask(source, t0 + timedelta(days=1))
    assert result.peaks == {(NS, "pods"): Decimal(3), (NS, "requests.cpu"): Decimal(3)}
    # Only the day since t0 was asked (up to midnight, then since midnight): no old day again.
    asked = _windows(prometheus.asked()[before:])
    assert all(first >= t0 for first, _, _ in asked), asked
    assert {end for _, end, _ in asked} == {days.midnight(days.utc_day(t0) + days.DAY), t0 + timedelta(days=1)}


def test_restart_asks_only_what_the_annotation_does_not_keep(history: tuple[Prometheus, datetime]) -> None:
    prometheus, t0 = history
    first = _source(prometheus)
    _ask(first, t0)
    kept = first.kept_text(NS)
    assert kept is not None and days.persisted_through(kept) == days.utc_day(t0) - days.DAY
    before = len(prometheus.asked())
    # A new process, with the closed days read back from the quota's annotation.
    second = _source(prometheus, kept=lambda namespace: kept if namespace == NS else None)
    result = _ask(second, t0)
    assert result.peaks == {(NS, "pods"): Decimal(5), (NS, "requests.cpu"): Decimal(5)}
    midnight = days.midnight(days.utc_day(t0))
    assert _windows(prometheus.asked()[before:]) == [(midnight, t0, False)] * 2


def test_prometheus_down_keeps_the_peak_and_resumes_from_the_last_answer(
    history: tuple[Prometheus, datetime],
) -> None:
    prometheus, t0 = history
    now = [t0]
    cache = HistoryCache(_source(prometheus), max_age=timedelta(minutes=5), metrics=Metrics(), clock=lambda: now[0])

    async def refresh() -> Any:
        await cache.refresh_all({LOOKBACK: {(NS, r) for r in RESOURCES}})
        return await cache.get({NS}, set(RESOURCES), LOOKBACK)

    assert asyncio.run(refresh()).peaks[(NS, "pods")] == 5
    prometheus.stop()
    now[0] = t0 + timedelta(minutes=5)
    down = asyncio.run(refresh())
    # Unknown is never a lower peak: the last good answer stays, and the error says why.
    assert down.error is not None and "unavailable" in down.error
    assert down.peaks == {(NS, "pods"): Decimal(5), (NS, "requests.cpu"): Decimal(5)}
    prometheus.start()
    before = len(prometheus.asked())
    now[0] = t0 + timedelta(minutes=10)
    back = asyncio.run(refresh())
    assert back.error is None and back.peaks[(NS, "pods")] == 5
    # The window since the last answer (t0), not the days again.
    assert _windows(prometheus.asked()[before:]) == [(t0, t0 + timedelta(minutes=10), False)] * 2


def _backfill_series(prometheus: Prometheus, lines: list[str], workdir: Path) -> None:
    source = workdir / "rules.om"
    source.write_text("\n".join(lines) + "\n# EOF\n")
    subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            "--max-block-duration=720h",
            str(source),
            str(prometheus.data_dir),
        ],
        check=True,
        capture_output=True,
    )


def test_recording_rules_are_read_where_they_exist_and_the_raw_series_elsewhere(
    prometheus_factory: Callable[..., Prometheus], tmp_path: Path
) -> None:
    t0 = _t0()
    prometheus = prometheus_factory(_history(t0), start=False)
    # The pods rule recorded since four days back, saying 9 pods on D-2 (the raw series say 2): the
    # answer shows which was read. No CPU rule: CPU comes from the raw series.
    record = DEFAULT_RULES["pods"]
    d = days.utc_day(t0)
    start = int(days.midnight(d - timedelta(days=4)).timestamp())
    spike = int((days.midnight(d - timedelta(days=2)) + timedelta(hours=5)).timestamp())
    lines = [f"# TYPE {record} gauge"] + [
        f'{record}{{namespace="{NS}"}} {9 if t == spike else 1} {t}' for t in range(start, int(t0.timestamp()) + 1, 60)
    ]
    _backfill_series(prometheus, lines, tmp_path)
    prometheus.start()
    source = PrometheusHistory(prometheus.url, step="1m", timeout=10, attempts=1)
    result = _ask(source, t0)
    assert result.peaks == {(NS, "pods"): Decimal(9), (NS, "requests.cpu"): Decimal(5)}
    queries = [e["params"]["query"] for e in prometheus.asked()]
    pods_queries = [q for q in queries if not q.startswith("count(") and "resource=" not in q]
    assert pods_queries and all(record in q and "kube_pod_status_phase{" not in q for q in pods_queries)
    assert any("kube_pod_container_resource_requests" in q for q in queries)


def _shipped_rules() -> dict[str, str]:
    """record -> expr of every recording rule in manifests/monitoring/."""
    rules: dict[str, str] = {}
    for name in ("recording-rules.yaml", "kubernetes-mixin-rules.yaml"):
        manifest = yaml.safe_load((MONITORING / name).read_text())
        for group in manifest["spec"]["groups"]:
            rules.update({rule["record"]: rule["expr"] for rule in group["rules"]})
    return rules


def test_shipped_recording_rules_record_what_the_raw_queries_compute(
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    now = days.align(datetime.now(UTC), timedelta(minutes=1)) - timedelta(minutes=10)
    start, end = now - timedelta(minutes=30), now + timedelta(minutes=5)
    full = {
        "requests.cpu": "250m",
        "limits.cpu": "1",
        "requests.memory": "128Mi",
        "limits.memory": "256Mi",
        "requests.ephemeral-storage": "1Gi",
        "limits.ephemeral-storage": "2Gi",
    }
    prometheus = prometheus_factory(
        [
            pod(NS, "web-1", start, end, app=full, sidecar={"requests.cpu": "100m", "requests.memory": "64Mi"}),
            pod(NS, "web-2", start, end, phase="Pending", app=full),
            pod(NS, "done", start, end, phase="Succeeded", app=full),  # holds nothing: not counted
            pod(f"{NS}-other", "web-1", start, end, app=full),
        ]
    )
    rules = _shipped_rules()
    assert set(DEFAULT_RULES.values()) == set(rules), "every rule Headroom reads is shipped, and only those"
    for resource, record in DEFAULT_RULES.items():
        raw = DEFAULT_QUERIES[resource].format(namespaces=f"{NS}|{NS}-other")
        recorded = f"sum by (namespace) ({rules[record]})"
        want = {r["metric"]["namespace"]: Decimal(r["value"][1]) for r in prometheus.query(raw, now)}
        got = {r["metric"]["namespace"]: Decimal(r["value"][1]) for r in prometheus.query(recorded, now)}
        assert want and got == want, (resource, got, want)


def test_a_question_too_big_for_prometheus_is_asked_again_in_halves(tmp_path: Path) -> None:
    t0 = _t0()
    # Three days of this history hold about 5 500 samples at once, one day about 2 000.
    prometheus = Prometheus(tmp_path / "small", flags=("--query.max-samples=4000",)).backfill(_history(t0))
    prometheus.start()
    try:
        result = _ask(_source(prometheus), t0)
        assert result.complete, result.error
        assert result.peaks == {(NS, "pods"): Decimal(5), (NS, "requests.cpu"): Decimal(5)}
        # Unrefused, the start-up is 4 questions (days and today, per resource): here more, smaller.
        assert result.queries > 4
        # Per resource: the three days in one question (refused), then one day and two days.
        spans = [
            datetime.fromisoformat(p["end"].replace("Z", "+00:00"))
            - datetime.fromisoformat(p["start"].replace("Z", "+00:00"))
            for e in prometheus.asked()
            if (p := e["params"])["step"] > 0
        ]
        assert spans == [timedelta(days=2), timedelta(0), timedelta(days=1)] * 2
    finally:
        prometheus.stop()


def test_a_short_lookback_is_asked_directly_every_cycle(history: tuple[Prometheus, datetime]) -> None:
    prometheus, t0 = history
    source = _source(prometheus)
    for now in (t0, t0 + timedelta(minutes=5)):
        # One hour back from t0: the pod of 10 minutes, 20 minutes before it; the days do not count.
        result = _ask(source, now, timedelta(hours=1))
        assert result.complete
        assert result.peaks == {(NS, "pods"): Decimal(1), (NS, "requests.cpu"): Decimal(1)}
        assert result.daily == {}  # no daily peaks known: forecasts are not made from an hour
    asked = _windows(prometheus.asked())
    assert (
        asked
        == [(t0 - timedelta(hours=1), t0, False)] * 2
        + [(t0 - timedelta(minutes=55), t0 + timedelta(minutes=5), False)] * 2
    )
