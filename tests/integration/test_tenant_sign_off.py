"""A team that may edit its own Project tries to get more than it should.

Set up as a platform would: the shipped admission policy and approver RBAC, the team allowed to
update and patch only its own Project (manifests/examples/team-editor-rbac.yaml, as shipped), the
operator in Enforce mode with its defaults. Every loosening edit is either refused by the API server
with a message that says how to ask, or held as a pending change that only another person can sign
off; meanwhile no quota moves, and kube-system is never touched.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, api_error_message, apply_yaml, wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"
REPO = Path(__file__).resolve().parents[2]
PROJECT = "payments"  # the name the example RBAC grants
TEAM = ["payments-developers"]
APPROVERS = ["headroom:approvers"]
LABEL = "headroom.dev/project"


@pytest.fixture(scope="module")
def team_rbac_only(cluster: Cluster, admin: k8s.ApiClient, approval_policy: None) -> Iterator[None]:
    """Exactly the shipped RBAC: the suite's blanket "anyone may edit Projects" grant is lifted here."""
    rbac = k8s.RbacAuthorizationV1Api(admin)
    blanket = None
    with contextlib.suppress(ApiException):
        blanket = rbac.read_cluster_role_binding("test-project-editor")
        rbac.delete_cluster_role_binding("test-project-editor")
    applied = [
        *apply_yaml(admin, REPO / "manifests" / "examples" / "team-editor-rbac.yaml"),
        *apply_yaml(admin, REPO / "manifests" / "approval" / "approvers-rbac.yaml"),
    ]
    # RBAC is effective once the authorizer's cache has it: probe with the team's own read.
    wait_for(
        lambda: _can(cluster, "dana", TEAM, "update", PROJECT) and not _can(cluster, "dana", TEAM, "update", "billing"),
        20,
        "the example RBAC to be in force",
    )
    yield
    for obj in applied:
        if obj["kind"] == "ClusterRoleBinding" and obj["metadata"]["name"].startswith("headroom-project-editor"):
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role_binding(obj["metadata"]["name"])
    if blanket is not None:
        blanket.metadata = k8s.V1ObjectMeta(name="test-project-editor")
        with contextlib.suppress(ApiException):
            rbac.create_cluster_role_binding(blanket)


def _can(cluster: Cluster, user: str, groups: list[str], verb: str, name: str) -> bool:
    review = k8s.AuthorizationV1Api(cluster.impersonate(user, groups)).create_self_subject_access_review(
        k8s.V1SelfSubjectAccessReview(
            spec=k8s.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s.V1ResourceAttributes(group=GROUP, resource=PLURAL, verb=verb, name=name)
            )
        )
    )
    return bool(review.status.allowed)


def get_project(client: k8s.ApiClient, name: str = PROJECT) -> dict[str, Any]:
    return dict(custom(client).get_cluster_custom_object(GROUP, VERSION, PLURAL, name))


def patch(client: k8s.ApiClient, body: dict[str, Any], name: str = PROJECT) -> None:
    custom(client).patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, body)


def edit_spec(client: k8s.ApiClient, who: str, change: Callable[[dict[str, Any]], None]) -> None:
    """A team member's edit of the spec, recording themselves as its requester (as the policy wants)."""
    spec = get_project(client)["spec"]
    change(spec)
    patch(client, {"metadata": {"annotations": {"headroom.dev/requested-by": who}}, "spec": spec})


def approve(client: k8s.ApiClient, change: str, who: str) -> None:
    patch(
        client, {"metadata": {"annotations": {"headroom.dev/approved-change": change, "headroom.dev/approved-by": who}}}
    )


