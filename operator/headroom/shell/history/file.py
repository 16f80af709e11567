"""History from a CSV or JSON file of samples: time, namespace, resource, value.

For platforms whose metrics live elsewhere (export them to a file) and for the demo.
CSV has a header row `time,namespace,resource,value`; JSON is a list of objects with those keys.
`time` is ISO-8601 (a zone is required) or Unix seconds; `value` a Kubernetes quantity.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable, Iterator
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


_COLUMNS = ("time", "namespace", "resource", "value")
# One row: its number (the CSV line, the header being 1; the JSON list index) and its time, namespace,
# resource and value as written, None for a column it lacks.
_Row = tuple[int, str | None, str | None, str | None, str | None]


def _rows(path: Path) -> Iterator[_Row]:
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise HistoryFileError(f"{path}: expected a JSON list of samples")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise HistoryFileError(f"{path}[{i}]: expected an object with time, namespace, resource, value")
            t, ns, r, v = (None if row.get(c) is None else str(row[c]) for c in _COLUMNS)
            yield i, t, ns, r, v
        return
    # Read line by line: the file can hold every namespace's samples, and a query wants few of them.
    # Rows as lists, not dicts: a whole file is parsed for every read, 350,000 rows at 10,000
    # namespaces, and a dict per row made that three times slower (0.75 s instead of 0.25).
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        position = {name: k for k, name in enumerate(header)}
        t_at, ns_at, r_at, v_at = (position.get(c, -1) for c in _COLUMNS)
        # Rows at least this wide hold all four columns; 0 when the header lacks one.
        width = max(t_at, ns_at, r_at, v_at) + 1 if min(t_at, ns_at, r_at, v_at) >= 0 else 0
        line = 1
        for row in reader:
            if not row:
                continue  # a blank line is not a sample
            line += 1
            if width and len(row) >= width:
                yield line, row[t_at], row[ns_at], row[r_at], row[v_at]
            else:
                t, ns, r, v = (row[k] if 0 <= k < len(row) else None for k in (t_at, ns_at, r_at, v_at))
                yield line, t, ns, r, v


def _where(path: Path, number: int) -> str:
    return f"{path}[{number}]" if path.suffix.lower() == ".json" else f"{path}:{number}"


def load_samples(path: Path) -> list[tuple[datetime, str, str, Decimal]]:
    """Every sample of the file."""
    return list(iter_samples(path))


def iter_samples(
    path: Path, wanted: Callable[[str, str], bool] = lambda namespace, resource: True
) -> Iterator[tuple[datetime, str, str, Decimal]]:
    """The file's samples one at a time, of the namespaces and resources `wanted` only. Rows not
    wanted are skipped before their time and value are parsed (a missing column is an error anywhere)."""
    for row in _rows(path):
        namespace, resource = _key(path, row)
        if wanted(namespace, resource):
            at, value = _sample(path, row)
            yield at, namespace, resource, value


def _key(path: Path, row: _Row) -> tuple[str, str]:
    """The row's namespace and resource; a row that lacks a column is an error wherever it is."""
    number, time_text, namespace_text, resource_text, value_text = row
    if time_text is None or namespace_text is None or resource_text is None or value_text is None:
        missing = [c for c, v in zip(_COLUMNS, row[1:], strict=True) if v is None]
        raise HistoryFileError(f"{_where(path, number)}: missing column {', '.join(missing)}")
    return namespace_text.strip(), resource_text.strip()


def _sample(path: Path, row: _Row) -> tuple[datetime, Decimal]:
    """The row's time and value (its columns are there: `_key` said so)."""
    number, time_text, _, _, value_text = row
    assert time_text is not None and value_text is not None
    where = _where(path, number)
    try:
        value = parse_quantity(value_text.strip())
    except QuantityError as exc:
        raise HistoryFileError(f"{where}: {exc}") from exc
    if value < 0:
        raise HistoryFileError(f"{where}: value {value_text!r} is negative")
    return _parse_time(time_text, where), value


