"""The Project CRD and the sign-off admission policy, against a real kube-apiserver.

What a person sees matters as much as what is refused: every rejection must be an HTTP 422 (400 for
unknown fields under strict field validation) whose message names the offending field. The cases are
tables; add a row rather than a test.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, api_error_message, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "projects.headroom.dev.yaml"
POLICY_FILE = REPO / "manifests" / "approval" / "policy.yaml"
SAMPLES = REPO / "manifests" / "samples"

GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
APPROVED_CHANGE = "headroom.dev/approved-change"
APPROVED_BY = "headroom.dev/approved-by"
REQUESTED_BY = "headroom.dev/requested-by"

Body = dict[str, Any]
Mutation = Callable[[Body], None]


# -------------------------------------------------------------------------------------------------- helpers


def _minimal(name: str) -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {"owner": {"team": "payments"}, "namespaces": [{"name": "payments"}]},
    }


def _full(name: str) -> Body:
    """Every field of the contract, with realistic values."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Project",
        "metadata": {"name": name},
        "spec": {
            "owner": {
                "team": "payments",
                "contacts": ["#payments-alerts", "payments-oncall@example.com"],
                "businessHours": "Mon-Fri 09:00-17:00 America/Los_Angeles",
                "holidays": ["2026-12-25", "2027-01-01"],
            },
            "namespaces": [
                {"name": "payments", "requested": {"requests.cpu": "40", "requests.memory": "96Gi"}},
                {"name": "payments-batch"},
            ],
            "quota": {
                "resources": ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"],
                "headroomPercent": 25,
                "lookback": "14d",
                "minimum": {"requests.cpu": "1", "requests.memory": "1Gi", "pods": "10"},
                "enforcement": "Enforce",
            },
            "defaults": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "alerts": {
                "thresholds": [75, 90, 100],
                "hysteresis": 10,
                "cooldown": "24h",
                "urgentWhenFull": True,
                "forecastDays": 21,
                "denials": "BusinessHours",
                "webhookSecretRef": {"name": "payments-webhook", "key": "url"},
            },
        },
    }


def _set(path: str, value: Any) -> Mutation:
    """A mutation that sets a dotted path ("spec.quota.lookback"; list indexes as numbers)."""

    def mutate(body: Body) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(body: Body) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return mutate


def _namespaces(count: int) -> list[dict[str, Any]]:
    return [{"name": f"ns-{i}", "requested": {"requests.cpu": "2", "pods": "20"}} for i in range(count)]