def denied(write: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as caught:
        write()
    assert caught.value.status == 403, caught.value.body
    return api_error_message(caught.value)


def settled(admin: k8s.ApiClient, name: str = PROJECT, timeout: float = 30) -> dict[str, Any]:
    """The status once the operator has seen the current generation and published its pending change (if any)."""

    def probe() -> dict[str, Any] | None:
        body = get_project(admin, name)
        status = body.get("status") or {}
        return status if status.get("observedGeneration") == body["metadata"]["generation"] else None

    return wait_for(probe, timeout, f"Project {name} to observe its latest generation")


def hard(admin: k8s.ApiClient, namespace: str) -> dict[str, str] | None:
    try:
        return dict(k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace).spec.hard)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def governed(admin: k8s.ApiClient, namespace: str, timeout: float = 40) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        try:
            quota = k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)
        except ApiException:
            return None
        state = (quota.metadata.annotations or {}).get("headroom.dev/state")
        return dict(quota.spec.hard) if state == "governed" else None

    return wait_for(probe, timeout, f"a governed quota in {namespace}")


def entry(status: dict[str, Any], namespace: str) -> dict[str, Any]:
    return next(e for e in status.get("namespaces") or [] if e["name"] == namespace)


def make_namespace(admin: k8s.ApiClient, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels)))
    return name


@pytest.fixture
def payments(
    admin: k8s.ApiClient,
    team_rbac_only: None,
    start_operator: Callable[..., OperatorProcess],
) -> Iterator[tuple[str, str, OperatorProcess]]:
    """Project "payments" created by the platform with two namespaces, both governed: cpu 2, pods 10."""
    a, b = make_namespace(admin, "pay-a"), make_namespace(admin, "pay-b")
    operator = start_operator()
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, PROJECT)
        wait_for(lambda: not _exists(admin, PROJECT), 20, "an earlier payments Project to go")
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            PROJECT,
            [a, b],
            quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}},
        ),
    )
    assert governed(admin, a) == {"requests.cpu": "2", "pods": "10"}
    assert governed(admin, b) == {"requests.cpu": "2", "pods": "10"}
    yield a, b, operator
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, PROJECT)
    for ns in (a, b):
        with contextlib.suppress(ApiException):
            k8s.CoreV1Api(admin).delete_namespace(ns)


