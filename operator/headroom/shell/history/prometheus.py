"""History from Prometheus, over the kube-state-metrics v2 series or their recording rules.

Questions are asked for all governed namespaces at once (in chunks), never one per project: a
`max_over_time` subquery over the namespace totals. Each day of the lookback is asked once and kept;
in steady state only the window since the last answer is asked (headroom.core.prometheus_days).
The queries are templates, so a platform with other metric names can replace them
(`--prometheus-query RESOURCE=TEMPLATE`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any

import aiohttp

from headroom.core import prometheus_days as days
from headroom.core.history import HistoryResult, PeakQuery, day_offset
from headroom.core.quantity import CONTEXT, resource_kind
from headroom.shell.backoff import backoff_delays
from headroom.shell.history.cache import YIELD_EVERY

# Prometheus adds in float64 (1.1 + 1.1 + 1.1 is 3.3000000000000003), and the derivation rounds every
# excess up to a whole millicore or Mi. Requests and limits are whole millicores and bytes, so the
# noise below those is dropped before anything is derived from it.
_RESOLUTION = {"cpu": Decimal("0.000001"), "memory": Decimal(1), "count": Decimal(1)}


def _denoise(value: Decimal, resource: str) -> Decimal:
    with localcontext(CONTEXT):
        return value.quantize(_RESOLUTION[resource_kind(resource)], rounding=ROUND_HALF_EVEN)


# Only pods that hold their requests count: Pending and Running.
_LIVE_PODS = (
    'max by (namespace, pod) (kube_pod_status_phase{{phase=~"Pending|Running", namespace=~"{namespaces}"}} == 1)'
)


def _container_sum(metric: str, resource: str, unit: str) -> str:
    return (
        f"sum by (namespace) ({metric}"
        f'{{{{resource="{resource}", unit="{unit}", namespace=~"{{namespaces}}"}}}}'
        f" * on (namespace, pod) group_left () {_LIVE_PODS})"
    )


DEFAULT_QUERIES: Mapping[str, str] = {
    "requests.cpu": _container_sum("kube_pod_container_resource_requests", "cpu", "core"),
    "requests.memory": _container_sum("kube_pod_container_resource_requests", "memory", "byte"),
    "limits.cpu": _container_sum("kube_pod_container_resource_limits", "cpu", "core"),
    "limits.memory": _container_sum("kube_pod_container_resource_limits", "memory", "byte"),
    "requests.ephemeral-storage": _container_sum("kube_pod_container_resource_requests", "ephemeral_storage", "byte"),
    "limits.ephemeral-storage": _container_sum("kube_pod_container_resource_limits", "ephemeral_storage", "byte"),
    "pods": f"count by (namespace) ({_LIVE_PODS})",
}


# kubernetes-mixin (kube-prometheus, kube-prometheus-stack) records the namespace totals of CPU and
# memory requests and limits with exactly the semantics above: containers of Pending and Running pods,
# summed by namespace. Headroom's PrometheusRule (manifests/monitoring/recording-rules.yaml) adds the
# ones the mixin lacks. A series per namespace instead of a join over every pod: the cheapest input.
DEFAULT_RULES: Mapping[str, str] = {
    "requests.cpu": "namespace_cpu:kube_pod_container_resource_requests:sum",
    "requests.memory": "namespace_memory:kube_pod_container_resource_requests:sum",
    "limits.cpu": "namespace_cpu:kube_pod_container_resource_limits:sum",
    "limits.memory": "namespace_memory:kube_pod_container_resource_limits:sum",
    "requests.ephemeral-storage": "namespace_ephemeral_storage:kube_pod_container_resource_requests:sum",
    "limits.ephemeral-storage": "namespace_ephemeral_storage:kube_pod_container_resource_limits:sum",
    "pods": "namespace:kube_pod_status_phase_active:count",
}


def rule_template(record: str) -> str:
    return f'sum by (namespace) ({record}{{{{namespace=~"{{namespaces}}"}}}})'


# kube-state-metrics names a resource label by replacing what Prometheus does not allow with "_":
# nvidia.com/gpu is resource="nvidia_com_gpu" (unit "integer"), hugepages-2Mi is "hugepages_2Mi".
_KSM_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def query_for(resource: str, queries: Mapping[str, str]) -> str | None:
    """The template for a resource: a configured one, else one for an extended resource or hugepages
    (requests.nvidia.com/gpu), else None (not a resource Prometheus knows about)."""
    if resource in queries:
        return queries[resource]
    if resource in ("cpu", "memory", "ephemeral-storage"):
        return queries.get(f"requests.{resource}")  # a quota's bare cpu is its requests.cpu
    name = resource.removeprefix("requests.")
    if name == resource or ("/" not in name and not name.startswith("hugepages-")):
        return None
    unit = "byte" if name.startswith("hugepages-") else "integer"
    return _container_sum("kube_pod_container_resource_requests", _KSM_LABEL.sub("_", name), unit)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _prom_duration(seconds: int) -> str:
    return f"{seconds}s"


def _pattern(namespaces: frozenset[str]) -> str:
    # Namespace names are DNS labels: nothing in them is special to a regex or a PromQL string,
    # and anything else is refused rather than escaped.
    bad = [ns for ns in namespaces if not _DNS_LABEL.fullmatch(ns)]
    if bad:
        raise ValueError(f"not namespace names: {sorted(bad)}")
    return "|".join(sorted(namespaces))


def peak_query(template: str, namespaces: frozenset[str], lookback_seconds: int, step: str) -> str:
    """The PromQL for the peak of a namespace total over the window ending at the evaluation time.

    Asked directly for a whole lookback, this is the design before daily peaks (still used for
    lookbacks under two days); over one window or one day, it is what the daily peaks are made of.
    """
    inner = template.format(namespaces=_pattern(namespaces))
    return f"max_over_time(({inner})[{_prom_duration(lookback_seconds)}:{step}])"


def daily_query(template: str, namespaces: frozenset[str], step: str) -> str:
    """Each day's peak, as a range query with a step of one day evaluated at each following midnight."""
    return peak_query(template, namespaces, 86_400, step)


