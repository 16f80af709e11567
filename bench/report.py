"""Ratios and the Markdown report of a benchmark run; also merges the results of several runs.

python -m bench.report bench/results/A.json bench/results/B.json            # print Markdown
python -m bench.report --write bench/results/A.json bench/results/B.json    # -> latest.json/.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import apimetrics

RESULTS = Path(__file__).resolve().parent / "results"


WATCH_BYTES = "steady.apiserver.watch_bytes_per_project_per_hour"


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


# (label, path under headroom, path under baseline, unit). The ratio is Headroom's / the baseline's.
# The competent cron job's column reads the baseline's path under baseline.competent (steady state).
ROWS: list[tuple[str, str, str, str]] = [
    ("convergence p50", "convergence.p50_s", "convergence.p50_s", "s"),
    ("convergence p95", "convergence.p95_s", "convergence.p95_s", "s"),
    ("convergence p99", "convergence.p99_s", "convergence.p99_s", "s"),
    ("all N converged after", "convergence.all_s", "convergence.all_s", "s"),
    ("Project status Ready p50", "convergence.status_ready.p50_s", "", "s"),
    ("Project status Ready p99", "convergence.status_ready.p99_s", "", "s"),
    ("requests during convergence", "convergence.requests.total", "convergence.requests.total", ""),
    ("  of which writes", "convergence.requests.writes", "convergence.requests.writes", ""),
    ("  writes per project", "convergence.requests.writes_per_project", "convergence.requests.writes_per_project", ""),
    ("  LIST calls", "convergence.requests.lists", "convergence.requests.lists", ""),
    (
        "  peak requests in one second",
        "convergence.requests.peak_per_second",
        "convergence.requests.peak_per_second",
        "",
    ),
    ("steady state: requests", "steady.requests.total", "steady.requests.total", ""),
    (
        "steady state: requests per project per hour",
        "steady.requests.per_project_per_hour",
        "steady.requests.per_project_per_hour",
        "",
    ),
    (
        "steady state: writes per project per hour",
        "steady.requests.writes_per_project_per_hour",
        "steady.requests.writes_per_project_per_hour",
        "",
    ),
    ("steady state: LIST calls", "steady.requests.lists", "steady.requests.lists", ""),
    (
        "steady state: bytes answered per project per hour (API server, watch streams apart)",
        "steady.apiserver.answered_bytes_per_project_per_hour",
        "steady.apiserver.answered_bytes_per_project_per_hour",
        "B",
    ),
    (
        "steady state: bytes of watch streams that ended, per project per hour (anyone's, opened any time)",
        WATCH_BYTES,
        WATCH_BYTES,
        "B",
    ),
    (
        "steady state: API server CPU per hour",
        "steady.apiserver.cpu_s_per_hour",
        "steady.apiserver.cpu_s_per_hour",
        "s",
    ),
    (
        "steady state: peak requests in one second",
        "steady.requests.peak_per_second",
        "steady.requests.peak_per_second",
        "",
    ),
    ("usage reads per cycle", "history.max_queries_per_cycle", "reads_per_cycle", ""),
    ("RSS after steady state", "steady.process.end.rss_mib", "steady.process.end.rss_mib", "MiB"),
    ("peak RSS (VmHWM) up to the steady state", "steady.process.end.hwm_mib", "steady.process.end.hwm_mib", "MiB"),
    ("peak RSS of a restart (VmHWM)", "restart.process.hwm_mib", "", "MiB"),
    ("one new Project among N steady: p50", "single_project.p50_s", "", "s"),
    ("one new Project among N steady: p99", "single_project.p99_s", "", "s"),
    ("one new Project during derivation cycles: p99", "history.single_project.p99_s", "", "s"),
    ("sampler (default source): writes per project per day", "sampler.steady.writes_per_project_per_day", "", ""),
    (
        "sampler (default source): steady requests per project per hour",
        "sampler.steady.requests.per_project_per_hour",
        "",
        "",
    ),
    (
        "sampler (default source): steady bytes answered per project per hour (API server, watch streams apart)",
        "sampler.steady.apiserver.answered_bytes_per_project_per_hour",
        "",
        "B",
    ),
    ("sampler: writes on its first start over governed quotas", "sampler.first_start.requests.writes", "", ""),
    ("leader election (2 replicas): requests per hour", "sampler.leader_election.requests_per_hour", "", ""),
    ("CPU during convergence", "convergence.process.cpu_s", "convergence.process.cpu_s", "s"),
    ("CPU per hour of steady state", "steady.process.cpu_s_per_hour", "steady.process.cpu_s_per_hour", "s"),
]


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return round(a / b, 4)


def add_ratios(size: dict[str, Any]) -> None:
    h, b = size.get("headroom"), size.get("baseline")
    if not h or not b:
        return
    # The watch streams that ended in a window are anyone's, opened at any time: no contender's to divide.
    size["ratios"] = {
        label.strip(): _ratio(_get(h, hp), _get(b, bp)) for label, hp, bp, _ in ROWS if bp and hp != WATCH_BYTES
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def _ratio_text(value: Any) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.2g}" if value < 10 else f"{value:,.0f}"


def _breakdown(size: dict[str, Any]) -> list[str]:
    columns = [
        ("Headroom convergence", "headroom", "convergence.requests"),
        ("Headroom steady", "headroom", "steady.requests"),
        ("Headroom restart", "headroom", "restart.requests"),
        ("Headroom start-up", "headroom", "startup"),
        ("baseline convergence", "baseline", "convergence.requests"),
        ("baseline steady", "baseline", "steady.requests"),
        ("competent steady", "baseline", "competent.steady.requests"),
        ("Headroom sampler + election steady", "headroom", "sampler.steady.requests"),
    ]
    data = [(title, _get(size.get(who) or {}, path + ".by_verb_resource") or {}) for title, who, path in columns]
    keys = sorted({k for _, counts in data for k in counts})
    if not keys:
        return []
    lines = [
        "| request (audit: verb resource) | " + " | ".join(t for t, _ in data) + " |",
        "|---|" + "---:|" * len(data),
    ]
    for key in keys:
        lines.append(f"| `{key}` | " + " | ".join(_fmt(counts.get(key, 0)) for _, counts in data) + " |")
    return lines


def render_size(size: dict[str, Any]) -> list[str]:
    n = size["n"]
    lines = [f"## N = {n:,} Projects", ""]
    if "error" in size:
        lines += [f"**Failed:** `{size['error'][:600]}` (what was measured before is below)", ""]
        if not size.get("headroom") and not size.get("baseline"):
            return lines
    h, b = size.get("headroom") or {}, size.get("baseline") or {}
    lines.append(
        f"{size.get('pods_per_namespace')} Pending pods per namespace; steady state "
        f"{size.get('steady_seconds'):.0f} s; Headroom `--resync-interval={h.get('resync_interval')}`; "
        f"baseline every {b.get('interval_s', 0):.0f} s; Kubernetes {size.get('kubernetes')}; "
        f"Headroom revision {size.get('revision', '?')}; "
        f"load average {size.get('loadavg_start')} → {size.get('loadavg_end')}."
    )
    if size.get("baseline_from"):
        other = size["baseline_from"]
        lines.append(
            f"The scripts' columns come from another run ({other.get('run')}, the same machine): "
            "each run measured only Headroom or only the scripts (`--only`)."
        )
    competent = b.get("competent") or {}
    lines += [
        "",
        "| | Headroom | naive script | Headroom ÷ naive | competent cron job |",
        "|---|---:|---:|---:|---:|",
    ]
    ratios = size.get("ratios") or {}
    for label, hp, bp, unit in ROWS:
        # The competent job's onboarding and steady state are timed and counted as the naive one's.
        shared = bp.startswith(("steady.", "convergence.p", "convergence.all_s", "convergence.requests")) and bp
        lines.append(
            f"| {label} | {_fmt(_get(h, hp), unit)} | {_fmt(_get(b, bp) if bp else None, unit)} | "
            f"{_ratio_text(ratios.get(label.strip()))} | "
            f"{_fmt(_get(competent, shared) if shared else None, unit)} |"
        )
    restart = _get(h, "restart.requests") or {}
    lines.append(f"| restart over governed quotas: writes | {_fmt(restart.get('writes'))} | n/a | |")
    lines.append(f"| restart over governed quotas: LIST calls | {_fmt(restart.get('lists'))} | n/a | |")
    lines.append("")
    notes = []
    conv = h.get("convergence") or {}
    if conv:
        wrong = (conv.get("wrong_values") or {}).get("count")
        notes.append(
            f"Headroom: {conv.get('converged')}/{conv.get('projects')} quotas governed; "
            f"{wrong} governed with values other than the history's derivation; quiet "
            f"{conv.get('quiet_after_governed_s')} s after the last one was governed."
        )
    deltas = _get(h, "steady.metric_deltas") or {}
    if deltas:
        cycles = sum(v for k, v in deltas.items() if k.startswith("headroom_history_fetch_seconds_count"))
        reconciles = deltas.get("headroom_reconcile_duration_seconds_count", 0)
        notes.append(
            f"Headroom's steady state held {cycles:.0f} history fetches (derivation cycles) and "
            f"{reconciles:.0f} reconciles; {_get(h, 'steady.requests.writes')} writes."
        )
    histogram = conv.get("writes_histogram") or {}
    if histogram:
        parts = [
            f"`{key}` " + ", ".join(f"{count}x for {projects}" for count, projects in by_count.items())
            for key, by_count in histogram.items()
        ]
        notes.append("Headroom writes per project during convergence: " + "; ".join(parts) + ".")
    if conv.get("events_by_reason"):
        notes.append(
            "Events Headroom posted during convergence: "
            + ", ".join(f"{count} {reason}" for reason, count in conv["events_by_reason"].items())
            + "."
        )
    issues = (h.get("operator_log_issues") or {}).get("count")
    if issues:
        notes.append(
            f"The operator logged {issues} warnings or errors (first: "
            f"`{(h['operator_log_issues']['first'] or [''])[0][:200]}`)."
        )
    errors = _get(h, "convergence.requests.errors") or {}
    startup_errors = _get(h, "startup.errors") or {}
    if errors or startup_errors:
        notes.append(
            f"Refused or failed Headroom requests: start-up {startup_errors or 'none'}, convergence {errors or 'none'}."
        )
    hist = h.get("history") or {}
    if hist:
        notes.append(
            f"History (fake Prometheus, `--resync-interval={hist.get('resync_interval')}`): "
            f"{hist.get('startup_queries')} queries at start-up (bursts {hist.get('startup_bursts')}), "
            f"then {hist.get('cycles')} cycles of {hist.get('queries_per_cycle')} queries, each query "
            f"covering {hist.get('namespaces_per_query')} namespaces; "
            f"{_get(hist, 'requests.writes')} API writes in that phase; "
            f"{hist.get('cpu_s_after_startup')} s of CPU in the {hist.get('seconds_after_startup')} s "
            "after the start-up reconciles."
        )
    election = _get(h, "sampler.leader_election") or {}
    if election:
        notes.append(
            f"Leader election (`--leader-elect`, a leader and a standby): {election.get('requests_per_hour')} "
            f"requests an hour ({election.get('by_verb')}), beside the watches; not in the steady-state rows."
        )
    for who, part, path in (
        ("Headroom's", h, "steady.apiserver"),
        ("the naive baseline's", b, "steady.apiserver"),
        ("the competent baseline's", b, "competent.steady.apiserver"),
    ):
        served = _get(part, path) or {}
        if served.get("bytes_by_request"):
            top = ", ".join(f"`{k}` {_fmt(v / 2**20, 'MiB')}" for k, v in list(served["bytes_by_request"].items())[:3])
            notes.append(f"API server bytes in {who} steady state, largest: {top}.")
    if b:
        ticks = [t for t in b.get("tick_seconds") or [] if t is not None]
        if ticks:
            notes.append(
                f"Baseline: {b.get('ticks')} runs, {min(ticks):.1f} to {max(ticks):.1f} s each, "
                f"{b.get('tick_errors')} errors."
            )
    notes += [str(note) for note in size.get("notes") or []]  # added after a run, from its kept logs
    lines += [f"- {note}" for note in notes]
    breakdown = _breakdown(size)
    if breakdown:
        lines += ["", "Requests by verb and resource, as the API server's audit log counted them:", "", *breakdown]
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    sizes = sorted(results.get("sizes") or [], key=lambda s: int(s.get("n") or 0))  # in any run order
    lines = [
        "# Headroom vs. a naive quota script: API cost",
        "",
        f"Run {results.get('started')} to {results.get('finished', '?')}, revision {results.get('revision')}, "
        f"{_get(results, 'machine.cpus')} CPUs, {_get(results, 'machine.memory_gib')} GiB. "
        "Method: docs/benchmark.md.",
        "",
    ]
    good = [s for s in sizes if s.get("headroom") or s.get("baseline")]
    if good:
        lines += [
            "| N | RSS MiB: steady / restart peak | one new Project p99 (s): steady / in a cycle | bulk p50 / p99 (s): "
            "Headroom | naive | competent | writes per new Project | steady requests/project/hour: Headroom | naive | "
            "competent | steady KiB answered/project/hour (watch streams apart): Headroom | naive | competent | "
            "sampler writes/project/day |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in good:
            h, b = s.get("headroom") or {}, s.get("baseline") or {}
            c = b.get("competent") or {}

            def kib(value: Any) -> str:
                return _fmt(value / 1024 if isinstance(value, int | float) else None)

            lines.append(
                f"| {s['n']:,} | {_fmt(_get(h, 'steady.process.end.rss_mib'))} / "
                f"{_fmt(_get(h, 'restart.process.hwm_mib'))} "
                f"| {_fmt(_get(h, 'single_project.p99_s'))} / {_fmt(_get(h, 'history.single_project.p99_s'))} "
                f"| {_fmt(_get(h, 'convergence.p50_s'))} / {_fmt(_get(h, 'convergence.p99_s'))} "
                f"| {_fmt(_get(b, 'convergence.p50_s'))} / {_fmt(_get(b, 'convergence.p99_s'))} "
                f"| {_fmt(_get(c, 'convergence.p50_s'))} / {_fmt(_get(c, 'convergence.p99_s'))} "
                f"| {_fmt(_get(h, 'convergence.requests.writes_per_project'))} "
                f"| {_fmt(_get(h, 'steady.requests.per_project_per_hour'))} "
                f"| {_fmt(_get(b, 'steady.requests.per_project_per_hour'))} "
                f"| {_fmt(_get(c, 'steady.requests.per_project_per_hour'))} "
                f"| {kib(_get(h, 'steady.apiserver.answered_bytes_per_project_per_hour'))} "
                f"| {kib(_get(b, 'steady.apiserver.answered_bytes_per_project_per_hour'))} "
                f"| {kib(_get(c, 'steady.apiserver.answered_bytes_per_project_per_hour'))} "
                f"| {_fmt(_get(h, 'sampler.steady.writes_per_project_per_day'))} |"
            )
        loads = ", ".join(f"N = {s['n']:,}: {s.get('loadavg_start')} → {s.get('loadavg_end')}" for s in good)
        lines += [
            "",
            "The machine's 2 CPUs were shared with other work during the runs; load averages (1, 5, 15 min) "
            f"at the start and end of each size: {loads}.",
            "",
        ]
    for size in sizes:
        lines += render_size(size)
    return "\n".join(lines) + "\n"


def merge(paths: Sequence[Path]) -> dict[str, Any]:
    """Sizes from several runs in one report; a later file wins for a size both hold, for what it
    measured: a run of Headroom alone keeps the scripts' figures of the run before it, a run of the
    scripts alone keeps Headroom's."""
    merged: dict[str, Any] = {}
    by_n: dict[int, dict[str, Any]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if not merged:
            merged = {k: v for k, v in data.items() if k != "sizes"}
            merged["runs"] = []
        merged["runs"].append({"file": path.name, "started": data.get("started"), "args": data.get("args")})
        merged["finished"] = data.get("finished")
        for size in data.get("sizes") or []:
            size.setdefault("revision", data.get("revision"))
            size.setdefault("run", path.name)
            earlier = by_n.get(int(size["n"]))
            if earlier is not None and not size.get("headroom") and earlier.get("headroom") and size.get("baseline"):
                # A run of the scripts alone replaces the scripts' figures and keeps Headroom's.
                size = {**earlier, "baseline": size["baseline"], "baseline_from": {"run": size.get("run")}}
                by_n[int(size["n"])] = size
                continue
            if earlier is not None and not size.get("baseline") and earlier.get("baseline"):
                # A run of Headroom alone keeps the scripts' figures of the run before it (the scripts
                # do not change with Headroom), and says where they come from.
                size["baseline"] = earlier["baseline"]
                size["baseline_from"] = earlier.get("baseline_from") or {"run": earlier.get("run")}
            by_n[int(size["n"])] = size
    merged["sizes"] = [by_n[n] for n in sorted(by_n)]
    merged["revision"] = ", ".join(dict.fromkeys(str(s.get("revision")) for s in merged["sizes"]))
    merged["started"] = min((str(r["started"]) for r in merged["runs"] if r.get("started")), default=None)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--write", action="store_true", help="write bench/results/latest.json and latest.md")
    args = parser.parse_args(argv)
    results = merge(args.files)
    for size in results["sizes"]:
        for part, path in (
            ("headroom", "steady.apiserver"),
            ("baseline", "steady.apiserver"),
            ("baseline", "competent.steady.apiserver"),
            ("headroom", "sampler.steady.apiserver"),
        ):
            served = _get(size.get(part) or {}, path)
            if isinstance(served, dict):
                apimetrics.split_watches(served, int(size["n"]))
        add_ratios(size)
    text = render(results)
    if args.write:
        (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
