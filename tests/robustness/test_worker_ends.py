"""How workers end under stress: lingering after their final event, silence, late reports of an
old attempt, and close_agent on a worker that has already ended.

Real processes throughout (no mocks). Nothing here sleeps to synchronise: the tests wait on
conditions (a worker's end through `wait`, a file the test itself creates) under deadlines, and
look at the OS through /proc. The few sleeps are inside worker scripts: they are what a worker does.
"""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_swarm.engine.swarm import WorkerLimits
from mcp_swarm.engine.verdicts import Verdict
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, Task, TaskStatus, Worker, WorkerState, now
from mcp_swarm.placement.processes import group_members
from mcp_swarm.runtimes import Outcome, OutputReader, WorkerRequest
from mcp_swarm.runtimes.base import json_event
from mcp_swarm.store import Store
from tests.support import resumable_workers
from tests.support.mcp_client import call, connect
from tests.support.scripted_workers import (
    WORKER,
    FinalEventRuntime,
    command_runtime,
    running_engine,
    write_project,
)

pytestmark = pytest.mark.anyio


def seconds(worker: Worker) -> float:
    assert worker.ended_at is not None
    return (
        datetime.fromisoformat(worker.ended_at) - datetime.fromisoformat(worker.started_at)
    ).total_seconds()


async def snapshot(store: Store, task_ids: list[str]) -> tuple[list[Worker], list[Task], int]:
    """Every worker and task row of these tasks, and the length of the history: to compare."""
    tasks: list[Task] = []
    async with store.read() as tx:
        workers = [w for task_id in task_ids for w in await tx.workers.for_task(int(task_id))]
        for task_id in task_ids:
            task = await tx.tasks.get(int(task_id))
            assert task is not None
            tasks.append(task)
    history = await Ledger(store).history(limit=100_000)
    return workers, tasks, len(history)


# -- 1. linger after the final event ------------------------------------------------------------


async def test_a_worker_lingering_after_its_final_event_is_stopped_and_judged_by_it(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    limits = WorkerLimits(linger_seconds=0.5, idle_seconds=60, stop_grace_seconds=1.0, tail_interval=0.05)
    async with running_engine(tmp_path, FinalEventRuntime(script), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="lingers", description="@final-then-linger"))
        [worker] = (await swarm.spawn()).workers
        result = await swarm.wait(timeout=30)  # the worker itself would sleep for ten minutes
        assert not result.timed_out
        [done] = result.done
        assert done.state is WorkerState.SUCCEEDED
        assert done.task_status is TaskStatus.COMPLETED
        assert done.summary == "final word on 1"
        assert done.error is None
        assert done.exit_code == -signal.SIGTERM  # stopped by the engine, not ended by itself
        assert seconds(done) >= limits.linger_seconds
        # The worker and the grandchild it started are gone.
        assert group_members(worker.pid) == []
        task = await ledger.get("1")
        assert (task.status, task.owner) == (TaskStatus.COMPLETED, worker.worker_id)


# -- 2. the idle limit --------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_silent_worker_times_out_and_a_chatty_one_does_not(tmp_path: Path) -> None:
    limits = WorkerLimits(idle_seconds=0.5, stop_grace_seconds=1.0, tail_interval=0.05)
    async with running_engine(tmp_path, command_runtime(tmp_path), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="says nothing", description="@silent"))
        await ledger.create(NewTask(subject="keeps talking", description="@chatty"))
        silent, chatty = (await swarm.spawn()).workers
        result = await swarm.wait(timeout=30)
        assert not result.timed_out
        by_task = {w.task_id: w for w in result.done}

        quiet = by_task["1"]
        assert quiet.state is WorkerState.TIMED_OUT
        assert quiet.error == "no output for 0.5 s"
        assert quiet.task_status is TaskStatus.FAILED
        assert seconds(quiet) >= limits.idle_seconds
        assert group_members(silent.pid) == []  # its grandchild too
        assert (await ledger.get("1")).status is TaskStatus.FAILED

        talker = by_task["2"]
        assert talker.state is WorkerState.SUCCEEDED
        assert talker.exit_code == 0
        assert talker.task_status is TaskStatus.COMPLETED
        assert seconds(talker) >= 2.5  # five idle limits, never silent for one
        assert group_members(chatty.pid) == []
        assert (await ledger.get("2")).status is TaskStatus.COMPLETED


# -- 3. a late report of an old attempt ---------------------------------------------------------

RESUMABLE = r"""
import json, os, sys, time
if sys.argv[1] == "--resume":
    session, message, go = sys.argv[2:5]
    # The second attempt runs until the test lets it end.
    while not os.path.exists(go):
        time.sleep(0.01)
    print(json.dumps({"session": session, "ok": True, "summary": "second attempt: " + message}), flush=True)
else:
    print(json.dumps({"session": "session-7", "ok": False, "summary": "first attempt"}), flush=True)
    sys.exit(1)
"""