def step_of(step: str) -> timedelta:
    """The subquery step as a duration; it must divide a day, so that days are made of whole steps."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", step):
        total += int(number) * units[unit]
    if total <= 0 or 86_400 % total:
        raise ValueError(f"--prometheus-step {step!r} must divide a day (e.g. 30s, 1m, 5m)")
    return timedelta(seconds=total)


StatsHook = Callable[[str, str, Mapping[str, Any]], None]


class _Refused(Exception):
    """Prometheus refused a question as too big (samples, timeout): ask it in halves."""


class _Unreachable(Exception):
    """Prometheus did not answer after every attempt: the rest of the cycle is not asked (each
    question would wait out its own retries), and everything it would have answered stays unknown."""


@dataclass
class PrometheusHistory:
    """History from Prometheus, with daily peaks kept (see headroom.core.prometheus_days).

    At start-up every day of the lookback is asked once (whole days, a range query with a step of a
    day, in chunks of days and of namespaces); after that each cycle asks only the window since the
    last answer, and the lookback peak is the maximum of the kept days and that window. Closed days
    are kept on each namespace's quota (an annotation the reconciler writes once a day, at the
    namespace's own moment), so that a restart asks only the days since.
    """

    url: str
    step: str = "5m"
    timeout: float = 30.0
    attempts: int = 3
    queries: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    rules: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RULES))
    name: str = "prometheus"
    kept: Callable[[str], str | None] = lambda namespace: None  # the annotation on the namespace's quota
    max_days: int = 7
    max_namespaces: int = 500
    max_pattern: int = 16_000
    on_stats: StatsHook | None = None  # for the benchmark: Prometheus' own statistics of each query
    _state: dict[days.Key, days.KeyDays] = field(default_factory=dict, init=False, repr=False)
    _keep: dict[days.Key, timedelta] = field(default_factory=dict, init=False, repr=False)
    _seeded: set[str] = field(default_factory=set, init=False, repr=False)
    _rules_since: dict[str, tuple[date, datetime | None]] = field(default_factory=dict, init=False, repr=False)

    async def _call(
        self, session: aiohttp.ClientSession, path: str, params: Mapping[str, str], kind: str
    ) -> dict[str, Any]:
        delays = backoff_delays(base=0.5, cap=8.0)
        last: Exception | None = None
        data = {**params, "timeout": evaluation_timeout(self.timeout)}
        if self.on_stats is not None:
            data["stats"] = "all"
        for attempt in range(self.attempts):
            try:
                # POST: the namespace alternation can be longer than a URL may be.
                async with session.post(f"{self.url.rstrip('/')}/api/v1/{path}", data=data) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status >= 500 and body.get("errorType") not in ("execution", "timeout"):
                        raise RuntimeError(f"Prometheus answered HTTP {resp.status}")
                    if body.get("status") != "success":
                        error = f"{body.get('errorType', 'error')}: {body.get('error', body)}"
                        if _too_big(body):
                            raise _Refused(error)
                        # A bad query will not get better by retrying.
                        return {"error": error}
                    if self.on_stats is not None:
                        self.on_stats(kind, data["query"], (body.get("data") or {}).get("stats") or {})
                    return body  # type: ignore[no-any-return]
            except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError) as exc:
                last = exc
                if attempt + 1 < self.attempts:
                    await asyncio.sleep(next(delays))
        raise _Unreachable(f"Prometheus at {self.url} unavailable: {last!s}")

    async def peaks(self, query: PeakQuery) -> HistoryResult:
        if not query.namespaces:
            return HistoryResult()
        # Extended resources and hugepages are many and not known in advance (requests.nvidia.com/gpu,
        # requests.example.com/fpga): their queries are added as Projects ask for them.
        extra = {r: t for r in query.resources if r not in self.queries and (t := query_for(r, self.queries))}
        if extra:
            self.queries = {**self.queries, **extra}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if query.lookback < days.SHORT_LOOKBACK:
                return await self._direct(session, query)
            return await self._daily(session, query)

    # ----------------------------------------------------------------------------------- short lookbacks

    async def _direct(self, session: aiohttp.ClientSession, query: PeakQuery) -> HistoryResult:
        """The whole lookback in one subquery per resource and namespace chunk: cheap when it is short."""
        peaks: dict[tuple[str, str], Decimal] = {}
        errors: list[str] = []
        partial = False
        count = 0
        seconds = int(query.lookback.total_seconds())
        chunks = days.chunks(query.namespaces, self.max_namespaces, self.max_pattern)
        for resource in sorted(query.resources):
            template = query_for(resource, self.queries)
            if template is None:
                continue  # not a resource Prometheus knows about: unknown, never zero
            for chunk in chunks:
                count += 1
                promql = peak_query(template, chunk, seconds, self.step)
                try:
                    body = await self._instant(session, promql, query.now, "direct")
                except _Unreachable as exc:
                    return HistoryResult(peaks=peaks, error=str(exc), partial=partial, queries=count)
                values, error, warned = _vector(body, resource)
                if error:
                    errors.append(f"{resource}: {error}")
                    continue
                partial = partial or warned
                peaks.update({(ns, resource): v for ns, v in values.items() if ns in chunk})
        return HistoryResult(peaks=peaks, error="; ".join(errors) or None, partial=partial, queries=count)

    async def _instant(self, session: aiohttp.ClientSession, promql: str, at: datetime, kind: str) -> dict[str, Any]:
        try:
            return await self._call(session, "query", {"query": promql, "time": f"{at.timestamp():.3f}"}, kind)
        except _Refused as exc:
            return {"error": str(exc)}

    # ----------------------------------------------------------------------------------- daily peaks

    def _seed(self, namespaces: frozenset[str]) -> None:
        """After a restart, the closed days kept on each namespace's quota, read once."""
        for namespace in namespaces - self._seeded:
            self._seeded.add(namespace)
            for resource, state in days.decode_days(self.kept(namespace)).items():
                self._state.setdefault((namespace, resource), state)

    async def _daily(self, session: aiohttp.ClientSession, query: PeakQuery) -> HistoryResult:
        end = days.align(query.now, step_of(self.step))
        self._seed(query.namespaces)
        keys = [(ns, r) for ns in query.namespaces for r in query.resources if r in self.queries]
        for key in keys:
            self._keep[key] = max(self._keep.get(key, query.lookback), query.lookback)
        wanted: dict[days.Key, list[days.Window]] = {}
        for seen, key in enumerate(keys, 1):
            if seen % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a cycle covers every key of the cluster: let others in between
            wanted[key] = days.windows_wanted(self._state.get(key), end, query.lookback)
        asks = days.plan_asks(wanted, self.max_days, self.max_namespaces, self.max_pattern)
        failed: set[days.Key] = set()
        errors: list[str] = []
        partial = False
        count = 0
        for index, ask in enumerate(asks):
            try:
                outcome = await self._answer(session, ask, end)
            except _Unreachable as exc:
                count += 1
                errors.append(str(exc))
                failed.update((ns, a.resource) for a in asks[index:] for ns in a.namespaces)
                break
            count += outcome.queries
            partial = partial or outcome.partial
            if outcome.error is not None:
                errors.append(f"{ask.resource}: {outcome.error}")
                failed.update((ns, ask.resource) for ns in ask.namespaces)
                continue
            for (namespace, window), value in outcome.values.items():
                key = (namespace, ask.resource)
                self._state[key] = days.merge(self._state.get(key), window, value)
        peaks: dict[tuple[str, str], Decimal] = {}
        daily: dict[tuple[str, str], Mapping[date, Decimal]] = {}
        for seen, key in enumerate(keys, 1):
            if seen % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            state = self._state.get(key)
            if key not in failed and state is not None:
                state = self._state[key] = days.advance(days.prune(state, end, self._keep[key]), end)
            known, value = days.peak(state, end, query.lookback)
            if known and state is not None:
                # For forecasts: the UTC days of the lookback (day_offsets stay empty), today so far.
                daily[key] = days.lookback_days(state, end, query.lookback)
                if value is not None:
                    peaks[key] = value
        error = "; ".join(sorted(set(errors))) or None
        return HistoryResult(peaks=peaks, error=error, partial=partial, queries=count, daily=daily)

    async def _answer(self, session: aiohttp.ClientSession, ask: days.Ask, end: datetime) -> _Outcome:
        """One ask, cut in halves while Prometheus refuses it as too big; every window of it answered,
        or an error (nothing of a failed or partial answer is kept: unknown is never a lower peak)."""
        template = await self._template(session, ask, end)
        try:
            outcome = await self._send(session, ask, template)
        except _Refused as exc:
            parts = days.halves(ask)
            if not parts:
                return _Outcome(error=str(exc), queries=1)
            outcome = _Outcome(queries=1)
            for part in parts:
                more = await self._answer(session, part, end)
                outcome = outcome.join(more)
                if more.error is not None:
                    return outcome
            return outcome
        if outcome.error is None and not outcome.values and template != self.queries[ask.resource]:
            # A recording rule that answers nothing for every namespace asked has most likely stopped
            # (removed, renamed): never read that as "no pods"; ask the raw series instead.
            self._rules_since.pop(ask.resource, None)
            again = await self._send(session, ask, self.queries[ask.resource])
            return again.join(_Outcome(queries=outcome.queries))
        return outcome

    async def _send(self, session: aiohttp.ClientSession, ask: days.Ask, template: str) -> _Outcome:
        if ask.window is not None:
            window = ask.window
            seconds = int((window.end - window.start).total_seconds())
            promql = peak_query(template, ask.namespaces, seconds, self.step)
            body = await self._call(
                session, "query", {"query": promql, "time": f"{window.end.timestamp():.3f}"}, "window"
            )
            values, error, warned = _vector(body, ask.resource)
            if error or warned:
                return _Outcome(error=error or "partial answer (warnings)", partial=warned, queries=1)
            answered = {(ns, window): values.get(ns) for ns in ask.namespaces}
            return _Outcome(values=answered, queries=1)
        assert ask.first is not None and ask.last is not None
        params = {
            "query": daily_query(template, ask.namespaces, self.step),
            "start": f"{days.midnight(ask.first + days.DAY).timestamp():.0f}",
            "end": f"{days.midnight(ask.last + days.DAY).timestamp():.0f}",
            "step": "86400",
        }
        body = await self._call(session, "query_range", params, "days")
        series, error, warned = _matrix(body, ask.resource)
        if error or warned:
            return _Outcome(error=error or "partial answer (warnings)", partial=warned, queries=1)
        answered_days: dict[tuple[str, days.Window], Decimal | None] = {}
        for day in days.day_range(ask.first, ask.last):
            window = days.Window(days.midnight(day), days.midnight(day + days.DAY))
            for ns in ask.namespaces:
                answered_days[(ns, window)] = series.get((ns, window.end))
        return _Outcome(values=answered_days, queries=1)

    async def _template(self, session: aiohttp.ClientSession, ask: days.Ask, end: datetime) -> str:
        """The recording rule's series when it covers the whole ask, else the raw series."""
        raw = self.queries[ask.resource]
        record = self.rules.get(ask.resource)
        if record is None:
            return raw
        since = await self._rule_since(session, ask.resource, record, end)
        start = ask.window.start if ask.window is not None else days.midnight(ask.first or end.date())
        return rule_template(record) if since is not None and since <= start else raw

    async def _rule_since(
        self, session: aiohttp.ClientSession, resource: str, record: str, end: datetime
    ) -> datetime | None:
        """Since when the recording rule has series (probed once a day: rules come and go), hourly."""
        probed = self._rules_since.get(resource)
        if probed is not None and probed[0] == days.utc_day(end):
            return probed[1]
        lookback = max(self._keep.values(), default=days.SHORT_LOOKBACK)
        # From a day before the lookback: a rule installed before it covers its first day whole.
        start = days.midnight(days.first_day(end, lookback) - days.DAY)
        params = {
            "query": f"count({record})",
            "start": f"{start.timestamp():.0f}",
            "end": f"{end.timestamp():.0f}",
            "step": "3600",
        }
        try:
            body = await self._call(session, "query_range", params, "probe")
        except _Refused:
            body = {"error": "refused"}
        since: datetime | None = None
        if "error" not in body:
            result = (body.get("data") or {}).get("result") or []
            points = [float(t) for series in result for t, _ in series.get("values", [])]
            # The first hour is not trusted whole: a rule installed mid-hour misses its start.
            since = datetime.fromtimestamp(min(points) + 3600, UTC) if points else None
        self._rules_since[resource] = (days.utc_day(end), since)
        return since

    # ----------------------------------------------------------------------------------- handing over

    def annotation(self, namespace: str, current: str | None, now: datetime) -> str | None:
        """The text of the namespace's daily-peaks annotation for the reconciler to keep on its quota:
        the current text unless a rewrite is due (once a day, at the namespace's moment)."""
        if not days.write_due(current, now, day_offset(namespace)):
            return current
        return self.kept_text(namespace) or current

    def kept_text(self, namespace: str) -> str | None:
        """The namespace's closed days as the annotation encodes them (see prometheus_days)."""
        return days.encode_days({r: s for r in self.queries if (s := self._state.get((namespace, r))) is not None})

    def daily(self, keys: Iterable[days.Key]) -> dict[days.Key, dict[date, Decimal]]:
        """Each key's peak per day (days with no series left out), for forecasts."""
        return {
            key: {d: v for d, v in state.days.items() if v is not None}
            for key in keys
            if (state := self._state.get(key)) is not None
        }


