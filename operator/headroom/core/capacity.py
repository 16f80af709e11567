"""The cluster's capacity behind the quotas: what is promised against what the nodes can give.

Every governed quota is a promise. Their sum per resource, against the nodes' allocatable capacity,
is the *overcommit ratio*: 1.0 means every promise could be kept at once, 1.5 that half as much
again has been promised as exists. Some overcommit is healthy (teams rarely peak together); how
much is the platform's call, so it is an optional budget per resource (`--max-overcommit
requests.cpu=1.5`). A signed-off raise that would take the total past its budget is *held*: it
stays pending, nothing shrinks, the approval is kept, and it applies once capacity allows, or when
a platform approver signs a capacity override bound to exactly that change.

Decreases and bootstraps (a namespace's first quota) are never held: the first keep the promise
smaller, the second are what use already is, and refusing either protects nothing.

All arithmetic is exact (Decimal): a ratio is shown rounded, but compared unrounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext

from headroom.core.names import CAPACITY_OVERRIDE_ANNOTATION
from headroom.core.quantity import CONTEXT, format_quantity, round_up

__all__ = [
    "CapacityView",
    "Excess",
    "Hold",
    "Override",
    "capacity_rows",
    "format_ratio",
    "governed_totals",
    "held",
    "node_resource",
    "overcommit_ratio",
    "override_problem",
    "parse_budget",
]

Values = Mapping[str, Decimal]

# Quota resources that draw on a node resource of another name. Anything else that a node
# reports (pods, extended resources such as nvidia.com/gpu) is matched by its own name.
_PREFIXES = ("requests.", "limits.")
# Object counts (services, configmaps, count/...) and storage requests are not node capacity.
_NOT_NODE = re.compile(
    r"^(count/|services|configmaps|secrets|persistentvolumeclaims|replicationcontrollers|resourcequotas)|(^|\.)storage$|storageclass"
)


def node_resource(resource: str) -> str | None:
    """The node resource a quota resource draws on, in kube-state-metrics' spelling of its
    `resource` label (anything but letters, digits and `_` becomes `_`): requests.cpu and
    limits.cpu -> cpu, requests.ephemeral-storage -> ephemeral_storage, pods -> pods,
    requests.nvidia.com/gpu -> nvidia_com_gpu. None: not node capacity (object counts, storage)."""
    if _NOT_NODE.search(resource):
        return None
    name = next((resource.removeprefix(p) for p in _PREFIXES if resource.startswith(p)), resource)
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def governed_totals(quotas: Iterable[Values]) -> dict[str, Decimal]:
    """The sum of governed hard values per quota resource, over the quotas given."""
    totals: dict[str, Decimal] = {}
    for values in quotas:
        for resource, value in values.items():
            totals[resource] = totals.get(resource, Decimal(0)) + value
    return totals


def overcommit_ratio(total: Decimal, allocatable: Decimal | None) -> Decimal | None:
    """Promised per unit of capacity, exact; None when capacity is unknown or zero (no ratio exists)."""
    if allocatable is None or allocatable <= 0:
        return None
    with localcontext(CONTEXT):
        return total / allocatable


def format_ratio(ratio: Decimal | None) -> str:
    """A ratio for people, to two decimals ("1.62"); "-" when there is none."""
    if ratio is None:
        return "-"
    return str(ratio.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def parse_budget(text: str) -> dict[str, Decimal]:
    """`requests.cpu=1.5,limits.memory=2`: the most each resource's total may reach, as a multiple of
    the allocatable capacity. Raises ValueError with what is wrong."""
    budget: dict[str, Decimal] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        resource, sep, number = part.partition("=")
        resource = resource.strip()
        if not sep or not resource:
            raise ValueError(f"{part!r}: expected RESOURCE=RATIO, e.g. requests.cpu=1.5")
        if node_resource(resource) is None:
            raise ValueError(f"{resource} is not node capacity (an object count or storage): it has no overcommit")
        try:
            ratio = Decimal(number.strip())
        except ArithmeticError as exc:
            raise ValueError(f"{part!r}: {number.strip()!r} is not a number") from exc
        if not ratio.is_finite() or ratio <= 0:
            raise ValueError(f"{part!r}: the ratio must be a number above 0")
        budget[resource] = ratio
    return budget


@dataclass(frozen=True)
class CapacityView:
    """What the shell knows of the cluster when it plans one Project."""

    allocatable: Values  # node resource (node_resource's spelling) -> sum over schedulable nodes
    others: Values  # quota resource -> governed total of every quota not of this Project
    error: str | None = None  # why capacity is not (fully) known; allocatable keeps the last answer

    def capacity_of(self, resource: str) -> Decimal | None:
        key = node_resource(resource)
        return self.allocatable.get(key) if key is not None else None


@dataclass(frozen=True)
class Override:
    """A capacity override as the Project carries it (the annotations a platform approver sets)."""

    change_id: str | None
    signed_by: str | None = None
    requested_by: str | None = None
    used: frozenset[str] = field(default_factory=frozenset)  # ids of changes already applied


def override_problem(identifier: str, override: Override) -> str | None:
    """Why the override does not let change `identifier` past the budget, or None when it does.

    The rules of a sign-off (changes.approval_problem): it names exactly this change, is used once,
    and comes from someone other than the requester. The admission policy makes the names true and
    lets only platform approvers set it.
    """
    how = f"a platform approver sets annotation {CAPACITY_OVERRIDE_ANNOTATION}={identifier} to let it through"
    given = override.change_id.strip() if override.change_id else None
    if not given:
        return how
    if given != identifier:
        return f"the capacity override names a different change ({given}), so it lets nothing through; {how}"
    if identifier in override.used:
        return f"the capacity override names change {identifier}, which was already applied once: it is used once"
    if override.signed_by and override.requested_by and override.signed_by == override.requested_by:
        return (
            f"the change was requested and its capacity override signed by the same person ({override.signed_by}); "
            "four eyes means two people"
        )
    return None


@dataclass(frozen=True)
class Excess:
    """One resource a change would take past its budget."""

    resource: str
    total: Decimal  # the cluster's governed total once the change applied
    allocatable: Decimal | None
    budget: Decimal  # ratio

    @property
    def limit(self) -> Decimal | None:
        return None if self.allocatable is None else self.allocatable * self.budget

    @property
    def over(self) -> Decimal | None:
        """By how much the total would exceed the budget (rounded up to the resource's unit)."""
        limit = self.limit
        return None if limit is None else round_up(self.total - limit, self.resource)

    def to_status(self) -> dict[str, str]:
        r = self.resource
        out = {"resource": r, "total": format_quantity(self.total, r), "budget": str(self.budget)}
        if self.allocatable is not None and self.over is not None:
            out["allocatable"] = format_quantity(self.allocatable, r)
            out["over"] = format_quantity(self.over, r)
        return out

    def describe(self) -> str:
        r, total = self.resource, format_quantity(self.total, self.resource)
        if self.allocatable is None or self.limit is None or self.over is None:
            return f"{r} to {total} while the cluster's allocatable {node_resource(r)} is not known"
        ratio = format_ratio(overcommit_ratio(self.total, self.allocatable))
        return (
            f"{r} to {total}, {ratio}x the allocatable {format_quantity(self.allocatable, r)}, past the budget "
            f"{self.budget}x ({format_quantity(round_up(self.limit, r), r)}) by {format_quantity(self.over, r)}"
        )


@dataclass(frozen=True)
class Hold:
    """A change past the budget: held, unless a valid capacity override lets it through."""

    change_id: str
    excess: tuple[Excess, ...]
    why_not_overridden: str | None  # None: overridden, it applies
    overridden_by: str | None = None

    @property
    def overridden(self) -> bool:
        return self.why_not_overridden is None

    @property
    def unknown(self) -> bool:
        return any(e.allocatable is None for e in self.excess)

    @property
    def reason(self) -> str:
        return (
            f"change {self.change_id} is held by the overcommit budget: it would take "
            + "; ".join(e.describe() for e in self.excess)
            + ". Nothing is lowered and its approval is kept; it applies once capacity allows, or with a "
            + f"capacity override ({self.why_not_overridden})"
        )


def held(
    identifier: str,
    targets: Mapping[str, Values],
    governed: Mapping[str, Values],
    view: CapacityView | None,
    budget: Values,
    override: Override,
) -> Hold | None:
    """Whether a change about to apply (`targets`: namespace -> resource -> new hard value) must wait
    for capacity. `governed` is this Project's governed values before it. Only a resource whose
    budgeted total the change grows is weighed: a change that moves quota between namespaces, or
    lowers it, never waits. A change past the budget gives a Hold, `overridden` when a valid capacity
    override lets it through (the record of the change names who signed that)."""
    if not budget:
        return None
    growth: dict[str, Decimal] = {}
    for namespace, values in targets.items():
        for resource, value in values.items():
            before = governed.get(namespace, {}).get(resource, Decimal(0))
            growth[resource] = growth.get(resource, Decimal(0)) + value - before
    mine = governed_totals([{**governed.get(ns, {}), **targets.get(ns, {})} for ns in {*governed, *targets}])
    excess = []
    for resource, ratio in sorted(budget.items()):
        if growth.get(resource, Decimal(0)) <= 0:
            continue
        total = (view.others.get(resource, Decimal(0)) if view else Decimal(0)) + mine.get(resource, Decimal(0))
        allocatable = view.capacity_of(resource) if view else None
        if allocatable is None or allocatable <= 0 or total > allocatable * ratio:
            excess.append(Excess(resource, total, allocatable if allocatable else None, ratio))
    if not excess:
        return None
    problem = override_problem(identifier, override)
    return Hold(identifier, tuple(excess), problem, override.signed_by if problem is None else None)


def capacity_rows(
    totals: Mapping[str, Values], allocatable: Values, resources: Iterable[str] | None = None
) -> list[dict[str, str]]:
    """One row per (scope, resource): the governed total, the allocatable capacity it draws on, and
    the overcommit ratio (the scope's share of the cluster for a team or Project). `totals`: scope ->
    resource -> governed total, in the order given."""
    rows = []
    for scope, values in totals.items():
        for resource in sorted(values if resources is None else [r for r in resources if r in values]):
            key = node_resource(resource)
            capacity = allocatable.get(key) if key is not None else None
            rows.append(
                {
                    "scope": scope,
                    "resource": resource,
                    "governed": format_quantity(values[resource], resource),
                    "allocatable": "-" if capacity is None else format_quantity(capacity, resource),
                    "ratio": format_ratio(overcommit_ratio(values[resource], capacity)),
                }
            )
    return rows
