"""How a failed reconcile is logged: one line with the server's sentence, never its HTTP headers."""

from __future__ import annotations

import json

from headroom.shell.reconcile import _brief
from kubernetes.client import ApiException


def _api_exception(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    exc.headers = {"Audit-Id": "0f1e2d", "Content-Type": "application/json", "X-Kubernetes-Pf-Flowschema-Uid": "x"}
    return exc


def test_an_api_error_is_its_status_and_sentence() -> None:
    exc = _api_exception(404, "Not Found", 'projects.headroom.dev "payments" not found')
    assert "HTTP response headers" in str(exc)  # what the log used to carry
    assert _brief(exc) == 'ApiException 404: projects.headroom.dev "payments" not found'


def test_an_api_error_without_a_status_body_falls_back_to_the_reason() -> None:
    exc = ApiException(status=503, reason="Service Unavailable")
    exc.body = "<html>proxy error</html>"
    assert _brief(exc) == "ApiException 503: Service Unavailable"


def test_other_errors_keep_their_type_and_text() -> None:
    assert _brief(TimeoutError("read timed out")) == "TimeoutError: read timed out"