class Projects:
    """Creates Projects with unique names and deletes them all afterwards."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.created: list[str] = []

    @staticmethod
    def name() -> str:
        return f"schema-{uuid.uuid4().hex[:8]}"

    def create(self, body: Body, strict: bool = True, api: kubernetes.client.CustomObjectsApi | None = None) -> Body:
        kwargs = {"field_validation": "Strict"} if strict else {}
        result = (api or self.api).create_cluster_custom_object(GROUP, VERSION, PLURAL, body, **kwargs)
        self.created.append(result["metadata"]["name"])
        return result

    def get(self, name: str) -> Body:
        return self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)

    def cleanup(self) -> None:
        for name in self.created:
            with contextlib.suppress(ApiException):
                self.api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


@pytest.fixture(scope="module")
def admin_client(cluster: Cluster) -> kubernetes.client.ApiClient:
    return cluster.api_client()


@pytest.fixture
def projects(admin_client: kubernetes.client.ApiClient, crds_installed: None) -> Iterator[Projects]:
    helper = Projects(admin_client)
    yield helper
    helper.cleanup()


def _rejection(projects: Projects, body: Body, strict: bool = True) -> tuple[int, str]:
    with pytest.raises(ApiException) as caught:
        projects.create(body, strict=strict)
    return caught.value.status, api_error_message(caught.value)


# -------------------------------------------------------------------------------------------------- the CRD


def test_crd_is_established_structural_and_as_documented(
    admin_client: kubernetes.client.ApiClient, crds_installed: None
) -> None:
    # Being installed at all proves the API server accepted every CEL rule's estimated cost.
    crd = kubernetes.client.ApiextensionsV1Api(admin_client).read_custom_resource_definition("projects.headroom.dev")
    conditions = {c.type: c.status for c in crd.status.conditions or []}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions
    assert crd.spec.scope == "Cluster"
    assert crd.spec.names.kind == "Project"
    assert crd.spec.names.list_kind == "ProjectList"
    assert crd.spec.names.short_names == ["proj"]
    (version,) = crd.spec.versions
    assert (version.name, version.served, version.storage) == ("v1alpha1", True, True)
    assert version.subresources.status is not None
    columns = {c.name: c.json_path for c in version.additional_printer_columns}
    assert columns == {
        "Team": ".spec.owner.team",
        "Namespaces": ".status.summary.namespaces",
        "Phase": ".status.phase",
        "Pending": ".status.pendingChange.shortId",
        "Utilization": ".status.summary.highestUtilization",
        "Full": ".status.summary.soonestFull",
        "Age": ".metadata.creationTimestamp",
    }


def test_crd_mirrors_the_operator_parser() -> None:
    """The regex, resource names and defaults the CRD promises are the ones the operator parses."""
    business_hours = pytest.importorskip("headroom.core.business_hours")
    project_spec = pytest.importorskip("headroom.core.spec")
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    quota = spec["quota"]["properties"]
    alerts = spec["alerts"]["properties"]

    hours_rule = spec["owner"]["properties"]["businessHours"]["x-kubernetes-validations"][0]["rule"]
    assert f"self.matches('{business_hours.BUSINESS_HOURS_PATTERN}')" == hours_rule.strip()
    resources_rule = quota["resources"]["items"]["x-kubernetes-validations"][0]["rule"]
    for resource in project_spec.GOVERNABLE_RESOURCES:
        assert f"'{resource}'" in resources_rule
    assert tuple(quota["resources"]["default"]) == project_spec.DEFAULT_RESOURCES
    assert quota["headroomPercent"]["default"] == project_spec.DEFAULT_HEADROOM_PERCENT
    assert tuple(alerts["thresholds"]["default"]) == project_spec.DEFAULT_THRESHOLDS
    assert alerts["hysteresis"]["default"] == project_spec.DEFAULT_HYSTERESIS
    assert alerts["forecastDays"]["default"] == project_spec.DEFAULT_FORECAST_DAYS
    assert alerts["forecastDays"]["maximum"] == project_spec.MAX_FORECAST_DAYS
    assert quota["enforcement"]["enum"] == list(project_spec.ENFORCEMENT_MODES)
    defaults_rule = spec["defaults"]["properties"]["requests"]["x-kubernetes-validations"][0]["rule"]
    assert defaults_rule == f"self.all(k, k in {list(project_spec.DEFAULTABLE_RESOURCES)})"


# ------------------------------------------------------------------------------------------- valid Projects


def test_minimal_project_gets_the_documented_defaults(projects: Projects) -> None:
    created = projects.create(_minimal(projects.name()))

    spec = created["spec"]
    assert spec["quota"] == {
        "resources": ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"],
        "headroomPercent": 20,
        "lookback": "30d",
    }
    assert spec["alerts"] == {"thresholds": [80, 90, 100], "hysteresis": 5, "forecastDays": 14, "denials": "Immediate"}
    # enforcement has no default: absent means "the operator's --mode".
    assert "enforcement" not in spec["quota"]
    assert "defaults" not in spec


def test_full_project_is_stored_as_written(projects: Projects) -> None:
    body = _full(projects.name())
    created = projects.create(body)
    assert created["spec"] == body["spec"]


VALID: list[Any] = [
    pytest.param(_set("spec.quota.lookback", "12h"), id="lookback-hours"),
    pytest.param(_set("spec.quota.lookback", "1d12h"), id="lookback-days-and-hours"),
    pytest.param(_set("spec.quota.lookback", "2w"), id="lookback-weeks"),
    pytest.param(_set("spec.quota.lookback", "90m"), id="lookback-minutes"),
    pytest.param(_set("spec.alerts.cooldown", "1d12h"), id="cooldown"),
    pytest.param(_set("spec.alerts.forecastDays", 365), id="forecast-days-a-year"),
    pytest.param(_set("spec.alerts.denials", "BusinessHours"), id="denials-in-business-hours"),
    pytest.param(_set("spec.quota.headroomPercent", 0), id="headroom-0"),
    pytest.param(_set("spec.quota.headroomPercent", 1000), id="headroom-1000"),
    pytest.param(
        _set(
            "spec.quota.resources",
            [
                "requests.cpu",
                "requests.ephemeral-storage",
                "limits.ephemeral-storage",
                "requests.storage",
                "persistentvolumeclaims",
                "services",
                "configmaps",
                "secrets",
                "count/jobs.batch",
                "count/deployments.apps",
            ],
        ),
        id="every-kind-of-resource",
    ),
    pytest.param(
        _set(
            "spec.namespaces.0.requested",
            {
                "requests.cpu": "1.5",
                "requests.memory": "64Gi",
                "limits.cpu": "500m",
                "pods": 30,
                "count/jobs.batch": "1e3",
            },
        ),
        id="quantity-notations-and-plain-numbers",
    ),
    pytest.param(_set("spec.quota.minimum", {"requests.cpu": "0", "pods": 0}), id="zero-quantities"),
    pytest.param(
        _set(
            "spec.quota.resources",
            [
                "requests.nvidia.com/gpu",
                "requests.example.com/fpga_v2",
                "gold.storageclass.storage.k8s.io/requests.storage",
                "gold.storageclass.storage.k8s.io/persistentvolumeclaims",
                "services.loadbalancers",
                "services.nodeports",
                "replicationcontrollers",
                "resourcequotas",
                "hugepages-2Mi",
                "requests.hugepages-1Gi",
                "cpu",
                "memory",
                "ephemeral-storage",
                "count/cronjobs.batch",
                "count/pods",
            ],
        ),
        id="every-key-a-resourcequota-enforces",
    ),
    pytest.param(
        _set(
            "spec.namespaces.0.requested",
            {
                "requests.nvidia.com/gpu": 4,
                "fast-ssd.storageclass.storage.k8s.io/requests.storage": "500Gi",
                "services.loadbalancers": "2",
                "requests.hugepages-2Mi": "1Gi",
            },
        ),
        id="gpus-storage-class-and-load-balancers-requested",
    ),
    pytest.param(_set("spec.quota.minimum", {"requests.nvidia.com/gpu": "1"}), id="gpu-minimum"),
    pytest.param(
        _set("spec.owner.businessHours", "Mon-Thu 08:00-16:00 UTC, Fri 08:00-12:00 UTC"), id="business-hours-two-ranges"
    ),
    pytest.param(
        _set("spec.owner.businessHours", "Fri-Mon 22:00-06:00 America/Port-au-Prince"),
        id="business-hours-over-midnight",
    ),
    pytest.param(_set("spec.owner.businessHours", "Sat 00:00-24:00 Etc/GMT+5"), id="business-hours-whole-day"),
    pytest.param(_set("spec.alerts.thresholds", [100]), id="one-threshold"),
    pytest.param(_set("spec.alerts.thresholds", [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]), id="ten-thresholds"),
    pytest.param(_set("spec.quota.enforcement", "Observe"), id="observe"),
    pytest.param(
        _set("spec.defaults", {"requests": {"cpu": "1"}, "limits": {"cpu": 1}}), id="default-request-equal-to-limit"
    ),
    pytest.param(_set("spec.namespaces", _namespaces(500)), id="500-namespaces"),
    pytest.param(_set("spec.namespaces.0.name", "a" * 63), id="63-character-namespace"),
    pytest.param(_set("spec.namespaces.0.until", "2026-12-31T19:00:00+01:00"), id="until-with-an-offset"),
    pytest.param(_set("spec.namespaces.0.reason", "x" * 500), id="500-character-namespace-reason"),
]


@pytest.mark.parametrize("mutate", VALID)
def test_valid_project_is_accepted_and_parses(projects: Projects, mutate: Mutation) -> None:
    body = _full(projects.name())
    mutate(body)

    created = projects.create(body)

    expected = copy.deepcopy(body["spec"])
    assert created["spec"] == expected
    # Whatever the API server lets in, the operator must be able to read.
    project_spec = pytest.importorskip("headroom.core.spec")
    project_spec.parse_project(created)


def test_unknown_fields_are_pruned_without_strict_validation(projects: Projects) -> None:
    body = _minimal(projects.name())
    body["spec"]["colour"] = "blue"
    body["spec"]["quota"] = {"headroom": 50}

    created = projects.create(body, strict=False)

    assert "colour" not in created["spec"]
    assert "headroom" not in created["spec"]["quota"]


# ----------------------------------------------------------------------------------------- invalid Projects

INVALID: list[Any] = [
    pytest.param(_drop("spec.owner.team"), 422, ["spec.owner.team", "Required value"], id="no-team"),
    pytest.param(
        _set("spec.owner.team", "Payments Team"), 422, ["spec.owner.team", "DNS label"], id="team-not-a-label"
    ),
    pytest.param(_drop("spec.namespaces"), 422, ["spec.namespaces", "Required value"], id="no-namespaces"),
    pytest.param(_set("spec.namespaces", []), 422, ["spec.namespaces", "at least 1 items"], id="empty-namespaces"),
    pytest.param(
        _set("spec.namespaces", _namespaces(501)),
        422,
        ["spec.namespaces", "must have at most 500 items"],
        id="501-namespaces",
    ),
    pytest.param(
        _set("spec.namespaces", [{"name": "payments"}, {"name": "payments"}]),
        422,
        ["spec.namespaces[1]", "Duplicate value", "payments"],
        id="duplicate-namespaces",
    ),
    pytest.param(
        _set("spec.namespaces.0.name", "Payments_1"),
        422,
        ["spec.namespaces[0].name", "DNS-1123 label", "'Payments_1'"],
        id="bad-namespace-name",
    ),
    pytest.param(
        _set("spec.namespaces.0.name", "a" * 64),
        422,
        ["spec.namespaces[0].name", "may not be more than 63"],
        id="namespace-name-too-long",
    ),
    pytest.param(
        _set("spec.quota.resources", ["requests.cpu", "gpus"]),
        422,
        ["spec.quota.resources[1]", "'gpus' is not a resource Headroom can govern"],
        id="unknown-resource",
    ),
    pytest.param(
        _set("spec.quota.resources", ["request.cpu"]),
        422,
        ["spec.quota.resources[0]", "'request.cpu'"],
        id="misspelt-resource",
    ),
    pytest.param(
        _set("spec.quota.resources", ["requests.cpu", "limits.nvidia.com/gpu"]),
        422,
        ["spec.quota.resources[1]", "'limits.nvidia.com/gpu'", "never overcommitted", "requests.nvidia.com/gpu"],
        id="limits-of-an-extended-resource",
    ),
    pytest.param(
        _set("spec.quota.resources", ["nvidia.com/gpu"]),
        422,
        ["spec.quota.resources[0]", "'nvidia.com/gpu'", "only as requests.<name>"],
        id="extended-resource-without-requests",
    ),
    pytest.param(
        _set("spec.quota.resources", ["gold.storageclass.storage.k8s.io/limits.storage"]),
        422,
        ["spec.quota.resources[0]", "is not a resource Headroom can govern", "storageclass"],
        id="storage-class-key-that-no-quota-counts",
    ),
    pytest.param(
        _set("spec.quota.resources", ["requests.kubernetes.io/widgets"]),
        422,
        ["spec.quota.resources[0]", "is not a resource Headroom can govern"],
        id="kubernetes-io-names-are-not-extended-resources",
    ),
    pytest.param(
        _set("spec.quota.resources", ["requests.example.com/" + "a" * 64]),
        422,
        ["spec.quota.resources[0]", "is not a resource Headroom can govern"],
        id="extended-resource-name-over-63-characters",
    ),
    pytest.param(
        _set("spec.namespaces.0.requested", {"limits.nvidia.com/gpu": 2}),
        422,
        ["spec.namespaces[0].requested", "never overcommitted", "requests.nvidia.com/gpu"],
        id="requested-limits-of-a-gpu",
    ),
    pytest.param(
        _set("spec.namespaces.0.requested", {"nvidia.com/gpu": 2}),
        422,
        ["spec.namespaces[0].requested", "not nvidia.com/gpu"],
        id="requested-gpu-without-requests",
    ),
    pytest.param(
        _set("spec.namespaces.0.requested", {"requests.nvidia.com/gpu": "1.5"}),
        422,
        ["spec.namespaces[0].requested", "must be whole numbers", "no half GPU"],
        id="half-a-gpu",
    ),
    pytest.param(
        _set("spec.quota.minimum", {"services.loadbalancers": "500m"}),
        422,
        ["spec.quota.minimum", "must be whole numbers"],
        id="half-a-load-balancer",
    ),
    pytest.param(
        _set("spec.quota.minimum", {"limits.hugepages-2Mi": "1Gi"}),
        422,
        ["spec.quota.minimum", "never overcommitted"],
        id="limits-of-hugepages",
    ),
    pytest.param(
        _set("spec.quota.resources", ["pods", "pods"]),
        422,
        ["spec.quota.resources[1]", "Duplicate value"],
        id="resource-twice",
    ),
    pytest.param(
        _set("spec.quota.headroomPercent", -1),
        422,
        ["spec.quota.headroomPercent", "greater than or equal to 0"],
        id="negative-headroom",
    ),
    pytest.param(
        _set("spec.quota.headroomPercent", 1001),
        422,
        ["spec.quota.headroomPercent", "less than or equal to 1000"],
        id="headroom-over-1000",
    ),
    pytest.param(
        _set("spec.quota.headroomPercent", "twenty"),
        422,
        ["spec.quota.headroomPercent", "must be of type integer"],
        id="non-numeric-headroom",
    ),
    pytest.param(
        _set("spec.quota.lookback", "30 days"),
        422,
        ["spec.quota.lookback", "must be a positive duration such as 30d", "'30 days'"],
        id="lookback-in-words",
    ),
    pytest.param(
        _set("spec.quota.lookback", "0d"), 422, ["spec.quota.lookback", "positive duration"], id="lookback-zero"
    ),
    pytest.param(
        _set("spec.quota.lookback", "12h1d"),
        422,
        ["spec.quota.lookback", "in that order"],
        id="lookback-units-out-of-order",
    ),
    pytest.param(
        _set("spec.alerts.cooldown", "1 day"), 422, ["spec.alerts.cooldown", "duration"], id="cooldown-in-words"
    ),
    pytest.param(
        _set("spec.namespaces.0.requested", {"requests.cpu": "lots"}),
        422,
        ["spec.namespaces[0].requested", "non-negative quantities", "'lots'"],
        id="quantity-does-not-parse",
    ),
    pytest.param(
        _set("spec.quota.minimum", {"requests.cpu": "-1"}),
        422,
        ["spec.quota.minimum[requests.cpu]", "non-negative quantities", "'-1'"],
        id="negative-quantity",
    ),
    pytest.param(
        _set("spec.quota.minimum", {"pods": -3}),
        422,
        ["spec.quota.minimum[pods]", "non-negative", "'-3'"],
        id="negative-plain-number",
    ),
    pytest.param(
        _set("spec.defaults.limits", {"memory": "512 MB"}),
        422,
        ["spec.defaults.limits", "'512 MB'"],
        id="quantity-with-space",
    ),
    pytest.param(
        _set("spec.namespaces.0.requested", {"cpus": "4"}),
        422,
        ["spec.namespaces[0].requested", "keys must be quota resource names"],
        id="requested-unknown-resource",
    ),
    pytest.param(
        _set("spec.quota.minimum", {"requests.gpu": "1"}),
        422,
        ["spec.quota.minimum", "keys must be quota resource names"],
        id="minimum-unknown-resource",
    ),
    pytest.param(
        _set("spec.defaults.requests", {"requests.cpu": "100m"}),
        422,
        ["spec.defaults.requests", "keys must be cpu, memory or ephemeral-storage"],
        id="defaults-with-quota-names",
    ),
    pytest.param(
        _set("spec.defaults", {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        422,
        ["spec.defaults", "at most the default limit"],
        id="default-request-above-limit",
    ),
    pytest.param(
        _set("spec.quota.enforcement", "Strict"),
        422,
        ["spec.quota.enforcement", "Unsupported value", '"Enforce"', '"Observe"'],
        id="bad-enforcement",
    ),
    pytest.param(
        _set("spec.alerts.thresholds", [90, 80, 100]),
        422,
        ["spec.alerts.thresholds", "strictly increasing"],
        id="thresholds-not-increasing",
    ),
    pytest.param(
        _set("spec.alerts.thresholds", [80, 80, 100]),
        422,
        ["spec.alerts.thresholds", "strictly increasing"],
        id="thresholds-repeated",
    ),
    pytest.param(
        _set("spec.alerts.thresholds", [0, 80]),
        422,
        ["spec.alerts.thresholds[0]", "greater than or equal to 1"],
        id="threshold-0",
    ),
    pytest.param(
        _set("spec.alerts.thresholds", [80, 101]),
        422,
        ["spec.alerts.thresholds[1]", "less than or equal to 100"],
        id="threshold-101",
    ),
    pytest.param(
        _set("spec.alerts.thresholds", []), 422, ["spec.alerts.thresholds", "at least 1 items"], id="no-thresholds"
    ),
    pytest.param(
        _set("spec.alerts.thresholds", list(range(50, 100, 4))),
        422,
        ["spec.alerts.thresholds", "at most 10 items"],
        id="too-many-thresholds",
    ),
    pytest.param(
        _set("spec.alerts.hysteresis", 51),
        422,
        ["spec.alerts.hysteresis", "less than or equal to 50"],
        id="hysteresis-over-50",
    ),
    pytest.param(
        _set("spec.alerts.forecastDays", 0),
        422,
        ["spec.alerts.forecastDays must be a number of days from 1 to 365, e.g. 14"],
        id="forecast-days-0",
    ),
    pytest.param(
        _set("spec.alerts.forecastDays", 400),
        422,
        ["spec.alerts.forecastDays", "less than or equal to 365"],
        id="forecast-days-over-a-year",
    ),
    pytest.param(
        _set("spec.alerts.denials", "Never"),
        422,
        ["spec.alerts.denials", 'supported values: "Immediate", "BusinessHours"'],
        id="denials-never",
    ),
    pytest.param(
        _set("spec.alerts.webhookSecretRef", {"key": "url"}),
        422,
        ["spec.alerts.webhookSecretRef.name", "Required value"],
        id="secret-ref-without-name",
    ),
    pytest.param(
        _set("spec.owner.businessHours", "whenever"),
        422,
        ["spec.owner.businessHours", "DAYS HH:MM-HH:MM ZONE", "'whenever'"],
        id="business-hours-words",
    ),
    pytest.param(
        _set("spec.owner.businessHours", "Mon-Fri 09:00-17:00"),
        422,
        ["spec.owner.businessHours"],
        id="business-hours-without-zone",
    ),
    pytest.param(
        _set("spec.owner.businessHours", "Mon-Fri 9-17 UTC"),
        422,
        ["spec.owner.businessHours"],
        id="business-hours-short-times",
    ),
    pytest.param(
        _set("spec.owner.holidays", ["25.12.2026"]),
        422,
        ["spec.owner.holidays[0]", "must be of type date"],
        id="holiday-not-iso",
    ),
    pytest.param(
        _set("spec.owner.holidays", ["2026-02-30"]),
        422,
        ["spec.owner.holidays[0]", "must be of type date"],
        id="holiday-not-a-day",
    ),
    pytest.param(
        _set("spec.owner.contacts", [f"#c{i}" for i in range(21)]),
        422,
        ["spec.owner.contacts", "at most 20 items"],
        id="too-many-contacts",
    ),
    pytest.param(
        _set("metadata.name", "payments.prod"),
        422,
        ["metadata.name must be a DNS-1123 label"],
        id="project-name-not-a-label",
    ),
    pytest.param(
        _set("spec.namespaces.0.until", "next tuesday"),
        422,
        ["spec.namespaces[].until must be an RFC 3339 time with a zone", "'next tuesday' is not"],
        id="until-not-a-time",
    ),
    pytest.param(
        _set("spec.namespaces.0.until", "2026-12-31T18:00:00"),
        422,
        ["spec.namespaces[].until must be an RFC 3339 time with a zone"],
        id="until-without-a-zone",
    ),
    pytest.param(
        _set("spec.namespaces.1.until", "2026-12-31T18:00:00Z"),
        422,
        ["spec.namespaces[1]", "until ends a raise, so it needs requested values"],
        id="until-without-requested",
    ),
    pytest.param(
        _set("spec.namespaces.0.reason", "x" * 501),
        422,
        ["spec.namespaces[0].reason", "may not be more than 500"],
        id="namespace-reason-too-long",
    ),
    pytest.param(_set("spec.colour", "blue"), 400, ['unknown field "spec.colour"'], id="unknown-field"),
    pytest.param(
        _set("spec.quota.headroom", 50), 400, ['unknown field "spec.quota.headroom"'], id="unknown-nested-field"
    ),
]


@pytest.mark.parametrize(("mutate", "status", "fragments"), INVALID)
def test_invalid_project_is_rejected_naming_the_field(
    projects: Projects, mutate: Mutation, status: int, fragments: list[str]
) -> None:
    body = _full(projects.name())
    mutate(body)

    code, message = _rejection(projects, body)

    assert code == status, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the API server's message: {message}"


def test_update_is_validated_like_create(projects: Projects) -> None:
    created = projects.create(_full(projects.name()))
    name = created["metadata"]["name"]

    with pytest.raises(ApiException) as caught:
        projects.api.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, {"spec": {"quota": {"lookback": "a month"}}}
        )

    assert caught.value.status == 422
    assert "spec.quota.lookback" in api_error_message(caught.value)


# --------------------------------------------------------------------------------------------------- status


def test_status_takes_the_operators_fields_and_shows_them_in_columns(
    projects: Projects, admin_client: kubernetes.client.ApiClient
) -> None:
    name = projects.create(_minimal(projects.name()))["metadata"]["name"]
    status = {
        "phase": "PendingApproval",
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "QuotasApplied",
                "message": "2 namespaces",
                "lastTransitionTime": "2026-11-26T09:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "namespaces": [
            {
                "name": "payments",
                "peak": {"requests.cpu": "3200m"},
                "recommended": {"requests.cpu": "3840m"},
                "hard": {"requests.cpu": "4"},
                "used": {"requests.cpu": "3"},
                "forecast": {
                    "requests.cpu": {"growthPerDay": "400m", "fullAt": "2026-12-11T06:00:00Z"},
                    "pods": {"growthPerDay": "-0.25"},
                },
                "missing": False,
            }
        ],
        "pendingChange": {
            "id": "c-1a2b",
            "shortId": "c-1a2b",
            "since": "2026-11-26T09:00:00Z",
            "diff": [{"namespace": "payments", "resource": "requests.cpu", "from": "4", "to": "40"}],
        },
        "lastAppliedChange": {"id": "c-0001", "approvedBy": "bob", "appliedAt": "2026-11-20T10:00:00Z"},
        "history": [{"at": "2026-11-20T10:00:00Z", "change": "c-0001", "hard": {"requests.cpu": "4"}}],
        "alerts": [{"namespace": "payments", "resource": "requests.cpu", "threshold": 80, "sentAt": "x"}],
        "summary": {
            "namespaces": 1,
            "highestUtilization": "83% payments/requests.cpu",
            "soonestFull": "2026-12-11 payments/requests.cpu",
        },
        "futureField": {"anything": ["goes"]},
    }

    projects.api.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, {"status": status})

    assert projects.get(name)["status"] == status
    # What `kubectl get projects` prints: the server-side Table with the printer columns.
    response = admin_client.rest_client.request(
        "GET",
        f"{admin_client.configuration.host}/apis/{GROUP}/{VERSION}/{PLURAL}/{name}",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    table = json.loads(response.data if response.data is not None else response.read())
    headers = [c["name"] for c in table["columnDefinitions"]]
    row = dict(zip(headers, table["rows"][0]["cells"], strict=True))
    assert row["Team"] == "payments"
    assert row["Namespaces"] == "1"
    assert row["Phase"] == "PendingApproval"
    assert row["Pending"] == "c-1a2b"
    assert row["Utilization"] == "83% payments/requests.cpu"
    assert row["Full"] == "2026-12-11 payments/requests.cpu"


def test_spec_cannot_be_written_through_status(projects: Projects) -> None:
    name = projects.create(_minimal(projects.name()))["metadata"]["name"]

    projects.api.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, name, {"spec": {"owner": {"team": "intruders"}}, "status": {"phase": "Ready"}}
    )

    assert projects.get(name)["spec"]["owner"]["team"] == "payments"


# -------------------------------------------------------------------------------------------------- samples


def test_samples_are_valid_projects(projects: Projects) -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Project":
                continue
            body = copy.deepcopy(doc)
            body["metadata"]["name"] = f"{doc['metadata']['name']}-{uuid.uuid4().hex[:6]}"
            created = projects.create(body)
            assert created["spec"]["owner"]["team"] == doc["spec"]["owner"]["team"], path


# ------------------------------------------------------------------------------------------ sign-off policy

APPROVERS = "headroom:approvers"
PLATFORM = "platform:quota-approvers"
GITOPS = "system:serviceaccount:argocd:argocd-application-controller"


class SignOff:
    """The shipped approval policy, installed under a private name and bound only to Projects that
    carry this instance's label, so that it never affects other tests. `settings` replaces the values
    of the policy's settings variables (approversGroup, gitopsUsers) as a kustomize patch would."""

    def __init__(
        self, cluster: Cluster, admin: kubernetes.client.ApiClient, settings: dict[str, str] | None = None
    ) -> None:
        self.cluster = cluster
        self.admin = admin
        self.settings = settings or {}
        suffix = uuid.uuid4().hex[:6]
        self.policy = f"headroom-approvals-{suffix}"
        self.label = {"headroom.dev/test-policy": suffix}
        self.rbac = f"headroom-signoff-test-{suffix}"
        self.projects = Projects(admin)

    def install(self) -> None:
        admission = kubernetes.client.AdmissionregistrationV1Api(self.admin)
        policy, binding = (d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d)
        policy["metadata"]["name"] = self.policy
        for variable in policy["spec"]["variables"]:
            variable["expression"] = self.settings.get(variable["name"], variable["expression"])
        admission.create_validating_admission_policy(policy)
        binding["metadata"]["name"] = self.policy
        binding["spec"]["policyName"] = self.policy
        binding["spec"]["matchResources"] = {"objectSelector": {"matchLabels": self.label}}
        admission.create_validating_admission_policy_binding(binding)
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.admin)
        rbac.create_cluster_role(
            {"metadata": {"name": self.rbac}, "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["*"]}]}
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": self.rbac},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.rbac},
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
                    for group in ("developers", APPROVERS, PLATFORM)
                ]
                + [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": GITOPS}],
            }
        )
        # Policies take effect asynchronously: wait until a self-approval is refused.
        probe = self.body("probe", {APPROVED_CHANGE: "c-probe"})

        def enforced() -> bool:
            try:
                self.create("alice", probe)
            except ApiException as exc:
                # RBAC also answers 403 until the new ClusterRoleBinding is seen: wait for the policy.
                return exc.status == 403 and "ValidatingAdmissionPolicy" in api_error_message(exc)
            self.projects.api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, probe["metadata"]["name"])
            return False

        wait_for(enforced, 30, "the approval policy to be enforced", interval=0.5)

    def uninstall(self) -> None:
        self.projects.cleanup()
        admission = kubernetes.client.AdmissionregistrationV1Api(self.admin)
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.admin)
        for delete in (
            lambda: admission.delete_validating_admission_policy_binding(self.policy),
            lambda: admission.delete_validating_admission_policy(self.policy),
            lambda: rbac.delete_cluster_role_binding(self.rbac),
            lambda: rbac.delete_cluster_role(self.rbac),
        ):
            with contextlib.suppress(ApiException):
                delete()

    def body(
        self, name: str, annotations: dict[str, str] | None = None, requested: dict[str, str] | None = None
    ) -> Body:
        body = _minimal(f"{name}-{self.label['headroom.dev/test-policy']}")
        body["metadata"]["labels"] = dict(self.label)
        body["metadata"]["annotations"] = dict(annotations or {})
        if requested:
            body["spec"]["namespaces"][0]["requested"] = requested
        return body

    def api(self, user: str) -> kubernetes.client.CustomObjectsApi:
        groups = {
            "alice": ["developers"],
            "bob": ["developers", APPROVERS],
            "carol": [APPROVERS],
            "dave": [PLATFORM],
            GITOPS: ["system:serviceaccounts"],
        }[user]
        return kubernetes.client.CustomObjectsApi(self.cluster.impersonate(user, groups))

    def create(self, user: str, body: Body) -> Body:
        return self.projects.create(body, api=self.api(user))

    def patch(self, user: str, name: str, patch: Body) -> Body:
        return self.api(user).patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch)


