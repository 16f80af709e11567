"""What a reviewer needs to judge a change of Projects in a pull request, and how it is shown.

`review` compares two versions of a set of Projects (the base and the head of a pull request) and
says per Project: its change id, each value that changes (from -> to), the evidence beside it (peak,
current use, recommendation and forecast, when a history source or the live status gave them),
whether merging it needs a sign-off, and the exact annotation or command that gives it.

Whether a change needs a sign-off is decided as the operator decides it (core/changes.py): a
requested value above what is in force, a namespace claimed, or a setting that loosens the terms.
Offline, the base file's values are taken as in force; with the live Project status, what is
governed there. Rendering is pure too: Markdown for a pull-request comment, and a JSON document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from headroom.core.changes import SettingChange, Terms, change_id, short_id, tighter_terms
from headroom.core.derivation import derive_namespace
from headroom.core.forecast import describe, forecast
from headroom.core.names import APPROVED_BY_ANNOTATION, APPROVED_CHANGE_ANNOTATION
from headroom.core.quantity import format_at_a_glance, format_quantity
from headroom.core.spec import ProjectSpec

__all__ = [
    "COMMENT_MARKER",
    "Figures",
    "ProjectReview",
    "Review",
    "ValueChange",
    "render_json",
    "render_markdown",
    "review",
    "review_project",
]

# The first line of every comment: a CI job finds its earlier comment by it and edits that one.
COMMENT_MARKER = "<!-- headroom-review -->"

Kind = Literal["added", "changed", "removed", "unchanged", "invalid"]


@dataclass(frozen=True)
class Figures:
    """The evidence for one namespace and resource; None where the source said nothing."""

    peak: Decimal | None = None
    used: Decimal | None = None
    recommended: Decimal | None = None
    hard: Decimal | None = None  # what is governed now (live status only)
    forecast: str | None = None  # as Headroom published it, already in words


Evidence = Mapping[tuple[str, str], Figures]  # (namespace, resource) -> figures


@dataclass(frozen=True)
class ValueChange:
    namespace: str
    resource: str
    from_value: Decimal | None  # None: nothing requested before (the derived quota was in force)
    to_value: Decimal | None  # None: the request was withdrawn (the governed value stays)
    in_force: Decimal | None  # what the head is compared with: governed (live) or the base request
    figures: Figures = field(default_factory=Figures)

    @property
    def is_raise(self) -> bool:
        # Unknown in force (a first request, offline): counted as a raise, as the operator would
        # hold it unless the governed value is already that high.
        if self.to_value is None:
            return False
        return self.in_force is None or self.to_value > self.in_force


@dataclass(frozen=True)
class ProjectReview:
    name: str
    file: str
    kind: Kind
    change_id: str | None = None
    values: tuple[ValueChange, ...] = ()
    loosens: tuple[SettingChange, ...] = ()
    tightens: tuple[SettingChange, ...] = ()
    added_namespaces: tuple[str, ...] = ()
    removed_namespaces: tuple[str, ...] = ()
    reason: tuple[str | None, str | None] | None = None  # (from, to) when spec.reason changed
    approval: str | None = None  # who signed it off in the head file, when the annotation is right
    problems: tuple[str, ...] = ()  # an invalid Project, a stale or self-given approval: fail the check

    @property
    def needs_sign_off(self) -> bool:
        return self.kind in ("added", "changed") and bool(
            any(v.is_raise for v in self.values) or self.loosens or self.added_namespaces
        )

    @property
    def sign_off_reasons(self) -> list[str]:
        reasons = [
            f"{v.namespace} {v.resource} {_raise_text(v)}" for v in self.values if v.is_raise and self.kind != "removed"
        ]
        reasons += [f"namespace {ns} is claimed" for ns in self.added_namespaces]
        reasons += [s.describe() for s in self.loosens]
        return reasons


@dataclass(frozen=True)
class Review:
    projects: tuple[ProjectReview, ...]
    source: str  # where the evidence came from, for the reader ("history file x.csv", "none")

    @property
    def failed(self) -> bool:
        return any(p.problems for p in self.projects)


def _raise_text(value: ValueChange) -> str:
    shown = format_at_a_glance([value.in_force, value.to_value], value.resource)
    if value.in_force is None:
        return f"to {shown[1]} (nothing requested before)"
    return f"from {shown[0]} to {shown[1]}"


# --------------------------------------------------------------------------------------------- compare


def _value_changes(
    base: ProjectSpec | None, head: ProjectSpec, evidence: Evidence, live: bool
) -> tuple[ValueChange, ...]:
    before = base.requested if base is not None else {}
    after = head.requested
    changes: list[ValueChange] = []
    for ns in head.namespace_names:
        old, new = before.get(ns, {}), after.get(ns, {})
        for resource in sorted({*old, *new}):
            if old.get(resource) == new.get(resource):
                continue
            figures = evidence.get((ns, resource), Figures())
            in_force = figures.hard if live else old.get(resource)
            changes.append(ValueChange(ns, resource, old.get(resource), new.get(resource), in_force, figures))
    return tuple(changes)


def _approval(head: ProjectSpec, identifier: str, needs: bool) -> tuple[str | None, list[str]]:
    """(who signed the head off, problems with the annotations in the head file)."""
    approved = head.approved_change
    if not approved:
        return None, []
    if approved != identifier:
        return None, [
            f"{APPROVED_CHANGE_ANNOTATION} is {approved}, but this request has id {identifier}: approve the "
            "current request or remove the stale annotation"
        ]
    if not head.approved_by:
        return None, [f"{APPROVED_CHANGE_ANNOTATION} is set but {APPROVED_BY_ANNOTATION} does not name the approver"]
    if head.requested_by and head.requested_by == head.approved_by:
        return None, [f"requested and signed off by the same person ({head.approved_by}); four eyes means two people"]
    return (head.approved_by if needs else None), []


def review_project(
    base: ProjectSpec | None,
    head: ProjectSpec | None,
    file: str,
    evidence: Evidence,
    live: bool,
    default_enforcement: str = "Enforce",
) -> ProjectReview:
    """One Project's review; `live` says whether `evidence` carries what is governed now (hard)."""
    if head is None:
        assert base is not None, "a review needs a base or a head"
        return ProjectReview(base.name, file, "removed")
    identifier = change_id(head)
    values = _value_changes(base, head, evidence, live)
    if base is None:
        # A new Project: created by the platform, its terms are approved as they stand.
        kind: Kind = "added"
        loosens: tuple[SettingChange, ...] = ()
        tightens: tuple[SettingChange, ...] = ()
        added: tuple[str, ...] = ()
        removed: tuple[str, ...] = ()
        reason = None
    else:
        asked, had = Terms.of(head), Terms.of(base)
        loosens = tighter_terms(asked, had, default_enforcement)[1]
        # What the head tightens is what the base loosens compared with it, read the other way round.
        tightens = tuple(
            SettingChange(s.subject, s.to_text, s.from_text) for s in tighter_terms(had, asked, default_enforcement)[1]
        )
        added = tuple(ns for ns in head.namespace_names if ns not in base.namespace_names)
        removed = tuple(ns for ns in base.namespace_names if ns not in head.namespace_names)
        reason = (base.reason, head.reason) if base.reason != head.reason else None
        changed = values or loosens or tightens or added or removed or reason
        kind = "changed" if changed or change_id(base) != identifier else "unchanged"
    found = ProjectReview(head.name, file, kind, identifier, values, loosens, tightens, added, removed, reason)
    approved_by, problems = _approval(head, identifier, found.needs_sign_off)
    return replace(found, approval=approved_by, problems=tuple(problems))


