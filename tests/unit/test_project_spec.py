import copy
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from headroom.project_spec import (
    APPROVED_BY_ANNOTATION,
    APPROVED_CHANGE_ANNOTATION,
    DEFAULT_RESOURCES,
    AlertSettings,
    LimitDefaults,
    NamespaceSpec,
    Owner,
    ProjectSpec,
    QuotaSettings,
    SecretKeyRef,
    SpecError,
    parse_duration,
    parse_project,
)
from headroom.quantity import GI, MI

D = Decimal

FULL_PROJECT = """
apiVersion: headroom.dev/v1alpha1
kind: Project
metadata:
  name: payments
  annotations:
    headroom.dev/approved-change: "sha256:abc"
    headroom.dev/approved-by: alice
spec:
  owner:
    team: payments
    contacts: ["#payments-alerts", "payments@example.com"]
    businessHours: "Mon-Fri 09:00-17:00 America/Los_Angeles"
    holidays: ["2026-12-25", 2027-01-01]
  namespaces:
    - name: payments
      requested: {requests.cpu: "40"}
    - name: payments-batch
  quota:
    resources: [requests.cpu, requests.memory, limits.cpu, limits.memory, pods]
    headroomPercent: 25
    lookback: 14d
    minimum: {requests.cpu: "1", requests.memory: 1Gi, pods: 10}
    enforcement: Observe
  defaults:
    requests: {cpu: 100m, memory: 128Mi}
    limits: {cpu: "1", memory: 512Mi}
  alerts:
    thresholds: [90, 80, 100]
    hysteresis: 3
    cooldown: 12h
    urgentWhenFull: true
    webhookSecretRef: {name: slack, namespace: headroom-system, key: webhook}
"""


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "payments"},
        "spec": {"owner": {"team": "payments"}, "namespaces": [{"name": "payments"}]},
    }


def with_field(path: str, value: Any) -> dict[str, Any]:
    """A minimal project with one dotted path (list indexes as numbers) set to `value`."""
    obj = minimal()
    keys = path.split(".")
    node: Any = obj
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return obj


def test_full_project_from_yaml() -> None:
    project = parse_project(yaml.safe_load(FULL_PROJECT))
    assert project == ProjectSpec(
        name="payments",
        owner=Owner(
            team="payments",
            contacts=("#payments-alerts", "payments@example.com"),
            business_hours="Mon-Fri 09:00-17:00 America/Los_Angeles",
            holidays=("2026-12-25", "2027-01-01"),
        ),
        namespaces=(
            NamespaceSpec(name="payments", requested={"requests.cpu": D(40)}),
            NamespaceSpec(name="payments-batch", requested={}),
        ),
        quota=QuotaSettings(
            resources=("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"),
            headroom_percent=25,
            lookback=timedelta(days=14),
            minimum={"requests.cpu": D(1), "requests.memory": GI, "pods": D(10)},
            enforcement="Observe",
        ),
        defaults=LimitDefaults(
            requests={"cpu": D("0.1"), "memory": 128 * MI},
            limits={"cpu": D(1), "memory": 512 * MI},
        ),
        alerts=AlertSettings(
            thresholds=(80, 90, 100),
            hysteresis=3,
            cooldown=timedelta(hours=12),
            urgent_when_full=True,
            webhook_secret_ref=SecretKeyRef(name="slack", namespace="headroom-system", key="webhook"),
        ),
        approved_change="sha256:abc",
        approved_by="alice",
    )
    assert project.namespace_names == ("payments", "payments-batch")
    assert project.requested == {"payments": {"requests.cpu": D(40)}}


def test_minimal_project_gets_defaults() -> None:
    project = parse_project(minimal())
    assert project.quota == QuotaSettings(
        resources=DEFAULT_RESOURCES,
        headroom_percent=20,
        lookback=timedelta(days=30),
        minimum={},
        enforcement=None,
    )
    assert DEFAULT_RESOURCES == ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods")
    assert project.alerts == AlertSettings(
        thresholds=(80, 90, 100), hysteresis=5, cooldown=None, urgent_when_full=False, webhook_secret_ref=None
    )
    assert project.defaults == LimitDefaults(requests={}, limits={})
    assert project.owner == Owner(team="payments")
    assert project.approved_change is None
    assert project.approved_by is None
    assert project.requested == {}


