"""The audit trail: each change Headroom applied, held for sign-off or clamped, as one JSON record.

Events expire (an hour by default) and status.history keeps the last 20 changes; a platform keeps
these records as long as it wants by shipping the operator's log (docs/operations.md). One record per
Event of a change, with who asked, who approved, what changed, why, when and the change id, so that a
question like "who approved the GPU raise in payments last spring" has an answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from headroom.core.names import REQUESTED_BY_ANNOTATION

__all__ = ["AUDIT_ACTIONS", "audit_line", "audit_record"]

# Event reason -> what happened to the change. Anything else (alerts, restored quotas) is not a change.
AUDIT_ACTIONS: Mapping[str, str] = {
    "ChangeApplied": "applied",
    "ChangePending": "held",
    "ChangeHeld": "held-for-capacity",
    "DecreaseClamped": "clamped",
    "RaiseWithdrawn": "expired",
}
# A history entry of a withdrawn raise is "withdrawn:<change id>"; its Event names the change id.
_WITHDRAWN = "withdrawn:"


def _find(history: Sequence[Any], message: str) -> Mapping[str, Any]:
    """The history entry whose id the Event names (the newest first: ids repeat only after a restart)."""
    for entry in reversed(history):
        if isinstance(entry, Mapping) and entry.get("id") and str(entry["id"]).removeprefix(_WITHDRAWN) in message:
            return entry
    return {}


def _change(action: str, message: str, status: Mapping[str, Any]) -> Mapping[str, Any]:
    if action in ("held", "held-for-capacity"):
        pending = status.get("pendingChange")
        return pending if isinstance(pending, Mapping) else {}
    found = _find(status.get("history") or [], message)
    if found or action != "clamped":
        return found
    last = status.get("lastAppliedChange")
    return last if isinstance(last, Mapping) else {}


def audit_record(
    project: str,
    event_type: str,
    reason: str,
    message: str,
    status: Mapping[str, Any],
    annotations: Mapping[str, str],
    now: datetime,
) -> dict[str, Any] | None:
    """The record of one Event, or None when the Event is not about a change.

    `status` is the Project's status as written with the Event (it holds the change's id and diff);
    `annotations` the Project's, for who asked (the sign-off policy makes that the asker's own name).
    """
    action = AUDIT_ACTIONS.get(reason)
    if action is None:
        return None
    change = _change(action, message, status)
    if action == "applied" and change.get("rule"):
        action = "rule-approved"  # applied without a person: the rule and its figures are the why
    record: dict[str, Any] = {
        "audit": "headroom",
        "time": now.isoformat().replace("+00:00", "Z"),
        "project": project,
        "action": action,
        "event": {"type": event_type, "reason": reason},
        "changeId": change.get("id"),
        "requestedBy": annotations.get(REQUESTED_BY_ANNOTATION),
        "approvedBy": change.get("approvedBy") if action not in ("held", "held-for-capacity") else None,
        "diff": list(change.get("diff") or []),
        "loosens": list(change.get("loosens") or []),
        "why": message,
    }
    if action in ("applied", "rule-approved", "expired") and change.get("appliedAt"):
        record["appliedAt"] = change["appliedAt"]
    if change.get("rule"):
        record["rule"] = change["rule"]
    return record


def audit_line(record: Mapping[str, Any]) -> str:
    """One line of JSON, keys in a fixed order, nothing but ASCII: what log shippers parse best."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True)
