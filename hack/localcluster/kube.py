"""Client-side helpers the suite shares: clients for a user, a ServiceAccount kubeconfig, waiting."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml
from kubernetes.client import ApiClient
from urllib3._collections import HTTPHeaderDict

from hack.localcluster.controlplane import ControlPlane, write_kubeconfig

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30, what: str = "condition", interval: float = 0.2) -> T:
    """Call probe until it returns something truthy; raise a readable AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except (kubernetes.client.ApiException, OSError) as exc:  # OSError: a server still starting
            last_error = exc
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{suffix}")
        time.sleep(interval)


def client_from_kubeconfig(path: Path) -> ApiClient:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(path), client_configuration=config)
    return ApiClient(config)


def _impersonating(client: ApiClient, user: str, groups: list[str]) -> ApiClient:
    """Send Impersonate-User and one Impersonate-Group header per group with every request.

    The generated client keeps default headers in a plain dict (one value per name), so repeated
    group headers are added where the request is handed to urllib3.
    """
    rest = client.rest_client
    original = rest.request

    def request(method: str, url: str, *args: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        merged = HTTPHeaderDict(headers or {})
        merged["Impersonate-User"] = user
        for group in groups:
            merged.add("Impersonate-Group", group)
        return original(method, url, *args, headers=merged, **kwargs)

    rest.request = request  # type: ignore[method-assign]
    return client


@dataclass
class Cluster:
    """A cluster the suite runs against: the local control plane, or one named by a kubeconfig."""

    kubeconfig: Path
    plane: ControlPlane | None = None

    def api_client(self) -> ApiClient:
        return client_from_kubeconfig(self.kubeconfig)

    def impersonate(self, user: str, groups: list[str] | None = None) -> ApiClient:
        return _impersonating(self.api_client(), user, list(groups or []))

    def server_and_ca(self) -> tuple[str, bytes]:
        config = yaml.safe_load(self.kubeconfig.read_text())
        contexts = {c["name"]: c["context"] for c in config["contexts"]}
        cluster_name = contexts[config["current-context"]]["cluster"]
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == cluster_name)
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"])
        else:
            ca = Path(cluster["certificate-authority"]).read_bytes()
        return cluster["server"], ca

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount with a token from the TokenRequest API."""
        core = kubernetes.client.CoreV1Api(self.api_client())
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        server, ca = self.server_and_ca()
        ca_file = path.with_suffix(".ca.crt")
        ca_file.write_bytes(ca)
        return write_kubeconfig(path, server, ca_file, {"token": token}, name=f"{namespace}-{name}")


def apply_yaml(client: ApiClient, path: Path, field_manager: str = "headroom-tests") -> list[dict[str, Any]]:
    """Server-side apply every document of a YAML file; returns the applied objects."""
    dynamic = kubernetes.dynamic.DynamicClient(client)
    applied = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        namespace = doc["metadata"].get("namespace")
        result = resource.server_side_apply(
            body=doc,
            name=doc["metadata"]["name"],
            namespace=namespace,
            field_manager=field_manager,
            force_conflicts=True,
        )
        applied.append(result.to_dict())
    return applied


def api_error_message(exc: kubernetes.client.ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message", exc.body))
    except (TypeError, ValueError):
        return str(exc.body)


def user_name(client: ApiClient) -> str:
    """Who the API server takes this client for. The sign-off policy holds administrators to it too:
    a write that changes a Project's terms names its requester (annotation headroom.dev/requested-by)."""
    review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview()
    )
    return str(review.status.user_info.username)