class _Fold:
    """One question's answer, folded in as the file's samples are read."""

    def __init__(self, query: PeakQuery) -> None:
        self.query = query
        self.start = query.now - query.lookback
        # Days are whole: the oldest day of the lookback keeps all its samples until it leaves. Cut at
        # `start`, its peak would drift with every resync, and with it the forecast and the status.
        self.first_day = self.start.astimezone(UTC).date()
        self.peaks: dict[tuple[str, str], Decimal] = {}
        # The file holds samples, not days: each UTC day's peak among them (day_offsets stay empty).
        self.daily: dict[tuple[str, str], dict[date, Decimal]] = {}
        self.error: str | None = None  # the first bad row among those it wants

    def wants(self, namespace: str, resource: str) -> bool:
        return namespace in self.query.namespaces and resource in self.query.resources

    def add(self, at: datetime, namespace: str, resource: str, value: Decimal) -> None:
        if at > self.query.now or not self.wants(namespace, resource):
            return
        key = (namespace, resource)
        if at >= self.start:
            self.peaks[key] = max(self.peaks.get(key, value), value)
        day = at.astimezone(UTC).date()
        if day >= self.first_day:
            days = self.daily.setdefault(key, {})
            days[day] = max(days.get(day, value), value)

    def result(self, path: Path) -> HistoryResult:
        if self.error is not None:
            return HistoryResult(error=f"cannot read history file {path}: {self.error}", queries=1)
        daily = {key: dict(sorted(days.items())) for key, days in self.daily.items()}
        return HistoryResult(peaks=self.peaks, queries=1, daily=daily)


class FileHistory:
    """Answers from the file, read anew for each question (the platform may rewrite it any time).

    One read at a time: questions asked while the file is being read are answered together by the
    next read. A read parses the whole file, holding the interpreter (0.25 s for 350,000 rows at
    10,000 namespaces); a burst of new Projects had six reads under way at once, the event loop
    starved, and onboarding fell to about one Project a second."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._asked: list[tuple[PeakQuery, asyncio.Future[HistoryResult]]] = []
        self._reading: asyncio.Task[None] | None = None

    def _read(self, queries: list[PeakQuery]) -> list[HistoryResult]:
        """Every question's answer, from one pass over the file. Folded in as the samples are read:
        a file of thousands of namespaces is never held whole."""
        folds = [_Fold(q) for q in queries]
        namespaces = frozenset().union(*(q.namespaces for q in queries))
        resources = frozenset().union(*(q.resources for q in queries))
        try:
            for row in _rows(self.path):
                namespace, resource = _key(self.path, row)
                if namespace not in namespaces or resource not in resources:
                    continue
                try:
                    at, value = _sample(self.path, row)
                except HistoryFileError as exc:
                    # A bad row fails the questions that want it, as it would have asked alone.
                    for fold in folds:
                        if fold.error is None and fold.wants(namespace, resource):
                            fold.error = str(exc)
                    continue
                for fold in folds:
                    fold.add(at, namespace, resource, value)
        except (OSError, ValueError) as exc:
            failed = HistoryResult(error=f"cannot read history file {self.path}: {exc}", queries=1)
            return [failed for _ in queries]
        return [fold.result(self.path) for fold in folds]

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        answer: asyncio.Future[HistoryResult] = asyncio.get_running_loop().create_future()
        self._asked.append((query, answer))
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_while_asked())
        return await answer

    async def _read_while_asked(self) -> None:
        while self._asked:
            asked, self._asked = self._asked, []
            try:
                results = await asyncio.to_thread(self._read, [q for q, _ in asked])
            except Exception as exc:  # a bug: each question gets it, as a read of its own would have
                for _, answer in asked:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), result in zip(asked, results, strict=True):
                if not answer.done():  # its asker may have gone (cancelled)
                    answer.set_result(result)
