"""Raises that expire, pure: the planner with an injected clock, the reminder time, the notice outbox.

Each lifecycle test is a step a team's raise goes through (applied, reminded, withdrawn) or a move a
team could make to keep it longer than was signed off.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.business_hours import parse_business_hours
from headroom.core.changes import change_id
from headroom.core.expiry import (
    Notice,
    RaiseRecord,
    deliverable,
    notices_from_status,
    notices_to_status,
    owed_notices,
    reminder_at,
)
from headroom.core.planning import Plan
from headroom.core.spec import ProjectSpec, SpecError, parse_project

from tests.unit.test_planning import (
    APPROVED_BY,
    APPROVED_CHANGE,
    CPU_PODS,
    NOW,
    governed_rq,
    ns_entry,
    observed,
    plan,
    project,
    quota_in,
    reasons,
)

D = Decimal
EXPIRY = "headroom.dev/raise-expiry"
USED = {"requests.cpu": "3", "pods": "11"}
UNTIL = NOW + timedelta(days=3)


def expiring(
    request: dict[str, str] | None = None,
    until: str | None = "2026-03-13T12:00:00Z",
    reason: str | None = "INC-42 load test",
    *,
    approved: bool | str = False,
    status: dict[str, Any] | None = None,
) -> tuple[ProjectSpec, dict[str, Any]]:
    """A Project asking namespace ns for more until a time; signed off by bob when `approved`."""
    _, body = project(quota={"resources": CPU_PODS}, requested={"ns": request or {"requests.cpu": "8"}}, status=status)
    entry = body["spec"]["namespaces"][0]
    if until is not None:
        entry["until"] = until
    if reason is not None:
        entry["reason"] = reason
    spec = parse_project(body)
    if approved:
        body["metadata"]["annotations"] = {
            APPROVED_CHANGE: approved if isinstance(approved, str) else change_id(spec),
            APPROVED_BY: "bob",
        }
        spec = parse_project(body)
    return spec, body


def raised_quota(
    record: RaiseRecord | None, governed: dict[str, str] | None = None, used: dict[str, str] | None = None
) -> dict[str, Any]:
    """The quota after the raise: 8 cpu governed, and the record Headroom keeps beside it."""
    notes = {EXPIRY: record.to_annotation()} if record is not None else {}
    return governed_rq(
        governed=governed or {"requests.cpu": "8", "pods": "20"}, used=USED if used is None else used, annotations=notes
    )


def record_of(result: Plan) -> RaiseRecord | None:
    return RaiseRecord.from_annotation(quota_in(result).annotations.get(EXPIRY))


def applied_record(spec: ProjectSpec) -> RaiseRecord:
    return RaiseRecord(change_id(spec), UNTIL, {"requests.cpu": D(4)})


# --------------------------------------------------------------------------------------------- spec & id


def test_until_and_reason_are_part_of_the_change_id() -> None:
    base, _ = expiring(until=None, reason=None)
    plain, _ = project(quota={"resources": CPU_PODS}, requested={"ns": {"requests.cpu": "8"}})
    # A Project that names neither keeps the id it had before expiring raises existed.
    assert change_id(base) == change_id(plain)
    ids = {
        change_id(expiring(until=u, reason=r)[0])
        for u, r in [
            ("2026-03-13T12:00:00Z", "INC-42"),
            ("2026-03-14T12:00:00Z", "INC-42"),  # longer
            ("2026-03-13T12:00:00Z", "INC-43"),  # another reason
            (None, "INC-42"),  # no end
        ]
    }
    assert len(ids) == 4
    # The same moment written in another zone is the same change.
    assert change_id(expiring(until="2026-03-13T14:00:00+02:00")[0]) == change_id(expiring()[0])


@pytest.mark.parametrize(
    ("until", "reason", "says"),
    [
        ("next tuesday", None, "RFC 3339"),
        ("2026-03-13T12:00:00", None, "RFC 3339"),
        ("2026-02-30T12:00:00Z", None, "not a valid time"),
        (None, "x" * 501, "at most 500"),
    ],
)
def test_bad_until_or_reason_is_refused(until: str | None, reason: str | None, says: str) -> None:
    with pytest.raises(SpecError, match=says):
        expiring(until=until, reason=reason)


# --------------------------------------------------------------------------------------------- lifecycle


def test_a_signed_off_raise_with_until_is_applied_with_its_record() -> None:
    spec, body = expiring(approved=True)
    result = plan(spec, body, observed({"ns": governed_rq(used=USED)}))
    assert quota_in(result).hard["requests.cpu"] == "8"
    assert record_of(result) == RaiseRecord(change_id(spec), UNTIL, {"requests.cpu": D(4)})
    assert ns_entry(result)["expiresAt"] == "2026-03-13T12:00:00Z"
    assert "pendingChange" not in result.status


def test_at_until_the_raise_is_withdrawn_without_sign_off() -> None:
    spec, body = expiring(approved=True)
    seen = observed({"ns": raised_quota(applied_record(spec))})
    before = plan(spec, body, seen, now=UNTIL - timedelta(seconds=1))
    assert quota_in(before).hard["requests.cpu"] == "8" and reasons(before) == []

    result = plan(spec, body, seen, now=UNTIL)
    assert quota_in(result).hard["requests.cpu"] == "4"
    assert result.governed["ns"]["requests.cpu"] == D(4)
    assert reasons(result) == ["RaiseWithdrawn"]
    assert "from 8 to 4" in result.events[0].message
    withdrawn = record_of(result)
    assert withdrawn is not None and withdrawn.withdrawn_at == UNTIL
    assert result.status["history"][-1]["id"] == f"withdrawn:{change_id(spec)}"
    assert result.status["history"][-1]["diff"] == [{"namespace": "ns", "resource": "requests.cpu", "to": "4"}]
    # The file still asks for 8: the request is expired, not pending.
    assert "pendingChange" not in result.status
    assert "expiredRequest" in ns_entry(result)
    assert "expiresAt" not in ns_entry(result)


def test_a_withdrawn_raise_stays_withdrawn_and_the_approval_is_not_reused() -> None:
    spec, body = expiring(approved=True)
    record = RaiseRecord(change_id(spec), UNTIL, {"requests.cpu": D(4)}, withdrawn_at=UNTIL)
    seen = observed({"ns": raised_quota(record, governed={"requests.cpu": "4", "pods": "20"})})
    body["status"] = {"history": [{"id": change_id(spec), "approvedBy": "bob"}]}
    result = plan(spec, body, seen, now=UNTIL + timedelta(hours=5))
    assert quota_in(result).hard["requests.cpu"] == "4"
    assert "pendingChange" not in result.status
    # A later until is a new change: it waits for sign-off, the old approval names another change.
    later, body = expiring(until="2026-03-20T12:00:00Z", approved=change_id(spec))
    body["status"] = {"history": [{"id": change_id(spec), "approvedBy": "bob"}]}
    result = plan(later, body, seen, now=UNTIL + timedelta(hours=5))
    assert quota_in(result).hard["requests.cpu"] == "4"
    assert "different change" in result.status["pendingChange"]["reason"]


def test_withdrawal_never_goes_below_current_use_and_waits_while_use_is_unknown() -> None:
    spec, body = expiring(approved=True)
    busy = observed({"ns": raised_quota(applied_record(spec), used={"requests.cpu": "6500m", "pods": "11"})})
    assert quota_in(plan(spec, body, busy, now=UNTIL)).hard["requests.cpu"] == "6500m"
    unknown = observed({"ns": raised_quota(applied_record(spec), used={})})
    result = plan(spec, body, unknown, now=UNTIL)
    assert result.governed["ns"]["requests.cpu"] == D(8)
    assert reasons(result) == []


def test_removing_until_after_sign_off_needs_a_new_sign_off() -> None:
    signed, _ = expiring(approved=True)
    spec, body = expiring(until=None, approved=change_id(signed))
    result = plan(spec, body, observed({"ns": raised_quota(applied_record(signed))}))
    pending = result.status["pendingChange"]
    assert pending["loosens"] == [
        {"field": "spec.namespaces[ns].until", "from": "2026-03-13T12:00:00Z", "to": "none (permanent)"}
    ]
    assert "needs sign-off" in pending["reason"]
    # Meanwhile the signed-off end keeps running, and the raise still ends then.
    assert record_of(result) == applied_record(signed)
    assert (
        quota_in(plan(spec, body, observed({"ns": raised_quota(applied_record(signed))}), now=UNTIL)).hard[
            "requests.cpu"
        ]
        == "4"
    )


def test_a_later_until_needs_sign_off_and_once_signed_off_it_moves_the_end() -> None:
    signed, _ = expiring(approved=True)
    seen = observed({"ns": raised_quota(applied_record(signed))})
    spec, body = expiring(until="2026-04-01T00:00:00Z", approved=change_id(signed))
    assert plan(spec, body, seen).status["pendingChange"]["loosens"][0]["to"] == "2026-04-01T00:00:00Z"
    spec, body = expiring(until="2026-04-01T00:00:00Z", approved=True)
    result = plan(spec, body, seen)
    moved = record_of(result)
    assert moved is not None and moved.until == datetime(2026, 4, 1, tzinfo=UTC)
    assert moved.before == {"requests.cpu": D(4)}  # still ends at the values before the first raise
    assert reasons(result) == ["ChangeApplied"]


def test_an_earlier_until_applies_at_once_and_back_again_needs_a_new_sign_off() -> None:
    signed, _ = expiring(approved=True)
    earlier, body = expiring(until="2026-03-11T12:00:00Z", approved=change_id(signed))
    result = plan(earlier, body, observed({"ns": raised_quota(applied_record(signed))}))
    assert "pendingChange" not in result.status
    shortened = record_of(result)
    assert shortened is not None and shortened.until == datetime(2026, 3, 11, 12, tzinfo=UTC)
    # Back to the signed-off time: the approval was used once, so it signs nothing off again.
    back, body = expiring(approved=True, status={"history": [{"id": change_id(signed), "approvedBy": "bob"}]})
    result = plan(back, body, observed({"ns": raised_quota(shortened)}))
    assert "used once" in result.status["pendingChange"]["reason"]
    assert record_of(result) == shortened


def test_a_request_whose_until_has_passed_is_never_applied_even_when_signed_off() -> None:
    spec, body = expiring(until="2026-03-10T11:00:00Z", approved=True)
    result = plan(spec, body, observed({"ns": governed_rq(used=USED)}))
    assert quota_in(result).hard["requests.cpu"] == "4"
    assert "pendingChange" not in result.status
    assert ns_entry(result)["expiredRequest"]["until"] == "2026-03-10T11:00:00Z"
    assert "is not applied" in ns_entry(result)["expiredRequest"]["message"]


def test_a_withdrawal_lost_to_a_crash_is_recorded_from_the_quota() -> None:
    spec, body = expiring(approved=True)
    record = RaiseRecord(change_id(spec), UNTIL, {"requests.cpu": D(4)}, withdrawn_at=UNTIL)
    seen = observed({"ns": raised_quota(record, governed={"requests.cpu": "4", "pods": "20"})})
    result = plan(spec, body, seen, now=UNTIL + timedelta(minutes=1))
    assert [h["id"] for h in result.status["history"]] == [f"withdrawn:{change_id(spec)}"]
    assert reasons(result) == ["RaiseWithdrawn"]
    body["status"] = result.status
    assert reasons(plan(spec, body, seen, now=UNTIL + timedelta(minutes=2))) == []


def test_a_damaged_record_withdraws_nothing() -> None:
    spec, body = expiring(approved=True)
    quota = governed_rq(governed={"requests.cpu": "8", "pods": "20"}, used=USED, annotations={EXPIRY: "{not json"})
    assert quota_in(plan(spec, body, observed({"ns": quota}), now=UNTIL)).hard["requests.cpu"] == "8"


def test_the_record_round_trips_through_its_annotation() -> None:
    record = RaiseRecord("sha256:abc", UNTIL, {"requests.cpu": D("2.5"), "pods": D(10)}, withdrawn_at=UNTIL)
    assert RaiseRecord.from_annotation(record.to_annotation()) == record
    assert json.loads(record.to_annotation())["before"] == {"pods": "10", "requests.cpu": "2.5"}


# --------------------------------------------------------------------------------------------- notices

OFFICE = parse_business_hours("Mon-Fri 09:00-17:00 UTC")
ALWAYS = parse_business_hours("Mon-Sun 00:00-24:00 UTC")


@pytest.mark.parametrize(
    ("until", "remind"),
    [
        (datetime(2026, 3, 11, 12, tzinfo=UTC), datetime(2026, 3, 10, 12, tzinfo=UTC)),  # Wed noon -> Tue noon
        (datetime(2026, 3, 16, 10, tzinfo=UTC), datetime(2026, 3, 13, 10, tzinfo=UTC)),  # Mon 10:00 -> Fri 10:00
        (datetime(2026, 3, 14, 12, tzinfo=UTC), datetime(2026, 3, 13, 9, tzinfo=UTC)),  # Sat -> Fri's opening
    ],
)
def test_the_reminder_is_one_business_day_before(until: datetime, remind: datetime) -> None:
    assert abs(reminder_at(OFFICE, until) - remind) <= timedelta(seconds=2)


def test_notices_are_owed_once_each_and_wait_for_business_hours() -> None:
    record = RaiseRecord("sha256:abc", datetime(2026, 3, 11, 12, tzinfo=UTC), {"requests.cpu": D(4)})
    monday = datetime(2026, 3, 9, 12, tzinfo=UTC)
    kept, wake = owed_notices("p", {"ns": record}, [], OFFICE, monday)
    assert kept == [] and wake is not None and abs(wake - datetime(2026, 3, 10, 12, tzinfo=UTC)) < timedelta(seconds=3)

    tuesday = datetime(2026, 3, 10, 13, tzinfo=UTC)
    kept, wake = owed_notices("p", {"ns": record}, [], OFFICE, tuesday)
    assert [(n.kind, n.not_before) for n in kept] == [("reminder", None)]
    assert wake == record.until
    assert deliverable(kept[0], frozenset({"webhook"}), tuesday)
    done = [Notice(**{**kept[0].__dict__, "delivered": frozenset({"webhook"})})]
    again, _ = owed_notices("p", {"ns": record}, notices_from_status(notices_to_status(done)), OFFICE, tuesday)
    assert again == done and not deliverable(again[0], frozenset({"webhook"}), tuesday)

    # Withdrawn on Wednesday at 18:00, after hours: the notice waits for Thursday's opening.
    withdrawn = RaiseRecord(record.change_id, record.until, record.before, withdrawn_at=record.until)
    evening = datetime(2026, 3, 11, 18, tzinfo=UTC)
    kept, wake = owed_notices("p", {"ns": withdrawn}, done, OFFICE, evening)
    assert [n.kind for n in kept] == ["withdrawn"]
    assert kept[0].not_before == wake == datetime(2026, 3, 12, 9, tzinfo=UTC)
    assert not deliverable(kept[0], frozenset({"webhook"}), evening)
    assert deliverable(kept[0], frozenset({"webhook"}), datetime(2026, 3, 12, 9, tzinfo=UTC))


def test_a_reminder_that_could_only_go_out_after_the_end_is_dropped() -> None:
    # Ends Monday 08:00; asked Sunday: the next opening (Monday 09:00) is after the end.
    record = RaiseRecord("sha256:abc", datetime(2026, 3, 16, 8, tzinfo=UTC), {"pods": D(10)})
    kept, wake = owed_notices("p", {"ns": record}, [], OFFICE, datetime(2026, 3, 15, 12, tzinfo=UTC))
    assert kept == [] and wake == record.until


def test_with_always_open_hours_a_short_raise_is_reminded_at_once() -> None:
    record = RaiseRecord("sha256:abc", NOW + timedelta(minutes=2), {"pods": D(10)})
    kept, wake = owed_notices("p", {"ns": record}, [], ALWAYS, NOW)
    assert [(n.kind, n.not_before) for n in kept] == [("reminder", None)] and wake == record.until
