"""History from a CSV or JSON file of samples: time, namespace, resource, value.

For platforms whose metrics live elsewhere (export them to a file) and for the demo.
CSV has a header row `time,namespace,resource,value`; JSON is a list of objects with those keys.
`time` is ISO-8601 (a zone is required) or Unix seconds; `value` a Kubernetes quantity.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from headroom.core.history import HistoryResult, PeakQuery
from headroom.core.quantity import QuantityError, parse_quantity


class HistoryFileError(ValueError):
    pass


def _parse_time(text: str, where: str) -> datetime:
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (OverflowError, OSError) as exc:
        raise HistoryFileError(f"{where}: time {text!r} is out of range") from exc
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HistoryFileError(f"{where}: time {text!r} is neither ISO-8601 nor Unix seconds") from exc
    if moment.tzinfo is None:
        raise HistoryFileError(f"{where}: time {text!r} has no time zone")
    return moment


def _rows(path: Path) -> Iterator[tuple[str, Mapping[str, str]]]:
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise HistoryFileError(f"{path}: expected a JSON list of samples")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise HistoryFileError(f"{path}[{i}]: expected an object with time, namespace, resource, value")
            yield f"{path}[{i}]", {k: str(v) for k, v in row.items()}
    else:
        # Read line by line: the file can hold every namespace's samples, and a query wants few of them.
        with path.open(newline="") as handle:
            for i, row in enumerate(csv.DictReader(handle), start=2):
                yield f"{path}:{i}", row


def load_samples(path: Path) -> list[tuple[datetime, str, str, Decimal]]:
    """Every sample of the file."""
    return list(iter_samples(path))


def iter_samples(
    path: Path, wanted: Callable[[str, str], bool] = lambda namespace, resource: True
) -> Iterator[tuple[datetime, str, str, Decimal]]:
    """The file's samples one at a time, of the namespaces and resources `wanted` only. Rows not
    wanted are skipped before their time and value are parsed (a missing column is an error anywhere)."""
    for where, row in _rows(path):
        missing = [c for c in ("time", "namespace", "resource", "value") if row.get(c) is None]
        if missing:
            raise HistoryFileError(f"{where}: missing column {', '.join(missing)}")
        namespace, resource = row["namespace"].strip(), row["resource"].strip()
        if not wanted(namespace, resource):
            continue
        try:
            value = parse_quantity(row["value"].strip())
        except QuantityError as exc:
            raise HistoryFileError(f"{where}: {exc}") from exc
        if value < 0:
            raise HistoryFileError(f"{where}: value {row['value']!r} is negative")
        yield _parse_time(row["time"], where), namespace, resource, value


class FileHistory:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self, query: PeakQuery) -> HistoryResult:
        start = query.now - query.lookback
        # Days are whole: the oldest day of the lookback keeps all its samples until it leaves. Cut at
        # `start`, its peak would drift with every resync, and with it the forecast and the status.
        first_day = start.astimezone(UTC).date()
        peaks: dict[tuple[str, str], Decimal] = {}
        # The file holds samples, not days: each UTC day's peak among them (day_offsets stay empty).
        # Folded in as the samples are read: a file of thousands of namespaces is never held whole.
        daily: dict[tuple[str, str], dict[date, Decimal]] = {}
        try:
            for at, namespace, resource, value in iter_samples(
                self.path, lambda namespace, resource: namespace in query.namespaces and resource in query.resources
            ):
                if at > query.now:
                    continue
                key = (namespace, resource)
                if at >= start:
                    peaks[key] = max(peaks.get(key, value), value)
                day = at.astimezone(UTC).date()
                if day >= first_day:
                    days = daily.setdefault(key, {})
                    days[day] = max(days.get(day, value), value)
        except (OSError, ValueError) as exc:
            return HistoryResult(error=f"cannot read history file {self.path}: {exc}", queries=1)
        return HistoryResult(
            peaks=peaks, queries=1, daily={key: dict(sorted(days.items())) for key, days in daily.items()}
        )

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        return await asyncio.to_thread(self._read, query)