@dataclass
class _Outcome:
    values: dict[tuple[str, days.Window], Decimal | None] = field(default_factory=dict)
    error: str | None = None
    partial: bool = False
    queries: int = 0

    def join(self, other: _Outcome) -> _Outcome:
        return _Outcome(
            {**self.values, **other.values},
            self.error or other.error,
            self.partial or other.partial,
            self.queries + other.queries,
        )


def evaluation_timeout(client_timeout: float) -> str:
    """Prometheus' own timeout for a question (its API's `timeout`, in seconds), a little shorter
    than Headroom's: Prometheus then gives up first and answers "timeout", and the question is asked
    again in halves, as one over its sample limit is. Given up by the client instead, it was retried
    whole and the history reported unavailable: a start-up over the raw series of 500 namespaces of
    ten pods took about a minute a question, twice the default of 30 s."""
    return f"{max(0.1, client_timeout * 0.9):.3f}"


def _too_big(body: Mapping[str, Any]) -> bool:
    text = str(body.get("error", ""))
    return body.get("errorType") in ("execution", "timeout") and (
        "too many samples" in text or "timed out" in text or "timeout" in text or "exceeded" in text
    )


def _number(raw: Any, resource: str) -> Decimal:
    value = Decimal(str(raw))
    if not value.is_finite() or value < 0:
        raise InvalidOperation  # NaN, Inf or negative: garbage, treat as unknown
    return _denoise(value, resource)


