import copy
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from headroom.core.names import APPROVED_BY_ANNOTATION, APPROVED_CHANGE_ANNOTATION
from headroom.core.quantity import GI, MI
from headroom.core.spec import (
    DEFAULT_RESOURCES,
    GOVERNABLE_RESOURCES,
    AlertSettings,
    LimitDefaults,
    NamespaceSpec,
    Owner,
    ProjectSpec,
    QuotaSettings,
    SecretKeyRef,
    SpecError,
    is_governable,
    parse_duration,
    parse_project,
)

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
    thresholds: [80, 90, 100]
    hysteresis: 3
    cooldown: 12h
    urgentWhenFull: true
    webhookSecretRef: {name: slack, key: webhook}
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
            webhook_secret_ref=SecretKeyRef(name="slack", key="webhook"),
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
        thresholds=(80, 90, 100),
        hysteresis=5,
        cooldown=None,
        urgent_when_full=False,
        webhook_secret_ref=None,
        forecast_days=14,
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
    assert project.alerts.webhook_secret_ref == SecretKeyRef(name="hook", key="url")


def test_zero_headroom_is_allowed() -> None:
    assert parse_project(with_field("spec.quota.headroomPercent", 0)).quota.headroom_percent == 0


def test_largest_settings_the_crd_allows() -> None:
    obj = with_field("spec.quota.headroomPercent", 1000)
    obj["spec"]["alerts"] = {"hysteresis": 50, "thresholds": list(range(10, 101, 10)), "forecastDays": 365}
    project = parse_project(obj)
    assert project.alerts.forecast_days == 365
    assert project.quota.headroom_percent == 1000
    assert project.alerts.hysteresis == 50
    assert project.alerts.thresholds == (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


@pytest.mark.parametrize(
    "resource", [*GOVERNABLE_RESOURCES, "count/jobs.batch", "count/deployments.apps", "count/pods"]
)
def test_every_governable_resource_is_accepted(resource: str) -> None:
    obj = with_field("spec.quota.resources", [resource])
    obj["spec"]["quota"]["minimum"] = {resource: "1"}
    obj["spec"]["namespaces"][0]["requested"] = {resource: "2"}
    project = parse_project(obj)
    assert project.quota.resources == (resource,)
    assert project.quota.minimum == {resource: D(1)}
    assert project.namespaces[0].requested == {resource: D(2)}


@pytest.mark.parametrize(
    "resource",
    [
        "count/",
        "count/Pods",
        "count/-x",
        "requests.cpus",
        "",
        "gpus",
        "hugepages-",
        "limits.storage",
        "requests.kubernetes.io/widgets",
        "gold.storageclass.storage.k8s.io/limits.storage",
        # The name after the slash of a qualified name has at most 63 characters, or no quota takes it.
        "requests.example.com/" + "a" * 64,
        "count/" + "a" * 64,
    ],
)
def test_is_governable_rejects(resource: str) -> None:
    assert not is_governable(resource)


@pytest.mark.parametrize(
    "resource",
    [
        "requests.nvidia.com/gpu",
        "requests.example.com/fpga_v2",
        "gold.storageclass.storage.k8s.io/requests.storage",
        "fast-ssd.storageclass.storage.k8s.io/persistentvolumeclaims",
        "services.loadbalancers",
        "services.nodeports",
        "hugepages-2Mi",
        "requests.hugepages-1Gi",
        "cpu",
        "memory",
        "ephemeral-storage",
        "count/cronjobs.batch",
    ],
)
def test_every_key_a_resourcequota_enforces_is_governable(resource: str) -> None:
    obj = with_field("spec.quota.resources", [resource])
    obj["spec"]["namespaces"][0]["requested"] = {resource: "2"}
    assert parse_project(obj).namespaces[0].requested == {resource: D(2)}


@pytest.mark.parametrize(
    ("resource", "says"),
    [
        (
            "limits.nvidia.com/gpu",
            "never overcommitted, so a quota limits them only as requests.<name>: use requests.nvidia.com/gpu",
        ),
        ("limits.hugepages-2Mi", "use requests.hugepages-2Mi"),
        ("nvidia.com/gpu", "a quota counts an extended resource only as requests.<name>: use requests.nvidia.com/gpu"),
    ],
)
def test_keys_the_api_server_stores_but_no_quota_enforces_are_refused_saying_what_to_use(
    resource: str, says: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_project(with_field("spec.quota.resources", [resource]))
    assert info.value.path == "spec.quota.resources[0]"
    assert says in info.value.problem
    obj = with_field("spec.namespaces", [{"name": "ml", "requested": {resource: "1"}}])
    with pytest.raises(SpecError, match="requested") as info:
        parse_project(obj)
    assert says in info.value.problem


@pytest.mark.parametrize(
    "resource",
    ["requests.nvidia.com/gpu", "pods", "services.loadbalancers", "gold.storageclass.storage.k8s.io/requests.storage"],
)
def test_whole_units_stay_whole(resource: str) -> None:
    """There is no half GPU; the API server refuses a fraction in such a quota, so the file is refused first."""
    obj = with_field("spec.namespaces", [{"name": "ml", "requested": {resource: "1500m"}}])
    with pytest.raises(SpecError, match="is not a whole number"):
        parse_project(obj)


def test_minimum_and_requested_may_name_resources_outside_quota_resources() -> None:
    # The CRD accepts this, so the operator must be able to read it.
    obj = with_field("spec.quota.minimum", {"services": "5"})
    obj["spec"]["namespaces"][0]["requested"] = {"secrets": "50", "requests.cpu": "500m"}
    project = parse_project(obj)
    assert project.quota.resources == DEFAULT_RESOURCES
    assert project.quota.minimum == {"services": D(5)}
    assert project.namespaces[0].requested == {"secrets": D(50), "requests.cpu": D("0.5")}


def test_parsed_project_does_not_alias_input() -> None:
    obj = yaml.safe_load(FULL_PROJECT)
    before = copy.deepcopy(obj)
    parse_project(obj)
    assert obj == before


NOT_GOVERNABLE = "is not a resource Headroom can govern"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.quota.lookback", "30x", 'spec.quota.lookback: "30x" is not a duration like 30d or 12h'),
        ("spec.quota.lookback", "0d", 'spec.quota.lookback: "0d" must be longer than zero'),
        ("spec.quota.lookback", 30, "spec.quota.lookback: 30 is not a duration"),
        ("spec.quota.headroomPercent", -5, "spec.quota.headroomPercent: -5 must be between 0 and 1000"),
        ("spec.quota.headroomPercent", 1001, "spec.quota.headroomPercent: 1001 must be between 0 and 1000"),
        ("spec.quota.headroomPercent", "20", 'spec.quota.headroomPercent: "20" is not a whole number'),
        ("spec.quota.headroomPercent", 12.5, "spec.quota.headroomPercent: 12.5 is not a whole number"),
        ("spec.quota.headroomPercent", True, "spec.quota.headroomPercent: True is not a whole number"),
        ("spec.quota.enforcement", "enforce", 'spec.quota.enforcement: "enforce" must be Enforce or Observe'),
        ("spec.quota.resources", [], "spec.quota.resources: must name at least one resource"),
        ("spec.quota.resources", "pods", 'spec.quota.resources: must be a list, not "pods"'),
        ("spec.quota.resources", ["pods", "pods"], r'spec.quota.resources\[1\]: "pods" is listed twice'),
        ("spec.quota.resources", ["pods", 3], r"spec.quota.resources\[1\]: must be text, not 3"),
        (
            "spec.quota.resources",
            ["requests cpu"],
            rf'spec.quota.resources\[0\]: "requests cpu" {NOT_GOVERNABLE}',
        ),
        (
            "spec.quota.resources",
            ["limits.nvidia.com/gpu"],
            r'spec.quota.resources\[0\]: "limits.nvidia.com/gpu": .* use requests.nvidia.com/gpu',
        ),
        ("spec.quota.minimum", {"requests.cpu": "-1"}, 'spec.quota.minimum.requests.cpu: "-1" is negative'),
        (
            "spec.quota.minimum",
            {"requests.cpu": "lots"},
            'spec.quota.minimum.requests.cpu: "lots" is not a Kub',
        ),
        ("spec.quota.minimum", {"requests.cpus": "1"}, f"spec.quota.minimum.requests.cpus: {NOT_GOVERNABLE}"),
        ("spec.quota.minimum", {"pods": 1.5}, "spec.quota.minimum.pods: 1.5 is a floating-point number"),
        ("spec.quota.headroomPercnt", 30, "spec.quota.headroomPercnt: unknown field"),
        ("spec.quota", "big", 'spec.quota: must be a mapping, not "big"'),
        ("spec.owner", None, "spec.owner: is required"),
        ("spec.owner.team", None, "spec.owner.team: is required"),
        ("spec.owner.team", "", "spec.owner.team: is required"),
        ("spec.owner.team", 7, "spec.owner.team: must be text, not 7"),
        ("spec.owner.team", "Payments Team", 'spec.owner.team: "Payments Team" is not a DNS label'),
        ("spec.owner.contacts", "#alerts", 'spec.owner.contacts: must be a list, not "#alerts"'),
        ("spec.owner.contacts", ["ok", None], r"spec.owner.contacts\[1\]: is required"),
        ("spec.owner.holidays", ["2026-02-30"], r'spec.owner.holidays\[0\]: "2026-02-30" is not a date'),
        ("spec.owner.holidays", ["Christmas"], r'spec.owner.holidays\[0\]: "Christmas" is not a date'),
        ("spec.owner.holidays", ["20261225"], r'spec.owner.holidays\[0\]: "20261225" is not a date'),
        ("spec.owner.businessHours", ["Mon"], "spec.owner.businessHours: must be text"),
        ("spec.owner.email", "x", "spec.owner.email: unknown field"),
        ("spec.namespaces", None, "spec.namespaces: is required"),
        ("spec.namespaces", [], "spec.namespaces: must list at least one namespace"),
        ("spec.namespaces", ["payments"], r'spec.namespaces\[0\]: must be a mapping, not "payments"'),
        ("spec.namespaces.0.name", None, r"spec.namespaces\[0\].name: is required"),
        ("spec.namespaces.0.name", "Payments", r'spec.namespaces\[0\].name: "Payments" is not a DNS label'),
        ("spec.namespaces.0.name", "a" * 64, r"spec.namespaces\[0\].name: .* is not a DNS label"),
        ("spec.namespaces.0.name", "-x", r'spec.namespaces\[0\].name: "-x" is not a DNS label'),
        (
            "spec.namespaces",
            [{"name": "a"}, {"name": "a"}],
            r'spec.namespaces\[1\].name: "a" is listed twice',
        ),
        (
            "spec.namespaces.0.requested",
            {"requests.cpu": "5 cores"},
            r'spec.namespaces\[0\].requested.requests.cpu: "5 cores" is not a Kubernetes quantity',
        ),
        (
            "spec.namespaces.0.requested",
            {"requests.cpu": "-40"},
            r'spec.namespaces\[0\].requested.requests.cpu: "-40" is negative',
        ),
        (
            "spec.namespaces.0.requested",
            {"limits.nvidia.com/gpu": "5"},
            r"spec.namespaces\[0\].requested.limits.nvidia.com/gpu: extended resources .* never overcommitted",
        ),
        ("spec.namespaces.0.requested", ["cpu"], r"spec.namespaces\[0\].requested: must be a mapping"),
        ("spec.namespaces.0.quota", {}, r"spec.namespaces\[0\].quota: unknown field"),
        (
            "spec.defaults",
            {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
            r"spec.defaults.requests.cpu: 2 is above spec.defaults.limits.cpu \(1\)",
        ),
        (
            "spec.defaults.requests",
            {"requests.cpu": "1"},
            r"spec.defaults.requests.requests.cpu: is not a resource here \(expected one of: cpu, memory, ",
        ),
        ("spec.defaults.requests", {"memory": "lots"}, 'spec.defaults.requests.memory: "lots" is not'),
        ("spec.defaults.limits", {"cpu": True}, "spec.defaults.limits.cpu: True is a boolean"),
        ("spec.defaults.default", {}, "spec.defaults.default: unknown field"),
        ("spec.alerts.thresholds", [], "spec.alerts.thresholds: must list at least one percentage"),
        (
            "spec.alerts.thresholds",
            list(range(1, 12)),
            "spec.alerts.thresholds: lists 11 percentages; at most 10",
        ),
        ("spec.alerts.thresholds", [80, 0], r"spec.alerts.thresholds\[1\]: 0 must be between 1 and 100"),
        ("spec.alerts.thresholds", [80, 101], r"spec.alerts.thresholds\[1\]: 101 must be between 1 and 100"),
        (
            "spec.alerts.thresholds",
            [80, 80],
            r"spec.alerts.thresholds\[1\]: 80 does not follow 80; thresholds must be strictly increasing",
        ),
        ("spec.alerts.thresholds", [90, 80, 100], r"spec.alerts.thresholds\[1\]: 80 does not follow 90"),
        ("spec.alerts.thresholds", [None], r"spec.alerts.thresholds\[0\]: is required"),
        ("spec.alerts.thresholds", ["80%"], r'spec.alerts.thresholds\[0\]: "80%" is not a whole number'),
        ("spec.alerts.hysteresis", -1, "spec.alerts.hysteresis: -1 must be between 0 and 50"),
        ("spec.alerts.hysteresis", 51, "spec.alerts.hysteresis: 51 must be between 0 and 50"),
        ("spec.alerts.forecastDays", 0, "spec.alerts.forecastDays: 0 must be between 1 and 365"),
        ("spec.alerts.cooldown", "1 day", 'spec.alerts.cooldown: "1 day" is not a duration'),
        ("spec.alerts.cooldown", "0s", 'spec.alerts.cooldown: "0s" must be longer than zero'),
        ("spec.alerts.urgentWhenFull", "yes", 'spec.alerts.urgentWhenFull: "yes" is not true or false'),
        ("spec.alerts.webhookSecretRef", {"key": "url"}, "spec.alerts.webhookSecretRef.name: is required"),
        ("spec.alerts.webhookSecretRef", "slack", "spec.alerts.webhookSecretRef: must be a mapping"),
        (
            "spec.alerts.webhookSecretRef",
            {"name": "s", "ns": "x"},
            "spec.alerts.webhookSecretRef.ns: unknown",
        ),
        (
            # Secrets are read in the operator's namespace only; the CRD has no such field either.
            "spec.alerts.webhookSecretRef",
            {"name": "s", "namespace": "other-team"},
            "spec.alerts.webhookSecretRef.namespace: unknown",
        ),
        ("spec.alert", {}, "spec.alert: unknown field"),
        ("spec", None, "spec: is required"),
        ("spec", [], "spec: must be a mapping"),
        ("metadata", None, "metadata: is required"),
        ("metadata.name", None, "metadata.name: is required"),
        ("metadata.name", "pay.ments", 'metadata.name: "pay.ments" is not a DNS label'),
        ("metadata.annotations", ["x"], "metadata.annotations: must be a mapping"),
        (
            "metadata.annotations",
            {APPROVED_CHANGE_ANNOTATION: 5},
            r"metadata.annotations\[headroom.dev/approved-change\]: must be text",
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


def test_custom_thresholds() -> None:
    project = parse_project(with_field("spec.alerts.thresholds", [50, 75, 100]))
    assert project.alerts.thresholds == (50, 75, 100)


def test_ephemeral_storage_defaults() -> None:
    limits = {"requests": {"ephemeral-storage": "1Gi"}, "limits": {"ephemeral-storage": "2Gi"}}
    project = parse_project(with_field("spec.defaults", limits))
    assert project.defaults == LimitDefaults(requests={"ephemeral-storage": GI}, limits={"ephemeral-storage": 2 * GI})


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
