"""Forecasts on a real API server: a namespace whose daily peaks climb shows when its quota will be full.

The sampler keeps each namespace's daily peaks in an annotation of Headroom's own quota; here a
history of ended days is written there exactly as the sampler writes it (its day labels, its
encoding), and the operator publishes the trend in the Project's status and its metrics. The file
source buckets its samples by UTC day and gives the same kind of forecast.
"""

from __future__ import annotations

import contextlib
import json
import time as clock
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from headroom.core.derivation import derive_namespace
from headroom.core.forecast import forecast
from headroom.core.history import day_offset, sampler_day
from headroom.core.quantity import parse_quantity
from kubernetes.client import ApiException

from hack.localcluster.kube import wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest
from tests.harness.prometheus import Prometheus, pod
from tests.harness.receivers import Alertmanager, WebhookReceiver, alertmanager_binary

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
D = Decimal


@pytest.fixture
def project_name(admin: k8s.ApiClient) -> Iterator[str]:
    name = f"p-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def get_project(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    return dict(custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def governed_hard(admin: k8s.ApiClient, namespace: str, resource: str) -> Decimal:
    def probe() -> Decimal | None:
        try:
            quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
        except ApiException:
            return None
        if (quota.metadata.annotations or {}).get("headroom.dev/state") != "governed":
            return None
        return parse_quantity(quota.spec.hard[resource])

    return wait_for(probe, 40, f"a governed quota in {namespace}")  # type: ignore[no-any-return]


