"""Where the headroom is applied: from observed peak usage to a recommended quota.

recommended = max(round_up(peak x (100 + headroom%) / 100), floor, round_up(current use))

The floor keeps small or new namespaces workable: a floor meaningful in its unit (a gibibyte of
storage, ten objects, never "1" of anything), and never less than one container that relies on the
Project's LimitRange defaults, so that such a pod always fits an empty namespace. Current use keeps
a quota from being set below what is already running, which would block every new pod. A limits.X
value is never below the requests.X value next to it: no pod could use that much request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext

from headroom.core.quantity import CONTEXT, GI, canonical, resource_kind, round_up

__all__ = [
    "BUILTIN_DEFAULT_LIMITS",
    "BUILTIN_DEFAULT_REQUESTS",
    "DEFAULT_MINIMUM",
    "Derivation",
    "DerivationError",
    "container_defaults",
    "default_minimum",
    "derive",
    "derive_namespace",
    "one_container",
]

DEFAULT_MINIMUM: Mapping[str, Decimal] = {
    "requests.cpu": Decimal(1),
    "requests.memory": GI,
    "limits.cpu": Decimal(2),
    "limits.memory": 2 * GI,
    "pods": Decimal(10),
    "requests.ephemeral-storage": 10 * GI,
    "limits.ephemeral-storage": 20 * GI,
    "requests.storage": 100 * GI,
    "persistentvolumeclaims": Decimal(10),
    "services": Decimal(10),
    "configmaps": Decimal(50),
    "secrets": Decimal(50),
}

# For a resource not listed above (count/<resource>, a storage class's requests.storage): by its kind.
_FALLBACK_MINIMUM: Mapping[str, Decimal] = {"cpu": Decimal(1), "memory": 10 * GI, "count": Decimal(10)}

# The LimitRange defaults when a Project sets none: a small container, as most clusters default.
BUILTIN_DEFAULT_REQUESTS: Mapping[str, Decimal] = {"cpu": Decimal("0.1"), "memory": Decimal(128 * 2**20)}
BUILTIN_DEFAULT_LIMITS: Mapping[str, Decimal] = {"cpu": Decimal(1), "memory": Decimal(512 * 2**20)}

REASON_PEAK = "peak+{percent}%"
REASON_MINIMUM = "minimum"
REASON_USE = "current use"
REASON_NO_HISTORY_MINIMUM = "no history: minimum"
REASON_NO_HISTORY_USE = "no history: current use"


class DerivationError(ValueError):
    """Inputs that cannot describe real usage (negative or non-finite numbers)."""


def default_minimum(resource: str) -> Decimal:
    """The built-in floor for a resource the project's spec.quota.minimum does not mention.

    Devices and hugepages have none: a floor would hand scarce GPUs or pinned memory to a namespace
    that never used them. Such a namespace gets what it uses, or asks (with sign-off).
    """
    if _is_scarce(resource):
        return Decimal(0)
    # A quota's bare cpu, memory and ephemeral-storage are its requests.*: the same floors.
    named = f"requests.{resource}" if resource in ("cpu", "memory", "ephemeral-storage") else resource
    return DEFAULT_MINIMUM.get(named, _FALLBACK_MINIMUM[resource_kind(resource)])


def _is_scarce(resource: str) -> bool:
    """An extended resource (requests.nvidia.com/gpu) or hugepages, as opposed to objects and storage."""
    if resource.removeprefix("requests.").startswith("hugepages-"):
        return True
    return resource.startswith("requests.") and "/" in resource and ".storageclass." not in resource


def container_defaults(
    requests: Mapping[str, Decimal], limits: Mapping[str, Decimal]
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """The LimitRange's (default limits, default requests): the Project's, or the built-in ones.

    A built-in default never contradicts one the Project sets (the API server refuses a LimitRange
    whose default request is above its default limit).
    """
    default_limits = dict(limits) or {r: max(v, requests.get(r, v)) for r, v in BUILTIN_DEFAULT_LIMITS.items()}
    default_requests = dict(requests) or {
        r: min(v, default_limits.get(r, v)) for r, v in BUILTIN_DEFAULT_REQUESTS.items()
    }
    return default_limits, default_requests


def one_container(default_limits: Mapping[str, Decimal], default_requests: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """What one container that sets nothing is given, as quota resources (requests.cpu, limits.memory, ...).

    Kubernetes gives such a container the default request, or the default limit where only that is set.
    """
    given = {f"limits.{r}": v for r, v in default_limits.items()}
    given.update(
        {
            f"requests.{r}": default_requests.get(r, default_limits.get(r, Decimal(0)))
            for r in {*default_limits, *default_requests}
        }
    )
    return {r: v for r, v in given.items() if v > 0}


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
    container: Mapping[str, Decimal] | None = None,
) -> dict[str, Derivation]:
    """Derive every governed resource of one namespace; absent peaks count as "no history".

    `minimum` is the floor per resource (the built-in one where it names none); `container` what one
    container relying on the LimitRange defaults is given, which the floor never goes below.
    """
    derived = {
        resource: derive(
            resource,
            peaks.get(resource),
            headroom_percent,
            max(minimum.get(resource, default_minimum(resource)), (container or {}).get(resource, Decimal(0))),
            used.get(resource),
        )
        for resource in resources
    }
    for resource, derivation in derived.items():
        paired = derived.get("requests." + resource.removeprefix("limits.")) if resource.startswith("limits.") else None
        if paired is not None and paired.recommended > derivation.recommended:
            derived[resource] = replace(
                derivation, recommended=paired.recommended, reason=f"at least {paired.resource}"
            )
    return derived
