"""Where a namespace's historical peak usage comes from: Prometheus, Headroom's own sampler, or a file.

The value types (PeakQuery, HistoryResult) and the sampler's daily-peaks codec are pure and live in
headroom.core.history; the sources here do the I/O. `history_source` is the one place a source is
built from the configuration, for the operator and for `headroom plan` alike.
"""

from __future__ import annotations

from collections.abc import Callable

from headroom.core.history import DailyPeaks, HistorySource
from headroom.shell.config import OperatorConfig
from headroom.shell.history.file import FileHistory
from headroom.shell.history.prometheus import DEFAULT_QUERIES, DEFAULT_RULES, PrometheusHistory, step_of
from headroom.shell.history.sampler import SamplerHistory

__all__ = ["history_source"]


def history_source(
    config: OperatorConfig,
    daily_peaks: Callable[[str], DailyPeaks],
    kept: Callable[[str], str | None] = lambda namespace: None,
) -> HistorySource:
    """The configured source; `daily_peaks` reads the sampler's peaks of a namespace (from its quota),
    `kept` the Prometheus source's closed days kept there."""
    if config.history_source == "prometheus":
        if not config.prometheus_url:
            raise ValueError("--history-source=prometheus needs --prometheus-url")
        step_of(config.prometheus_step)  # refused at start, not every cycle
        return PrometheusHistory(
            config.prometheus_url,
            step=config.prometheus_step,
            timeout=config.prometheus_timeout,
            queries={**DEFAULT_QUERIES, **config.prometheus_queries},
            # A query the platform replaced is its own: no recording rule stands in for it.
            rules={r: rule for r, rule in DEFAULT_RULES.items() if r not in config.prometheus_queries},
            kept=kept,
        )
    if config.history_source == "file":
        if config.history_file is None:
            raise ValueError("--history-source=file needs --history-file")
        return FileHistory(config.history_file)
    return SamplerHistory(daily_peaks)