def forecast_of(admin: k8s.ApiClient, project: str, namespace: str, resource: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = get_project(admin, project).get("status") or {}
        entry = next((e for e in status.get("namespaces") or [] if e.get("name") == namespace), {})
        found = (entry.get("forecast") or {}).get(resource)
        return dict(found) if found and "fullAt" in found else None

    try:
        return wait_for(probe, 40, f"a forecast of {namespace} {resource} in the status")  # type: ignore[no-any-return]
    except AssertionError:
        quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
        raise AssertionError(
            f"no forecast; status {get_project(admin, project).get('status')}, quota {quota.metadata.annotations}"
        ) from None


def test_the_samplers_daily_peaks_give_a_forecast_in_status_and_metrics(
    admin: k8s.ApiClient, namespace: str, project_name: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    operator = start_operator()  # the default history: the sampler
    custom(admin).create_cluster_custom_object(
        GROUP, VERSION, PLURAL, project_manifest(project_name, [namespace], quota={"resources": ["requests.cpu"]})
    )
    hard = governed_hard(admin, namespace, "requests.cpu")
    # Ten ended sampler days (the namespace's own days, see day_offset) climbing 100m a day from 100m.
    offset = day_offset(namespace)
    today = sampler_day(datetime.now(UTC), offset)
    first = today - timedelta(days=10)
    # The sampler's encoding: plain decimals (cores), as core.history.encode writes them.
    days = {(first + timedelta(days=i)).isoformat(): {"requests.cpu": str(D("0.1") * (i + 1))} for i in range(10)}
    core = k8s.CoreV1Api(admin)

    def sampled_today() -> dict[str, Any] | None:
        annotations = core.read_namespaced_resource_quota("headroom", namespace).metadata.annotations or {}
        kept = json.loads(annotations.get("headroom.dev/daily-peaks") or "{}")
        return kept if today.isoformat() in kept else None

    # Once the sampler has recorded today, the older days join it, as if sampled on those days (the
    # operator then has nothing to add: today's entry is its own).
    kept = wait_for(sampled_today, 30, "the sampler's entry for today")
    core.patch_namespaced_resource_quota(
        "headroom", namespace, {"metadata": {"annotations": {"headroom.dev/daily-peaks": json.dumps({**days, **kept})}}}
    )

    found = forecast_of(admin, project_name, namespace, "requests.cpu")
    # Each day's peak stands at the end of its day; the first day ends at first + 1 day + the offset,
    # and the trend (100m + 100m a day) reaches the governed hard value (hard - 100m) / 100m days later.
    first_end = datetime.combine(first + timedelta(days=1), time(0), UTC) + offset
    expected = first_end + timedelta(days=float((hard - D("0.1")) / D("0.1")))
    assert found == {"growthPerDay": "100m", "fullAt": expected.strftime("%Y-%m-%dT%H:%M:%SZ"), "days": 10}
    summary = get_project(admin, project_name)["status"]["summary"]
    assert summary["soonestFull"] == f"{expected.date().isoformat()} {namespace}/requests.cpu"
    labels = {"project": project_name, "namespace": namespace, "resource": "requests.cpu"}
    assert operator.metric("headroom_quota_growth_per_day", labels) == 0.1
    assert operator.metric("headroom_quota_forecast_full_timestamp_seconds", labels) == expected.timestamp()


def test_a_growing_file_history_gives_a_forecast_by_utc_day(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    history, first = growing_history(tmp_path / "growing.csv", namespace)
    start_operator("--history-source=file", f"--history-file={history}")
    custom(admin).create_cluster_custom_object(
        GROUP, VERSION, PLURAL, project_manifest(project_name, [namespace], quota={"resources": ["requests.cpu"]})
    )
    hard = governed_hard(admin, namespace, "requests.cpu")
    # Bootstrapped from the peak: 1 + 13 x 0.25 = 4.25 cores + 20 % = 5100m.
    assert hard == D("5.1")
    found = forecast_of(admin, project_name, namespace, "requests.cpu")
    # UTC days; the first ends at first + 1 day 00:00, and 5.1 is reached (5.1 - 1) / 0.25 = 16.4 days later.
    expected = datetime.combine(first + timedelta(days=1), time(0), UTC) + timedelta(days=16, hours=9, minutes=36)
    assert found == {"growthPerDay": "250m", "fullAt": expected.strftime("%Y-%m-%dT%H:%M:%SZ"), "days": 14}


# ------------------------------------------------------------------------------------------ the alert


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Alertmanager, WebhookReceiver]]:
    """A real Alertmanager that routes every alert on to a webhook (what its receivers were told)."""
    if alertmanager_binary() is None:
        pytest.skip("prometheus-alertmanager is not installed (.ci/run installs it)")
    with (
        WebhookReceiver() as forwarded,
        Alertmanager(tmp_path_factory.mktemp("alertmanager"), forward_to=forwarded.url) as manager,
    ):
        yield manager, forwarded


def growing_history(path: Path, namespace: str) -> tuple[Path, date]:
    """14 UTC days before today, 1 core on the first and 250m more each day (the day's peak at 18:00)."""
    first = datetime.now(UTC).date() - timedelta(days=14)
    lines = ["time,namespace,resource,value"]
    for i in range(14):
        day = first + timedelta(days=i)
        for hour, share in ((0, 50), (6, 70), (12, 90), (18, 100)):
            lines.append(
                f"{day.isoformat()}T{hour:02d}:00:00Z,{namespace},requests.cpu,{(1000 + 250 * i) * share // 100}m"
            )
    path.write_text("\n".join(lines) + "\n")
    return path, first


def test_a_forecast_full_within_the_horizon_alerts_every_sink_once(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
    alertmanager: tuple[Alertmanager, WebhookReceiver],
) -> None:
    manager, forwarded = alertmanager
    history, first = growing_history(tmp_path / "growing.csv", namespace)
    with WebhookReceiver() as webhook:
        operator = start_operator(
            "--history-source=file",
            f"--history-file={history}",
            f"--webhook-url={webhook.url}",
            f"--alertmanager-url={manager.url}",
        )
        body = project_manifest(project_name, [namespace], quota={"resources": ["requests.cpu"]})
        body["spec"]["owner"].update({"contacts": ["#web"], "businessHours": "Mon-Sun 00:00-24:00 UTC"})  # type: ignore[index]
        custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        # Governed at 5100m, the trend (1 core + 250m a day from the first day's end) reaches it 16.4 days
        # after the first day ended: about three days from now, inside the default horizon of 14 days.
        full_at = datetime.combine(first + timedelta(days=1), time(0), UTC) + timedelta(days=16, hours=9, minutes=36)
        payload = wait_for(
            lambda: webhook.payloads({"project": project_name, "kind": "forecast", "state": "firing"}),
            60,
            "the forecast alert at the webhook",
        )[0]
        assert payload["namespace"] == namespace and payload["resource"] == "requests.cpu"
        assert payload["id"].startswith(f"forecast/{namespace}/requests.cpu/")
        assert payload["threshold"] is None and payload["utilization"] is None and payload["severity"] == "warning"
        text = payload["text"]
        assert (
            f"growing at +250m/day, the trend of its daily peaks reaches the quota of 5100m on {full_at.date()}" in text
        )
        # The request that covers the next 14 days: the trend then, plus 20 % headroom.
        command = f"headroom request {project_name} {namespace} requests.cpu="
        assert command in text
        asked = parse_quantity(text.split(command)[1])
        sent = datetime.fromisoformat(payload["since"])
        horizon_end = sent + timedelta(days=14)
        expected = (D("5.1") + D("0.25") * D((horizon_end - full_at).total_seconds()) / 86400) * D("1.2")
        assert abs(asked - expected) <= D("0.002"), (asked, expected)

        alerts = wait_for(
            lambda: manager.alerts(active=True, alertname="HeadroomQuotaForecast", project=project_name),
            30,
            "Alertmanager to list the forecast alert",
        )
        assert alerts[0]["labels"]["namespace"] == namespace and "threshold" not in alerts[0]["labels"]
        assert alerts[0]["annotations"]["summary"] == text
        wait_for(
            lambda: [p for p in forwarded.payloads() if p["commonLabels"].get("alertname") == "HeadroomQuotaForecast"],
            30,
            "Alertmanager to notify its receiver of the forecast alert",
        )
        event = wait_for(lambda: events(admin, project_name, "QuotaForecastFull"), 30, "the QuotaForecastFull Event")
        assert event[0].type == "Warning" and event[0].message == text
        wait_for(
            lambda: (r := forecast_records(admin, project_name)) and not any("outbox" in x for x in r),
            30,
            "the forecast alert's outbox to settle",
        )

        # Told once: nothing more while the date stays inside the horizon, nor after a restart.
        updated = alerts[0]["updatedAt"]
        operator.stop()
        operator.start()
        labels = {"project": project_name, "namespace": namespace, "resource": "requests.cpu"}
        wait_for(
            lambda: operator.metric("headroom_quota_forecast_full_timestamp_seconds", labels) == full_at.timestamp(),
            60,
            "the restarted operator to reconcile the Project",
        )
        clock.sleep(5)  # room for a second notification, which must not come
        assert len(webhook.requests({"project": project_name, "kind": "forecast"})) == 1
        again = manager.alerts(active=True, alertname="HeadroomQuotaForecast", project=project_name)
        assert len(again) == 1 and again[0]["updatedAt"] == updated
        assert len(events(admin, project_name, "QuotaForecastFull")) == 1


def history_entering_the_horizon(
    path: Path, namespace: str, due: datetime, horizon: timedelta
) -> tuple[Decimal, datetime]:
    """14 UTC days before today of memory growing 64Mi a day, from a first day chosen so that the trend
    reaches the governed quota `horizon` after `due`, to within seconds. Returns the quota Headroom
    governs (the peak plus 20 %) and the forecast date."""
    first = datetime.now(UTC).date() - timedelta(days=14)
    step = 64 * 2**20

    def trial(base: int) -> tuple[dict[date, Decimal], Decimal, datetime | None]:
        daily = {first + timedelta(days=i): D(base + step * i) for i in range(14)}
        peak = max(daily.values())
        hard = derive_namespace(["requests.memory"], {"requests.memory": peak}, {}, 20, {})["requests.memory"]
        trend = forecast(daily, hard.recommended, datetime.now(UTC))
        return daily, hard.recommended, trend.full_at if trend else None

    target = due + horizon
    # Between two steps of the governed value's rounding, one more byte on every day moves the date
    # about 1.3 ms earlier; a wide enough scan finds a first day that lands on the target.
    estimate = int(
        5 * ((target - datetime.combine(first + timedelta(days=1), time(0), UTC)) / timedelta(days=1) - 15.6) * step
    )
    for base in range(estimate - 2**23, estimate + 2**23, 4096):
        daily, hard, full_at = trial(base)
        if full_at is not None and target <= full_at <= target + timedelta(seconds=10):
            lines = ["time,namespace,resource,value"]
            lines += [
                f"{day.isoformat()}T12:00:00Z,{namespace},requests.memory,{value}" for day, value in daily.items()
            ]
            path.write_text("\n".join(lines) + "\n")
            return hard, full_at
    raise AssertionError(f"no history found whose forecast date is {target}")


def test_a_forecast_date_that_enters_the_horizon_alerts_with_nothing_else_changing(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    tmp_path: Path,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """The history never changes and no pod moves: only the clock brings the forecast date within the
    horizon (3 days, here). The owners are told then, not at the next restart or whenever something
    else happens."""
    due = datetime.now(UTC) + timedelta(seconds=75)
    hard, full_at = history_entering_the_horizon(tmp_path / "entering.csv", namespace, due, timedelta(days=3))
    with WebhookReceiver() as webhook:
        start_operator(
            "--history-source=file", f"--history-file={tmp_path / 'entering.csv'}", f"--webhook-url={webhook.url}"
        )
        body = project_manifest(project_name, [namespace], quota={"resources": ["requests.memory"]})
        body["spec"]["owner"].update({"contacts": ["#web"], "businessHours": "Mon-Sun 00:00-24:00 UTC"})  # type: ignore[index]
        body["spec"]["alerts"] = {"forecastDays": 3}  # type: ignore[index]
        custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        assert governed_hard(admin, namespace, "requests.memory") == hard
        found = forecast_of(admin, project_name, namespace, "requests.memory")
        assert found["fullAt"] == full_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        # Planned, with the date still beyond the horizon.
        assert datetime.now(UTC) < due - timedelta(seconds=10), "the Project took too long to be governed"
        assert webhook.requests({"project": project_name, "kind": "forecast"}) == []
        assert not [r for r in forecast_records(admin, project_name) if r.get("state") == "firing"]
        wait = (due - datetime.now(UTC)).total_seconds() + 30
        payload = wait_for(
            lambda: webhook.payloads({"project": project_name, "kind": "forecast", "state": "firing"}),
            wait,
            "the forecast alert once its date came within the horizon",
        )[0]
        assert payload["namespace"] == namespace and payload["resource"] == "requests.memory"
        assert datetime.fromisoformat(payload["since"]) >= due - timedelta(seconds=1)


def forecast_records(admin: k8s.ApiClient, name: str) -> list[dict[str, Any]]:
    return list((get_project(admin, name).get("status") or {}).get("forecastAlerts") or [])


def events(admin: k8s.ApiClient, name: str, reason: str) -> list[k8s.CoreV1Event]:
    return (
        k8s.CoreV1Api(admin)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={name},reason={reason}")
        .items
    )


# ---------------------------------------------------------------------------------------- Prometheus


def test_a_growing_history_in_prometheus_gives_a_forecast(
    admin: k8s.ApiClient,
    namespace: str,
    project_name: str,
    prometheus_factory: Callable[..., Prometheus],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """kube-state-metrics series backfilled into a real Prometheus: on each of the ten UTC days before
    today, 2 + i pods (one core each) run for half an hour at noon."""
    first = datetime.now(UTC).date() - timedelta(days=10)
    segments = []
    for i in range(10):
        noon = datetime.combine(first + timedelta(days=i), time(12), UTC)
        segments += [
            pod(namespace, f"d{i}-{n}", noon, noon + timedelta(minutes=30), app={"requests.cpu": "1"})
            for n in range(2 + i)
        ]
    prometheus = prometheus_factory(segments)
    start_operator(
        "--history-source=prometheus",
        f"--prometheus-url={prometheus.url}",
        "--prometheus-step=1m",
        "--prometheus-timeout=5",
    )
    custom(admin).create_cluster_custom_object(
        GROUP, VERSION, PLURAL, project_manifest(project_name, [namespace], quota={"resources": ["pods"]})
    )
    # Governed from the peak, 11 pods + 20 % = 14 pods.
    assert governed_hard(admin, namespace, "pods") == 14
    found = forecast_of(admin, project_name, namespace, "pods")
    # The trend (2 pods when the first day ended, one more each day) reaches 14 twelve days later.
    expected = datetime.combine(first + timedelta(days=13), time(0), UTC)
    assert found == {"growthPerDay": "1", "fullAt": expected.strftime("%Y-%m-%dT%H:%M:%SZ"), "days": 10}
