"""Rules for routine approvals: a raise that a platform rule covers is applied without a person.

The platform writes the rules (a file the operator reads, normally a ConfigMap mounted into its Pod:
docs/gitops.md says who may write it). Each rule names the Projects it covers, the resources it may
raise, and at least one bound on the size of a raise:

    rules:
      - name: small-steps-for-busy-namespaces
        projects: [payments, search]      # or ["*"]
        resources: [requests.cpu, requests.memory]
        maxAboveRecommendationPercent: 20 # to <= recommendation x 1.2
        maxStep: {requests.cpu: "4"}      # to - from <= 4 cores
        minUtilizationPercent: 35         # the average daily peak over the last ...
        utilizationDays: 14               # ... 14 days is >= 35 % of the quota before the raise

Every criterion a rule names must hold for every raise of the change; the first rule that covers the
whole change approves it, and its name and the figures it compared are the evidence (in status, the
history record, the Event and a metric). Rules never approve what needs a person: a namespace claimed,
a setting loosened (enforcement, lookback, headroom, floors, defaults), a change already applied once,
or a Project the rule does not name by its name (teams and labels are the team's to edit, so they do not
select a rule). The recommendation compared with comes from the approved terms, the utilization from
the history source: the team controls neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from headroom.core.changes import PendingChange, ResourceChange
from headroom.core.quantity import QuantityError, format_together, parse_quantity

__all__ = ["WITHIN_RECOMMENDATION", "Rule", "RuleApproval", "RulesError", "approve_by_rule", "parse_rules"]

Values = Mapping[str, Decimal]
HUNDRED = Decimal(100)


class RulesError(ValueError):
    """The rules cannot be used; the message names the rule and the field."""


@dataclass(frozen=True)
class Rule:
    name: str
    projects: frozenset[str] = frozenset({"*"})
    resources: frozenset[str] | None = None  # None: any resource
    max_above_recommendation_percent: Decimal | None = None
    max_step: Mapping[str, Decimal] = field(default_factory=dict)
    min_utilization_percent: Decimal | None = None
    utilization_days: int = 14

    def covers(self, project: str) -> bool:
        return "*" in self.projects or project in self.projects


# What --auto-approve-within-recommendation has always meant, as a rule.
WITHIN_RECOMMENDATION = Rule("within-recommendation", max_above_recommendation_percent=Decimal(0))


@dataclass(frozen=True)
class RuleApproval:
    rule: str
    evidence: tuple[str, ...]

    def to_status(self) -> dict[str, Any]:
        return {"rule": self.rule, "evidence": list(self.evidence)}


# --------------------------------------------------------------------------------------------- parsing

_FIELDS = {
    "name",
    "projects",
    "resources",
    "maxAboveRecommendationPercent",
    "maxStep",
    "minUtilizationPercent",
    "utilizationDays",
}


def _percent(raw: Any, where: str) -> Decimal | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
        raise RulesError(f"{where} must be a whole percentage such as 20, not {raw!r}")
    return Decimal(int(raw))


def _rule(raw: Any, index: int) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise RulesError(f"{where} needs a name")
    where = f"rule {raw['name']}"
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise RulesError(f"{where}: unknown field(s) {', '.join(unknown)}")
    projects = raw.get("projects")
    if not isinstance(projects, list) or not projects or not all(isinstance(p, str) for p in projects):
        raise RulesError(f'{where}: projects must list the Project names it covers (or ["*"])')
    resources = raw.get("resources")
    if resources is not None and (not isinstance(resources, list) or not all(isinstance(r, str) for r in resources)):
        raise RulesError(f"{where}: resources must be a list of resource names")
    try:
        step = {str(r): parse_quantity(str(v)) for r, v in (raw.get("maxStep") or {}).items()}
    except (QuantityError, ValueError, ArithmeticError, AttributeError):
        raise RulesError(f"{where}: maxStep must map resources to quantities such as 2 or 500m") from None
    days = raw.get("utilizationDays", 14)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 90:
        raise RulesError(f"{where}: utilizationDays must be a whole number of days from 1 to 90")
    rule = Rule(
        raw["name"],
        frozenset(projects),
        frozenset(resources) if resources is not None else None,
        _percent(raw.get("maxAboveRecommendationPercent"), f"{where}: maxAboveRecommendationPercent"),
        step,
        _percent(raw.get("minUtilizationPercent"), f"{where}: minUtilizationPercent"),
        days,
    )
    if rule.max_above_recommendation_percent is None and not rule.max_step:
        # Without a bound on the size, "busy namespaces" alone would approve any raise at all.
        raise RulesError(f"{where}: needs maxAboveRecommendationPercent or maxStep (a bound on the size of a raise)")
    return rule


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    """The rules of a parsed rules document ({"rules": [...]}); refused whole when one is wrong."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not isinstance(raw.get("rules", []), list):
        raise RulesError("the approval rules must be a mapping with a list under rules")
    rules = tuple(_rule(item, i) for i, item in enumerate(raw.get("rules") or []))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RulesError("two rules have the same name; the name is what status and metrics show")
    return rules


