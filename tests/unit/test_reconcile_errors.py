"""How a failed reconcile is logged: one line with the server's sentence, never its HTTP headers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from headroom.shell.apiclient import ApiException
from headroom.shell.reconcile import _brief, status_patch


def _api_exception(status: int, reason: str, message: str) -> ApiException:
    body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
    headers = {"Audit-Id": "0f1e2d", "Content-Type": "application/json", "X-Kubernetes-Pf-Flowschema-Uid": "x"}
    return ApiException(status, reason, body, headers)


def test_an_api_error_is_its_status_and_sentence() -> None:
    exc = _api_exception(404, "Not Found", 'projects.headroom.dev "payments" not found')
    assert _brief(exc) == 'ApiException 404: projects.headroom.dev "payments" not found'
    assert "Audit-Id" not in _brief(exc) and "0f1e2d" not in _brief(exc)


def test_an_api_error_without_a_status_body_falls_back_to_the_reason() -> None:
    exc = ApiException(503, "Service Unavailable", "<html>proxy error</html>")
    assert _brief(exc) == "ApiException 503: Service Unavailable"


def test_other_errors_keep_their_type_and_text() -> None:
    assert _brief(TimeoutError("read timed out")) == "TimeoutError: read timed out"


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # a key gone from a map inside status (a forecast that no longer applies)
        (
            {"summary": {"enforcement": "Enforce", "soonestFull": "2026-12-19 ns/limits.memory"}, "phase": "Ready"},
            {"summary": {"enforcement": "Enforce"}, "phase": "Ready"},
        ),
        # deeper, and a top-level key gone (a pending change applied)
        (
            {"approved": {"values": {"a": {"pods": "10", "requests.cpu": "2"}}}, "pendingChange": {"id": "x"}},
            {"approved": {"values": {"a": {"pods": "10"}}}},
        ),
        # lists are replaced whole; a map replacing a value and the other way round
        (
            {"namespaces": [{"name": "a", "forecast": {"pods": {}}}], "x": "1", "y": {"z": "2"}},
            {"namespaces": [{"name": "a"}], "x": {"k": "v"}, "y": "3"},
        ),
        ({}, {"phase": "Ready", "summary": {"namespaces": "a"}}),
    ],
)
def test_the_status_patch_turns_the_old_status_into_the_new_one_at_every_depth(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    assert _merge(old, status_patch(old, new)) == new