def _exists(admin: k8s.ApiClient, name: str) -> bool:
    try:
        get_project(admin, name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def still(admin: k8s.ApiClient, namespace: str, expected: dict[str, str] | None, seconds: float = 3) -> None:
    """The quota stays as it is for a while after the operator has seen the edit (no write in flight)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert hard(admin, namespace) == expected
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------- claims


def test_a_namespace_the_team_adds_is_not_governed_until_the_platform_confirms_it(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    dana = cluster.impersonate("dana", TEAM)
    free = make_namespace(admin, "unclaimed")
    try:
        # Case 1 of the report: an unclaimed namespace and a floor of 500 cpu, in ordinary writes.
        def grab(spec: dict[str, Any]) -> None:
            spec["namespaces"].append({"name": free})
            spec["quota"]["minimum"]["requests.cpu"] = "500"

        edit_spec(dana, "dana", grab)
        status = settled(admin)
        assert entry(status, free)["state"] == "Unconfirmed"
        assert f"{LABEL}={PROJECT}" in entry(status, free)["message"]
        loosens = {item["field"] for item in status["pendingChange"]["loosens"]}
        assert loosens == {f"spec.namespaces[{free}]", "spec.quota.minimum[requests.cpu]"}
        still(admin, free, None)

        # The platform confirms the claim: the namespace is governed, with the floor in force (2), not 500.
        k8s.CoreV1Api(admin).patch_namespace(free, {"metadata": {"labels": {LABEL: PROJECT}}})
        assert governed(admin, free)["requests.cpu"] == "2"
        # The quota is written before the status that says so: wait for the status of that reconcile.
        status = wait_for(
            lambda: (
                (st := settled(admin))
                and [item["field"] for item in st["pendingChange"]["loosens"]] == ["spec.quota.minimum[requests.cpu]"]
                and st
            ),
            30,
            "the status to drop the confirmed claim from the pending change",
        )

        # Signed off by another person, the floor applies to what is bootstrapped from now on; a
        # namespace already governed keeps its quota (a floor never raises a governed quota).
        approve(cluster.impersonate("bob", APPROVERS), status["pendingChange"]["id"], "bob")
        wait_for(lambda: "pendingChange" not in settled(admin), 20, "the sign-off to be used")
        still(admin, free, {"requests.cpu": "2", "pods": "10"})
        assert settled(admin)["approved"]["terms"]["minimum"]["requests.cpu"] == "500"
    finally:
        k8s.CoreV1Api(admin).delete_namespace(free)


def test_a_sign_off_confirms_a_claim_without_the_label(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    dana = cluster.impersonate("dana", TEAM)
    extra = make_namespace(admin, "pay-c")
    try:
        edit_spec(dana, "dana", lambda spec: spec["namespaces"].append({"name": extra}))
        change = settled(admin)["pendingChange"]["id"]
        still(admin, extra, None)
        approve(cluster.impersonate("bob", APPROVERS), change, "bob")
        assert governed(admin, extra) == {"requests.cpu": "2", "pods": "10"}
        assert extra in settled(admin)["approved"]["namespaces"]
    finally:
        k8s.CoreV1Api(admin).delete_namespace(extra)


def test_kube_system_is_never_governed_even_with_a_sign_off(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    before = hard(admin, "kube-system")
    dana = cluster.impersonate("dana", TEAM)

    def grab(spec: dict[str, Any]) -> None:
        spec["namespaces"].append({"name": "kube-system", "requested": {"requests.cpu": "0"}})

    edit_spec(dana, "dana", grab)
    status = settled(admin)
    refused = entry(status, "kube-system")
    assert refused["state"] == "Refused" and "protected" in refused["message"]
    # Nothing a reviewer could sign off would put it under the Project.
    pending = status.get("pendingChange") or {}
    assert not any("kube-system" in item["field"] for item in pending.get("loosens") or [])
    if pending:
        approve(cluster.impersonate("bob", APPROVERS), pending["id"], "bob")
        settled(admin)
    still(admin, "kube-system", before)
    assert before is None


def test_another_teams_namespace_stays_theirs(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    theirs = make_namespace(admin, "billing")
    name = f"billing-{uuid.uuid4().hex[:6]}"
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            name, [theirs], quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "3", "pods": "5"}}
        ),
    )
    try:
        assert governed(admin, theirs) == {"requests.cpu": "3", "pods": "5"}
        # payments is older, which used to win a contested namespace; an unconfirmed claim wins nothing.
        edit_spec(
            cluster.impersonate("dana", TEAM),
            "dana",
            lambda spec: spec["namespaces"].append({"name": theirs, "requested": {"requests.cpu": "1"}}),
        )
        assert entry(settled(admin), theirs)["state"] == "Unconfirmed"
        assert entry(settled(admin, name), theirs)["state"] == "Governed"
        still(admin, theirs, {"requests.cpu": "3", "pods": "5"})
    finally:
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        k8s.CoreV1Api(admin).delete_namespace(theirs)


def test_a_namespace_taken_out_keeps_its_quota(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    b = payments[1]
    edit_spec(
        cluster.impersonate("dana", TEAM),
        "dana",
        lambda spec: spec.__setitem__("namespaces", [ns for ns in spec["namespaces"] if ns["name"] != b]),
    )
    status = settled(admin)
    assert [r["name"] for r in status["released"]] == [b]
    still(admin, b, {"requests.cpu": "2", "pods": "10"})


# --------------------------------------------------------------------------------------------- four eyes, once


def test_four_eyes_means_two_people(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    a = payments[0]
    lee = cluster.impersonate("lee", [*TEAM, *APPROVERS])  # a team lead who is also an approver

    def raise_cpu(value: str) -> Callable[[dict[str, Any]], None]:
        def change(spec: dict[str, Any]) -> None:
            spec["namespaces"][0]["requested"] = {"requests.cpu": value}

        return change

    # A change of the request must name its requester, and only as oneself.
    message = denied(
        lambda: patch(
            lee,
            {
                "spec": {
                    **get_project(lee)["spec"],
                    "namespaces": [
                        {"name": a, "requested": {"requests.cpu": "8"}},
                        *get_project(lee)["spec"]["namespaces"][1:],
                    ],
                }
            },
        )
    )
    assert "headroom.dev/requested-by=lee" in message
    message = denied(lambda: edit_spec(lee, "dana", raise_cpu("8")))
    assert "must be your own user name (lee)" in message

    edit_spec(lee, "lee", raise_cpu("8"))
    change = settled(admin)["pendingChange"]["id"]
    message = denied(lambda: approve(lee, change, "lee"))
    assert "you requested this change" in message and "four eyes" in message
    # Nor may the requester hand the request to someone else's name, or drop it.
    assert "own user name" in denied(
        lambda: patch(lee, {"metadata": {"annotations": {"headroom.dev/requested-by": "bob"}}})
    )
    assert "own user name" in denied(
        lambda: patch(lee, {"metadata": {"annotations": {"headroom.dev/requested-by": None}}})
    )
    # A sign-off names its approver.
    assert "names its approver" in denied(
        lambda: patch(
            cluster.impersonate("bob", APPROVERS),
            {"metadata": {"annotations": {"headroom.dev/approved-change": change}}},
        )
    )
    still(admin, a, {"requests.cpu": "2", "pods": "10"})

    # Signing off first and asking afterwards is the same person too: the operator refuses it.
    edit_spec(cluster.impersonate("dana", TEAM), "dana", raise_cpu("3"))
    settled(admin)
    future = _id_if(admin, raise_cpu("9"))
    approve(lee, future, "lee")  # allowed now: dana asked for the current request
    edit_spec(lee, "lee", raise_cpu("9"))
    status = settled(admin)
    assert status["pendingChange"]["id"] == future
    assert "same person (lee)" in status["pendingChange"]["reason"]
    still(admin, a, {"requests.cpu": "2", "pods": "10"})

    approve(cluster.impersonate("bob", APPROVERS), future, "bob")
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "9", "pods": "10"}, 20, "the raise signed off by bob")


def _id_if(admin: k8s.ApiClient, change: Callable[[dict[str, Any]], None]) -> str:
    """The id the Project would have after an edit, computed offline as `headroom change-id` does."""
    from headroom.core.changes import change_id
    from headroom.core.spec import parse_project

    body = get_project(admin)
    change(body["spec"])
    return change_id(parse_project(body))


def test_an_approval_is_used_once(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    a = payments[0]
    dana, bob = cluster.impersonate("dana", TEAM), cluster.impersonate("bob", APPROVERS)

    def ask(value: str) -> Callable[[dict[str, Any]], None]:
        def change(spec: dict[str, Any]) -> None:
            spec["namespaces"][0]["requested"] = {"requests.cpu": value}

        return change

    edit_spec(dana, "dana", ask("4"))
    first = settled(admin)["pendingChange"]["id"]
    approve(bob, first, "bob")
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "4", "pods": "10"}, 20, "the approved raise")
    edit_spec(dana, "dana", ask("2"))  # a decrease needs nobody
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "2", "pods": "10"}, 20, "the decrease")

    edit_spec(dana, "dana", ask("4"))  # case 4: the old approval still names this id
    status = settled(admin)
    assert status["pendingChange"]["id"] == first
    assert "used once" in status["pendingChange"]["reason"]
    still(admin, a, {"requests.cpu": "2", "pods": "10"})

    # Asking again is a new change with a new reason, and a new sign-off.
    edit_spec(dana, "dana", lambda spec: spec.__setitem__("reason", "TICKET-7: the sale is back"))
    second = settled(admin)["pendingChange"]["id"]
    assert second != first
    approve(bob, second, "bob")
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "4", "pods": "10"}, 20, "the second sign-off")


# --------------------------------------------------------------------------------------------- settings


def test_switching_enforcement_off_waits_for_sign_off(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    a = payments[0]
    edit_spec(
        cluster.impersonate("dana", TEAM), "dana", lambda spec: spec["quota"].__setitem__("enforcement", "Observe")
    )
    status = settled(admin)
    assert status["summary"]["enforcement"] == "Enforce"
    assert [item["field"] for item in status["pendingChange"]["loosens"]] == ["spec.quota.enforcement"]
    still(admin, a, {"requests.cpu": "2", "pods": "10"})
    approve(cluster.impersonate("bob", APPROVERS), status["pendingChange"]["id"], "bob")
    wait_for(lambda: settled(admin)["summary"]["enforcement"] == "Observe", 20, "Observe once signed off")


def test_a_dropped_resource_stays_limited_until_signed_off(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    a = payments[0]
    edit_spec(cluster.impersonate("dana", TEAM), "dana", lambda spec: spec["quota"].__setitem__("resources", ["pods"]))
    status = settled(admin)
    assert status["pendingChange"]["loosens"] == [
        {"field": "spec.quota.resources", "from": "limits requests.cpu", "to": "does not limit requests.cpu"}
    ]
    still(admin, a, {"requests.cpu": "2", "pods": "10"})
    approve(cluster.impersonate("bob", APPROVERS), status["pendingChange"]["id"], "bob")
    wait_for(lambda: hard(admin, a) == {"pods": "10"}, 20, "requests.cpu to leave the quota once signed off")


def test_auto_approval_cannot_be_widened_by_the_team(
    cluster: Cluster, admin: k8s.ApiClient, team_rbac_only: None, start_operator: Callable[..., OperatorProcess]
) -> None:
    ns = make_namespace(admin, "pay-auto")
    start_operator("--auto-approve-within-recommendation")
    with contextlib.suppress(ApiException):
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, PROJECT)
        wait_for(lambda: not _exists(admin, PROJECT), 20, "an earlier payments Project to go")
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(
            PROJECT, [ns], quota={"resources": ["requests.cpu", "pods"], "minimum": {"requests.cpu": "2", "pods": "10"}}
        ),
    )
    try:
        assert governed(admin, ns) == {"requests.cpu": "2", "pods": "10"}
        # A decrease needs nobody.
        edit_spec(
            cluster.impersonate("dana", TEAM),
            "dana",
            lambda spec: spec["namespaces"][0].__setitem__("requested", {"pods": "8"}),
        )
        wait_for(lambda: hard(admin, ns) == {"requests.cpu": "2", "pods": "8"}, 20, "a decrease")

        # Raising its own floor to 50 would move the recommendation to 50: the whole change waits.
        def widen(spec: dict[str, Any]) -> None:
            spec["quota"]["minimum"]["requests.cpu"] = "50"
            spec["namespaces"][0]["requested"] = {"pods": "8", "requests.cpu": "40"}

        edit_spec(cluster.impersonate("dana", TEAM), "dana", widen)
        reason = settled(admin)["pendingChange"]["reason"]
        assert "not auto-approved because spec.quota.minimum[requests.cpu] needs sign-off" in reason
        still(admin, ns, {"requests.cpu": "2", "pods": "8"})
    finally:
        custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, PROJECT)
        k8s.CoreV1Api(admin).delete_namespace(ns)


def test_nobody_rewrites_who_signed_off(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    dana = cluster.impersonate("dana", TEAM)
    edit_spec(dana, "dana", lambda spec: spec["namespaces"][0].__setitem__("requested", {"requests.cpu": "3"}))
    approve(cluster.impersonate("bob", APPROVERS), settled(admin)["pendingChange"]["id"], "bob")
    for rewrite in ("dana", None):
        message = denied(
            lambda rewrite=rewrite: patch(
                dana,
                {
                    "metadata": {
                        "annotations": {  # type: ignore[misc]
                            "headroom.dev/approved-by": rewrite
                        }
                    }
                },
            )
        )
        assert "approved-by must be your own user name (dana)" in message
    wait_for(
        lambda: get_project(admin)["status"].get("lastAppliedChange", {}).get("approvedBy") == "bob",
        20,
        "the change recorded as approved by bob",
    )


def test_raising_a_container_default_names_its_requester_and_waits(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    dana = cluster.impersonate("dana", TEAM)

    def bigger(spec: dict[str, Any]) -> None:
        spec["defaults"] = {"requests": {"cpu": "50"}, "limits": {"cpu": "50"}}

    assert "headroom.dev/requested-by=dana" in denied(
        lambda: patch(dana, {"spec": {"defaults": {"requests": {"cpu": "50"}, "limits": {"cpu": "50"}}}})
    )
    edit_spec(dana, "dana", bigger)
    fields = {item["field"] for item in settled(admin)["pendingChange"]["loosens"]}
    assert {"spec.defaults.requests.cpu", "spec.defaults.limits.cpu"} <= fields
    limitrange = k8s.CoreV1Api(admin).read_namespaced_limit_range("headroom-defaults", payments[0])
    assert limitrange.spec.limits[0].default_request["cpu"] == "100m"  # the approved default holds meanwhile


# --------------------------------------------------------------------------------------------- raises that end


def test_a_raise_that_ends_cannot_be_stretched_by_the_team(
    cluster: Cluster, admin: k8s.ApiClient, payments: tuple[str, str, OperatorProcess]
) -> None:
    a = payments[0]
    dana, bob = cluster.impersonate("dana", TEAM), cluster.impersonate("bob", APPROVERS)
    now = datetime.now(UTC).replace(microsecond=0)
    signed_off = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ending(until: str | None, value: str = "4") -> Callable[[dict[str, Any]], None]:
        def change(spec: dict[str, Any]) -> None:
            entry = spec["namespaces"][0]
            entry.update(requested={"requests.cpu": value}, reason="INC-1: the sale weekend")
            entry.pop("until", None)
            if until is not None:
                entry["until"] = until

        return change

    edit_spec(dana, "dana", ending(signed_off))
    first = settled(admin)["pendingChange"]["id"]
    approve(bob, first, "bob")
    wait_for(lambda: hard(admin, a) == {"requests.cpu": "4", "pods": "10"}, 20, "the raise until tomorrow")
    # The quota is written before the status of the same reconcile: wait for the status that records it.
    wait_for(lambda: entry(get_project(admin)["status"], a).get("expiresAt") == signed_off, 20, "status.expiresAt")

    # The end and the reason are part of the request: the writer names themselves, and a request never
    # comes with its approval in one write.
    spec = get_project(dana)["spec"]
    spec["namespaces"][0]["until"] = (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    erin = cluster.impersonate("erin", TEAM)
    assert "headroom.dev/requested-by=erin" in denied(lambda: patch(erin, {"spec": spec}))
    spec["namespaces"][0]["reason"] = "INC-2"
    message = denied(
        lambda: patch(
            bob,
            {
                "spec": spec,
                "metadata": {
                    "annotations": {
                        "headroom.dev/requested-by": "bob",
                        "headroom.dev/approved-change": _id_if(admin, lambda s: s.update(spec)),
                        "headroom.dev/approved-by": "bob",
                    }
                },
            },
        )
    )
    assert "two separate writes" in message

    # Removing the end, or moving it later, is a loosening: it waits, and the signed-off end stays.
    for until, shown in ((None, "none (permanent)"), ((now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"), None)):
        edit_spec(dana, "dana", ending(until))
        status = settled(admin)
        loosens = status["pendingChange"]["loosens"]
        assert loosens == [{"field": f"spec.namespaces[{a}].until", "from": signed_off, "to": shown or until}]
        assert "needs sign-off" in status["pendingChange"]["reason"]
        assert entry(status, a)["expiresAt"] == signed_off
        still(admin, a, {"requests.cpu": "4", "pods": "10"})

    # Back to what was signed off: nothing pending. Earlier: in force at once, without anybody.
    edit_spec(dana, "dana", ending(signed_off))
    assert "pendingChange" not in settled(admin)
    sooner = (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    edit_spec(dana, "dana", ending(sooner))
    status = settled(admin)
    assert entry(status, a)["expiresAt"] == sooner
    assert "pendingChange" not in status
    # ... and back to the signed-off end is asking for more again: the old approval was used once.
    edit_spec(dana, "dana", ending(signed_off))
    status = settled(admin)
    assert status["pendingChange"]["id"] == first
    assert "used once" in status["pendingChange"]["reason"]
    assert entry(status, a)["expiresAt"] == sooner
