"""The operator's own client for the Kubernetes API, without a cluster: which credentials it finds,
that it verifies the server and presents its certificate, and how it reports what went wrong.
Against a real API server it is exercised by every integration test that runs the operator."""

from __future__ import annotations

import asyncio
import socket
import ssl
import textwrap
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web
from headroom.shell.apiclient import CONNECTIONS, ApiClient, ApiException, UnsupportedCredentials, connection_info
from headroom.shell.kube import is_retryable, is_unreachable, retry_after

from hack.localcluster.pki import create_pki


def _kubeconfig(path: Path, server: str, user: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters: [{{name: c, cluster: {{server: "{server}", certificate-authority: ca.crt}}}}]
        users: [{{name: u, user: {user}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
        current-context: x
        """)
    )
    return path


def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], ssl_context: ssl.SSLContext | None = None
) -> tuple[int, Callable[[], None]]:
    """An HTTP(S) server on a thread of its own; returns its port and how to stop it."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()

    loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return port, stop


def _ask(client: ApiClient, path: str, **kwargs: Any) -> Any:
    async def go() -> Any:
        try:
            return await client.request("GET", path, **kwargs)
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# ------------------------------------------------------------------------------------- credentials


@pytest.mark.usefixtures("no_cluster_env")
def test_client_certificates_and_the_ca_are_read_relative_to_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = create_pki(tmp_path / "pki")
    cert, key = pki.issue_client("headroom")
    (tmp_path / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    (tmp_path / "client.crt").write_bytes(cert.read_bytes())
    (tmp_path / "client.key").write_bytes(key.read_bytes())
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server_ssl.load_cert_chain(pki.serving_cert, pki.serving_key)
    server_ssl.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no answer
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(dict(x[0] for x in (peer or {}).get("subject", ()))["commonName"])
        return web.json_response({"kind": "Namespace", "metadata": {"name": request.path.rsplit("/", 1)[-1]}})

    port, stop = _serve(handler, server_ssl)
    try:
        user = "{client-certificate: client.crt, client-key: client.key}"
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", f"https://127.0.0.1:{port}", user)))
        monkeypatch.chdir("/")  # relative to the kubeconfig, not to where the operator was started
        answer = _ask(ApiClient(), "/api/v1/namespaces/payments")
    finally:
        stop()
    assert answer["metadata"]["name"] == "payments"
    assert seen == ["headroom"]


@pytest.mark.usefixtures("no_cluster_env")
def test_a_server_not_signed_by_the_kubeconfigs_ca_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = create_pki(tmp_path / "ours"), create_pki(tmp_path / "theirs")
    (tmp_path / "ca.crt").write_bytes(ours.ca_cert.read_bytes())
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(theirs.serving_cert, theirs.serving_key)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    port, stop = _serve(handler, server_ssl)
    try:
        monkeypatch.setenv(
            "KUBECONFIG", str(_kubeconfig(tmp_path / "config", f"https://127.0.0.1:{port}", "{token: t}"))
        )
        with pytest.raises(Exception) as refused:
            _ask(ApiClient(), "/api/v1/namespaces")
    finally:
        stop()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert is_unreachable(refused.value)  # nothing was said to a server it cannot trust


@pytest.mark.usefixtures("no_cluster_env")
@pytest.mark.parametrize(
    ("user", "way"),
    [
        ("{exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: aws, args: [eks, get-token]}}", "exec"),
        ("{auth-provider: {name: gcp, config: {}}}", "auth-provider"),
    ],
)
def test_a_kubeconfig_with_a_login_plugin_is_refused_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: str, way: str
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", "https://eks.example", user)))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # even in a Pod: the kubeconfig was asked for
    with pytest.raises(UnsupportedCredentials, match=f"{way} plugin.*ServiceAccount"):
        connection_info()


@pytest.mark.usefixtures("no_cluster_env")
def test_a_kubeconfig_that_was_asked_for_but_is_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(kopf.LoginError, match=r"absent.*No such file"):
        connection_info()


@pytest.mark.usefixtures("no_cluster_env")
def test_in_a_pod_the_api_server_is_found_by_its_service_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    mounted = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="sa-token", ca_path=None)
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: mounted)
    info = connection_info()
    assert info.server == "https://10.96.0.1:6443" and info.token == "sa-token"  # no cluster DNS needed


# ------------------------------------------------------------------------------------- errors


def test_an_error_answer_carries_status_reason_body_and_headers() -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer t"
        status = {"kind": "Status", "message": "too many requests", "code": 429}
        return web.json_response(status, status=429, headers={"Retry-After": "3"})

    port, stop = _serve(handler)
    try:
        with pytest.raises(ApiException) as refused:
            _ask(ApiClient(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token="t")), "/api")
    finally:
        stop()
    exc = refused.value
    assert exc.status == 429 and exc.reason == "Too Many Requests" and "too many requests" in exc.body
    assert retry_after(exc) == 3
    assert is_retryable(exc) and not is_unreachable(exc)


def test_a_server_that_goes_silent_is_given_up_on_after_the_read_timeout() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(2)  # far longer than the client waits
        return web.json_response({})

    port, stop = _serve(handler)
    try:
        client = ApiClient(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        with pytest.raises(TimeoutError) as silent:
            _ask(client, "/api", timeout=(1.0, 0.5))
    finally:
        stop()
    assert is_unreachable(silent.value) and is_retryable(silent.value)


def test_a_refused_connection_is_unreachable() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(Exception) as refused:
        _ask(ApiClient(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}")), "/api")
    assert is_unreachable(refused.value) and is_retryable(refused.value)


def test_a_rotated_token_is_read_again_when_the_server_refuses_the_old_one() -> None:
    tokens = iter(["old", "new"])

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer new":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"ok": True})

    port, stop = _serve(handler)
    try:
        answer = _ask(
            ApiClient(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token=next(tokens))), "/"
        )
    finally:
        stop()
    assert answer == {"ok": True}


def test_an_error_is_named_by_its_status_as_the_log_and_the_metrics_have_always_named_it() -> None:
    statuses = {404: "NotFoundException", 409: "ConflictException", 503: "ServiceException", 429: "ApiException"}
    for status, name in statuses.items():
        exc = ApiException.answered(status, "reason")
        assert type(exc).__name__ == name and isinstance(exc, ApiException) and exc.status == status


def test_a_burst_of_requests_shares_a_few_connections() -> None:
    # One TLS connection per write in flight, with its buffers, was 18 MiB that stayed with the
    # process after 100 Projects were onboarded at once.
    peers: set[Any] = set()
    in_flight = [0, 0]  # now, most

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await asyncio.sleep(0.05)
        in_flight[0] -= 1
        return web.json_response({})

    port, stop = _serve(handler)
    client = ApiClient(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))

    async def burst() -> None:
        try:
            await asyncio.gather(*(client.request("PATCH", f"/x/{i}", body={}) for i in range(60)))
        finally:
            await client.close()

    try:
        asyncio.run(burst())  # every request answered
    finally:
        stop()
    assert in_flight[1] == CONNECTIONS
    assert len(peers) <= CONNECTIONS