# --------------------------------------------------------------------------------------------- evaluation


def _average_peak(daily: Mapping[date, Decimal] | None, days: int, now: datetime) -> Decimal | None:
    if not daily:
        return None
    since = now.date() - timedelta(days=days)
    recent = [v for d, v in daily.items() if since <= d <= now.date()]
    return sum(recent, Decimal(0)) / len(recent) if recent else None


def _check(
    rule: Rule,
    change: ResourceChange,
    recommended: Decimal | None,
    daily: Mapping[date, Decimal] | None,
    now: datetime,
) -> tuple[str | None, list[str]]:
    """(why the rule does not cover this raise, or None; the figures it compared)."""
    figures: list[str] = []
    label = change.label
    if rule.resources is not None and change.resource not in rule.resources:
        return f"{label}: the rule does not cover {change.resource}", figures
    if rule.max_above_recommendation_percent is not None:
        if recommended is None:
            return f"{label}: no recommendation to compare with", figures
        bound = recommended * (HUNDRED + rule.max_above_recommendation_percent) / HUNDRED
        to, rec, top = format_together([change.to_value, recommended, bound], change.resource)
        if change.to_value > bound:
            return (
                f"{label}: {to} is above the recommendation {rec} + {rule.max_above_recommendation_percent}%",
                figures,
            )
        figures.append(f"{label}: {to} <= recommendation {rec} + {rule.max_above_recommendation_percent}% = {top}")
    if change.resource in rule.max_step:
        step, limit = change.to_value - (change.from_value or Decimal(0)), rule.max_step[change.resource]
        shown, most = format_together([step, limit], change.resource)
        if step > limit:
            return f"{label}: a step of {shown} is more than {most}", figures
        figures.append(f"{label}: step {shown} <= {most}")
    if rule.min_utilization_percent is not None:
        average = _average_peak(daily, rule.utilization_days, now)
        if average is None or not change.from_value:
            return f"{label}: no daily peaks over the last {rule.utilization_days} days to compare with", figures
        percent = (average * HUNDRED / change.from_value).quantize(Decimal("0.1"))
        if percent < rule.min_utilization_percent:
            return f"{label}: average use {percent}% is below {rule.min_utilization_percent}%", figures
        figures.append(
            f"{label}: average daily peak over {rule.utilization_days} days is {percent}% of the quota "
            f">= {rule.min_utilization_percent}%"
        )
    return None, figures


def approve_by_rule(
    project: str,
    pending: PendingChange,
    rules: Sequence[Rule],
    recommended: Mapping[str, Values],
    daily: Mapping[tuple[str, str], Mapping[date, Decimal]],
    now: datetime,
) -> tuple[RuleApproval | None, list[str]]:
    """The first rule that covers every raise of the change, with its evidence; else why none did.

    The caller has already ruled out what never goes to a rule (claims, loosened settings, a change
    applied once); that is checked here again, as the rules' own guarantee.
    """
    if pending.loosened:  # claims and loosened settings always need a person
        return None, [f"{s.subject} needs sign-off" for s in pending.loosened]
    if not pending.raises:
        return None, []
    why_not: list[str] = []
    for rule in rules:
        if not rule.covers(project):
            continue
        evidence: list[str] = []
        for change in pending.raises:
            rec = recommended.get(change.namespace, {}).get(change.resource)
            problem, figures = _check(rule, change, rec, daily.get((change.namespace, change.resource)), now)
            if problem is not None:
                why_not.append(f"rule {rule.name}: {problem}")
                break
            evidence.extend(figures)
        else:
            return RuleApproval(rule.name, tuple(evidence)), []
    return None, why_not
