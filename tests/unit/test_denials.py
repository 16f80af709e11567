"""Quota denials: reading the API server's refusal, grouping refusals into incidents, the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from headroom.core.business_hours import parse_business_hours
from headroom.core.changes import change_id
from headroom.core.denials import (
    BUSINESS_HOURS,
    DenialPolicy,
    DeniedPod,
    IncidentKey,
    denial_condition,
    evaluate_denials,
    make_room,
    mark_denial_delivered,
    next_check,
    observe_event,
    owner_of,
    parse_denial,
    state_from_status,
    state_to_status,
)
from headroom.core.spec import parse_project

T0 = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)  # a Friday, 20:00 UTC
SINKS = frozenset({"webhook", "alertmanager", "event"})
ALWAYS = parse_business_hours("Mon-Sun 00:00-24:00 UTC")
OFFICE = parse_business_hours("Mon-Fri 09:00-17:00 UTC")
POLICY = DenialPolicy(quiet=timedelta(minutes=20))
WEB = IncidentKey("shop", "Deployment", "web")

# As the ReplicaSet controller posts it (k8s.io/kubernetes pkg/controller: "Error creating: %v").
REPLICASET = (
    'Error creating: pods "web-7d9f8c6b5-x2x9q" is forbidden: exceeded quota: headroom, '
    "requested: requests.cpu=2, used: requests.cpu=9, limited: requests.cpu=10"
)
# The StatefulSet controller's wording, two resources exceeded (names in order, as prettyPrint sorts).
STATEFULSET = (
    'create Pod db-0 in StatefulSet db failed error: pods "db-0" is forbidden: exceeded quota: headroom, '
    "requested: limits.memory=2Gi,requests.memory=1536Mi, used: limits.memory=7Gi,requests.memory=7680Mi, "
    "limited: limits.memory=8Gi,requests.memory=8Gi"
)
# The event recorder's aggregate after 10 similar Events in 10 minutes.
COMBINED = (
    '(combined from similar events): Error creating: pods "job-abcde" is forbidden: exceeded quota: headroom, '
    "requested: pods=1,requests.cpu=500m, used: pods=10,requests.cpu=3750m, limited: pods=10,requests.cpu=4"
)


def project(**alerts: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop"},
        "spec": {
            "owner": {"team": "shop"},
            "namespaces": [{"name": "shop"}, {"name": "shop-batch", "requested": {"requests.cpu": "3"}}],
            "alerts": alerts,
        },
    }


SPEC = parse_project(project())


def denied(
    at: datetime, count: int = 1, key: IncidentKey = WEB, message: str = REPLICASET, uid: str = "e1"
) -> DeniedPod:
    parsed = parse_denial(message)
    assert parsed is not None
    return DeniedPod(key, at, parsed, uid=uid, count=count)


# ------------------------------------------------------------------------------------------- parsing


def test_a_replicaset_denial_gives_the_exact_shortfall() -> None:
    denial = parse_denial(REPLICASET)
    assert denial is not None
    assert denial.quota == "headroom"
    assert denial.pod == "web-7d9f8c6b5-x2x9q"
    assert denial.shortfall == {"requests.cpu": Decimal(1)}
    assert denial.needed == {"requests.cpu": Decimal(11)}


def test_several_resources_in_binary_units_stay_exact() -> None:
    denial = parse_denial(STATEFULSET)
    assert denial is not None
    assert denial.shortfall == {"limits.memory": Decimal(1024**3), "requests.memory": Decimal(1024**3)}
    assert denial.needed["requests.memory"] == Decimal(9216 * 1024**2)


def test_the_combined_message_and_millicores_parse() -> None:
    denial = parse_denial(COMBINED)
    assert denial is not None
    assert denial.shortfall == {"pods": Decimal(1), "requests.cpu": Decimal("0.25")}


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Error creating: pods is forbidden: error looking up service account shop/default",
        'pods "x" is forbidden: failed quota: headroom: must specify limits.cpu for: app',
        'pods "x" is forbidden: status unknown for quota: headroom, resources: requests.cpu',
        "exceeded quota: headroom, requested: requests.cpu=two, used: requests.cpu=9, limited: requests.cpu=10",
        "exceeded quota: headroom, requested: requests.cpu=1, used: requests.cpu=9",
        # used + requested within the limit: no shortfall, so not a refusal this module can explain
        "exceeded quota: headroom, requested: requests.cpu=1, used: requests.cpu=8, limited: requests.cpu=10",
    ],
)
def test_garbage_and_other_refusals_are_not_denials(message: str) -> None:
    assert parse_denial(message) is None


def event(message: str = REPLICASET, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": "u-1", "namespace": "shop"},
        "reason": "FailedCreate",
        "message": message,
        "involvedObject": {"kind": "ReplicaSet", "name": "web-7d9f8c6b5", "namespace": "shop"},
        "count": 4,
        "lastTimestamp": "2026-12-04T20:01:00Z",
        **extra,
    }


def test_an_event_is_read_with_its_count_and_latest_time() -> None:
    seen = observe_event(event())
    assert seen is not None
    assert seen.key == IncidentKey("shop", "ReplicaSet", "web-7d9f8c6b5")
    assert (seen.at, seen.count, seen.uid) == (datetime(2026, 12, 4, 20, 1, tzinfo=UTC), 4, "u-1")


def test_only_headroom_s_own_quota_counts() -> None:
    assert observe_event(event(REPLICASET.replace("quota: headroom", "quota: team-own"))) is None
    assert observe_event(event(reason="FailedScheduling")) is None
    assert observe_event(event(lastTimestamp=None, metadata={"uid": "u"})) is None  # no time at all


def test_the_controller_of_a_replicaset_is_its_owner() -> None:
    rs = {"metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]}}
    assert owner_of(rs) == ("Deployment", "web")
    assert owner_of({"metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web"}]}}) is None


def test_the_request_that_makes_room_and_its_change_id() -> None:
    denial = parse_denial(COMBINED)
    assert denial is not None
    room = make_room(SPEC, "shop-batch", denial)
    assert room is not None
    assert room.command == "headroom request shop shop-batch pods=11 requests.cpu=4250m"
    edited = project()
    edited["spec"]["namespaces"][1]["requested"] = {"requests.cpu": "4250m", "pods": "11"}
    assert room.change_id == change_id(parse_project(edited))
    assert make_room(SPEC, "elsewhere", denial) is None


def test_a_higher_pending_request_is_kept_in_the_suggestion() -> None:
    denial = parse_denial(REPLICASET.replace("requests.cpu=9", "requests.cpu=2").replace("=10", "=2"))
    assert denial is not None  # needs 4, the namespace already asks for 3: ask for 4
    room = make_room(SPEC, "shop-batch", denial)
    assert room is not None and room.values == {"requests.cpu": Decimal(4)}


# ------------------------------------------------------------------------------------------ incidents


def test_repeated_denials_are_one_incident_announced_once() -> None:
    state, owed = evaluate_denials((), [denied(T0)], SPEC, POLICY, ALWAYS, T0, SINKS)
    assert [n.state for n in owed] == ["firing"]
    first = owed[0]
    for sink in SINKS:
        state = mark_denial_delivered(state, first.id, sink)
    later = T0 + timedelta(minutes=15)
    state, owed = evaluate_denials(state, [denied(later, count=9)], SPEC, POLICY, ALWAYS, later, SINKS)
    assert owed == []
    (incident,) = state
    assert (incident.since, incident.last_seen, incident.denials, incident.active) == (T0, later, 9, True)


def test_the_incident_resolves_after_the_quiet_period_and_says_so_once() -> None:
    state, owed = evaluate_denials((), [denied(T0)], SPEC, POLICY, ALWAYS, T0, SINKS)
    for sink in SINKS:
        state = mark_denial_delivered(state, owed[0].id, sink)
    assert next_check(state, POLICY) == T0 + timedelta(minutes=20)
    almost = T0 + timedelta(minutes=19, seconds=59)
    state, owed = evaluate_denials(state, [denied(T0)], SPEC, POLICY, ALWAYS, almost, SINKS)
    assert owed == [] and state[0].active
    end = T0 + timedelta(minutes=20)
    state, owed = evaluate_denials(state, [denied(T0)], SPEC, POLICY, ALWAYS, end, SINKS)
    assert [(n.state, n.since) for n in owed] == [("resolved", end)]
    for sink in SINKS:
        state = mark_denial_delivered(state, owed[0].id, sink)
    assert state == ()  # nothing left to remember
    # The same Events listed again after a restart are old news.
    assert evaluate_denials(state, [denied(T0)], SPEC, POLICY, ALWAYS, end + timedelta(minutes=1), SINKS) == ((), [])


def test_a_denial_after_resolution_opens_a_new_incident() -> None:
    state, owed = evaluate_denials((), [denied(T0)], SPEC, POLICY, ALWAYS, T0, SINKS)
    for sink in SINKS:
        state = mark_denial_delivered(state, owed[0].id, sink)
    end = T0 + timedelta(minutes=20)
    state, owed = evaluate_denials(state, [], SPEC, POLICY, ALWAYS, end, SINKS)
    again = end + timedelta(minutes=5)
    state, owed = evaluate_denials(state, [denied(T0), denied(again, 2, uid="e2")], SPEC, POLICY, ALWAYS, again, SINKS)
    # The undelivered resolution is superseded: the receivers learn the newer state.
    assert [(n.state, n.since) for n in owed] == [("firing", again)]
    assert state[0].denials == 2


def test_workloads_are_separate_incidents() -> None:
    other = IncidentKey("shop", "Job", "nightly")
    _, owed = evaluate_denials((), [denied(T0), denied(T0, key=other, uid="e2")], SPEC, POLICY, ALWAYS, T0, SINKS)
    assert sorted(n.key.name for n in owed) == ["nightly", "web"]
    assert len({n.id for n in owed}) == 2


def test_an_undelivered_notification_is_returned_again_with_the_same_id() -> None:
    state, owed = evaluate_denials((), [denied(T0)], SPEC, POLICY, ALWAYS, T0, SINKS)
    state = mark_denial_delivered(state, owed[0].id, "webhook")
    later = T0 + timedelta(seconds=30)
    state2, again = evaluate_denials(state, [denied(T0)], SPEC, POLICY, ALWAYS, later, SINKS)
    assert [n.id for n in again] == [owed[0].id]
    assert state2[0].delivered_sinks == {"webhook"}


def test_business_hours_defer_and_a_short_incident_is_never_sent() -> None:
    policy = DenialPolicy(quiet=timedelta(minutes=20), timing=BUSINESS_HOURS)
    state, owed = evaluate_denials((), [denied(T0)], SPEC, policy, OFFICE, T0, SINKS)  # Friday 20:00
    assert owed == []
    assert state[0].not_before == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    quiet = T0 + timedelta(minutes=20)
    state, owed = evaluate_denials(state, [], SPEC, policy, OFFICE, quiet, SINKS)
    assert (state, owed) == ((), [])


def test_immediate_ignores_business_hours() -> None:
    _, owed = evaluate_denials((), [denied(T0)], SPEC, POLICY, OFFICE, T0, SINKS)
    assert [n.state for n in owed] == ["firing"]


def test_state_survives_the_status_round_trip() -> None:
    state, _ = evaluate_denials((), [denied(T0, message=STATEFULSET)], SPEC, POLICY, ALWAYS, T0, SINKS)
    state = mark_denial_delivered(state, state[0].outbox.id if state[0].outbox else "", "event")
    status = state_to_status(state)
    assert status[0]["denial"]["shortfall"] == {"limits.memory": "1Gi", "requests.memory": "1Gi"}
    assert state_from_status(status) == state
    assert state_from_status([{"namespace": "shop"}, "junk", *status]) == state
    assert state_from_status(None) == ()


def test_the_condition_names_the_workload_the_shortfall_and_the_request() -> None:
    state, _ = evaluate_denials((), [denied(T0, count=3)], SPEC, POLICY, ALWAYS, T0, SINKS)
    cond = denial_condition(state, POLICY, generation=2, previous=[], now=T0)
    assert (cond["type"], cond["status"], cond["reason"]) == ("QuotaDenied", "True", "PodsRefused")
    assert cond["message"].startswith(
        "Deployment shop/web: pods refused by quota headroom, short of requests.cpu 1 (needs 11, limit 10); "
        "3 denial(s) since 2026-12-04T20:00:00Z; to make room: headroom request shop shop requests.cpu=11"
    )
    quiet = denial_condition((), POLICY, generation=2, previous=[cond], now=T0)
    assert (quiet["status"], quiet["reason"]) == ("False", "NoDenials")
