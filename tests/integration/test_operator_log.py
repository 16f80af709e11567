"""What Headroom says about what it does: its log at INFO, its Events, and its liveness probe."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import wait_for
from hack.localcluster.operator import OperatorProcess, custom, project_manifest

pytestmark = pytest.mark.integration
k8s = kubernetes.client
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"


def _log(operator: OperatorProcess) -> str:
    return operator.log_path.read_text(errors="replace")


def _events(admin: k8s.ApiClient, project: str, reason: str) -> list[str]:
    found = k8s.CoreV1Api(admin).list_namespaced_event("default", field_selector=f"involvedObject.name={project}")
    return [e.message for e in found.items if e.reason == reason]


def _quota(admin: k8s.ApiClient, namespace: str) -> Any:
    return k8s.CoreV1Api(admin).read_namespaced_resource_quota("headroom", namespace)


def _request(admin: k8s.ApiClient, name: str, namespaces: list[dict[str, Any]]) -> None:
    """Ask for a change as the sign-off policy wants it asked: naming who asks, in the same write."""
    me = k8s.AuthenticationV1Api(admin).create_self_subject_review(k8s.V1SelfSubjectReview()).status.user_info.username
    custom(admin).patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"metadata": {"annotations": {"headroom.dev/requested-by": me}}, "spec": {"namespaces": namespaces}},
    )


def _governed(admin: k8s.ApiClient, namespace: str, pods: str) -> bool:
    with contextlib.suppress(ApiException):
        quota = _quota(admin, namespace)
        return (quota.metadata.annotations or {}).get("headroom.dev/state") == "governed" and (
            quota.spec.hard or {}
        ).get("pods") == pods
    return False


def test_the_log_says_what_headroom_does(
    admin: k8s.ApiClient, namespace: str, tmp_path: Path, start_operator: Callable[..., OperatorProcess]
) -> None:
    # The defaults, as the README's install runs it: the sampler keeps its peaks on the quotas.
    operator = start_operator()
    wait_for(lambda: "Headroom starting:" in _log(operator), 30, "the start-up line")
    start = next(line for line in _log(operator).splitlines() if "Headroom starting:" in line)
    assert " INFO " in start
    for part in ("mode enforce", "history sampler", "alerts to Events", "ports metrics ", "leader election off"):
        assert part in start, start

    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(name, [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}}),
    )
    wait_for(lambda: _governed(admin, namespace, "10"), 60, "the governed quota")

    # A decrease needs no sign-off: it is applied, and the log says so in one line.
    body = custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    namespaces = body["spec"]["namespaces"]
    namespaces[0]["requested"] = {"pods": "8"}
    _request(admin, name, namespaces)
    wait_for(lambda: _governed(admin, namespace, "8"), 30, "the decrease applied")
    wait_for(
        lambda: any(f"Project {name}: ChangeApplied: applied change" in line for line in _log(operator).splitlines()),
        20,
        "a log line for the applied change",
    )

    # Edited by hand: restored, and the Event names the field manager for what it is.
    k8s.CoreV1Api(admin).patch_namespaced_resource_quota(
        "headroom", namespace, {"spec": {"hard": {"pods": "50"}}}, field_manager="kubectl-patch"
    )
    wait_for(lambda: _governed(admin, namespace, "8"), 30, "the edited quota restored")
    edited = wait_for(lambda: _events(admin, name, "QuotaRestored"), 20, "a QuotaRestored Event")
    assert "changed by field manager kubectl-patch" in edited[0], edited
    wait_for(lambda: f"Project {name}: QuotaRestored: " in _log(operator), 20, "a log line for the restore")

    # Deleted by hand: recreated, and that is said too (an Event and a log line).
    k8s.CoreV1Api(admin).delete_namespaced_resource_quota("headroom", namespace)
    deleted = wait_for(
        lambda: [m for m in _events(admin, name, "QuotaRestored") if "was deleted" in m],
        30,
        "a QuotaRestored Event for the deleted quota",
    )
    assert f"ResourceQuota headroom in {namespace} was deleted" in deleted[0]
    wait_for(lambda: _governed(admin, namespace, "8"), 60, "the deleted quota governed again")
    assert "was deleted" in _log(operator)

    # Deleting the Project is routine: no ERROR, no HTTP dump, even when it is deleted while a
    # reconcile of its last edit is writing (that write then finds nothing: 404).
    namespaces[0]["requested"] = {"pods": "7"}
    _request(admin, name, namespaces)
    custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    time.sleep(5)
    text = _log(operator)
    assert " ERROR " not in text and "HTTP response headers" not in text, text[-3000:]
    assert operator.running()


def test_a_project_deleted_during_its_reconcile_is_no_error(
    admin: k8s.ApiClient, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    """The reconcile of a change is held after its quota write; the Project is deleted meanwhile, so
    its status write finds nothing (404). That is routine: no ERROR, and no HTTP headers in the log."""
    operator = start_operator(env={"HEADROOM_FAILPOINTS": "approved-change-after-quota-write=pause:4"})
    name = f"p-{uuid.uuid4().hex[:8]}"
    custom(admin).create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        project_manifest(name, [namespace], quota={"resources": ["pods"], "minimum": {"pods": "10"}}),
    )
    wait_for(lambda: _governed(admin, namespace, "10"), 60, "the governed quota")
    body = custom(admin).get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    namespaces = body["spec"]["namespaces"]
    namespaces[0]["requested"] = {"pods": "8"}  # a decrease: applied without sign-off
    _request(admin, name, namespaces)
    wait_for(
        lambda: "failpoint approved-change-after-quota-write reached" in _log(operator),
        30,
        "the reconcile held after its quota write",
    )
    custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    wait_for(
        lambda: f"reconcile of Project {name} failed (NotFoundException 404: " in _log(operator),
        30,
        "the held reconcile to resume and find the Project gone",
    )
    time.sleep(3)  # its retry, which finds nothing to do
    text = _log(operator)
    assert " ERROR " not in text and "HTTP response headers" not in text, text[-3000:]
    line = next(line for line in text.splitlines() if f"reconcile of Project {name} failed" in line)
    assert " INFO " in line, line


def _health(operator: OperatorProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_replica_that_cannot_take_part_in_the_election_is_unhealthy(
    tmp_path: Path, start_operator: Callable[..., OperatorProcess]
) -> None:
    """The shipped Role grants the Lease named `headroom` only: another --lease-name is refused (403),
    and such a replica would stand by forever. Its liveness probe fails and says why."""
    history = tmp_path / "history.csv"
    history.write_text("time,namespace,resource,value\n")
    operator = start_operator(
        "--leader-elect", "--lease-name=headroom-other", "--history-source=file", f"--history-file={history}"
    )

    def unhealthy() -> tuple[int, dict[str, Any]] | None:
        with contextlib.suppress(OSError):
            code, body = _health(operator)
            return (code, body) if code == 503 else None
        return None

    _, body = wait_for(unhealthy, 30, "/healthz to report the replica unhealthy")
    assert body["role"] == "standby"
    assert "cannot take part in leader election" in body["reason"]
    assert "headroom-system/headroom-other" in body["reason"] and "--lease-name=headroom" in body["reason"]
    errors = [line for line in _log(operator).splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot take part in leader election" in errors[0], errors


def test_alerts_sent_and_deferred_are_logged(
    admin: k8s.ApiClient, namespace: str, tmp_path: Path, start_operator: Callable[..., OperatorProcess]
) -> None:
    history = tmp_path / "history.csv"
    history.write_text("time,namespace,resource,value\n")
    operator = start_operator("--history-source=file", f"--history-file={history}")
    core = k8s.CoreV1Api(admin)
    names = []
    # Open all day, and open one hour half a day from now: the second Project's alert can only wait.
    later = (datetime.now(UTC).hour + 12) % 24
    for hours in ("Mon-Sun 00:00-24:00 UTC", f"Mon-Sun {later:02d}:00-{later + 1:02d}:00 UTC"):
        name = f"p-{uuid.uuid4().hex[:8]}"
        ns = namespace if not names else f"{namespace}-b"
        if names:
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        body = project_manifest(name, [ns], quota={"resources": ["pods"], "minimum": {"pods": "10"}})
        body["spec"]["owner"]["businessHours"] = hours  # type: ignore[index]
        custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        names.append(name)
        wait_for(lambda ns=ns: _governed(admin, ns, "10"), 60, f"the governed quota in {ns}")
        wait_for(lambda ns=ns: core.read_namespaced_service_account("default", ns), 30, "ServiceAccount default")
        for i in range(9):  # Pending pods count against the quota: 90 %
            core.create_namespaced_pod(
                ns,
                k8s.V1Pod(
                    metadata=k8s.V1ObjectMeta(name=f"p{i}"),
                    spec=k8s.V1PodSpec(
                        automount_service_account_token=False,
                        containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
                    ),
                ),
            )
    try:
        wait_for(
            lambda: (
                f"Project {names[0]}: alert {namespace} pods firing (90% of the quota, threshold 80%) "
                "sent to event" in _log(operator)
            ),
            60,
            "a log line for the alert sent",
        )
        wait_for(
            lambda: f"Project {names[1]}: alert {namespace}-b pods firing deferred until" in _log(operator),
            60,
            "a log line for the alert deferred",
        )
    finally:
        for name in names:
            with contextlib.suppress(ApiException):
                custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        with contextlib.suppress(ApiException):
            core.delete_namespace(f"{namespace}-b")