def review(
    base: Mapping[str, tuple[str, ProjectSpec]],
    head: Mapping[str, tuple[str, ProjectSpec | str]],
    evidence: Evidence,
    live: bool,
    source: str,
) -> Review:
    """All Projects by name: (file, spec) on each side; a head whose spec is text was invalid (the text says why)."""
    reviews: list[ProjectReview] = []
    for name in sorted({*base, *head}):
        before = base.get(name)
        after = head.get(name)
        if after is not None and isinstance(after[1], str):
            reviews.append(ProjectReview(name, after[0], "invalid", problems=(after[1],)))
            continue
        file = after[0] if after is not None else before[0] if before is not None else ""
        head_spec = after[1] if after is not None and not isinstance(after[1], str) else None
        reviews.append(review_project(before[1] if before else None, head_spec, file, evidence, live))
    return Review(tuple(reviews), source)


# --------------------------------------------------------------------------------------------- render


def _shown(value: ValueChange) -> dict[str, str]:
    """The row's amounts in one unit, so a reviewer compares them at a glance."""
    f = value.figures
    names = ("from", "to", "governed", "peak", "used", "recommended")
    amounts = [value.from_value, value.to_value, f.hard, f.peak, f.used, f.recommended]
    shown = dict(zip(names, format_at_a_glance(amounts, value.resource), strict=True))
    if value.from_value is None:
        shown["from"] = "(derived)"
    if value.to_value is None:
        shown["to"] = "(withdrawn)"
    shown["forecast"] = f.forecast or "-"
    return shown


_HEADLINE = {
    "added": "new Project",
    "removed": "removed; once the Project is deleted, its namespaces lose the quotas it owns",
    "unchanged": "no change",
    "invalid": "invalid",
}


