"""A plan run's dependencies, brought in line with its file (`Ledger.sync_plan`): a change that
would close a cycle through a task outside the run is refused, as TaskUpdate refuses one."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_swarm.errors import DependencyCycle
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, PlanTask, TaskChanges
from mcp_swarm.store import Store

pytestmark = pytest.mark.anyio


def plan(a_waits_for_b: bool) -> list[PlanTask]:
    return [
        PlanTask(key="a", subject="A", blocked_by=["b"] if a_waits_for_b else []),
        PlanTask(key="b", subject="B"),
    ]


async def test_a_dependency_closing_a_cycle_through_a_task_outside_the_run_is_refused(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "swarm.db") as store:
        ledger = Ledger(store)
        keys = (await ledger.sync_plan("run", plan(a_waits_for_b=False))).keys
        outside = await ledger.create(NewTask(subject="outside the run"))
        # b waits for the outside task, which waits for a: a waiting for b would close the circle.
        await ledger.update(outside.id, TaskChanges(add_blocked_by=[keys["a"]]))
        await ledger.update(keys["b"], TaskChanges(add_blocked_by=[outside.id]))

        with pytest.raises(DependencyCycle):
            await ledger.sync_plan("run", plan(a_waits_for_b=True))
        assert (await ledger.get(keys["a"])).blocked_by == []


async def test_a_run_linked_to_no_other_task_gets_the_dependencies_of_its_file(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "swarm.db") as store:
        ledger = Ledger(store)
        keys = (await ledger.sync_plan("run", plan(a_waits_for_b=False))).keys
        await ledger.sync_plan("run", plan(a_waits_for_b=True))
        assert (await ledger.get(keys["a"])).blocked_by == [keys["b"]]
        assert (await ledger.get(keys["b"])).blocks == [keys["a"]]
