"""Where the headroom is applied: from observed peak usage to a recommended quota.

recommended = max(round_up(peak x (100 + headroom%) / 100), floor, round_up(current use))

The floor keeps small or new namespaces workable; current use keeps a quota
from being set below what is already running, which would block every new pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext

from headroom.quantity import CONTEXT, GI, canonical, round_up

__all__ = [
    "DEFAULT_MINIMUM",
    "Derivation",
    "DerivationError",
    "default_minimum",
    "derive",
    "derive_namespace",
    "never_lower",
]

DEFAULT_MINIMUM: Mapping[str, Decimal] = {
    "requests.cpu": Decimal(1),
    "requests.memory": GI,
    "limits.cpu": Decimal(2),
    "limits.memory": 2 * GI,
    "pods": Decimal(10),
}

_FALLBACK_MINIMUM = Decimal(1)

REASON_PEAK = "peak+{percent}%"
REASON_MINIMUM = "minimum"
REASON_USE = "current use"
REASON_NO_HISTORY_MINIMUM = "no history: minimum"
REASON_NO_HISTORY_USE = "no history: current use"


class DerivationError(ValueError):
    """Inputs that cannot describe real usage (negative or non-finite numbers)."""


def default_minimum(resource: str) -> Decimal:
    """The built-in floor for a resource the project's spec.quota.minimum does not mention."""
    return DEFAULT_MINIMUM.get(resource, _FALLBACK_MINIMUM)


@dataclass(frozen=True)
class Derivation:
    """How one resource's recommendation came about, kept whole so it can be shown to the owner."""

    resource: str
    peak: Decimal | None  # None: no usable history, which is not the same as zero use
    headroom_percent: Decimal
    with_headroom: Decimal | None
    floor: Decimal
    used: Decimal | None
    recommended: Decimal
    reason: str


def _check(resource: str, label: str, value: Decimal | None) -> None:
    if value is None:
        return
    if not isinstance(value, Decimal) or not value.is_finite():
        raise DerivationError(f"{resource}: {label} {value!r} is not a finite Decimal")
    if value < 0:
        raise DerivationError(f"{resource}: {label} {canonical(value)} is negative; it cannot be below zero")


def derive(
    resource: str,
    peak: Decimal | None,
    headroom_percent: int | Decimal,
    floor: Decimal,
    used: Decimal | None,
) -> Derivation:
    """Recommend a hard value for one resource; `peak=None` means history is unknown."""
    if isinstance(headroom_percent, bool) or not isinstance(headroom_percent, int | Decimal):
        raise DerivationError(f"{resource}: headroom percent {headroom_percent!r} is not a number")
    percent = Decimal(headroom_percent)
    _check(resource, "headroom percent", percent)
    _check(resource, "peak", peak)
    _check(resource, "minimum", floor)
    _check(resource, "current use", used)

    used_rounded = round_up(used, resource) if used is not None else None
    if peak is None:
        with_headroom = None
        if used_rounded is not None and used_rounded > floor:
            recommended, reason = used_rounded, REASON_NO_HISTORY_USE
        else:
            recommended, reason = floor, REASON_NO_HISTORY_MINIMUM
    else:
        with localcontext(CONTEXT):
            with_headroom = round_up(peak * (100 + percent) / 100, resource)
        # On ties the headroom is named: it is the rule working as intended.
        candidates = [
            (with_headroom, REASON_PEAK.format(percent=canonical(percent))),
            (floor, REASON_MINIMUM),
        ]
        if used_rounded is not None:
            candidates.append((used_rounded, REASON_USE))
        recommended, reason = candidates[0]
        for value, why in candidates[1:]:
            if value > recommended:
                recommended, reason = value, why

    return Derivation(
        resource=resource,
        peak=peak,
        headroom_percent=percent,
        with_headroom=with_headroom,
        floor=floor,
        used=used,
        recommended=recommended,
        reason=reason,
    )


def derive_namespace(
    resources: Iterable[str],
    peaks: Mapping[str, Decimal | None],
    used: Mapping[str, Decimal],
    headroom_percent: int | Decimal,
    minimum: Mapping[str, Decimal],
) -> dict[str, Derivation]:
    """Derive every governed resource of one namespace; absent peaks count as "no history"."""
    return {
        resource: derive(
            resource,
            peaks.get(resource),
            headroom_percent,
            minimum.get(resource, default_minimum(resource)),
            used.get(resource),
        )
        for resource in resources
    }


def never_lower(
    current: Mapping[str, Decimal],
    proposed: Mapping[str, Decimal],
    history_complete: bool,
) -> dict[str, Decimal]:
    """Missing data is unknown, never zero: a failed, empty or partial query never lowers a quota.

    With incomplete history a proposal may still raise a value (more room is
    always safe), but wherever it is lower than the current value, the current
    value stays. Only resources present in `proposed` are returned.
    """
    if history_complete:
        return dict(proposed)
    return {
        resource: max(value, current[resource]) if resource in current else value
        for resource, value in proposed.items()
    }