@contextlib.contextmanager
def _installed(policy: SignOff) -> Iterator[SignOff]:
    try:
        policy.install()
        yield policy
    finally:
        policy.uninstall()


@pytest.fixture
def sign_off(cluster: Cluster, admin_client: kubernetes.client.ApiClient, crds_installed: None) -> Iterator[SignOff]:
    with _installed(SignOff(cluster, admin_client)) as policy:
        yield policy


def _annotate(annotations: dict[str, str | None]) -> Body:
    return {"metadata": {"annotations": annotations}}


def _request(cpu: str) -> Body:
    return {"spec": {"namespaces": [{"name": "payments", "requested": {"requests.cpu": cpu}}]}}


def _both(cpu: str, annotations: dict[str, str | None]) -> Body:
    return {**_request(cpu), **_annotate(annotations)}


# Each row: who writes, what (a merge patch on a Project that alice created with requests.cpu 4
# and no sign-off), and None if it must be allowed, else fragments of the denial message.
SIGN_OFF_UPDATES: list[Any] = [
    pytest.param("alice", _both("8", {REQUESTED_BY: "alice"}), None, id="developer-requests-a-raise"),
    pytest.param(
        "alice",
        _request("8"),
        ["set annotation headroom.dev/requested-by=alice in the same write"],
        id="developer-request-names-no-requester",
    ),
    pytest.param(
        "alice",
        _both("8", {REQUESTED_BY: "bob"}),
        ["requested-by must be your own user name (alice)"],
        id="developer-cannot-request-in-another-name",
    ),
    pytest.param(
        "bob",
        _annotate({APPROVED_CHANGE: "c-1", APPROVED_BY: "bob", REQUESTED_BY: "bob"}),
        ["you requested this change", "four eyes"],
        id="approver-cannot-sign-off-own-request",
    ),
    pytest.param(
        "alice",
        _annotate({APPROVED_CHANGE: "c-1"}),
        ["only members of group headroom:approvers may sign off", "kubectl headroom approve"],
        id="developer-cannot-sign-off",
    ),
    pytest.param("bob", _annotate({APPROVED_CHANGE: "c-1", APPROVED_BY: "bob"}), None, id="approver-signs-off-as-self"),
    pytest.param(
        "carol",
        _annotate({APPROVED_CHANGE: "c-1"}),
        ["a sign-off names its approver"],
        id="approver-signs-off-without-name",
    ),
    pytest.param(
        "bob",
        _annotate({APPROVED_CHANGE: "c-1", APPROVED_BY: "carol"}),
        ["headroom.dev/approved-by must be your own user name (bob)", 'not "carol"'],
        id="approver-cannot-sign-as-someone-else",
    ),
    pytest.param(
        "alice",
        _annotate({APPROVED_BY: "bob"}),
        ["headroom.dev/approved-by must be your own user name (alice)"],
        id="developer-cannot-claim-an-approval",
    ),
    pytest.param(
        "bob",
        _both("8", {APPROVED_CHANGE: "c-1", APPROVED_BY: "bob"}),
        ["two separate writes, by two people"],
        id="approver-cannot-request-and-sign-at-once",
    ),
    pytest.param(
        GITOPS,
        _both("8", {APPROVED_CHANGE: "c-1", APPROVED_BY: "reviewer@example.com"}),
        None,
        id="gitops-may-request-and-sign-at-once",
    ),
    pytest.param("alice", _annotate({"team.example.com/note": "hello"}), None, id="other-annotations-are-free"),
]


