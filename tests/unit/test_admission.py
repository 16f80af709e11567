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


async def _planned_before(reconciler: Reconciler, names: list[str]) -> None:
    """Planned by this process, and governed: the counting quota's first count has been answered (the
    quota controller's echo wakes a Project once more)."""
    await asyncio.gather(*(reconciler.reconcile(name) for name in names))
    await asyncio.gather(*(reconciler.reconcile(name) for name in names))
    assert not reconciler._counting


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
    _plans_take_a_while(reconciler)

    async def run() -> None:
        await _planned_before(reconciler, olds)
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
        await _planned_before(reconciler, olds)
        most.update(old=0, new=0)
        await asyncio.gather(*(reconciler.reconcile(name) for name in [*olds, *news]))

    asyncio.run(run())
    assert most["old"] == 3  # re-plans: a few at a time...
    assert most["new"] > 3  # ...new Projects: as many as the places allow


class LimitedWriter(SlowWriter):
    """Writes pass a real write limiter (one token at a time, served by write priority), as
    KubeWriter's do: who goes first there is what a team waiting for its quota notices."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        from headroom.shell.kube import TokenBucket

        self.limiter = TokenBucket(rate=100.0, burst=1)

    async def _slow(self) -> None:
        from headroom.shell.kube import WRITE_PRIORITY

        await self.limiter.take(WRITE_PRIORITY.get())


def _plans_take_a_while(reconciler: Reconciler) -> list[str]:
    """Each plan holds its place a moment (a steady re-plan writes nothing, so it would not even
    yield to the event loop); returns the order in which plans begin."""
    began: list[str] = []
    plan_and_write = reconciler._plan_and_write

    async def slow(name: str, *args: Any) -> None:
        began.append(name)
        await asyncio.sleep(0.001)
        await plan_and_write(name, *args)

    reconciler._plan_and_write = slow  # type: ignore[method-assign]
    return began


def _previous_process_status(reconciler: Reconciler, names: list[str]) -> None:
    """The Projects were planned by an operator before this one: their status says so."""
    for name in names:
        body = dict(reconciler.store.projects[name])
        body["status"] = {"observedGeneration": 1, "namespaces": []}
        reconciler.store.projects[name] = body


async def _settle(reconciler: Reconciler) -> None:
    while reconciler._workers:
        await asyncio.gather(*list(reconciler._workers.values()))


def test_a_new_project_created_during_a_start_goes_ahead_of_the_projects_woken_by_the_start() -> None:
    # At a start every Project is one this process has not planned; a new one, created as the start
    # re-plans thousands (a new history source rewrites each quota), must not wait behind them all.
    olds = [f"old-{i:03d}" for i in range(60)]
    writer = LimitedWriter(Store())
    _, reconciler = _reconciler([*olds, "new"], max_in_flight=4)
    writer.store = reconciler.store
    reconciler.writer = writer  # type: ignore[assignment]
    reconciler.min_interval = 0
    reconciler.history.batch_window = 0.005  # the new Project's history answer comes at once
    _previous_process_status(reconciler, olds)

    async def run() -> None:
        for name in olds:  # the start wakes every Project...
            reconciler.schedule(name)
        await asyncio.sleep(0.02)  # ...and is under way when the new Project arrives
        reconciler.schedule("new")
        await _settle(reconciler)

    asyncio.run(run())
    written = writer.projects_written
    assert set(written) == {*olds, "new"}  # the start's backlog is served all the same
    # Arrived after a few of the start's writes (10 ms at 100 writes a second), it waits only for
    # the plans holding a place (4, two writes each), not for the 60 queued behind them.
    assert written.index("new") <= 12, written


def test_an_edited_project_goes_ahead_of_a_cycles_re_plans() -> None:
    olds = [f"old-{i:03d}" for i in range(50)]
    _, reconciler = _reconciler(olds, max_in_flight=2)
    reconciler.max_replans = 2
    began = _plans_take_a_while(reconciler)

    async def run() -> None:
        await _planned_before(reconciler, olds)
        began.clear()
        # old-049's spec is edited (a new generation) as a cycle wakes everyone.
        edited = dict(reconciler.store.projects["old-049"])
        edited["metadata"] = {**edited["metadata"], "generation": 2}
        edited["spec"] = {**edited["spec"], "owner": {"team": "t2"}}
        reconciler.store.projects["old-049"] = edited
        await asyncio.gather(*(reconciler.reconcile(name) for name in olds))

    asyncio.run(run())
    assert sorted(began) == sorted(olds)
    assert began.index("old-049") <= 2, began  # behind at most the re-plans holding a place