def _headline(p: ProjectReview) -> str:
    if p.problems:
        return "check failed"
    if p.kind != "changed" and p.kind != "added":
        return _HEADLINE[p.kind]
    if p.needs_sign_off:
        return f"signed off by {p.approval}" if p.approval else "sign-off needed"
    return ("new Project, " if p.kind == "added" else "") + "no sign-off needed"


def _markdown_values(p: ProjectReview) -> list[str]:
    if not p.values:
        return []
    # With the live status, what is governed now: a request is a raise when it is above that, whatever
    # the base file asked for.
    columns = ["from", "to", *(["governed"] if any(v.figures.hard is not None for v in p.values) else [])]
    columns += ["peak", "used", "recommended"]
    lines = [
        "| namespace | resource | " + " | ".join(columns) + " | forecast |",
        "|---|---|" + "--:|" * len(columns) + "---|",
    ]
    for v in p.values:
        s = _shown(v)
        cells = [v.namespace, f"`{v.resource}`", *(s[c] for c in columns), s["forecast"]]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _markdown_other(p: ProjectReview) -> list[str]:
    lines = [f"- `{s.subject}`: {s.from_text} → {s.to_text} (loosens)" for s in p.loosens]
    lines += [f"- `{s.subject}`: {s.from_text} → {s.to_text} (tightens)" for s in p.tightens]
    lines += [
        f"- namespace `{ns}` added: governed once signed off or labelled by the platform" for ns in p.added_namespaces
    ]
    lines += [f"- namespace `{ns}` taken out: its quota stays in force as last governed" for ns in p.removed_namespaces]
    if p.reason is not None:
        lines.append(f"- `spec.reason`: {_quoted(p.reason[0])} → {_quoted(p.reason[1])}")
    return [*lines, ""] if lines else []


def _quoted(text: str | None) -> str:
    return "(none)" if text is None else json.dumps(text, ensure_ascii=False)


def _markdown_approval(p: ProjectReview) -> list[str]:
    if not p.needs_sign_off or p.change_id is None or p.approval or p.problems:
        return []
    return [
        f"Why: {'; '.join(p.sign_off_reasons)}.",
        "",
        f"To approve, a reviewer other than the requester adds to `{p.file}`:",
        "",
        # Indented, not fenced: the comment can then be quoted inside a fenced block (docs, a CI log).
        "    metadata:",
        "      annotations:",
        f"        {APPROVED_CHANGE_ANNOTATION}: {p.change_id}",
        f"        {APPROVED_BY_ANNOTATION}: <your user name>",
        "",
        f"or, once this is merged and synced: `headroom approve {p.name} --id {short_id(p.change_id)}`",
        "",
    ]


def _markdown_project(p: ProjectReview) -> list[str]:
    lines = [f"### Project `{p.name}`: {_headline(p)}", ""]
    lines += [f"- ❌ {problem}" for problem in p.problems]
    if p.problems:
        lines.append("")
    if p.kind == "invalid":
        return lines
    if p.change_id is not None and p.kind != "removed":
        lines += [f"File `{p.file}`, change id `{p.change_id}`", ""]
    return lines + _markdown_values(p) + _markdown_other(p) + _markdown_approval(p)


def render_markdown(result: Review) -> str:
    """A pull-request comment: one section per Project that the pull request touches."""
    shown = [p for p in result.projects if p.kind != "unchanged" or p.problems]
    needing = sum(1 for p in shown if p.needs_sign_off and not p.approval)
    lines = [COMMENT_MARKER, "## Headroom review", ""]
    summary = f"{len(shown)} Project(s) changed, {needing} need(s) sign-off; evidence: {result.source}."
    if result.failed:
        summary += " **The check failed**: see ❌ below."
    lines += [summary, ""]
    for p in shown:
        lines += _markdown_project(p)
    return "\n".join(lines).rstrip() + "\n"


def _exact(value: Decimal | None, resource: str) -> str | None:
    return None if value is None else format_quantity(value, resource)


def _json_value(v: ValueChange) -> dict[str, Any]:
    f = v.figures
    return {
        "namespace": v.namespace,
        "resource": v.resource,
        "from": _exact(v.from_value, v.resource),
        "to": _exact(v.to_value, v.resource),
        "inForce": _exact(v.in_force, v.resource),
        "raise": v.is_raise,
        "peak": _exact(f.peak, v.resource),
        "used": _exact(f.used, v.resource),
        "recommended": _exact(f.recommended, v.resource),
        "forecast": f.forecast,
    }


