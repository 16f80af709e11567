"""The operator's configuration: command-line flags, each with a HEADROOM_* environment variable."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from headroom.core.names import LEASE_NAME
from headroom.core.planning import DEFAULT_PROTECTED_NAMESPACES
from headroom.core.spec import parse_duration


class ConfigError(ValueError):
    """Invalid operator configuration: start-up stops with this message."""


@dataclass(frozen=True)
class OperatorConfig:
    history_source: str = "sampler"
    prometheus_url: str | None = None
    prometheus_step: str = "5m"
    prometheus_timeout: float = 30.0
    prometheus_queries: Mapping[str, str] = field(default_factory=dict)
    history_file: Path | None = None
    mode: str = "enforce"
    metrics_port: int = 8080
    health_port: int = 8081
    resync_interval: timedelta = timedelta(minutes=5)
    webhook_url: str | None = None
    alertmanager_url: str | None = None
    auto_approve_within_recommendation: bool = False
    namespace: str = "headroom-system"
    protected_namespaces: tuple[str, ...] = tuple(sorted(DEFAULT_PROTECTED_NAMESPACES))
    api_qps: float = 20.0
    api_burst: int = 40
    leader_elect: bool = False
    lease_name: str = LEASE_NAME
    verbose: bool = False

    @property
    def enforcement_default(self) -> str:
        return "Enforce" if self.mode == "enforce" else "Observe"


# (flag, env var, help). Types and choices are in _add_arguments.
_ENV = "HEADROOM_"


def _env_name(flag: str) -> str:
    return _ENV + flag.lstrip("-").replace("-", "_").upper()


def _add_arguments(parser: argparse.ArgumentParser, exclude: Set[str] = frozenset()) -> None:
    def add(flag: str, help_text: str, **kwargs: object) -> None:
        if flag in exclude:
            return
        env = _env_name(flag)
        parser.add_argument(flag, help=f"{help_text} [env {env}]", **kwargs)  # type: ignore[arg-type]

    add("--history-source", "where peak usage comes from", choices=["prometheus", "sampler", "file"])
    add("--prometheus-url", "Prometheus base URL, e.g. http://prometheus.monitoring:9090")
    add("--prometheus-step", "subquery resolution of the peak (PromQL duration)")
    add("--prometheus-timeout", "seconds one Prometheus query may take", type=float)
    add("--prometheus-query", "replace the PromQL for a resource: RESOURCE=TEMPLATE ({namespaces} is "
        "replaced by the namespace regex); may repeat", action="append")
    add("--history-file", "CSV or JSON file of samples (time,namespace,resource,value)", type=Path)
    add("--mode", "enforce quotas, or observe only (publish, enforce nothing)", choices=["enforce", "observe"])
    add("--metrics-port", "port of the Prometheus /metrics endpoint (0: off)", type=int)
    add("--health-port", "port of the /healthz liveness endpoint (0: off)", type=int)
    add("--resync-interval", "how often peaks are re-derived, e.g. 5m")
    add("--webhook-url", "URL that alert notifications are POSTed to (JSON, Slack-compatible text)")
    add("--alertmanager-url", "Alertmanager base URL; alerts are POSTed to /api/v2/alerts")
    add("--auto-approve-within-recommendation", "approve raises up to the current recommendation "
        "(peak plus headroom) without a reviewer", action="store_const", const="true")
    add("--namespace", "the operator's own namespace (webhook Secrets are read there)")
    add("--protected-namespaces", "comma-separated namespaces never governed unless the platform labels "
        "them headroom.dev/project=PROJECT (--namespace always is)")
    add("--api-qps", "sustained writes per second to the API server", type=float)
    add("--api-burst", "burst of writes above --api-qps", type=int)
    add("--leader-elect", "run several replicas with one active, elected on a Lease",
        action="store_const", const="true")
    add("--lease-name", "name of the Lease in --namespace used for leader election")
    add("--verbose", "debug logging", action="store_const", const="true")


def build_parser(parser: argparse.ArgumentParser | None = None,
                 exclude: Set[str] = frozenset()) -> argparse.ArgumentParser:
    """The operator's flags; `exclude` leaves out flags a command uses otherwise (plan: kubectl's -n, -v)."""
    parser = parser or argparse.ArgumentParser(prog="headroom run")
    _add_arguments(parser, exclude)
    return parser


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# A PromQL duration: one or more number-unit pairs, e.g. 5m, 1h30m, 500ms.
_PROMQL_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
# Kubernetes names: a namespace is a DNS-1123 label, a Lease name a DNS-1123 subdomain.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _boolean(value: object, flag: str) -> bool:
    """A switch from the environment: an unknown word is refused, not read as false
    (HEADROOM_LEADER_ELECT=maybe silently meant two active replicas)."""
    text = str(value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{flag} (env {_env_name(flag)}) must be true or false, got {value!r}")


def _kubernetes_name(value: str, flag: str, label: bool) -> str:
    pattern, limit, kind = (_DNS_LABEL, 63, "a namespace name") if label else \
        (_DNS_SUBDOMAIN, 253, "a Kubernetes object name")
    if len(value) > limit or not pattern.match(value):
        raise ConfigError(f"{flag} must be {kind} (lower-case letters, digits and '-', at most {limit} "
                          f"characters), got {value!r}")
    return value


def _url(value: str | None, what: str) -> str | None:
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ConfigError(f"{what} must be an http(s) URL, got {value!r}")
    return value


def config_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> OperatorConfig:
    """Flags win over environment variables, which win over defaults. Raises ConfigError."""
    env = os.environ if environ is None else environ
    defaults = OperatorConfig()

    def pick(name: str) -> object:
        value = getattr(args, name, None)
        if value is None:
            value = env.get(_ENV + name.upper())
        return value

    def number(name: str, kind: type, default: object) -> object:
        value = pick(name)
        if value is None or value == "":
            return default
        try:
            parsed = kind(value)
        except ValueError as exc:
            raise ConfigError(f"--{name.replace('_', '-')}: {value!r} is not a number") from exc
        if isinstance(parsed, float) and not math.isfinite(parsed):
            # float() accepts "nan" and "inf": a rate or timeout of NaN compares false with everything.
            raise ConfigError(f"--{name.replace('_', '-')}: {value!r} is not a finite number")
        return parsed

    source = str(pick("history_source") or defaults.history_source)
    if source not in {"prometheus", "sampler", "file"}:
        raise ConfigError(f"--history-source must be prometheus, sampler or file, got {source!r}")
    mode = str(pick("mode") or defaults.mode).lower()
    if mode not in {"enforce", "observe"}:
        raise ConfigError(f"--mode must be enforce or observe, got {mode!r}")
    prometheus_url = _url(pick("prometheus_url"), "--prometheus-url")  # type: ignore[arg-type]
    if source == "prometheus" and not prometheus_url:
        raise ConfigError("--history-source=prometheus needs --prometheus-url (or HEADROOM_PROMETHEUS_URL)")
    history_file = pick("history_file")
    history_path = Path(str(history_file)) if history_file else None
    if source == "file":
        if history_path is None:
            raise ConfigError("--history-source=file needs --history-file (or HEADROOM_HISTORY_FILE)")
        if not history_path.is_file():
            raise ConfigError(f"--history-file {history_path} does not exist or is not a file")
    try:
        resync = parse_duration(str(pick("resync_interval") or "5m"))
    except ValueError as exc:  # SpecError is a ValueError, and so is what parse_duration raises itself
        raise ConfigError(f"--resync-interval: {exc}") from exc
    if resync < timedelta(seconds=5):
        raise ConfigError("--resync-interval must be at least 5s")
    queries: dict[str, str] = {}
    raw_queries = pick("prometheus_query") or []
    # From the environment: one RESOURCE=TEMPLATE per line.
    items = [line for line in raw_queries.splitlines() if line.strip()] if isinstance(raw_queries, str) \
        else list(raw_queries)  # type: ignore[call-overload]
    for item in items:
        resource, sep, template = str(item).partition("=")
        if not sep or "{namespaces}" not in template:
            raise ConfigError(f"--prometheus-query {item!r}: expected RESOURCE=TEMPLATE with {{namespaces}}")
        queries[resource.strip()] = template
    config = OperatorConfig(
        history_source=source,
        prometheus_url=prometheus_url,
        prometheus_step=_promql_duration(str(pick("prometheus_step") or defaults.prometheus_step)),
        prometheus_timeout=float(number("prometheus_timeout", float, defaults.prometheus_timeout)),  # type: ignore[arg-type]
        prometheus_queries=queries,
        history_file=history_path,
        mode=mode,
        metrics_port=int(number("metrics_port", int, defaults.metrics_port)),  # type: ignore[call-overload]
        health_port=int(number("health_port", int, defaults.health_port)),  # type: ignore[call-overload]
        resync_interval=resync,
        webhook_url=_url(pick("webhook_url"), "--webhook-url"),  # type: ignore[arg-type]
        alertmanager_url=_url(pick("alertmanager_url"), "--alertmanager-url"),  # type: ignore[arg-type]
        auto_approve_within_recommendation=_boolean(pick("auto_approve_within_recommendation"),
                                                    "--auto-approve-within-recommendation"),
        namespace=_kubernetes_name(str(pick("namespace") or defaults.namespace), "--namespace", label=True),
        protected_namespaces=_protected(pick("protected_namespaces"), defaults.protected_namespaces),
        api_qps=float(number("api_qps", float, defaults.api_qps)),  # type: ignore[arg-type]
        api_burst=int(number("api_burst", int, defaults.api_burst)),  # type: ignore[call-overload]
        leader_elect=_boolean(pick("leader_elect"), "--leader-elect"),
        lease_name=_kubernetes_name(str(pick("lease_name") or defaults.lease_name), "--lease-name", label=False),
        verbose=_boolean(pick("verbose"), "--verbose"),
    )
    for port_name in ("metrics_port", "health_port"):
        port = getattr(config, port_name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"--{port_name.replace('_', '-')} must be between 0 and 65535, got {port}")
    if config.api_qps <= 0 or config.api_burst < 1:
        raise ConfigError("--api-qps must be > 0 and --api-burst >= 1")
    if config.prometheus_timeout <= 0:
        raise ConfigError(f"--prometheus-timeout must be a number of seconds > 0, got {config.prometheus_timeout:g}")
    return config


def _protected(raw: object, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return default
    names = [part.strip() for part in str(raw).split(",") if part.strip()]
    return tuple(sorted({_kubernetes_name(n, "--protected-namespaces", label=True) for n in names}))


def _promql_duration(text: str) -> str:
    """Refused here rather than by Prometheus at the first query, as a 400 every derivation cycle."""
    if not _PROMQL_DURATION.match(text.strip()) or not any(ch in "123456789" for ch in text):
        raise ConfigError(f"--prometheus-step must be a PromQL duration such as 30s, 5m or 1h, got {text!r}")
    return text.strip()
