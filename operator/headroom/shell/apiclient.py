"""The operator's requests to the Kubernetes API: JSON over aiohttp, with the credentials Kopf finds.

Why not the kubernetes client library: importing it costs about 34 MiB of resident memory, and at
run time it pulls in its generated models and their dependencies on top, in a process that is
otherwise about 50 MiB. The operator makes a handful of kinds of request (apply, patch, delete,
create, get, list, one watch), all of them plain JSON, which is what this module sends and reads.

Credentials come from Kopf's own logins (a kubeconfig, or the Pod's ServiceAccount), the same ones
its watches use, in the order Kubernetes controllers look for them. Kubeconfigs that authenticate
through an exec plugin or an auth provider (EKS, GKE) are not supported: they fail at start, saying
so, rather than run with no identity.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

# (connect, read) seconds for one request. Writes take milliseconds; the read timeout leaves room for
# an API server that queues requests under load (API Priority and Fairness) before answering.
REQUEST_TIMEOUT = (10.0, 20.0)
# A kept-alive connection idle for longer may have died without a word (a NAT entry, a proxy): it is
# closed, and the first request after a quiet spell opens a new one rather than wait out
# REQUEST_TIMEOUT on a dead one.
IDLE_CONNECTION_SECONDS = 30.0
# Requests in flight at once, on as many connections. Writes are paced by the rate limiter and take
# milliseconds, so a few connections carry them all; without a bound, a burst of reconciles opened
# one TLS connection per write in flight (69 while 100 Projects were onboarded), each with its
# buffers, and the freed memory stayed with the process (18 MiB at 100 Projects).
CONNECTIONS = 8
# Where a Pod's ServiceAccount token is mounted: Kopf's in-cluster login reads it from there.
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# A ServiceAccount token is rotated on disk by the kubelet (bound tokens live an hour): read it again
# at least this often, as the Kubernetes client libraries do.
TOKEN_REREAD_SECONDS = 60.0


class ApiException(Exception):
    """The API server answered with an error status.

    Named, and subclassed by status, as the Kubernetes client library does: the class name shows in
    the log's reconcile failures and in headroom_reconcile_errors_total's type label, which
    dashboards and alerts already select on."""

    def __init__(self, status: int, reason: str = "", body: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return f"({self.status}) {self.reason}" + (f": {self.body[:300]}" if self.body else "")

    @staticmethod
    def answered(status: int, reason: str, body: str = "", headers: Mapping[str, str] | None = None) -> ApiException:
        """The exception for an error answer, of the class its status has."""
        kind = _BY_STATUS.get(status) or (ServiceException if 500 <= status <= 599 else ApiException)
        return kind(status, reason, body, headers)


class BadRequestException(ApiException):
    pass


class UnauthorizedException(ApiException):
    pass


class ForbiddenException(ApiException):
    pass


class NotFoundException(ApiException):
    pass


class ConflictException(ApiException):
    pass


class UnprocessableEntityException(ApiException):
    pass


class ServiceException(ApiException):
    pass


_BY_STATUS: dict[int, type[ApiException]] = {
    400: BadRequestException,
    401: UnauthorizedException,
    403: ForbiddenException,
    404: NotFoundException,
    409: ConflictException,
    422: UnprocessableEntityException,
}


class UnsupportedCredentials(kopf.LoginError):
    """A kubeconfig whose user authenticates in a way Headroom cannot do itself."""


def _kubeconfig_paths() -> list[Path]:
    listed = os.environ.get("KUBECONFIG") or ""
    paths = [Path(p.strip()).expanduser() for p in listed.split(os.pathsep) if p.strip()]
    return paths or [Path("~/.kube/config").expanduser()]


def _current_user(paths: list[Path]) -> tuple[str, dict[str, Any]]:
    """The user entry of the current context, merged as kubectl merges several kubeconfigs (the first
    file to set a name wins). A missing or unreadable file is an error, never skipped."""
    current: str | None = None
    contexts: dict[str, Any] = {}
    users: dict[str, Any] = {}
    for path in paths:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        current = current or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(item.get("name"), item.get("context") or {})
        for item in config.get("users") or []:
            users.setdefault(item.get("name"), item.get("user") or {})
    if not current or current not in contexts:
        raise kopf.LoginError(f"kubeconfig {os.pathsep.join(map(str, paths))}: no current context")
    name = str(contexts[current].get("user") or "")
    return name, dict(users.get(name) or {})


def _relative_to(base: Path, path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> str | None:
    """kubectl reads a kubeconfig's file paths relative to the kubeconfig itself."""
    if not path:
        return None
    return str((base.parent / Path(os.fsdecode(path)).expanduser()).resolve())