@pytest.mark.parametrize(("user", "patch", "denied"), SIGN_OFF_UPDATES)
def test_sign_off_policy_on_update(sign_off: SignOff, user: str, patch: Body, denied: list[str] | None) -> None:
    created = sign_off.create("alice", sign_off.body("proj", requested={"requests.cpu": "4"}))
    name = created["metadata"]["name"]

    if denied is None:
        sign_off.patch(user, name, patch)
        return
    with pytest.raises(ApiException) as caught:
        sign_off.patch(user, name, patch)
    message = api_error_message(caught.value)
    assert caught.value.status == 403, message
    for fragment in denied:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_sign_off_lifecycle(sign_off: SignOff) -> None:
    """Request, sign off, withdraw and re-request: a realistic sequence, step by step."""
    name = sign_off.create("alice", sign_off.body("life"))["metadata"]["name"]
    sign_off.patch("alice", name, _both("40", {REQUESTED_BY: "alice"}))  # the team asks for more
    sign_off.patch("bob", name, _annotate({APPROVED_CHANGE: "c-7", APPROVED_BY: "bob"}))  # a reviewer signs
    # Later edits that leave the sign-off alone are the team's business (the operator ties a
    # sign-off to the pending change's id, so it cannot be reused for a different raise).
    sign_off.patch("alice", name, _request("48"))
    sign_off.patch("alice", name, _annotate({"team.example.com/ticket": "PAY-123"}))
    # Withdrawing a sign-off is always allowed; re-issuing it is not, for a developer.
    sign_off.patch("alice", name, _annotate({APPROVED_CHANGE: None, APPROVED_BY: None}))
    with pytest.raises(ApiException) as caught:
        sign_off.patch("alice", name, _annotate({APPROVED_CHANGE: "c-7"}))
    assert caught.value.status == 403
    # The operator's status writes go to the subresource and are not the policy's concern.
    sign_off.projects.api.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, name, {"status": {"phase": "PendingApproval", "pendingChange": {"id": "c-8"}}}
    )