def test_kopf_style_body_without_apiversion_or_kind() -> None:
    obj = minimal()
    del obj["apiVersion"], obj["kind"]
    obj["status"] = {"anything": "goes"}
    assert parse_project(obj).name == "payments"


def test_annotations() -> None:
    obj = minimal()
    obj["metadata"]["annotations"] = {
        APPROVED_CHANGE_ANNOTATION: " sha256:0123 ",
        APPROVED_BY_ANNOTATION: "bob",
        "unrelated/annotation": "x",
    }
    project = parse_project(obj)
    assert project.approved_change == "sha256:0123"
    assert project.approved_by == "bob"
    assert APPROVED_CHANGE_ANNOTATION == "headroom.dev/approved-change"
    assert APPROVED_BY_ANNOTATION == "headroom.dev/approved-by"


def test_empty_approval_annotation_means_none() -> None:
    obj = minimal()
    obj["metadata"]["annotations"] = {APPROVED_CHANGE_ANNOTATION: ""}
    assert parse_project(obj).approved_change is None


def test_webhook_secret_ref_defaults() -> None:
    project = parse_project(with_field("spec.alerts.webhookSecretRef", {"name": "hook"}))
    assert project.alerts.webhook_secret_ref == SecretKeyRef(name="hook", namespace=None, key="url")


def test_zero_cooldown_and_zero_headroom_are_allowed() -> None:
    obj = with_field("spec.alerts.cooldown", "0s")
    obj["spec"]["quota"] = {"headroomPercent": 0}
    project = parse_project(obj)
    assert project.alerts.cooldown == timedelta(0)
    assert project.quota.headroom_percent == 0


def test_requested_resources_must_be_governed() -> None:
    obj = with_field("spec.quota.resources", ["requests.cpu", "count/secrets"])
    obj["spec"]["namespaces"][0]["requested"] = {"count/secrets": "50", "requests.cpu": "500m"}
    project = parse_project(obj)
    assert project.namespaces[0].requested == {"count/secrets": D(50), "requests.cpu": D("0.5")}