class SessionReader(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self.last: dict[str, Any] = {}

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is not None:
            self.last = event
            self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        summary = self.last.get("summary")
        session = self.last.get("session")
        return Outcome(
            succeeded=exit_code == 0 and self.last.get("ok") is True,
            summary=summary if isinstance(summary, str) else None,
            session_id=session if isinstance(session, str) else None,
        )


class Resumable(resumable_workers.Resumable):
    """The shared resumable runtime, whose attempts say in an `ok` field whether they succeeded."""

    def reader(self, request: WorkerRequest) -> OutputReader:
        return SessionReader()


async def late_report(store: Store, number: int, attempt: int) -> tuple[bool, Worker | None, Worker | None]:
    """What an old supervisor would write, arriving now: the worker before and after it."""
    async with store.write() as tx:
        before = await tx.workers.get(number)
        report = Verdict(
            number,
            attempt,
            WorkerState.FAILED,
            TaskStatus.FAILED,
            exit_code=9,
            summary="a late report",
            error="reported late",
            session_id="another-session",
        )
        recorded = await tx.workers.finish_many([report], now())
        after = await tx.workers.get(number)
    return number in recorded, before, after


async def test_a_late_report_of_an_old_attempt_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    go = tmp_path / "go"
    limits = WorkerLimits(stop_grace_seconds=1.0, idle_seconds=60)
    async with running_engine(tmp_path, Resumable(script, go), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="needs a second go"))
        [worker] = (await swarm.spawn()).workers
        [first] = (await swarm.wait(timeout=30)).done
        assert (first.state, first.attempt, first.session_id) == (WorkerState.FAILED, 1, "session-7")
        assert (await ledger.get("1")).status is TaskStatus.FAILED

        second = await swarm.send_input(worker.worker_id, "try again")
        assert second.attempt == 2
        assert second.state in (WorkerState.STARTING, WorkerState.RUNNING)
        task_before = await ledger.get("1")
        assert (task_before.status, task_before.owner) == (TaskStatus.IN_PROGRESS, worker.worker_id)

        # While attempt 2 runs, attempt 1's report is refused and changes nothing.
        recorded, before, after = await late_report(swarm.store, 1, attempt=1)
        assert recorded is False
        assert after == before
        assert await ledger.get("1") == task_before
        assert (await swarm.wait([worker.worker_id], timeout=0)).running == [worker.worker_id]

        await anyio.Path(go).touch()
        [done] = (await swarm.wait([worker.worker_id], timeout=30)).done
        assert (done.state, done.attempt, done.task_status) == (
            WorkerState.SUCCEEDED,
            2,
            TaskStatus.COMPLETED,
        )
        assert done.summary == "second attempt: try again"
        completed = await ledger.get("1")
        assert completed.status is TaskStatus.COMPLETED

        # After attempt 2 ended: neither attempt 1's report nor a second one of attempt 2 counts.
        for attempt in (1, 2):
            recorded, before, after = await late_report(swarm.store, 1, attempt=attempt)
            assert recorded is False
            assert before == done
            assert after == done
        assert await ledger.get("1") == completed


# -- 4. close_agent on a worker that has ended --------------------------------------------------


async def test_closing_an_ended_worker_returns_its_record_and_changes_nothing(tmp_path: Path) -> None:
    limits = WorkerLimits(stop_grace_seconds=1.0, idle_seconds=60)
    async with running_engine(tmp_path, command_runtime(tmp_path), limits) as swarm:
        ledger = Ledger(swarm.store)
        await ledger.create(NewTask(subject="quick"))
        await ledger.create(NewTask(subject="breaks", description="@fail"))
        await ledger.create(NewTask(subject="hangs", description="@hang"))
        quick, broken, hung = (await swarm.spawn()).workers
        await swarm.wait([quick.worker_id, broken.worker_id], timeout=30)
        cancelled = await swarm.close(hung.worker_id)
        assert cancelled.state is WorkerState.CANCELLED
        assert group_members(hung.pid) == []
        assert (await swarm.wait(timeout=0)).running == []  # every result has been handed over

        ids = ["1", "2", "3"]
        workers, tasks, history = await snapshot(swarm.store, ids)
        assert [w.state for w in workers] == [
            WorkerState.SUCCEEDED,
            WorkerState.FAILED,
            WorkerState.CANCELLED,
        ]
        assert [t.status for t in tasks] == [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING]

        for worker in workers:
            for task_status in (TaskStatus.PENDING, TaskStatus.FAILED):
                assert await swarm.close(worker.id, task_status) == worker

        assert await snapshot(swarm.store, ids) == (workers, tasks, history)
        # Nothing is handed over again as a new result.
        assert (await swarm.wait(timeout=0)).done == []


async def test_close_agent_on_an_ended_worker_answers_the_recorded_task_status(tmp_path: Path) -> None:
    write_project(tmp_path, [sys.executable, "-c", "print('done')"])
    async with connect("memory", tmp_path / "swarm.db") as client:
        await call(client, "TaskCreate", subject="quick", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        [done] = (await call(client, "wait", timeoutSeconds=30))["done"]
        assert done["taskStatus"] == "completed"
        closed = await call(client, "close_agent", workerId=worker["workerId"])
        assert (await call(client, "TaskGet", taskId="1"))["status"] == "completed"
        assert closed == {"workerId": worker["workerId"], "state": "succeeded", "taskStatus": "completed"}