def _vector(body: Mapping[str, Any], resource: str) -> tuple[dict[str, Decimal], str | None, bool]:
    """An instant answer as namespace -> value; (values, error, partial)."""
    if "error" in body:
        return {}, str(body["error"]), False
    data = body.get("data", {})
    if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        return {}, f"unexpected answer (resultType {data.get('resultType')!r})", False
    values: dict[str, Decimal] = {}
    partial = bool(body.get("warnings"))
    for sample in data["result"]:
        try:
            values[sample["metric"]["namespace"]] = _number(sample["value"][1], resource)
        except (KeyError, IndexError, TypeError, InvalidOperation):
            partial = True
    return values, None, partial


def _matrix(body: Mapping[str, Any], resource: str) -> tuple[dict[tuple[str, datetime], Decimal], str | None, bool]:
    """A range answer as (namespace, evaluation time) -> value; (values, error, partial)."""
    if "error" in body:
        return {}, str(body["error"]), False
    data = body.get("data", {})
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        return {}, f"unexpected answer (resultType {data.get('resultType')!r})", False
    values: dict[tuple[str, datetime], Decimal] = {}
    partial = bool(body.get("warnings"))
    for series in data["result"]:
        try:
            namespace = series["metric"]["namespace"]
            for at, raw in series["values"]:
                values[(namespace, datetime.fromtimestamp(float(at), UTC))] = _number(raw, resource)
        except (KeyError, IndexError, TypeError, ValueError, InvalidOperation):
            partial = True
    return values, None, partial