def test_parsed_project_does_not_alias_input() -> None:
    obj = yaml.safe_load(FULL_PROJECT)
    before = copy.deepcopy(obj)
    parse_project(obj)
    assert obj == before


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.quota.lookback", "30x", 'spec.quota.lookback: "30x" is not a duration like 30d or 12h'),
        ("spec.quota.lookback", "0d", 'spec.quota.lookback: "0d" must be longer than zero'),
        ("spec.quota.lookback", 30, "spec.quota.lookback: 30 is not a duration"),
        ("spec.quota.headroomPercent", -5, "spec.quota.headroomPercent: -5 must be at least 0"),
        ("spec.quota.headroomPercent", "20", 'spec.quota.headroomPercent: "20" is not a whole number'),
        ("spec.quota.headroomPercent", 12.5, "spec.quota.headroomPercent: 12.5 is not a whole number"),
        ("spec.quota.headroomPercent", True, "spec.quota.headroomPercent: True is not a whole number"),
        ("spec.quota.enforcement", "enforce", 'spec.quota.enforcement: "enforce" must be Enforce or Observe'),
        ("spec.quota.resources", [], "spec.quota.resources: must name at least one resource"),
        ("spec.quota.resources", "pods", 'spec.quota.resources: must be a list, not "pods"'),
        ("spec.quota.resources", ["pods", "pods"], 'spec.quota.resources\\[1\\]: "pods" is listed twice'),
        ("spec.quota.resources", ["pods", 3], "spec.quota.resources\\[1\\]: must be text, not 3"),
        (
            "spec.quota.resources",
            ["requests cpu"],
            'spec.quota.resources\\[0\\]: "requests cpu" is not a resource',
        ),
        ("spec.quota.minimum", {"requests.cpu": "-1"}, 'spec.quota.minimum.requests.cpu: "-1" is negative'),
        (
            "spec.quota.minimum",
            {"requests.cpu": "lots"},
            'spec.quota.minimum.requests.cpu: "lots" is not a Kubernetes quantity',
        ),
        (
            "spec.quota.minimum",
            {"requests.cpus": "1"},
            "spec.quota.minimum.requests.cpus: is not one of spec.quota.resources",
        ),
        ("spec.quota.minimum", {"pods": 1.5}, "spec.quota.minimum.pods: 1.5 is a floating-point number"),
        ("spec.quota.headroomPercnt", 30, "spec.quota.headroomPercnt: unknown field"),
        ("spec.quota", "big", 'spec.quota: must be a mapping, not "big"'),
        ("spec.owner", None, "spec.owner: is required"),
        ("spec.owner.team", None, "spec.owner.team: is required"),
        ("spec.owner.team", "", "spec.owner.team: is required"),
        ("spec.owner.team", 7, "spec.owner.team: must be text, not 7"),
        ("spec.owner.contacts", "#alerts", 'spec.owner.contacts: must be a list, not "#alerts"'),
        ("spec.owner.contacts", ["ok", None], "spec.owner.contacts\\[1\\]: is required"),
        ("spec.owner.holidays", ["2026-02-30"], 'spec.owner.holidays\\[0\\]: "2026-02-30" is not a date'),
        ("spec.owner.holidays", ["Christmas"], 'spec.owner.holidays\\[0\\]: "Christmas" is not a date'),
        ("spec.owner.holidays", ["20261225"], 'spec.owner.holidays\\[0\\]: "20261225" is not a date'),
        ("spec.owner.businessHours", ["Mon"], "spec.owner.businessHours: must be text"),
        ("spec.owner.email", "x", "spec.owner.email: unknown field"),
        ("spec.namespaces", None, "spec.namespaces: is required"),
        ("spec.namespaces", [], "spec.namespaces: must list at least one namespace"),
        ("spec.namespaces", ["payments"], 'spec.namespaces\\[0\\]: must be a mapping, not "payments"'),
        ("spec.namespaces.0.name", None, "spec.namespaces\\[0\\].name: is required"),
        (
            "spec.namespaces.0.name",
            "Payments",
            'spec.namespaces\\[0\\].name: "Payments" is not a namespace name',
        ),
        ("spec.namespaces.0.name", "a" * 64, "spec.namespaces\\[0\\].name: .* is not a namespace name"),
        ("spec.namespaces.0.name", "-x", 'spec.namespaces\\[0\\].name: "-x" is not a namespace name'),
        (
            "spec.namespaces",
            [{"name": "a"}, {"name": "a"}],
            'spec.namespaces\\[1\\].name: "a" is listed twice',
        ),
        (
            "spec.namespaces.0.requested",
            {"requests.cpu": "5 cores"},
            'spec.namespaces\\[0\\].requested.requests.cpu: "5 cores" is not a Kubernetes quantity',
        ),
        (
            "spec.namespaces.0.requested",
            {"requests.cpu": "-40"},
            'spec.namespaces\\[0\\].requested.requests.cpu: "-40" is negative',
        ),
        (
            "spec.namespaces.0.requested",
            {"count/secrets": "5"},
            "spec.namespaces\\[0\\].requested.count/secrets: is not one of spec.quota.resources",
        ),
        ("spec.namespaces.0.requested", ["cpu"], "spec.namespaces\\[0\\].requested: must be a mapping"),
        ("spec.namespaces.0.quota", {}, "spec.namespaces\\[0\\].quota: unknown field"),
        (
            "spec.defaults",
            {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
            "spec.defaults.requests.cpu: 2 is above spec.defaults.limits.cpu \\(1\\)",
        ),
        ("spec.defaults.requests", {"memory": "lots"}, 'spec.defaults.requests.memory: "lots" is not'),
        ("spec.defaults.limits", {"cpu": True}, "spec.defaults.limits.cpu: True is a boolean"),
        ("spec.defaults.default", {}, "spec.defaults.default: unknown field"),
        ("spec.alerts.thresholds", [], "spec.alerts.thresholds: must list at least one percentage"),
        ("spec.alerts.thresholds", [80, 0], "spec.alerts.thresholds\\[1\\]: 0 must be between 1 and 100"),
        ("spec.alerts.thresholds", [80, 101], "spec.alerts.thresholds\\[1\\]: 101 must be between 1 and 100"),
        ("spec.alerts.thresholds", [80, 80], "spec.alerts.thresholds\\[1\\]: 80 is listed twice"),
        ("spec.alerts.thresholds", [None], "spec.alerts.thresholds\\[0\\]: is required"),
        ("spec.alerts.thresholds", ["80%"], 'spec.alerts.thresholds\\[0\\]: "80%" is not a whole number'),
        ("spec.alerts.hysteresis", -1, "spec.alerts.hysteresis: -1 must be between 0 and 99"),
        ("spec.alerts.cooldown", "1 day", 'spec.alerts.cooldown: "1 day" is not a duration'),
        ("spec.alerts.urgentWhenFull", "yes", 'spec.alerts.urgentWhenFull: "yes" is not true or false'),
        ("spec.alerts.webhookSecretRef", {"key": "url"}, "spec.alerts.webhookSecretRef.name: is required"),
        ("spec.alerts.webhookSecretRef", "slack", "spec.alerts.webhookSecretRef: must be a mapping"),
        (
            "spec.alerts.webhookSecretRef",
            {"name": "s", "ns": "x"},
            "spec.alerts.webhookSecretRef.ns: unknown",
        ),
        ("spec.alert", {}, "spec.alert: unknown field"),
        ("spec", None, "spec: is required"),
        ("spec", [], "spec: must be a mapping"),
        ("metadata", None, "metadata: is required"),
        ("metadata.name", None, "metadata.name: is required"),
        ("metadata.annotations", ["x"], "metadata.annotations: must be a mapping"),
        (
            "metadata.annotations",
            {APPROVED_CHANGE_ANNOTATION: 5},
            "metadata.annotations\\[headroom.dev/approved-change\\]: must be text",
        ),
        ("apiVersion", "headroom.dev/v1", 'apiVersion: "headroom.dev/v1" is not headroom.dev/v1alpha1'),
        ("kind", "Namespace", 'kind: "Namespace" is not Project'),
    ],
)
def test_invalid_fields_name_their_path(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=f"^{message}") as caught:
        parse_project(with_field(path, value))
    assert isinstance(caught.value, ValueError)


