"""The operator's configuration (`headroom run`): flags, HEADROOM_* variables, defaults, refusals naming the flag."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from headroom.shell.config import ConfigError, OperatorConfig, build_parser, config_from


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> OperatorConfig:
    """What `headroom run ARGV` configures, with ENVIRON as the process environment."""
    return config_from(build_parser().parse_args(list(argv)), environ)


@pytest.fixture
def history_file(tmp_path: Path) -> Path:
    path = tmp_path / "history.csv"
    path.write_text("time,namespace,resource,value\n")
    return path


def test_defaults() -> None:
    config = parse_config([], {})
    assert config == OperatorConfig()
    assert config.history_source == "sampler"
    assert config.mode == "enforce"
    assert config.enforcement_default == "Enforce"
    assert config.resync_interval == timedelta(minutes=5)
    assert config.prometheus_step == "5m"
    assert (config.metrics_port, config.health_port) == (8080, 8081)
    assert (config.api_qps, config.api_burst) == (50.0, 100)
    assert config.namespace == "headroom-system"
    assert config.lease_name == "headroom"
    assert not config.auto_approve_within_recommendation
    assert not config.leader_elect
    assert config.prometheus_url is None
    assert config.history_file is None


def test_environment_variables(history_file: Path) -> None:
    config = parse_config(
        [],
        {
            "HEADROOM_HISTORY_SOURCE": "file",
            "HEADROOM_HISTORY_FILE": str(history_file),
            "HEADROOM_MODE": "Observe",
            "HEADROOM_RESYNC_INTERVAL": "1h30m",
            "HEADROOM_WEBHOOK_URL": "https://hooks.example.com/x",
            "HEADROOM_ALERTMANAGER_URL": "http://alertmanager:9093",
            "HEADROOM_AUTO_APPROVE_WITHIN_RECOMMENDATION": "true",
            "HEADROOM_NAMESPACE": "platform",
            "HEADROOM_API_QPS": "2.5",
            "HEADROOM_API_BURST": "5",
            "HEADROOM_METRICS_PORT": "0",
            "HEADROOM_HEALTH_PORT": "9000",
            "HEADROOM_LEADER_ELECT": "yes",
            "HEADROOM_LEASE_NAME": "headroom-a",
            "HEADROOM_PROMETHEUS_STEP": "1m",
            "HEADROOM_PROMETHEUS_TIMEOUT": "12.5",
        },
    )
    assert config.history_source == "file"
    assert config.history_file == history_file
    assert config.mode == "observe"  # case does not matter in the environment
    assert config.enforcement_default == "Observe"
    assert config.resync_interval == timedelta(hours=1, minutes=30)
    assert config.webhook_url == "https://hooks.example.com/x"
    assert config.alertmanager_url == "http://alertmanager:9093"
    assert config.auto_approve_within_recommendation
    assert config.namespace == "platform"
    assert (config.api_qps, config.api_burst) == (2.5, 5)
    assert (config.metrics_port, config.health_port) == (0, 9000)
    assert config.leader_elect
    assert config.lease_name == "headroom-a"
    assert config.prometheus_step == "1m"
    assert config.prometheus_timeout == 12.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("1", True),
        ("ON", True),
        ("false", False),
        ("0", False),
        ("", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_boolean_environment_values(text: str, expected: bool) -> None:
    config = parse_config([], {"HEADROOM_AUTO_APPROVE_WITHIN_RECOMMENDATION": text})
    assert config.auto_approve_within_recommendation is expected


def test_flags_win_over_environment(tmp_path: Path, history_file: Path) -> None:
    config = parse_config(
        [
            "--mode",
            "observe",
            "--history-source",
            "prometheus",
            "--prometheus-url",
            "http://prom:9090",
            "--api-qps",
            "7",
            "--resync-interval",
            "30s",
            "--namespace",
            "from-flag",
        ],
        {
            "HEADROOM_MODE": "enforce",
            "HEADROOM_HISTORY_SOURCE": "file",
            "HEADROOM_HISTORY_FILE": str(tmp_path / "missing.csv"),
            "HEADROOM_PROMETHEUS_URL": "http://other:1",
            "HEADROOM_API_QPS": "1",
            "HEADROOM_RESYNC_INTERVAL": "1h",
            "HEADROOM_NAMESPACE": "from-env",
        },
    )
    assert config.mode == "observe"
    assert config.history_source == "prometheus"
    assert config.prometheus_url == "http://prom:9090"
    assert config.api_qps == 7.0
    assert config.resync_interval == timedelta(seconds=30)
    assert config.namespace == "from-flag"


def test_boolean_flags() -> None:
    config = parse_config(["--auto-approve-within-recommendation", "--leader-elect", "--verbose"], {})
    assert config.auto_approve_within_recommendation
    assert config.leader_elect
    assert config.verbose


def test_prometheus_queries_from_flags() -> None:
    config = parse_config(
        [
            "--prometheus-query",
            'pods=count by (namespace) (up{{namespace=~"{namespaces}"}})',
            "--prometheus-query",
            ' requests.cpu =sum by (namespace) (x{{namespace=~"{namespaces}"}})',
        ],
        {},
    )
    assert config.prometheus_queries == {
        "pods": 'count by (namespace) (up{{namespace=~"{namespaces}"}})',
        "requests.cpu": 'sum by (namespace) (x{{namespace=~"{namespaces}"}})',
    }


def test_prometheus_query_from_the_environment() -> None:
    config = parse_config([], {"HEADROOM_PROMETHEUS_QUERY": 'pods=count(up{{namespace=~"{namespaces}"}})'})
    assert config.prometheus_queries == {"pods": 'count(up{{namespace=~"{namespaces}"}})'}


def test_file_source_with_a_file(history_file: Path) -> None:
    config = parse_config(["--history-source=file", f"--history-file={history_file}"], {})
    assert config.history_file == history_file


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("argv", "environ", "flag"),
    [
        (["--history-source=prometheus"], {}, "--prometheus-url"),
        ([], {"HEADROOM_HISTORY_SOURCE": "prometheus"}, "--prometheus-url"),
        (["--history-source=file"], {}, "--history-file"),
        (["--history-source=prometheus", "--prometheus-url=ftp://prom:9090"], {}, "--prometheus-url"),
        (["--prometheus-url=prom:9090"], {}, "--prometheus-url"),
        (["--prometheus-url=http://"], {}, "--prometheus-url"),
        (["--webhook-url=hooks.example.com/x"], {}, "--webhook-url"),
        (["--alertmanager-url=file:///etc/passwd"], {}, "--alertmanager-url"),
        ([], {"HEADROOM_MODE": "audit"}, "--mode"),
        ([], {"HEADROOM_HISTORY_SOURCE": "influx"}, "--history-source"),
        (["--resync-interval=4s"], {}, "--resync-interval"),
        (["--resync-interval=0s"], {}, "--resync-interval"),
        (["--denial-quiet-period=0s"], {}, "--denial-quiet-period"),
        ([], {"HEADROOM_DENIAL_QUIET_PERIOD": "soon"}, "--denial-quiet-period"),
        (["--prometheus-query=pods"], {}, "--prometheus-query"),
        (["--prometheus-query=pods=count(up)"], {}, "--prometheus-query"),  # no {namespaces}
        (["--metrics-port=65536"], {}, "--metrics-port"),
        (["--metrics-port=-1"], {}, "--metrics-port"),
        ([], {"HEADROOM_HEALTH_PORT": "70000"}, "--health-port"),
        ([], {"HEADROOM_METRICS_PORT": "http"}, "--metrics-port"),
        ([], {"HEADROOM_API_QPS": "fast"}, "--api-qps"),
        (["--api-qps=0"], {}, "--api-qps"),
        (["--api-burst=0"], {}, "--api-burst"),
        (["--prometheus-step=banana"], {}, "--prometheus-step"),
        (["--prometheus-step=5"], {}, "--prometheus-step"),  # PromQL needs a unit
        (["--prometheus-step=0m"], {}, "--prometheus-step"),
        ([], {"HEADROOM_PROMETHEUS_STEP": "5 minutes"}, "--prometheus-step"),
        (["--prometheus-timeout=-1"], {}, "--prometheus-timeout"),
        (["--prometheus-timeout=0"], {}, "--prometheus-timeout"),
        ([], {"HEADROOM_PROMETHEUS_TIMEOUT": "nan"}, "--prometheus-timeout"),
        (["--namespace=Not A Namespace!"], {}, "--namespace"),
        ([], {"HEADROOM_NAMESPACE": "a" * 64}, "--namespace"),
        (["--lease-name=my lease"], {}, "--lease-name"),
        ([], {"HEADROOM_LEASE_NAME": "Headroom"}, "--lease-name"),
        ([], {"HEADROOM_API_QPS": "nan"}, "--api-qps"),
        ([], {"HEADROOM_API_QPS": "inf"}, "--api-qps"),
        ([], {"HEADROOM_LEADER_ELECT": "maybe"}, "--leader-elect"),
        ([], {"HEADROOM_AUTO_APPROVE_WITHIN_RECOMMENDATION": "sometimes"}, "--auto-approve-within-recommendation"),
        ([], {"HEADROOM_VERBOSE": "loud"}, "--verbose"),
    ],
)
def test_invalid_configuration_names_the_flag(argv: list[str], environ: dict[str, str], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse_config(argv, environ)


def test_file_source_with_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match="--history-file") as info:
        parse_config(["--history-source=file", f"--history-file={missing}"], {})
    assert "nope.csv" in str(info.value)


def test_file_source_with_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--history-file"):
        parse_config(["--history-source=file", f"--history-file={tmp_path}"], {})


def test_resync_interval_of_five_seconds_is_allowed() -> None:
    assert parse_config(["--resync-interval=5s"], {}).resync_interval == timedelta(seconds=5)


def test_ports_at_the_bounds_are_allowed() -> None:
    config = parse_config(["--metrics-port=0", "--health-port=65535"], {})
    assert (config.metrics_port, config.health_port) == (0, 65535)


@pytest.mark.parametrize("text", ["soon", "5 minutes", "-5m"])
def test_unparsable_resync_interval_names_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--resync-interval"):
        parse_config([f"--resync-interval={text}"], {})


@pytest.mark.parametrize(
    ("argv", "env", "flag"),
    [
        (["--mode=audit"], {}, "--mode"),
        (["--history-source=influx"], {}, "--history-source"),
        (["--metrics-port=http"], {}, "--metrics-port"),
        ([], {"HEADROOM_MODE": "audit"}, "--mode"),
        ([], {"HEADROOM_METRICS_PORT": "http"}, "--metrics-port"),
    ],
)
def test_a_bad_value_names_the_flag_whether_given_as_flag_or_variable(
    argv: list[str], env: dict[str, str], flag: str
) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse_config(argv, env)


def test_refused_switch_says_what_it_accepts() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config([], {"HEADROOM_LEADER_ELECT": "maybe"})
    assert str(info.value) == "--leader-elect (env HEADROOM_LEADER_ELECT) must be true or false, got 'maybe'"


@pytest.mark.parametrize("step", ["30s", "5m", "1h30m", "500ms"])
def test_promql_durations_are_accepted(step: str) -> None:
    assert parse_config([f"--prometheus-step={step}"], {}).prometheus_step == step


def test_kubernetes_names_are_accepted() -> None:
    config = parse_config(["--namespace=platform-1", "--lease-name=headroom.shell.leader-a"], {})
    assert (config.namespace, config.lease_name) == ("platform-1", "headroom.shell.leader-a")


def test_protected_namespaces_default_to_the_system_ones_and_can_be_replaced() -> None:
    assert set(parse_config([], {}).protected_namespaces) == {
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "default",
    }
    assert parse_config(["--protected-namespaces", "kube-system, infra"], {}).protected_namespaces == (
        "infra",
        "kube-system",
    )
    assert parse_config([], {"HEADROOM_PROTECTED_NAMESPACES": "ops"}).protected_namespaces == ("ops",)
    with pytest.raises(ConfigError, match="--protected-namespaces"):
        parse_config(["--protected-namespaces", "Not A Namespace!"], {})


def test_the_denial_quiet_period_defaults_to_longer_than_the_controllers_retry_backoff() -> None:
    assert parse_config([], {}).denial_quiet_period == timedelta(minutes=20) > timedelta(seconds=1000)
    assert parse_config(["--denial-quiet-period=45s"], {}).denial_quiet_period == timedelta(seconds=45)
