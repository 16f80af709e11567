"""The operator's configuration, declared once: each setting is one field of OperatorConfig with its
flag, its HEADROOM_* environment variable, its default, its parser and a line that says what it is for.
One loop builds the command line, one loop reads it (flags win over the environment, which wins over
the default), and the effective configuration is logged once at start (main.startup_line).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field, fields
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from headroom.core.capacity import parse_budget
from headroom.core.names import LEASE_NAME
from headroom.core.planning import DEFAULT_PROTECTED_NAMESPACES
from headroom.core.spec import parse_duration

_ENV = "HEADROOM_"


class ConfigError(ValueError):
    """Invalid operator configuration: start-up stops with this message."""


# --------------------------------------------------------------------------------------------- parsers
# Each takes the text given (flag or environment) and the flag's name, and raises ConfigError.

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# A PromQL duration: one or more number-unit pairs, e.g. 5m, 1h30m, 500ms.
_PROMQL_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
# Kubernetes names: a namespace is a DNS-1123 label, a Lease name a DNS-1123 subdomain.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _env_name(flag: str) -> str:
    return _ENV + flag.lstrip("-").replace("-", "_").upper()


def _boolean(text: str, flag: str) -> bool:
    """An unknown word is refused, not read as false (HEADROOM_LEADER_ELECT=maybe silently meant two
    active replicas)."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{flag} (env {_env_name(flag)}) must be true or false, got {text!r}")


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(text: str, flag: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{flag} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {text!r}")
        return value

    return parse


def _number(
    kind: type[int] | type[float], low: float, high: float = math.inf, what: str = "a number"
) -> Callable[[str, str], Any]:
    def parse(text: str, flag: str) -> Any:
        try:
            value = kind(text)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {text!r} is not a number") from exc
        # float() accepts "nan" and "inf": a rate or timeout of NaN compares false with everything.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag}: {text!r} is not a finite number")
        if not low <= value <= high:
            raise ConfigError(f"{flag} must be {what}, got {value:g}")
        return value

    return parse


def _url(text: str, flag: str) -> str | None:
    if not text:
        return None
    parsed = urlparse(text)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ConfigError(f"{flag} must be an http(s) URL, got {text!r}")
    return text


def _name(label: bool) -> Callable[[str, str], str]:
    pattern, limit, kind = (
        (_DNS_LABEL, 63, "a namespace name") if label else (_DNS_SUBDOMAIN, 253, "a Kubernetes object name")
    )

    def parse(text: str, flag: str) -> str:
        if len(text) > limit or not pattern.match(text):
            raise ConfigError(
                f"{flag} must be {kind} (lower-case letters, digits and '-', at most {limit} characters), got {text!r}"
            )
        return text

    return parse


def _names(text: str, flag: str) -> tuple[str, ...]:
    return tuple(sorted({_name(label=True)(part.strip(), flag) for part in text.split(",") if part.strip()}))


def _promql_duration(text: str, flag: str) -> str:
    """Refused here rather than by Prometheus at the first query, as a 400 every derivation cycle."""
    if not _PROMQL_DURATION.match(text.strip()) or not any(ch in "123456789" for ch in text):
        raise ConfigError(f"{flag} must be a PromQL duration such as 30s, 5m or 1h, got {text!r}")
    return text.strip()


def _resync(text: str, flag: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as exc:  # SpecError is a ValueError, and so is what parse_duration raises itself
        raise ConfigError(f"{flag}: {exc}") from exc
    if value < timedelta(seconds=5):
        raise ConfigError(f"{flag} must be at least 5s")
    return value


def _quiet(text: str, flag: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    if value < timedelta(seconds=1):
        raise ConfigError(f"{flag} must be at least 1s")
    return value


def _file(text: str, flag: str) -> Path | None:
    return Path(text) if text else None


def _queries(items: str | list[str], flag: str) -> dict[str, str]:
    """RESOURCE=TEMPLATE, from repeated flags or, in the environment, one per line."""
    lines = [line for line in items.splitlines() if line.strip()] if isinstance(items, str) else items
    queries: dict[str, str] = {}
    for item in lines:
        resource, sep, template = str(item).partition("=")
        if not sep or "{namespaces}" not in template:
            raise ConfigError(f"{flag} {item!r}: expected RESOURCE=TEMPLATE with {{namespaces}}")
        queries[resource.strip()] = template
    return queries


def _budget(text: str, flag: str) -> dict[str, Decimal]:
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc


def setting(flag: str, why: str, parse: Callable[..., Any], default: Any, **argparse_kwargs: Any) -> Any:
    """One setting: a dataclass field carrying its flag, parser and purpose (a dict default is made fresh)."""
    metadata = {"flag": flag, "why": why, "parse": parse, "argparse": argparse_kwargs}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


_SWITCH = {"action": "store_const", "const": "true"}


@dataclass(frozen=True)
class OperatorConfig:
    history_source: str = setting(
        "--history-source", "where peak usage comes from", _choice("prometheus", "sampler", "file"), "sampler"
    )
    prometheus_url: str | None = setting(
        "--prometheus-url", "Prometheus base URL, e.g. http://prometheus.monitoring:9090", _url, None
    )
    prometheus_step: str = setting(
        "--prometheus-step", "subquery resolution of the peak (PromQL duration)", _promql_duration, "5m"
    )
    prometheus_timeout: float = setting(
        "--prometheus-timeout",
        "seconds one Prometheus query may take",
        _number(float, 1e-3, what="a number of seconds > 0"),
        30.0,
    )
    prometheus_queries: Mapping[str, str] = setting(
        "--prometheus-query",
        "replace the PromQL for a resource: RESOURCE=TEMPLATE ({namespaces} is replaced "
        "by the namespace regex); may repeat",
        _queries,
        {},
        action="append",
    )
    history_file: Path | None = setting(
        "--history-file", "CSV or JSON file of samples (time,namespace,resource,value)", _file, None
    )
    mode: str = setting(
        "--mode", "enforce quotas, or observe only (publish, enforce nothing)", _choice("enforce", "observe"), "enforce"
    )
    metrics_port: int = setting(
        "--metrics-port",
        "port of the Prometheus /metrics endpoint (0: off)",
        _number(int, 0, 65535, "between 0 and 65535"),
        8080,
    )
    health_port: int = setting(
        "--health-port",
        "port of the /healthz liveness endpoint (0: off)",
        _number(int, 0, 65535, "between 0 and 65535"),
        8081,
    )
    resync_interval: timedelta = setting(
        "--resync-interval", "how often peaks are re-derived, e.g. 5m", _resync, timedelta(minutes=5)
    )
    webhook_url: str | None = setting(
        "--webhook-url", "URL that alert notifications are POSTed to (JSON, Slack-compatible text)", _url, None
    )
    alertmanager_url: str | None = setting(
        "--alertmanager-url", "Alertmanager base URL; alerts are POSTed to /api/v2/alerts", _url, None
    )
    auto_approve_within_recommendation: bool = setting(
        "--auto-approve-within-recommendation",
        "approve raises up to the current recommendation (peak plus headroom) without a reviewer",
        _boolean,
        False,
        **_SWITCH,
    )
    approval_rules_file: Path | None = setting(
        "--approval-rules-file",
        "YAML file of rules for routine approvals (normally a mounted ConfigMap); re-read when it changes",
        _file,
        None,
    )
    max_overcommit: Mapping[str, Decimal] = setting(
        "--max-overcommit",
        "overcommit budget: RESOURCE=RATIO[,...], e.g. requests.cpu=1.5; a signed-off raise that would take "
        "the cluster's governed total past RATIO x allocatable waits (needs --prometheus-url)",
        _budget,
        {},
    )
    namespace: str = setting(
        "--namespace",
        "the operator's own namespace (webhook Secrets are read there)",
        _name(label=True),
        "headroom-system",
    )
    protected_namespaces: tuple[str, ...] = setting(
        "--protected-namespaces",
        "comma-separated namespaces never governed unless the platform labels them "
        "headroom.dev/project=PROJECT (--namespace always is)",
        _names,
        tuple(sorted(DEFAULT_PROTECTED_NAMESPACES)),
    )
    api_qps: float = setting(
        "--api-qps",
        "most writes per second to the API server (halved on 429 or slow answers, raised again as they succeed)",
        _number(float, 1e-3, what="> 0"),
        50.0,
    )
    api_burst: int = setting("--api-burst", "burst of writes above --api-qps", _number(int, 1, what=">= 1"), 100)
    leader_elect: bool = setting(
        "--leader-elect", "run several replicas with one active, elected on a Lease", _boolean, False, **_SWITCH
    )
    lease_name: str = setting(
        "--lease-name", "name of the Lease in --namespace used for leader election", _name(label=False), LEASE_NAME
    )
    denial_quiet_period: timedelta = setting(
        "--denial-quiet-period",
        "a quota-denial incident resolves when no pod of its workload was refused for this long "
        "(longer than the controllers' 16m40s retry backoff), e.g. 20m",
        _quiet,
        timedelta(minutes=20),
    )
    verbose: bool = setting("--verbose", "debug logging", _boolean, False, **_SWITCH)

    @property
    def enforcement_default(self) -> str:
        return "Enforce" if self.mode == "enforce" else "Observe"


def build_parser(
    parser: argparse.ArgumentParser | None = None, exclude: Set[str] = frozenset()
) -> argparse.ArgumentParser:
    """The operator's flags; `exclude` leaves out flags a command uses otherwise (plan: kubectl's -n, -v)."""
    parser = parser or argparse.ArgumentParser(prog="headroom run")
    for f in fields(OperatorConfig):
        flag = f.metadata["flag"]
        if flag not in exclude:
            parser.add_argument(
                flag, dest=f.name, help=f"{f.metadata['why']} [env {_env_name(flag)}]", **f.metadata["argparse"]
            )
    return parser


def config_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Flags win over environment variables, which win over defaults. Raises ConfigError."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(OperatorConfig):
        flag = f.metadata["flag"]
        given = getattr(args, f.name, None)
        if given is None:
            given = env.get(_env_name(flag))
        if given is not None and given != "":
            values[f.name] = f.metadata["parse"](given, flag)
    config = OperatorConfig(**values)
    _check_together(config)
    return config


def _check_together(config: OperatorConfig) -> None:
    """What one setting asks of another."""
    if config.history_source == "prometheus" and not config.prometheus_url:
        raise ConfigError("--history-source=prometheus needs --prometheus-url (or HEADROOM_PROMETHEUS_URL)")
    if config.max_overcommit and not config.prometheus_url:
        raise ConfigError(
            "--max-overcommit needs --prometheus-url (or HEADROOM_PROMETHEUS_URL): the cluster's allocatable "
            "capacity is read from kube-state-metrics' kube_node_status_allocatable there"
        )
    if config.history_source == "file":
        if config.history_file is None:
            raise ConfigError("--history-source=file needs --history-file (or HEADROOM_HISTORY_FILE)")
        if not config.history_file.is_file():
            raise ConfigError(f"--history-file {config.history_file} does not exist or is not a file")