def test_spec_error_exposes_path_and_problem() -> None:
    with pytest.raises(SpecError) as caught:
        parse_project(with_field("spec.quota.lookback", "30x"))
    assert caught.value.path == "spec.quota.lookback"
    assert caught.value.problem == '"30x" is not a duration like 30d or 12h'
    assert str(caught.value) == 'spec.quota.lookback: "30x" is not a duration like 30d or 12h'


@pytest.mark.parametrize("obj", [None, "Project", ["spec"]])
def test_non_mapping_object(obj: Any) -> None:
    with pytest.raises(SpecError, match="a Project must be a mapping"):
        parse_project(obj)


def test_yaml_date_holiday_is_accepted() -> None:
    project = parse_project(with_field("spec.owner.holidays", [date(2026, 12, 25)]))
    assert project.owner.holidays == ("2026-12-25",)


def test_thresholds_are_sorted() -> None:
    project = parse_project(with_field("spec.alerts.thresholds", [100, 50, 75]))
    assert project.alerts.thresholds == (50, 75, 100)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("720h", timedelta(days=30)),
        ("0s", timedelta(0)),
        ("0d", timedelta(0)),
        ("007d", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "30",
        "30x",
        "d",
        "-1d",
        "+1d",
        "1.5h",
        "1 d",
        " 1d",
        "1d ",
        "12h1d",
        "1d1d",
        "1D",
        "1y",
        "1ms",
        "P1D",
        "1d\n",
    ],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 30d or 12h"):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 30, timedelta(days=1), True])
def test_parse_duration_rejects_non_text(value: Any) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


def test_parse_duration_rejects_absurd_lengths() -> None:
    with pytest.raises(ValueError, match="too long a duration"):
        parse_duration("9999999999w")
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("1" * 40 + "d")
