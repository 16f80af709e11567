"""A burst of new Projects holds at most `max_in_flight` plans at once: the others wait for a place
before they are planned, so their plans are not all queued at the write limiter together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from headroom.core.planning import DesiredLimitRange, DesiredQuota, Settings
from headroom.shell.history.cache import HistoryCache
from headroom.shell.metrics import Metrics
from headroom.shell.reconcile import Reconciler
from headroom.shell.store import Store

from bench.reconcile_cost import InstantHistory, StoreWriter


class SlowWriter(StoreWriter):
    """A write limiter that lets one write through at a time, slowly: plans pile up behind it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.planned_at_once = 0
        self.most_at_once = 0
        self.projects_written: list[str] = []

    async def _slow(self) -> None:
        await asyncio.sleep(0.001)

    async def apply_limitrange(self, project: Mapping[str, Any], desired: DesiredLimitRange) -> None:
        self.planned_at_once += 1
        self.most_at_once = max(self.most_at_once, self.planned_at_once)
        try:
            await self._slow()
            await super().apply_limitrange(project, desired)
        finally:
            self.planned_at_once -= 1

    async def apply_quota(self, project: Mapping[str, Any], desired: DesiredQuota) -> None:
        await self._slow()
        self.projects_written.append(project["metadata"]["name"])
        await super().apply_quota(project, desired)


def _reconciler(names: list[str], max_in_flight: int) -> tuple[SlowWriter, Reconciler]:
    """A reconciler over one Project per name (each with its own namespace), writing slowly."""
    store = Store()
    writer = SlowWriter(store)
    metrics = Metrics()
    reconciler = Reconciler(
        store=store,
        writer=writer,  # type: ignore[arg-type]
        history=HistoryCache(InstantHistory(), max_age=timedelta(hours=1), metrics=metrics),
        settings=Settings(),  # type: ignore[call-arg]
        metrics=metrics,
        max_in_flight=max_in_flight,
    )
    for i, name in enumerate(names):
        store.namespaces.add(name)
        store.projects[name] = {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": name, "uid": f"uid-{i}", "generation": 1},
            "spec": {"owner": {"team": "t"}, "namespaces": [{"name": name}]},
        }
    return writer, reconciler


def test_a_burst_of_projects_holds_at_most_max_in_flight_plans_and_onboards_them_all() -> None:
    names = [f"team-{i:03d}" for i in range(40)]
    writer, reconciler = _reconciler(names, max_in_flight=4)

    async def run() -> None:
        await asyncio.gather(*(reconciler.reconcile(name) for name in names))

    asyncio.run(run())
    assert 1 < writer.most_at_once <= 4
    assert set(writer.projects_written) == set(names)  # every one onboarded, none lost waiting


def test_a_new_project_is_let_in_before_the_re_reconciles_queued_ahead_of_it() -> None:
    from headroom.shell.reconcile import Admission

    admission = Admission(1)
    order: list[str] = []

    async def one(name: str, priority: int, hold: asyncio.Event | None = None) -> None:
        async with admission.slot(priority):
            order.append(name)
            if hold is not None:
                await hold.wait()

    async def run() -> None:
        hold = asyncio.Event()
        first = asyncio.create_task(one("holder", 1, hold))  # holds the only place
        await asyncio.sleep(0)
        queued = [asyncio.create_task(one(f"cycle-{i}", 1)) for i in range(5)]
        await asyncio.sleep(0)
        new = asyncio.create_task(one("new", 0))  # arrives last
        await asyncio.sleep(0)
        hold.set()
        await asyncio.gather(first, *queued, new)

    asyncio.run(run())
    assert order == ["holder", "new", "cycle-0", "cycle-1", "cycle-2", "cycle-3", "cycle-4"]


def test_a_waiter_cancelled_in_the_queue_gives_its_place_to_the_next() -> None:
    from headroom.shell.reconcile import Admission

    admission = Admission(1)
    order: list[str] = []

    async def one(name: str) -> None:
        async with admission.slot(1):
            order.append(name)
            await asyncio.sleep(0.01)

    async def run() -> None:
        holder = asyncio.create_task(one("holder"))
        await asyncio.sleep(0)
        gone = asyncio.create_task(one("gone"))
        after = asyncio.create_task(one("after"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(holder, after)

    asyncio.run(run())
    assert order == ["holder", "after"]


def test_re_reconciles_wait_for_their_place_before_any_work_so_a_new_project_does_not_wait_behind_them() -> None:
    olds = [f"old-{i:03d}" for i in range(50)]
    _, reconciler = _reconciler([*olds, "new"], max_in_flight=2)
    cache = reconciler.history
    asked: list[str] = []
    get = cache.get

    async def counting_get(namespaces: set[str], *args: Any, **kwargs: Any) -> Any:
        asked.extend(sorted(namespaces))
        return await get(namespaces, *args, **kwargs)

    cache.get = counting_get  # type: ignore[method-assign]

    async def run() -> None:
        await asyncio.gather(*(reconciler.reconcile(name) for name in olds))  # planned once
        asked.clear()
        # A derivation cycle wakes every old one; a new Project arrives just after.
        await asyncio.gather(*(reconciler.reconcile(name) for name in olds), reconciler.reconcile("new"))

    asyncio.run(run())
    # The new Project asked for its history after at most the two old ones holding a place.
    assert asked.index("new") <= 2
    assert sorted(asked) == sorted([*olds, "new"])  # and every old one was reconciled all the same


def test_re_plans_run_a_few_at_a_time_while_new_projects_keep_every_place() -> None:
    # A cycle's re-plans are CPU: many of them ready at once made every turn of the event loop long,
    # and a new Project's history question (dozens of turns) waited seconds behind them.
    olds = [f"old-{i:03d}" for i in range(40)]
    news = [f"new-{i:03d}" for i in range(40)]
    _, reconciler = _reconciler([*olds, *news], max_in_flight=16)
    reconciler.max_replans = 3
    running: dict[str, int] = {"old": 0, "new": 0}
    most: dict[str, int] = {"old": 0, "new": 0}
    plan_and_write = reconciler._plan_and_write

    async def counting(name: str, *args: Any) -> None:
        kind = name.split("-")[0]
        running[kind] += 1
        most[kind] = max(most[kind], running[kind])
        try:
            await asyncio.sleep(0.001)
            await plan_and_write(name, *args)
        finally:
            running[kind] -= 1

    reconciler._plan_and_write = counting  # type: ignore[method-assign]

    async def run() -> None:
        await asyncio.gather(*(reconciler.reconcile(name) for name in olds))  # planned once
        most.update(old=0, new=0)
        await asyncio.gather(*(reconciler.reconcile(name) for name in [*olds, *news]))

    asyncio.run(run())
    assert most["old"] == 3  # re-plans: a few at a time...
    assert most["new"] > 3  # ...new Projects: as many as the places allow
