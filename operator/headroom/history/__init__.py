"""Where a namespace's historical peak usage comes from: Prometheus, Headroom's own sampler, or a file."""

from headroom.history.base import HistoryResult, HistorySource, PeakQuery

__all__ = ["HistoryResult", "HistorySource", "PeakQuery"]
