"""Two Mayors on one database share `max_workers`: neither is starved while the other has work.

Two real `mcp-swarm serve` processes on one SQLite file with `max_workers = 4`, 60 ready tasks of
short workers, both Mayors looping spawn / wait(mode="any") (benchmarks/bench_load.py's loop)
until every task is completed. Each server must run a fair part of the tasks, every task must be
completed exactly once, and the live workers, sampled from the database while they run, must
never exceed the ceiling.
"""

from __future__ import annotations

import anyio
import pytest

from benchmarks.bench_load import LoadConfig, LoadRun, run_load

pytestmark = pytest.mark.slow

# 300 ms workers outlast a refill of 4 slots, so both Mayors want slots all along; one wave. The
# first Mayor fills every slot before the second starts: a Mayor joining a busy swarm.
CONFIG = LoadConfig(tasks=60, workers=4, work_ms=300, waves=1, blockers=1, run_timeout=120, head_start=True)


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
