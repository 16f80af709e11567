"""Quota alerts end to end: a real operator, a real Alertmanager, a webhook receiver in the test.

Each test governs a fresh namespace with `pods: 10` (or 20), creates Pods (they stay Pending: there
is no scheduler, but they count against the quota) and watches what reaches the sinks.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import wait_for
from hack.localcluster.operator import OPERATOR_NAMESPACE, OperatorProcess, custom, project_manifest
from tests.harness.receivers import Alertmanager, WebhookReceiver, alertmanager_binary

pytestmark = pytest.mark.integration

k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
ALWAYS_OPEN = "Mon-Sun 00:00-24:00 UTC"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CONTACTS = ["#quota-alerts", "oncall@example.com"]
ALERTNAME = "HeadroomQuotaNearLimit"


# ------------------------------------------------------------------------------------------- fixtures


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


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.csv"
    path.write_text("time,namespace,resource,value\n")  # no history: spec.quota.minimum decides
    return path


@pytest.fixture
def operator(
    start_operator: Callable[..., OperatorProcess],
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    history_file: Path,
) -> OperatorProcess:
    manager, _ = alertmanager
    return start_operator(
        "--history-source=file",
        f"--history-file={history_file}",
        f"--webhook-url={webhook.url}",
        f"--alertmanager-url={manager.url}",
    )


@pytest.fixture
def make_project(admin: k8s.ApiClient) -> Iterator[Callable[..., str]]:
    """Create a Project governing one namespace with a fixed pods quota; deleted after the test."""
    created: list[str] = []

    def make(namespace: str, business_hours: str = ALWAYS_OPEN, pods: int = 10, **spec: Any) -> str:
        name = f"alerts-{uuid.uuid4().hex[:8]}"
        body = project_manifest(
            name,
            [namespace],
            team=f"team-{name[-8:]}",
            quota={"resources": ["pods"], "minimum": {"pods": str(pods)}},
            **spec,
        )
        body["spec"]["owner"].update({"contacts": CONTACTS, "businessHours": business_hours})  # type: ignore[index]
        custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        created.append(name)
        core = k8s.CoreV1Api(admin)

        def governed() -> bool:
            quota = core.read_namespaced_resource_quota("headroom", namespace)
            state = (quota.metadata.annotations or {}).get("headroom.dev/state")
            return state == "governed" and (quota.status.hard or {}).get("pods") == str(pods)

        wait_for(governed, 60, f"ResourceQuota headroom in {namespace} governed with pods={pods}")
        # Pods need the namespace's default ServiceAccount, which a controller creates.
        wait_for(
            lambda: core.read_namespaced_service_account("default", namespace),
            30,
            f"ServiceAccount default in {namespace}",
        )
        return name

    yield make
    for name in created:
        with contextlib.suppress(ApiException):
            custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


# ------------------------------------------------------------------------------------------- helpers


def _pod(name: str) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(
            automount_service_account_token=False,
            containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
        ),
    )


def create_pods(admin: k8s.ApiClient, namespace: str, count: int, first: int = 0) -> None:
    core = k8s.CoreV1Api(admin)
    for i in range(first, first + count):
        core.create_namespaced_pod(namespace, _pod(f"p{i}"))


def delete_pods(admin: k8s.ApiClient, namespace: str, indexes: range) -> None:
    core = k8s.CoreV1Api(admin)
    for i in indexes:
        core.delete_namespaced_pod(f"p{i}", namespace, grace_period_seconds=0)


def quota_used(admin: k8s.ApiClient, namespace: str) -> str | None:
    quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
    return (quota.status.used or {}).get("pods")


def project(admin: k8s.ApiClient, name: str) -> dict[str, Any]:
    return custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def condition(admin: k8s.ApiClient, name: str, kind: str = "QuotaNearLimit") -> dict[str, Any] | None:
    conditions = (project(admin, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def alert_records(admin: k8s.ApiClient, name: str) -> list[dict[str, Any]]:
    return list((project(admin, name).get("status") or {}).get("alerts") or [])


def events(admin: k8s.ApiClient, name: str, reason: str) -> list[k8s.CoreV1Event]:
    return (
        k8s.CoreV1Api(admin)
        .list_namespaced_event("default", field_selector=f"involvedObject.name={name},reason={reason}")
        .items
    )


def am_alerts(manager: Alertmanager, name: str) -> list[dict[str, Any]]:
    return manager.alerts(active=True, alertname=ALERTNAME, project=name)


def fire(admin: k8s.ApiClient, namespace: str, webhook: WebhookReceiver, name: str, pods: int = 8) -> dict[str, Any]:
    """Push the namespace to `pods` Pods and wait for the firing notification at the webhook."""
    create_pods(admin, namespace, pods)
    delivered = wait_for(
        lambda: webhook.payloads({"project": name, "state": "firing"}),
        60,
        f"a firing notification for {name} at the webhook",
    )
    return delivered[0]


def settle(seconds: float) -> None:
    """Give the operator time to do something it should not (re-send, deliver too early)."""
    time.sleep(seconds)


# ---------------------------------------------------------------------------------------------- tests


def test_crossing_80_percent_alerts_every_sink_exactly_once(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    make_project: Callable[..., str],
) -> None:
    manager, forwarded = alertmanager
    name = make_project(namespace)
    team = f"team-{name[-8:]}"
    sent_before = operator.metric("headroom_alerts_sent_total")

    payload = fire(admin, namespace, webhook, name)

    assert payload["project"] == name
    assert payload["team"] == team
    assert payload["contacts"] == CONTACTS
    assert payload["namespace"] == namespace
    assert payload["resource"] == "pods"
    assert payload["used"] == "8"
    assert payload["hard"] == "10"
    assert payload["utilization"] == "80"
    assert payload["threshold"] == 80
    assert payload["state"] == "firing"
    assert payload["severity"] == "warning"
    assert name in payload["text"] and "80%" in payload["text"]
    request = webhook.delivered({"project": name})[0]
    assert request.header("Idempotency-Key") == payload["id"]
    assert (request.header("Content-Type") or "").startswith("application/json")

    alerts = wait_for(lambda: am_alerts(manager, name), 30, f"Alertmanager to list the alert of {name}")
    assert len(alerts) == 1
    labels = alerts[0]["labels"]
    assert {k: labels.get(k) for k in ("alertname", "project", "team", "namespace", "resource", "severity")} == {
        "alertname": ALERTNAME,
        "project": name,
        "team": team,
        "namespace": namespace,
        "resource": "pods",
        "severity": "warning",
    }
    assert alerts[0]["annotations"]["notification_id"] == payload["id"]
    assert alerts[0]["status"]["state"] == "active"
    # Alertmanager routed it on to its own receiver.
    wait_for(
        lambda: [
            p for p in forwarded.payloads() if p["status"] == "firing" and p["commonLabels"].get("project") == name
        ],
        30,
        f"Alertmanager to notify its receiver about {name}",
    )

    # The webhook hears of it before the status write that records the delivery: wait for that write.
    near = wait_for(
        lambda: (found := condition(admin, name)) and found["status"] == "True" and found,
        30,
        "condition QuotaNearLimit=True",
    )
    assert near["status"] == "True", near
    assert near["reason"] == "Above80Percent"
    assert f"{namespace} pods at 80%" in near["message"]
    warned = wait_for(lambda: events(admin, name, "QuotaNearLimit"), 30, "Event QuotaNearLimit on the Project")
    assert warned[0].type == "Warning"
    assert warned[0].involved_object.kind == "Project"
    assert warned[0].message == payload["text"]
    assert operator.metric("headroom_alerts_sent_total") > sent_before
    assert operator.metric("headroom_alerts_sent_total", {"sink": "webhook", "state": "firing"}) >= 1
    assert operator.metric("headroom_alerts_sent_total", {"sink": "alertmanager", "state": "firing"}) >= 1

    # The outbox is settled: nothing is owed, nothing is re-sent while usage stays put.
    record = wait_for(
        lambda: next((r for r in alert_records(admin, name) if r["threshold"] == 80 and "outbox" not in r), None),
        30,
        "the delivered notification to leave the outbox",
    )
    assert record["state"] == "firing" and record["announced"] is True
    # The reminder is scheduled with the delivery, in the same status write: a business day later.
    sent = datetime.fromisoformat(record["lastSent"])
    assert datetime.fromisoformat(record["notBefore"]) >= sent + timedelta(hours=16), record
    version = project(admin, name)["metadata"]["resourceVersion"]
    settle(5)
    assert project(admin, name)["metadata"]["resourceVersion"] == version, "the status was written again"
    assert len(webhook.requests({"project": name})) == 1
    assert len(am_alerts(manager, name)) == 1
    assert len(events(admin, name, "QuotaNearLimit")) == 1


def test_outside_business_hours_nothing_is_delivered_until_the_next_opening(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    make_project: Callable[..., str],
) -> None:
    manager, _ = alertmanager
    berlin = ZoneInfo("Europe/Berlin")
    # A single weekday three days from now: closed now whatever the time, and its opening is known.
    day: date = datetime.now(UTC).date() + timedelta(days=3)
    expected = datetime(day.year, day.month, day.day, 9, 0, tzinfo=berlin).astimezone(UTC)
    name = make_project(namespace, business_hours=f"{DAYS[day.weekday()]} 09:00-17:00 Europe/Berlin")

    create_pods(admin, namespace, 8)

    def deferred() -> dict[str, Any] | None:
        return next((r for r in alert_records(admin, name) if r["threshold"] == 80 and r.get("notBefore")), None)

    record = wait_for(deferred, 60, f"status.alerts of {name} to hold a deferred notification")
    assert datetime.fromisoformat(record["notBefore"].replace("Z", "+00:00")) == expected
    assert record["state"] == "firing"
    assert record.get("announced", False) is False and "outbox" not in record
    near = wait_for(lambda: condition(admin, name), 30, "condition QuotaNearLimit")
    assert near["status"] == "True"  # the condition tells the truth at once; only the paging waits
    assert operator.metric("headroom_alerts_deferred_total") >= 1
    settle(4)
    assert webhook.requests({"project": name}) == []
    assert manager.alerts(alertname=ALERTNAME, project=name) == []
    assert events(admin, name, "QuotaNearLimit") == []


def test_a_failing_receiver_is_retried_until_it_accepts_once(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    make_project: Callable[..., str],
) -> None:
    manager, _ = alertmanager
    name = make_project(namespace)
    webhook.fail_next(2, where={"project": name})

    payload = fire(admin, namespace, webhook, name)

    attempts = webhook.requests({"project": name})
    assert [r.status for r in attempts] == [500, 500, 200]
    assert {r.header("Idempotency-Key") for r in attempts} == {payload["id"]}
    assert attempts[2].received - attempts[0].received < 60
    assert operator.metric("headroom_alert_delivery_failures_total", {"sink": "webhook"}) >= 2
    # The healthy sinks were not held back by the failing one, nor sent to twice.
    assert len(wait_for(lambda: am_alerts(manager, name), 30, "the Alertmanager alert")) == 1
    assert operator.metric("headroom_alerts_sent_total", {"sink": "alertmanager", "state": "firing"}) >= 1
    wait_for(lambda: not any(r.get("outbox") for r in alert_records(admin, name)), 30, "the outbox to settle")
    settle(5)
    assert len(webhook.delivered({"project": name})) == 1
    assert len(webhook.requests({"project": name})) == 3
    assert len(events(admin, name, "QuotaNearLimit")) == 1


def test_a_restarted_operator_sends_nothing_again(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    make_project: Callable[..., str],
) -> None:
    manager, _ = alertmanager
    name = make_project(namespace)
    fire(admin, namespace, webhook, name)
    updated = wait_for(lambda: am_alerts(manager, name), 30, "the Alertmanager alert")[0]["updatedAt"]
    wait_for(lambda: events(admin, name, "QuotaNearLimit"), 30, "Event QuotaNearLimit")
    wait_for(lambda: not any(r.get("outbox") for r in alert_records(admin, name)), 30, "the outbox to settle")

    operator.stop()
    operator.start()
    # The new process has reconciled the Project once it publishes the Project's utilization.
    wait_for(
        lambda: operator.metric("headroom_quota_utilization_percent", {"project": name}) == 80,
        60,
        "the restarted operator to reconcile the Project",
    )
    settle(10)

    assert len(webhook.requests({"project": name})) == 1
    alerts = am_alerts(manager, name)
    assert len(alerts) == 1 and alerts[0]["updatedAt"] == updated
    assert len(events(admin, name, "QuotaNearLimit")) == 1
    assert operator.running()


def test_usage_below_threshold_minus_hysteresis_resolves_the_alert_at_both_sinks(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    make_project: Callable[..., str],
) -> None:
    manager, forwarded = alertmanager
    name = make_project(namespace, pods=20)
    fired = fire(admin, namespace, webhook, name, pods=16)  # 80 %
    assert fired["utilization"] == "80"
    wait_for(lambda: am_alerts(manager, name), 30, "the Alertmanager alert")

    # 75 % is not below 80 - 5: the alert holds.
    delete_pods(admin, namespace, range(15, 16))
    wait_for(lambda: quota_used(admin, namespace) == "15", 45, "quota status.used to drop to 15")
    wait_for(
        lambda: any(r["threshold"] == 80 and r.get("utilization") == "75" for r in alert_records(admin, name)),
        30,
        "the operator to see 75 %",
    )
    assert [p["state"] for p in webhook.payloads({"project": name})] == ["firing"]
    assert condition(admin, name)["status"] == "True"  # type: ignore[index]

    # 70 % is: the alert resolves, at every sink.
    delete_pods(admin, namespace, range(14, 15))
    resolved = wait_for(
        lambda: webhook.payloads({"project": name, "state": "resolved"}), 60, "a resolved notification at the webhook"
    )
    assert len(resolved) == 1
    assert resolved[0]["threshold"] == 80 and resolved[0]["utilization"] == "70"
    assert resolved[0]["used"] == "14" and resolved[0]["hard"] == "20"
    assert resolved[0]["id"] != fired["id"]
    wait_for(lambda: not am_alerts(manager, name), 30, "Alertmanager to stop listing the alert as active")
    wait_for(
        lambda: [
            p for p in forwarded.payloads() if p["status"] == "resolved" and p["commonLabels"].get("project") == name
        ],
        30,
        "Alertmanager to notify its receiver that the alert resolved",
    )
    near = wait_for(
        lambda: (c := condition(admin, name)) and c["status"] == "False" and c, 30, "condition QuotaNearLimit False"
    )
    assert near["reason"] == "BelowThresholds"
    wait_for(lambda: events(admin, name, "QuotaBelowLimit"), 30, "Event QuotaBelowLimit on the Project")
    assert operator.metric("headroom_alerts_sent_total", {"sink": "webhook", "state": "resolved"}) >= 1
    assert operator.metric("headroom_alerts_sent_total", {"sink": "alertmanager", "state": "resolved"}) >= 1
    wait_for(lambda: alert_records(admin, name) == [], 30, "the settled, resolved record to be forgotten")
    assert [p["state"] for p in webhook.payloads({"project": name})] == ["firing", "resolved"]


def test_a_notification_owed_when_the_operator_stops_is_delivered_by_the_next_one(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    alertmanager: tuple[Alertmanager, WebhookReceiver],
    make_project: Callable[..., str],
) -> None:
    manager, _ = alertmanager
    name = make_project(namespace)
    webhook.down()  # connection refused, not even an HTTP error

    create_pods(admin, namespace, 8)

    def pending() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in alert_records(admin, name)
                if r.get("outbox") and "alertmanager" in r.get("deliveredSinks", [])
            ),
            None,
        )

    record = wait_for(pending, 60, "an outbox entry delivered to Alertmanager but not to the webhook")
    assert record["outbox"]["state"] == "firing"
    assert "webhook" not in record["deliveredSinks"] and "webhook" in record["sinks"]
    wait_for(
        lambda: operator.metric("headroom_alert_delivery_failures_total", {"sink": "webhook"}) >= 1,
        30,
        "a failed webhook delivery",
    )
    updated = wait_for(lambda: am_alerts(manager, name), 30, "the Alertmanager alert")[0]["updatedAt"]

    operator.stop()
    webhook.up()
    operator.start()

    delivered = wait_for(
        lambda: webhook.delivered({"project": name}), 60, "the restarted operator to deliver the owed notification"
    )
    assert delivered[0].json["id"] == record["outbox"]["id"] == delivered[0].header("Idempotency-Key")
    wait_for(lambda: not any(r.get("outbox") for r in alert_records(admin, name)), 30, "the outbox to settle")
    settle(3)
    assert len(webhook.requests({"project": name})) == 1
    alerts = am_alerts(manager, name)
    assert len(alerts) == 1 and alerts[0]["updatedAt"] == updated  # Alertmanager had it: not sent again
    assert len(events(admin, name, "QuotaNearLimit")) == 1
    assert operator.metric("headroom_alerts_sent_total", {"sink": "webhook", "state": "firing"}) >= 1


def test_a_projects_own_webhook_secret_takes_precedence_over_the_operator_default(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    make_project: Callable[..., str],
) -> None:
    core = k8s.CoreV1Api(admin)
    secret = f"hook-{uuid.uuid4().hex[:6]}"
    with WebhookReceiver() as own:
        core.create_namespaced_secret(
            OPERATOR_NAMESPACE, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=secret), string_data={"url": own.url})
        )
        try:
            name = make_project(namespace, alerts={"webhookSecretRef": {"name": secret, "key": "url"}})
            create_pods(admin, namespace, 8)
            delivered = wait_for(
                lambda: own.delivered({"project": name}), 60, "the firing notification at the Project's own webhook"
            )
            assert delivered[0].json["state"] == "firing"
            settle(2)
            assert len(own.requests({"project": name})) == 1
            assert webhook.requests({"project": name}) == []
        finally:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(secret, OPERATOR_NAMESPACE)


def test_a_missing_webhook_secret_holds_the_teams_alert_and_says_so(
    admin: k8s.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    webhook: WebhookReceiver,
    make_project: Callable[..., str],
) -> None:
    """Never silently to the platform's webhook: the alert waits for the team's own Secret."""
    core = k8s.CoreV1Api(admin)
    secret = f"hook-{uuid.uuid4().hex[:6]}"
    name = make_project(namespace, alerts={"webhookSecretRef": {"name": secret, "key": "url"}})
    create_pods(admin, namespace, 8)
    held = wait_for(
        lambda: (c := condition(admin, name, "AlertsDelivered")) and c["status"] == "False" and c,
        60,
        "condition AlertsDelivered False",
    )
    assert held["reason"] == "WebhookSecretMissing"
    assert secret in held["message"] and "waits" in held["message"]
    assert operator.metric("headroom_webhook_secret_missing_projects") == 1
    settle(3)
    assert webhook.requests({"project": name}) == []  # not to the operator's --webhook-url
    with WebhookReceiver() as own:
        core.create_namespaced_secret(
            OPERATOR_NAMESPACE, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=secret), string_data={"url": own.url})
        )
        try:
            delivered = wait_for(
                lambda: own.delivered({"project": name}),
                60,
                "the held notification at the Project's own webhook once its Secret exists",
            )
            assert delivered[0].json["state"] == "firing"
            wait_for(
                lambda: (c := condition(admin, name, "AlertsDelivered")) and c["status"] == "True",
                30,
                "condition AlertsDelivered True",
            )
            assert operator.metric("headroom_webhook_secret_missing_projects") == 0
            settle(2)
            assert len(own.requests({"project": name})) == 1
            assert webhook.requests({"project": name}) == []
        finally:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_secret(secret, OPERATOR_NAMESPACE)
