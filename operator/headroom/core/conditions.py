"""Status conditions and timestamps, written the way Kubernetes writes its own."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["condition", "merge_conditions", "rfc3339"]

MAX_MESSAGE = 1024


def rfc3339(moment: datetime) -> str:
    """A moment as Kubernetes writes times: UTC, whole seconds, a Z (2026-03-10T12:00:00Z)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """One condition of a status; its transition time moves only when its status flips."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "observedGeneration": generation,
        "lastTransitionTime": since or rfc3339(now),
    }


def merge_conditions(base: Iterable[Mapping[str, Any]], more: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`base` with each condition of `more` added, or replacing the one of the same type."""
    merged = {str(c["type"]): dict(c) for c in base}
    merged.update({str(c["type"]): dict(c) for c in more})
    return list(merged.values())
