"""The contract every history source keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class PeakQuery:
    """Peaks wanted for these namespaces and resources over one lookback window ending at `now`."""

    namespaces: frozenset[str]
    resources: frozenset[str]
    lookback: timedelta
    now: datetime


@dataclass(frozen=True)
class HistoryResult:
    """Peaks by (namespace, resource).

    A key that is absent means "no history known", never zero. `error` says the source failed as a
    whole (nothing it returned may lower a quota); `partial` that some answers were incomplete.
    """

    peaks: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    error: str | None = None
    partial: bool = False
    queries: int = 0

    @property
    def complete(self) -> bool:
        return self.error is None and not self.partial

    def peak(self, namespace: str, resource: str) -> Decimal | None:
        return self.peaks.get((namespace, resource))


class HistorySource(Protocol):
    name: str

    async def peaks(self, query: PeakQuery) -> HistoryResult: ...
