"""core/review.py: what a pull request changes, and whether it needs a sign-off, decided as the operator does."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from headroom.core.changes import change_id
from headroom.core.quantity import parse_quantity
from headroom.core.review import Figures, describe_forecast, render_json, render_markdown, review, review_project
from headroom.core.spec import ProjectSpec, parse_project


def project(requested: dict[str, Any] | None = None, **spec: Any) -> ProjectSpec:
    namespaces = spec.pop("namespaces", [{"name": "payments", **({"requested": requested} if requested else {})}])
    annotations = spec.pop("annotations", {})
    return parse_project(
        {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "payments", "annotations": annotations},
            "spec": {"owner": {"team": "payments"}, "namespaces": namespaces, **spec},
        }
    )


def test_a_raise_needs_sign_off_and_says_how_to_give_it() -> None:
    head = project({"requests.cpu": "40"})
    result = review_project(project({"requests.cpu": "8"}), head, "p.yaml", {}, live=False)
    assert result.needs_sign_off
    assert result.sign_off_reasons == ["payments requests.cpu from 8 to 40"]
    text = render_markdown(
        review(
            {"payments": ("p.yaml", project({"requests.cpu": "8"}))}, {"payments": ("p.yaml", head)}, {}, False, "none"
        )
    )
    assert f"headroom.dev/approved-change: {change_id(head)}" in text
    assert f"headroom approve payments --id {change_id(head)[:19]}" in text


def test_a_decrease_alone_needs_nobody() -> None:
    result = review_project(project({"requests.cpu": "40"}), project({"requests.cpu": "8"}), "p.yaml", {}, live=False)
    assert not result.needs_sign_off


def test_with_the_live_status_a_lower_request_that_is_still_above_what_is_governed_is_a_raise() -> None:
    """The base asked for 40 but only 8 was ever approved: asking for 30 is still a raise from 8."""
    live = {("payments", "requests.cpu"): Figures(hard=Decimal(8))}
    offline = review_project(project({"requests.cpu": "40"}), project({"requests.cpu": "30"}), "p.yaml", {}, live=False)
    online = review_project(project({"requests.cpu": "40"}), project({"requests.cpu": "30"}), "p.yaml", live, live=True)
    assert not offline.needs_sign_off
    assert online.needs_sign_off and online.sign_off_reasons == ["payments requests.cpu from 8 to 30"]


def test_a_withdrawn_request_keeps_what_is_governed_and_needs_nobody() -> None:
    result = review_project(project({"requests.cpu": "40"}), project(), "p.yaml", {}, live=False)
    assert [(v.resource, v.to_value) for v in result.values] == [("requests.cpu", None)]
    assert not result.needs_sign_off


def test_a_claimed_namespace_and_a_loosened_setting_need_sign_off_a_tightened_one_does_not() -> None:
    base = project()
    claimed = project(namespaces=[{"name": "payments"}, {"name": "kube-system"}])
    looser = project(quota={"headroomPercent": 50})
    tighter = project(quota={"headroomPercent": 10, "lookback": "7d"})
    assert review_project(base, claimed, "p", {}, False).sign_off_reasons == ["namespace kube-system is claimed"]
    assert review_project(base, looser, "p", {}, False).sign_off_reasons == ["spec.quota.headroomPercent from 20 to 50"]
    tight = review_project(base, tighter, "p", {}, False)
    assert not tight.needs_sign_off
    assert [(s.subject, s.from_text, s.to_text) for s in tight.tightens] == [
        ("spec.quota.headroomPercent", "20", "10"),
        ("spec.quota.lookback", "30d", "7d"),
    ]


def test_observe_mode_is_a_loosening() -> None:
    result = review_project(project(), project(quota={"enforcement": "Observe"}), "p", {}, False)
    assert result.needs_sign_off


def test_an_approval_in_the_head_is_checked_like_the_operator_checks_it() -> None:
    wanted = change_id(project({"requests.cpu": "40"}))
    by = {"headroom.dev/approved-by": "bob", "headroom.dev/requested-by": "alice"}
    good = project({"requests.cpu": "40"}, annotations={"headroom.dev/approved-change": wanted, **by})
    stale = project({"requests.cpu": "41"}, annotations={"headroom.dev/approved-change": wanted, **by})
    own = project(
        {"requests.cpu": "40"},
        annotations={
            "headroom.dev/approved-change": wanted,
            "headroom.dev/approved-by": "alice",
            "headroom.dev/requested-by": "alice",
        },
    )
    base = project({"requests.cpu": "8"})
    assert review_project(base, good, "p", {}, False).approval == "bob"
    assert "stale annotation" in review_project(base, stale, "p", {}, False).problems[0]
    assert "four eyes means two people" in review_project(base, own, "p", {}, False).problems[0]


def test_an_invalid_head_fails_the_review_and_json_keeps_exact_values() -> None:
    head = project({"requests.memory": "1000000000"})
    result = review(
        {"payments": ("p", project({"requests.memory": "512Mi"})), "bad": ("b", project())},
        {"payments": ("p", head), "bad": ("b", "b: spec.owner.team: is required")},
        {("payments", "requests.memory"): Figures(peak=Decimal(123456789))},
        False,
        "history",
    )
    assert result.failed
    body = json.loads(render_json(result))
    value = body["projects"][1]["values"][0]
    assert (value["from"], value["to"], value["peak"]) == ("512Mi", "1000000000", "123456789")
    markdown = render_markdown(result)
    assert "| payments | `requests.memory` | 512Mi | ~953.7Mi | ~117.7Mi |" in markdown


def test_a_forecast_in_status_is_shown_in_words() -> None:
    raw = {"growthPerDay": "400m", "fullAt": "2026-12-11T08:00:00Z"}
    assert describe_forecast(raw, "requests.cpu", parse_quantity) == "full 2026-12-11, +400m/day"
    assert describe_forecast({"growthPerDay": "0"}, "requests.cpu", parse_quantity) == "+0/day"
    assert describe_forecast(None, "requests.cpu", parse_quantity) is None


def test_with_a_history_source_the_forecast_is_when_the_asked_value_fills() -> None:
    """Ten days climbing 400m a day from 1 core: 40 cores are reached long after the 8 in force would be."""
    from datetime import UTC, date, datetime, timedelta

    from headroom.core.changes import Terms
    from headroom.core.review import evidence_from_history

    head = project({"requests.cpu": "6"})
    first = date(2026, 11, 20)
    days = {first + timedelta(days=i): Decimal(1) + Decimal("0.4") * i for i in range(10)}
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    peaks = {("payments", "requests.cpu"): max(days.values())}
    found = evidence_from_history(
        [head], peaks, {}, {"payments": Terms.of(head)}, {("payments", "requests.cpu"): days}, now
    )
    figures = found[("payments", "requests.cpu")]
    # 6 cores at 1 + 0.4 d: d = 12.5 days after the first day ended (2026-11-21 00:00): 2026-12-03 12:00.
    assert figures.forecast == "full in ~3 days (2026-12-03) at +400m/day"
    assert figures.peak == Decimal("4.6") and figures.recommended == Decimal("5.52")