CREATES: list[Any] = [
    pytest.param("alice", {}, None, None, id="developer-creates-a-project"),
    pytest.param("alice", {}, {"requests.cpu": "4"}, None, id="developer-creates-with-a-request"),
    pytest.param(
        "alice",
        {APPROVED_CHANGE: "c-1"},
        None,
        ["only members of group headroom:approvers"],
        id="developer-cannot-create-signed-off",
    ),
    pytest.param("bob", {APPROVED_CHANGE: "c-1", APPROVED_BY: "bob"}, None, None, id="approver-creates-signed-off"),
    pytest.param(
        "bob",
        {APPROVED_CHANGE: "c-1"},
        {"requests.cpu": "4"},
        ["two separate writes, by two people"],
        id="approver-cannot-create-requested-and-signed",
    ),
    pytest.param(
        GITOPS,
        {APPROVED_CHANGE: "c-1", APPROVED_BY: "reviewer"},
        {"requests.cpu": "4"},
        None,
        id="gitops-creates-requested-and-signed",
    ),
]


@pytest.mark.parametrize(("user", "annotations", "requested", "denied"), CREATES)
def test_sign_off_policy_on_create(
    sign_off: SignOff,
    user: str,
    annotations: dict[str, str],
    requested: dict[str, str] | None,
    denied: list[str] | None,
) -> None:
    body = sign_off.body("new", annotations, requested)

    if denied is None:
        sign_off.create(user, body)
        return
    with pytest.raises(ApiException) as caught:
        sign_off.create(user, body)
    message = api_error_message(caught.value)
    assert caught.value.status == 403, message
    for fragment in denied:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_policy_settings_come_first_for_the_documented_patch() -> None:
    """docs/install.md changes the settings with a JSON patch on /spec/variables/0, /1 and /2."""
    policy = next(d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d)
    variables = policy["spec"]["variables"]
    assert [v["name"] for v in variables[:3]] == ["approversGroup", "gitopsUsers", "platformApproversGroup"]
    assert variables[0]["expression"] == f"'{APPROVERS}'"
    assert GITOPS in variables[1]["expression"]
    assert "paramKind" not in policy["spec"]


def test_sign_off_policy_with_other_settings(
    cluster: Cluster, admin_client: kubernetes.client.ApiClient, crds_installed: None
) -> None:
    admission = kubernetes.client.AdmissionregistrationV1Api(admin_client)
    if any(
        b.spec.policy_name == "headroom-approvals" for b in admission.list_validating_admission_policy_binding().items
    ):
        pytest.skip("the shipped headroom-approvals policy is bound cluster-wide here and would refuse dave")
    settings = {"approversGroup": f"'{PLATFORM}'", "gitopsUsers": "[]"}
    with _installed(SignOff(cluster, admin_client, settings)) as policy:
        name = policy.create("alice", policy.body("cfg", requested={"requests.cpu": "4"}))["metadata"]["name"]

        policy.patch("dave", name, _annotate({APPROVED_CHANGE: "c-1", APPROVED_BY: "dave"}))
        for user in ("bob", GITOPS):
            with pytest.raises(ApiException) as caught:
                policy.patch(user, name, _annotate({APPROVED_CHANGE: f"c-{user[:3]}"}))
            assert f"only members of group {PLATFORM} may sign off" in api_error_message(caught.value)
