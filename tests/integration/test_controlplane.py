"""The control plane behaves as production does where Headroom depends on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client import ApiException

from hack.localcluster.kube import Cluster, api_error_message, client_from_kubeconfig, wait_for

pytestmark = pytest.mark.integration

k8s = kubernetes.client


def _pod(name: str, cpu: str = "200m") -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="app",
                    image="registry.invalid/app:1",
                    resources=k8s.V1ResourceRequirements(requests={"cpu": cpu}),
                )
            ]
        ),
    )


def test_quota_admits_the_first_pod_and_rejects_the_second(admin: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_resource_quota(
        namespace,
        k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="q"), spec=k8s.V1ResourceQuotaSpec(hard={"pods": "1", "requests.cpu": "1"})
        ),
    )
    wait_for(
        lambda: core.read_namespaced_resource_quota("q", namespace).status.hard,
        30,
        "the resourcequota controller to populate status.hard",
    )

    core.create_namespaced_pod(namespace, _pod("first"))
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, _pod("second"))

    assert rejected.value.status == 403
    assert "exceeded quota" in api_error_message(rejected.value)
    used = core.read_namespaced_resource_quota("q", namespace).status.used
    assert used == {"pods": "1", "requests.cpu": "200m"}


def test_namespace_deletion_completes(admin: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(admin)
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(name, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="data")))
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 60, f"namespace {name} to be finalized and removed")


def test_dependent_of_a_deleted_owner_is_garbage_collected(admin: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(admin)
    owner = core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(
        namespace,
        k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                name="dependent",
                owner_references=[
                    k8s.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
                ],
            )
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
        return "dependent" not in names

    wait_for(collected, 60, "the garbage collector to delete the dependent ConfigMap")


def test_admission_policy_rejects_a_user_but_allows_the_admin(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str
) -> None:
    reg = k8s.AdmissionregistrationV1Api(admin)
    rbac = k8s.RbacAuthorizationV1Api(admin)
    suffix = uuid.uuid4().hex[:6]
    policy_name, user = f"frozen-{suffix}", f"dev-{suffix}"
    reg.create_validating_admission_policy(
        k8s.V1ValidatingAdmissionPolicy(
            metadata=k8s.V1ObjectMeta(name=policy_name),
            spec=k8s.V1ValidatingAdmissionPolicySpec(
                failure_policy="Fail",
                match_constraints=k8s.V1MatchResources(
                    resource_rules=[
                        k8s.V1NamedRuleWithOperations(
                            api_groups=[""], api_versions=["v1"], operations=["UPDATE"], resources=["configmaps"]
                        )
                    ]
                ),
                validations=[
                    k8s.V1Validation(
                        expression="request.userInfo.username == 'headroom-admin' || object.data == oldObject.data",
                        message="only the admin may change this ConfigMap's data",
                    )
                ],
            ),
        )
    )
    reg.create_validating_admission_policy_binding(
        k8s.V1ValidatingAdmissionPolicyBinding(
            metadata=k8s.V1ObjectMeta(name=policy_name),
            spec=k8s.V1ValidatingAdmissionPolicyBindingSpec(
                policy_name=policy_name,
                validation_actions=["Deny"],
                match_resources=k8s.V1MatchResources(
                    namespace_selector=k8s.V1LabelSelector(match_labels={"kubernetes.io/metadata.name": namespace})
                ),
            ),
        )
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="dev-edit"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="edit"),
            subjects=[k8s.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
        ),
    )
    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings"), data={"mode": "a"})
    )
    as_user = k8s.CoreV1Api(cluster.impersonate(user, ["developers"]))
    try:

        def rejected_for_user() -> bool:
            try:
                as_user.patch_namespaced_config_map("settings", namespace, {"data": {"mode": "b"}})
            except ApiException as exc:
                # A policy's denial is 422 Invalid unless the validation names another reason.
                return exc.status == 422 and "only the admin" in api_error_message(exc)
            # The policy is enforced once the API server has loaded it; undo and retry until then.
            core.patch_namespaced_config_map("settings", namespace, {"data": {"mode": "a"}})
            return False

        wait_for(rejected_for_user, 30, "the policy to reject the impersonated user")
        core.patch_namespaced_config_map("settings", namespace, {"data": {"mode": "c"}})
        assert core.read_namespaced_config_map("settings", namespace).data == {"mode": "c"}
    finally:
        reg.delete_validating_admission_policy_binding(policy_name)
        reg.delete_validating_admission_policy(policy_name)


def test_token_request_authenticates_as_the_service_account_and_rbac_limits_it(
    cluster: Cluster, admin: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(admin)
    rbac = k8s.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="bot")))
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="read-configmaps"),
            rules=[k8s.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="bot-reads"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="bot", namespace=namespace)],
        ),
    )

    as_bot = client_from_kubeconfig(cluster.service_account_kubeconfig(namespace, "bot", tmp_path / "bot"))
    review = k8s.AuthenticationV1Api(as_bot).create_self_subject_review(k8s.V1SelfSubjectReview())
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:bot"

    bot_core = k8s.CoreV1Api(as_bot)
    # Published by the root-ca controller (shortly after the namespace appears), readable by the Role.
    wait_for(
        lambda: "kube-root-ca.crt" in [cm.metadata.name for cm in bot_core.list_namespaced_config_map(namespace).items],
        30,
        "kube-root-ca.crt, listed as the service account",
    )
    with pytest.raises(ApiException) as denied:
        bot_core.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    with pytest.raises(ApiException) as denied_write:
        bot_core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="x")))
    assert denied_write.value.status == 403


# --------------------------------------------------------------------------------------------- the launcher

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _start_foreground_launcher() -> tuple[subprocess.Popen[str], Path]:
    launcher = subprocess.Popen(
        [sys.executable, "-m", "hack.localcluster.controlplane", "run"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert launcher.stdout is not None
    line = launcher.stdout.readline()
    assert line.startswith("export KUBECONFIG="), line
    return launcher, Path(line.strip().split("=", 1)[1])


def _ports(kubeconfig: Path) -> list[int]:
    server = json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return [int(server.rsplit(":", 1)[1])]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_the_launcher_leaves_no_process_and_no_port_behind(stop_signal: signal.Signals) -> None:
    if os.environ.get("HEADROOM_TEST_KUBECONFIG"):
        pytest.skip("the launcher is only used for the local control plane")
    launcher, kubeconfig = _start_foreground_launcher()
    components = _children(launcher.pid)
    ports = _ports(kubeconfig)
    assert len(components) == 3 and all(_alive(p) for p in components)
    assert all(_port_open(p) for p in ports)

    launcher.send_signal(stop_signal)
    launcher.wait(60)
    wait_for(lambda: not any(_alive(p) for p in components), 30, "every component process to exit")
    wait_for(lambda: not any(_port_open(p) for p in ports), 30, "the API server port to be released")
    if stop_signal == signal.SIGINT:
        assert not kubeconfig.parent.exists()  # a clean stop also removes the working directory


def test_make_cluster_up_and_down(tmp_path: Path) -> None:
    if os.environ.get("HEADROOM_TEST_KUBECONFIG"):
        pytest.skip("the launcher is only used for the local control plane")
    state = tmp_path / "cluster"
    up = subprocess.run(
        ["make", "-s", "cluster-up", f"CLUSTER_DIR={state}", "NODE=0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
        version = k8s.VersionApi(client_from_kubeconfig(state / "kubeconfig")).get_code()
        assert version.git_version.startswith("v1.")
        supervisor = int((state / "pid").read_text())
        components = _children(supervisor)
        assert len(components) == 3
    finally:
        down = subprocess.run(
            ["make", "-s", "cluster-down", f"CLUSTER_DIR={state}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0, down.stderr
    assert not _alive(supervisor) and not any(_alive(p) for p in components)
    assert not (state / "kubeconfig").exists()
