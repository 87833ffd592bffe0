"""Two Mayors on one database share `max_workers`: neither is starved while the other has work.

Step by step first: the Mayor that holds every slot is always the first to ask again when one of
its workers ends (its server learns of the end first), and still the other Mayor gets its share.
Then at load: two real `mcp-swarm serve` processes on one SQLite file with `max_workers = 4`, 60
ready tasks of short workers, both Mayors looping spawn / wait(mode="any") (the loop of
benchmarks/bench_load.py) until every task is completed. Each server must run a fair part of the
tasks, every task must be completed exactly once, and the live workers, sampled from the
database while they run, must never exceed the ceiling.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from benchmarks.bench_load import LoadConfig, LoadRun, run_load
from tests.support.gated_workers import gated_project, go
from tests.support.mcp_client import call, stdio_parameters

pytestmark = pytest.mark.slow

# 300 ms workers outlast a refill of 4 slots, so both Mayors want slots all along; one wave. The
# first Mayor fills every slot before the second starts: a Mayor joining a busy swarm.
CONFIG = LoadConfig(tasks=60, workers=4, work_ms=300, waves=1, blockers=1, run_timeout=120, head_start=True)


# Runs until its go file appears.


@asynccontextmanager
async def mayor(project: Path) -> AsyncGenerator[Client]:
    params = stdio_parameters(project / ".mcp-swarm" / "swarm.db", cwd=project)
    async with Client(params, mode="legacy") as client:
        yield client


def started(answer: dict[str, Any]) -> list[str]:
    return [worker["workerId"] for worker in answer["workers"]]


@pytest.mark.anyio
async def test_the_mayor_holding_every_slot_gives_the_other_its_share(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    gates = gated_project(project, max_workers=4)
    with anyio.fail_after(120):
        async with mayor(project) as first, mayor(project) as second:
            await call(first, "TaskCreatePlan", tasks=[{"subject": f"task {n}"} for n in range(1, 13)])
            # Alone, the first Mayor takes the whole ceiling.
            held = {"first": started(await call(first, "spawn")), "second": list[str]()}
            assert held["first"] == ["worker-1", "worker-2", "worker-3", "worker-4"]
            refused = await call(second, "spawn")
            assert started(refused) == []
            assert all(skipped["retry"] for skipped in refused["skipped"])
            # Each time one of the first Mayor's workers ends, it asks first; then the second asks.
            for _ in range(3):
                ending = held["first"].pop(0)
                go(gates, ending)
                [done] = (await call(first, "wait", workerIds=[ending], timeoutSeconds=30))["done"]
                assert done["taskStatus"] == "completed"
                for name, client in (("first", first), ("second", second)):
                    answer = await call(client, "spawn")
                    held[name] += started(answer)
                    if not started(answer):
                        assert answer["skipped"][0]["retry"] is True
            # Two each: the second Mayor got its share although the first always asked first.
            assert (len(held["first"]), len(held["second"])) == (2, 2), held
            # And the first gets its slots back as its own workers end, not the second's.
            ending = held["first"].pop(0)
            go(gates, ending)
            await call(first, "wait", workerIds=[ending], timeoutSeconds=30)
            assert len(started(await call(first, "spawn"))) == 1


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> LoadRun:
    return anyio.run(run_load, CONFIG, tmp_path_factory.mktemp("fair"), backend="asyncio")


def test_each_mayor_runs_a_fair_share_of_the_tasks(shared_run: LoadRun) -> None:
    ran = shared_run.ran_by
    assert sum(ran.values()) == CONFIG.tasks
    # An even share is half. Two fifths leaves room for the start (the first Mayor holds every slot)
    # and the end; without sharing, the Mayor that came second ran a quarter to a third.
    assert all(ran.get(mayor.name, 0) >= CONFIG.tasks * 2 // 5 for mayor in shared_run.mayors), ran


def test_every_task_is_completed_exactly_once(shared_run: LoadRun) -> None:
    assert shared_run.ledger == []
    assert shared_run.witness == []
    assert shared_run.delivery == []


def test_the_live_workers_never_exceed_the_ceiling(shared_run: LoadRun) -> None:
    assert shared_run.live, "the run was over before a single sample"
    assert max(shared_run.live) <= CONFIG.workers
