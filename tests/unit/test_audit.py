"""The audit trail: one JSON record per Event about a change, with who, what, why, when and the change id."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from headroom.core.audit import audit_line, audit_record

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
ID = "sha256:" + "ab" * 32
DIFF = [{"namespace": "ml", "resource": "requests.nvidia.com/gpu", "from": "4", "to": "8"}]
ASKED = {"headroom.dev/requested-by": "alice"}


def test_an_applied_change_names_who_asked_who_approved_what_and_when() -> None:
    status = {
        "history": [
            {"id": "sha256:old", "approvedBy": "carol", "appliedAt": "2026-11-01T00:00:00Z", "diff": []},
            {"id": ID, "approvedBy": "bob", "appliedAt": "2026-12-04T09:30:00Z", "diff": DIFF},
        ]
    }
    message = f"applied change {ID} (approved by bob): ml requests.nvidia.com/gpu from 4 to 8"
    record = audit_record("ml", "Normal", "ChangeApplied", message, status, ASKED, NOW)
    assert record == {
        "audit": "headroom",
        "time": "2026-12-04T09:30:00Z",
        "project": "ml",
        "action": "applied",
        "event": {"type": "Normal", "reason": "ChangeApplied"},
        "changeId": ID,
        "requestedBy": "alice",
        "approvedBy": "bob",
        "diff": DIFF,
        "loosens": [],
        "why": message,
        "appliedAt": "2026-12-04T09:30:00Z",
    }


def test_a_held_change_is_recorded_with_its_diff_and_no_approver() -> None:
    status = {"pendingChange": {"id": ID, "diff": DIFF, "loosens": [{"field": "spec.quota.enforcement"}]}}
    record = audit_record("ml", "Normal", "ChangePending", f"change {ID} raises ... needs sign-off", status, ASKED, NOW)
    assert record is not None
    assert (record["action"], record["changeId"], record["approvedBy"], record["requestedBy"]) == (
        "held",
        ID,
        None,
        "alice",
    )
    assert record["diff"] == DIFF and record["loosens"] == [{"field": "spec.quota.enforcement"}]


def test_a_rule_approved_change_names_the_rule_and_its_figures() -> None:
    rule = {"name": "small-steps", "evidence": "pods 10 -> 15: at most 5 per raise"}
    status = {
        "history": [
            {
                "id": ID,
                "approvedBy": "rule small-steps",
                "appliedAt": "2026-12-04T09:30:00Z",
                "diff": DIFF,
                "rule": rule,
            }
        ]
    }
    message = f"applied change {ID} (approved by rule small-steps): ml requests.nvidia.com/gpu from 4 to 8"
    record = audit_record("ml", "Normal", "ChangeApplied", message, status, ASKED, NOW)
    assert record is not None
    assert (record["action"], record["approvedBy"], record["rule"]) == ("rule-approved", "rule small-steps", rule)


def test_a_withdrawn_raise_is_an_expired_record_of_its_change() -> None:
    back = [{"namespace": "ml", "resource": "requests.nvidia.com/gpu", "to": "4"}]
    status = {
        "history": [
            {"id": ID, "approvedBy": "bob", "appliedAt": "2026-12-01T09:00:00Z", "diff": DIFF},
            {
                "id": f"withdrawn:{ID}",
                "approvedBy": "expiry (no sign-off needed)",
                "appliedAt": "2026-12-04T09:30:00Z",
                "diff": back,
            },
        ]
    }
    message = f"the raise of ml by change {ID} ended at 2026-12-04T09:30:00Z and was withdrawn"
    record = audit_record("ml", "Normal", "RaiseWithdrawn", message, status, ASKED, NOW)
    assert record is not None
    assert (record["action"], record["changeId"], record["diff"]) == ("expired", f"withdrawn:{ID}", back)
    assert record["appliedAt"] == "2026-12-04T09:30:00Z"


def test_events_that_are_not_about_a_change_leave_no_record() -> None:
    assert audit_record("ml", "Warning", "QuotaRestored", "restored", {}, {}, NOW) is None
    assert audit_record("ml", "Warning", "QuotaNearLimit", "90 %", {}, {}, NOW) is None


def test_a_record_is_one_line_of_json() -> None:
    record = audit_record("ml", "Normal", "ChangePending", "why\nwith a newline, and ünïcode", {}, {}, NOW)
    assert record is not None
    line = audit_line(record)
    assert "\n" not in line and line.isascii()
    assert json.loads(line)["why"] == "why\nwith a newline, and ünïcode"