def _from_kubeconfig(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    paths = _kubeconfig_paths()
    user_name, user = _current_user(paths)
    for way in ("exec", "auth-provider"):
        if user.get(way):
            raise UnsupportedCredentials(
                f"kubeconfig user {user_name!r} authenticates with an {way} plugin, which Headroom does not "
                "support: run it in the cluster with its ServiceAccount, or use a kubeconfig with a token "
                "or a client certificate"
            )
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no kubeconfig found")
    return dataclasses.replace(
        info,
        ca_path=_relative_to(paths[0], info.ca_path),
        certificate_path=_relative_to(paths[0], info.certificate_path),
        private_key_path=_relative_to(paths[0], info.private_key_path),
    )


def _in_cluster(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    info = kopf.login_with_service_account(settings=settings)
    if info is None:
        raise kopf.LoginError(
            f"running in a cluster, but no ServiceAccount token is mounted at {SERVICE_ACCOUNT_TOKEN}"
        )
    # The API server's address from the environment, as client-go's in-cluster config has it: the
    # Service's DNS name needs cluster DNS, which the API server's own clients should not depend on.
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def connection_info() -> kopf.ConnectionInfo:
    """Credentials the way Kubernetes controllers find them, for Headroom's requests and Kopf's watches alike.

    $KUBECONFIG first, then the Pod's ServiceAccount when running in a cluster, then ~/.kube/config
    (controller-runtime's order). A missing or broken kubeconfig that was asked for is an error,
    never silently replaced by another identity.
    """
    settings = kopf.OperatorSettings()
    if not os.environ.get("KUBECONFIG") and "KUBERNETES_SERVICE_HOST" in os.environ:
        return _in_cluster(settings)
    try:
        return _from_kubeconfig(settings)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        where = os.pathsep.join(map(str, _kubeconfig_paths()))
        raise kopf.LoginError(f"kubeconfig {where} is unusable: {type(exc).__name__}: {exc}") from exc


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None
    }


def _timeout(timeout: tuple[float, float]) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=timeout[0], sock_read=timeout[1])


class ApiClient:
    """One connection pool to the API server, for every request the operator makes outside Kopf.

    Created outside the event loop; the aiohttp session is opened at the first request, in the loop
    that makes it."""

    def __init__(self, login: Callable[[], kopf.ConnectionInfo] = connection_info) -> None:
        self._login = login
        self.info = login()
        self._logged_in_at = time.monotonic()
        self._session: aiohttp.ClientSession | None = None

    @property
    def server(self) -> str:
        return str(self.info.server).rstrip("/")

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self.info.as_ssl_context() if self.server.startswith("https:") else False,
                    keepalive_timeout=IDLE_CONNECTION_SECONDS,
                    limit=CONNECTIONS,
                ),
                proxy=self.info.proxy_url,
                trust_env=self.info.trust_env,
            )
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        if self.info.token and time.monotonic() - self._logged_in_at > TOKEN_REREAD_SECONDS:
            self._relogin()
        headers = {"Accept": "application/json", "User-Agent": "headroom", **self.info.as_http_headers()}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _relogin(self) -> bool:
        """Credentials read again (a rotated token); True when they changed."""
        before = self.info
        try:
            self.info = self._login()
        except Exception:  # keep what worked so far; the next 401 says the rest
            return False
        finally:
            self._logged_in_at = time.monotonic()
        return self.info.as_http_headers() != before.as_http_headers()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        parse: bool = True,
    ) -> Any:
        """One request; the answer's JSON (None with parse=False: read, then let go unparsed)."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        if data is not None and content_type is None:
            content_type = "application/json"
        for attempt in (1, 2):
            async with self._session_now().request(
                method,
                self.server + path,
                params=_query(params or {}),
                data=data,
                headers=self._headers(content_type),
                timeout=_timeout(timeout),
            ) as response:
                raw = await response.read()
                if response.status == 401 and attempt == 1 and self._relogin():
                    continue  # a token rotated since it was read: once more with the new one
                if response.status >= 400:
                    raise ApiException.answered(
                        response.status, response.reason or "", raw.decode(errors="replace"), response.headers
                    )
                return json.loads(raw) if parse and raw else None
        raise AssertionError("unreachable")

    async def watch(
        self, path: str, params: Mapping[str, Any], timeout: tuple[float, float]
    ) -> AsyncIterator[dict[str, Any]]:
        """A watch request's events, one parsed line at a time, until the server ends the request."""
        async with self._session_now().get(
            self.server + path,
            params=_query({**params, "watch": True}),
            headers=self._headers(None),
            timeout=_timeout(timeout),
        ) as response:
            if response.status >= 400:
                raw = await response.read()
                raise ApiException.answered(
                    response.status, response.reason or "", raw.decode(errors="replace"), response.headers
                )
            # Lines are events; one can be larger than aiohttp's default line buffer.
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
