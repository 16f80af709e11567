"""Fixtures shared by the suite: the control plane, a fresh namespace per test, CRDs, failure reports.

The control plane starts once per session. With HEADROOM_TEST_KUBECONFIG set, the suite uses that
cluster instead (kind, or a real one) and starts nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest

from hack.localcluster.controlplane import ControlPlane
from hack.localcluster.kube import Cluster, apply_yaml, wait_for
from hack.localcluster.operator import OperatorProcess, custom, install_rbac, project_manifest

k8s = kubernetes.client
ApiException = kubernetes.client.ApiException
GROUP, VERSION, PLURAL = "headroom.dev", "v1alpha1", "projects"

REPO = Path(__file__).resolve().parents[1]

_failure_reports: list[str] = []


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    existing = os.environ.get("HEADROOM_TEST_KUBECONFIG")
    if existing:
        yield Cluster(Path(existing))
        return
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="headroom-cp-")))
    plane.start()
    try:
        yield Cluster(plane.kubeconfig, plane)
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin(cluster: Cluster) -> kubernetes.client.ApiClient:
    return cluster.api_client()


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster, admin: kubernetes.client.ApiClient) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(admin)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for crd in apply_yaml(admin, path):
            name = crd["metadata"]["name"]

            def established(name: str = name) -> bool:
                conditions = ext.read_custom_resource_definition(name).status.conditions or []
                return any(c.type == "Established" and c.status == "True" for c in conditions)

            wait_for(established, 30, f"CRD {name} established")


@pytest.fixture(scope="session")
def rbac_installed(cluster: Cluster, crds_installed: None) -> None:
    install_rbac(cluster)


@pytest.fixture(scope="session")
def approval_policy(cluster: Cluster, admin: k8s.ApiClient, crds_installed: None) -> Iterator[None]:
    """The ValidatingAdmissionPolicy from manifests/, and RBAC letting test users edit Projects."""
    apply_yaml(admin, REPO / "manifests" / "approval" / "policy.yaml")
    rbac = k8s.RbacAuthorizationV1Api(admin)
    with contextlib.suppress(ApiException):
        rbac.create_cluster_role(
            k8s.V1ClusterRole(
                metadata=k8s.V1ObjectMeta(name="test-project-editor"),
                rules=[
                    k8s.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL], verbs=["get", "list", "update", "patch"])
                ],
            )
        )
        rbac.create_cluster_role_binding(
            k8s.V1ClusterRoleBinding(
                metadata=k8s.V1ObjectMeta(name="test-project-editor"),
                role_ref=k8s.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="test-project-editor"
                ),
                subjects=[
                    k8s.RbacV1Subject(kind="Group", name="system:authenticated", api_group="rbac.authorization.k8s.io")
                ],
            )
        )
    # The policy is enforced once the API server has compiled it: probe with a write it must deny.
    probe = f"probe-{uuid.uuid4().hex[:6]}"
    custom(admin).create_cluster_custom_object(GROUP, VERSION, PLURAL, project_manifest(probe, ["probe-ns"]))
    as_owner = custom(cluster.impersonate("probe-owner"))

    def denied() -> bool:
        try:
            as_owner.patch_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                probe,
                {"metadata": {"annotations": {"headroom.dev/approved-change": "sha256:probe"}}},
            )
        except ApiException as exc:
            return exc.status == 403
        custom(admin).patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, probe, {"metadata": {"annotations": {"headroom.dev/approved-change": None}}}
        )
        return False

    wait_for(denied, 30, "the approval policy to be enforced")
    custom(admin).delete_cluster_custom_object(GROUP, VERSION, PLURAL, probe)
    yield


@pytest.fixture
def start_operator(
    cluster: Cluster, rbac_installed: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start Headroom as its ServiceAccount: start_operator("--history-source=file", ...)."""
    started: list[OperatorProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> OperatorProcess:
        operator = OperatorProcess(cluster, tmp_path / f"operator-{len(started)}", args=args, env=env or {})
        started.append(operator.start())
        return operator

    yield start
    call_report = getattr(request.node, "rep_call", None)
    for operator in started:
        operator.stop()
        if call_report is not None and call_report.failed:
            _failure_reports.append(f"{request.node.name}:\n{operator.logs(80)}")


@pytest.fixture
def namespace(admin: kubernetes.client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted after the test (without waiting for finalization)."""
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield name
    call_report = getattr(request.node, "rep_call", None)
    if call_report is not None and call_report.failed:
        _report_events(core, name)
    with contextlib.suppress(kubernetes.client.ApiException):
        core.delete_namespace(name)


def _report_events(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    with contextlib.suppress(kubernetes.client.ApiException):
        events = core.list_namespaced_event(namespace).items[-20:]
        lines = [f"{e.type} {e.reason} {e.involved_object.kind}/{e.involved_object.name}: {e.message}" for e in events]
        _failure_reports.append(f"recent Events in {namespace}:\n" + "\n".join(lines))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    if report.failed and report.when == "call":
        cluster: Cluster | None = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if cluster is None and "cluster" in getattr(item, "fixturenames", ()):
            cluster = item._request.getfixturevalue("cluster")  # type: ignore[attr-defined]
        if cluster is not None and cluster.plane is not None:
            report.sections.append(("control-plane logs", cluster.plane.logs(30)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for text in _failure_reports:
        terminalreporter.write_line(text)