def _json_project(p: ProjectReview) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "file": p.file, "kind": p.kind, "changeId": p.change_id}
    out["shortId"] = short_id(p.change_id) if p.change_id else None
    out["values"] = [_json_value(v) for v in p.values]
    out["loosens"] = [s.to_status() for s in p.loosens]
    out["tightens"] = [s.to_status() for s in p.tightens]
    out["namespacesAdded"] = list(p.added_namespaces)
    out["namespacesRemoved"] = list(p.removed_namespaces)
    out["reason"] = None if p.reason is None else {"from": p.reason[0], "to": p.reason[1]}
    out["signOffNeeded"] = p.needs_sign_off
    out["signOffReasons"] = p.sign_off_reasons if p.needs_sign_off else []
    out["approvedBy"] = p.approval
    if p.needs_sign_off and p.change_id and not p.approval:
        out["approve"] = {
            "annotations": {APPROVED_CHANGE_ANNOTATION: p.change_id, APPROVED_BY_ANNOTATION: "<your user name>"},
            "command": f"headroom approve {p.name} --id {short_id(p.change_id)}",
        }
    out["problems"] = list(p.problems)
    return out


def render_json(result: Review) -> str:
    """The review as JSON, with exact quantities (the Markdown rounds where no unit is exact)."""
    body = {"evidence": result.source, "failed": result.failed, "projects": [_json_project(p) for p in result.projects]}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def figures_from_status(status: Mapping[str, Any], parse: Any) -> dict[tuple[str, str], Figures]:
    """Evidence from a live Project's status.namespaces[] (peak, used, recommended, hard, forecast).

    `parse` reads a quantity text; a value that does not parse is left out (unknown, never zero).
    """
    found: dict[tuple[str, str], Figures] = {}
    for entry in status.get("namespaces") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        keys: set[str] = set()
        for section in ("peak", "used", "recommended", "hard", "forecast"):
            keys.update(entry.get(section) or {})
        for resource in keys:
            found[(entry["name"], resource)] = Figures(
                peak=_read(entry, "peak", resource, parse),
                used=_read(entry, "used", resource, parse),
                recommended=_read(entry, "recommended", resource, parse),
                hard=_read(entry, "hard", resource, parse),
                forecast=describe_forecast((entry.get("forecast") or {}).get(resource), resource, parse),
            )
    return found


def _read(entry: Mapping[str, Any], section: str, resource: str, parse: Any) -> Decimal | None:
    text = (entry.get(section) or {}).get(resource)
    if text is None:
        return None
    try:
        value = parse(str(text))
    except ValueError:
        return None
    return value if isinstance(value, Decimal) else None


def describe_forecast(raw: Any, resource: str, parse: Any) -> str | None:
    """status.namespaces[].forecast[resource] ({growthPerDay, fullAt}) in words: "full 2026-12-11, +400m/day"."""
    if not isinstance(raw, Mapping):
        return None
    parts: list[str] = []
    full_at = raw.get("fullAt")
    if isinstance(full_at, str) and full_at:
        parts.append(f"full {full_at[:10]}")
    growth = raw.get("growthPerDay")
    if growth is not None:
        try:
            amount = parse(str(growth))
        except ValueError:
            amount = None
        if isinstance(amount, Decimal):
            parts.append(("+" if amount >= 0 else "") + format_quantity(amount, resource) + "/day")
    return ", ".join(parts) or None


def evidence_from_history(
    specs: Sequence[ProjectSpec],
    peaks: Mapping[tuple[str, str], Decimal],
    used: Mapping[tuple[str, str], Decimal],
    in_force: Mapping[str, Terms],
    daily: Mapping[tuple[str, str], Mapping[date, Decimal]],
    now: datetime,
) -> dict[tuple[str, str], Figures]:
    """Evidence from a history source: peaks, latest use, the recommendation the terms in force give,
    and the trend of the daily peaks against the value the head asks for (when would it be full)."""
    found: dict[tuple[str, str], Figures] = {}
    for spec in specs:
        terms = in_force.get(spec.name) or Terms.of(spec)
        resources = sorted({*terms.resources, *(r for ns in spec.namespaces for r in ns.requested)})
        for ns in spec.namespaces:
            ns_peaks = {r: peaks[(ns.name, r)] for r in resources if (ns.name, r) in peaks}
            ns_used = {r: used[(ns.name, r)] for r in resources if (ns.name, r) in used}
            derived = derive_namespace(
                resources, ns_peaks, ns_used, terms.headroom_percent, terms.minimum, terms.container
            )
            for r, d in derived.items():
                days = daily.get((ns.name, r))
                trend = forecast(days, ns.requested.get(r, d.recommended), now) if days else None
                text = describe(r, trend, now) if trend is not None else None
                found[(ns.name, r)] = Figures(peak=d.peak, used=d.used, recommended=d.recommended, forecast=text)
    return found
