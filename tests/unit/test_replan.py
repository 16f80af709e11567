"""After a derivation cycle: changed Projects at once, the rest spread out (shell/main.py replan)."""

from __future__ import annotations

import asyncio
from typing import Any

from headroom.shell.main import REPLAN_BATCH, Runtime
from headroom.shell.store import Store


class Reconciler:
    def __init__(self) -> None:
        self.woken: list[tuple[str, float]] = []
        self.busy: set[str] = set()  # Projects with a reconcile queued or under way
        self.planned_at: dict[str, float] = {}  # when a Project's last plan began (the loop's clock)

    def schedule(self, name: str) -> None:
        self.woken.append((name, asyncio.get_running_loop().time()))

    def pending(self, name: str) -> bool:
        return name in self.busy

    def planned_within(self, name: str, seconds: float) -> bool:
        at = self.planned_at.get(name)
        return at is not None and asyncio.get_running_loop().time() - at < seconds


def _runtime(projects: int) -> tuple[Runtime, Reconciler]:
    store = Store()
    for i in range(projects):
        store.projects[f"p{i}"] = {"metadata": {"name": f"p{i}"}, "spec": {"namespaces": [{"name": f"ns{i}"}]}}
    reconciler = Reconciler()
    primed = asyncio.Event()
    primed.set()
    runtime = Runtime(config=None, store=store, reconciler=reconciler, metrics=None, primed=primed)  # type: ignore[arg-type]
    return runtime, reconciler


def test_projects_whose_history_changed_go_first_and_the_rest_are_spread_over_half_the_interval() -> None:
    async def run() -> tuple[list[tuple[str, float]], float]:
        runtime, reconciler = _runtime(5 * REPLAN_BATCH)
        start = asyncio.get_running_loop().time()
        await runtime.replan({"ns7", "ns42"}, interval=0.4)
        return reconciler.woken, start

    woken, start = asyncio.run(run())
    assert sorted(name for name, _ in woken) == sorted(f"p{i}" for i in range(5 * REPLAN_BATCH))  # every one
    assert [name for name, _ in woken[:2]] == ["p7", "p42"]
    assert woken[1][1] - start < 0.05  # at once
    assert woken[-1][1] - start >= 0.15  # the others spread out...
    assert woken[-1][1] - start < 0.4  # ...within half the interval (and a little)


def test_when_it_is_not_known_what_changed_every_project_is_woken_at_once() -> None:
    async def run() -> list[tuple[str, float]]:
        runtime, reconciler = _runtime(3 * REPLAN_BATCH)
        await runtime.replan(None, interval=10)
        return reconciler.woken

    woken = asyncio.run(run())
    assert len(woken) == 3 * REPLAN_BATCH
    assert woken[-1][1] - woken[0][1] < 0.05


def test_a_project_deleted_meanwhile_is_not_woken() -> None:
    async def run() -> set[Any]:
        runtime, reconciler = _runtime(3 * REPLAN_BATCH)
        replan = asyncio.create_task(runtime.replan(set(), interval=0.6))
        await asyncio.sleep(0.01)
        runtime.store.projects.pop(f"p{3 * REPLAN_BATCH - 1}")
        await replan
        return {name for name, _ in reconciler.woken}

    assert f"p{3 * REPLAN_BATCH - 1}" not in asyncio.run(run())


def test_a_project_whose_reconcile_is_under_way_is_not_marked_for_another_unless_its_history_changed() -> None:
    # After a restart every Project is in its first reconcile when the first cycle answers: marked
    # again, each was planned a second time, all of them in one burst once the first passes ended.
    async def run() -> list[str]:
        runtime, reconciler = _runtime(3 * REPLAN_BATCH)
        reconciler.busy = {f"p{i}" for i in range(2 * REPLAN_BATCH)}
        await runtime.replan({"ns3"}, interval=0.2)
        return [name for name, _ in reconciler.woken]

    woken = asyncio.run(run())
    assert woken[0] == "p3"  # its history changed: planned again with the new answer
    assert sorted(woken[1:]) == sorted(f"p{i}" for i in range(2 * REPLAN_BATCH, 3 * REPLAN_BATCH))


def test_a_project_planned_in_the_last_half_interval_is_left_alone_unless_its_history_changed() -> None:
    # After a restart at thousands of Projects, the cycles that come while the first plans are made
    # would otherwise plan each of them again at once; the safety net still covers every Project
    # whose last plan is older than half an interval, so each is planned at least once a cycle.
    async def run() -> list[str]:
        runtime, reconciler = _runtime(3 * REPLAN_BATCH)
        now = asyncio.get_running_loop().time()
        for i in range(2 * REPLAN_BATCH):
            reconciler.planned_at[f"p{i}"] = now - (0.05 if i % 2 else 5.0)  # odd ones: a moment ago
        await runtime.replan({"ns1"}, interval=2.0)
        return [name for name, _ in reconciler.woken]

    woken = asyncio.run(run())
    assert woken[0] == "p1"  # planned a moment ago, but its history changed
    rest = set(woken[1:])
    assert not any(f"p{i}" in rest for i in range(3, 2 * REPLAN_BATCH, 2))  # planned a moment ago
    assert {f"p{i}" for i in range(0, 2 * REPLAN_BATCH, 2)} <= rest  # planned long ago
    assert {f"p{i}" for i in range(2 * REPLAN_BATCH, 3 * REPLAN_BATCH)} <= rest  # never planned
