"""The engine as its own Mayor: a whole plan run wave after wave, with nobody at the wheel.

`mcp-swarm run` and `mcp-swarm demo` bring the plan's run in line with the file in one call
(created the first time; continued after that: completed tasks kept, failed ones pending again),
then loop: spawn every ready
task of the plan, wait for the first worker to end, and again, until no task of the plan is
pending or in progress, or nothing can move any more (a failed task keeps its dependents
blocked). Only this plan's tasks and workers are touched, so a run may share the database with a
Mayor's session. SIGINT or SIGTERM stops the workers (their tasks return to pending) and ends the
run as interrupted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
from anyio import CancelScope

from mcp_swarm.app import build_engine
from mcp_swarm.cli.run_checks import plan_runtimes
from mcp_swarm.cli.run_state import RunObserver, RunState, TaskRow
from mcp_swarm.config import Settings
from mcp_swarm.engine.swarm import Swarm
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.plan_file import PlanFile, problems_message
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import SyncedPlan, TaskChanges, TaskStatus, TaskSummary, Worker, now, worker_number
from mcp_swarm.runtimes.base import Runtime, as_array, as_object
from mcp_swarm.server.worker_endpoint import worker_endpoint
from mcp_swarm.store import Store


@dataclass(frozen=True)
class RunOptions:
    runtime: str | None = None  # every task's runtime, whatever the plan says (a command stays)
    max_workers: int | None = None
    timeout_seconds: float | None = None  # each worker's wall-clock limit
    wait_seconds: float = 1.0
    fresh: bool = False  # start the run over: its earlier tasks are deleted, all are created anew


async def run_plan(
    plan: PlanFile,
    settings: Settings,
    runtimes: Mapping[str, Runtime],
    options: RunOptions,
    observer: RunObserver,
    *,
    title: str,
    identity: str | None = None,
) -> RunState:
    """Run the plan to its end; the state says how it went. The run is `identity` (default: the
    title): a run of that name in the database is continued. A bad plan is refused (InvalidInput,
    DependencyCycle) before anything is created."""
    checked = plan_runtimes(plan, options.runtime, settings, runtimes)
    if checked.problems:
        raise InvalidInput(problems_message(title, checked.problems))
    waves = plan.waves()
    state = RunState(title=title, db_path=settings.db_path)
    async with await Store.open(settings.db_path) as store:
        ledger = Ledger(store)
        synced = await ledger.sync_plan(
            identity or title, plan.plan_tasks(checked.chosen), fresh=options.fresh
        )
        state.rows = [
            TaskRow(synced.keys[task.key], task.key, task.subject, waves[task.key], checked.chosen[task.key])
            for task in plan.tasks
        ]
        for row in state.rows:
            if row.key in synced.kept:
                row.state, row.note = "completed", "in an earlier run"
        state.started = time.monotonic()
        observer.begin(state)
        if not synced.created or synced.removed:
            observer.message(_continued(synced))
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as outer:
                outer.start_soon(_stop_on_signal, signals, outer.cancel_scope, state)
                outer.start_soon(observer.tick, state)
                try:
                    swarm = build_engine(settings, store, runtimes=checked.runtimes)
                    # Workers reach the swarm through this process's worker endpoint, as a
                    # server's do; it outlives the engine, which stops the workers first.
                    async with worker_endpoint(store, settings) as endpoint:
                        swarm.worker_url = endpoint.url
                        await _drive(swarm, ledger, state, plan, options, observer)
                finally:
                    state.ended = time.monotonic()
                    outer.cancel_scope.cancel()
    observer.end(state)
    return state


def _continued(synced: SyncedPlan) -> str:
    """One line on what a continued run found: kept, run again, changed, new, dropped."""
    parts = [
        f"{len(keys)} {what}"
        for keys, what in [
            (synced.kept, "completed before, kept"),
            (synced.retried, "failed before, to run again"),
            (synced.updated, "changed in the file, updated"),
            (synced.created, "new"),
            (synced.removed, "no longer in the file, deleted"),
        ]
        if keys
    ]
    return "continuing the earlier run: " + ("; ".join(parts) or "nothing done yet")


async def _stop_on_signal(
    signals: AsyncIterator[signal.Signals], scope: CancelScope, state: RunState
) -> None:
    async for received in signals:
        state.stopped_by = received
        scope.cancel()
        return


async def _drive(
    swarm: Swarm, ledger: Ledger, state: RunState, plan: PlanFile, options: RunOptions, observer: RunObserver
) -> None:
    async with anyio.create_task_group() as group:
        await group.start(swarm.run)
        try:
            await _loop(swarm, ledger, state, plan, options, observer)
        finally:
            # Interrupted: the engine stops the workers still running and frees their tasks.
            group.cancel_scope.cancel()
            for row in state.rows:
                if row.state == "running":
                    row.state, row.note = "stopped", "stopped; the task is pending again"
                    row.seconds = row.elapsed()


async def _loop(
    swarm: Swarm,
    ledger: Ledger,
    state: RunState,
    plan: PlanFile,
    options: RunOptions,
    observer: RunObserver,
) -> None:
    by_id = {row.task_id: row for row in state.rows}
    running: dict[str, TaskRow] = {}  # worker id -> its task's row
    max_workers = options.max_workers or plan.max_workers
    while True:
        listing = await ledger.list()
        ready = [task.id for task in listing.tasks if task.ready and task.id in by_id]
        moved, held = False, False
        for runtime in dict.fromkeys(by_id[task_id].runtime for task_id in ready):
            ids = [task_id for task_id in ready if by_id[task_id].runtime == runtime]
            result = await swarm.spawn(
                ids, runtime=runtime, max_workers=max_workers, timeout_seconds=options.timeout_seconds
            )
            for started in result.workers:
                row, worker_id = by_id[started.task_id], started.worker_id
                row.state, row.worker, row.log = "running", worker_id, Path(started.log)
                row.started, row.seconds, row.note = time.monotonic(), None, ""
                running[worker_id] = row
                observer.changed(row)
                moved = True
            for skipped in result.skipped:
                # A reason that passes on its own (retry: no free slot, an overlapping task running,
                # another session running it) holds the task back; any other would only repeat.
                if skipped.retry:
                    held = True
                    continue
                # It could not start (its program is missing, say): trying again would only repeat that.
                row = by_id[skipped.task_id]
                await ledger.update(row.task_id, TaskChanges(status=TaskStatus.FAILED))
                row.state, row.note = "failed", f"could not start: {skipped.reason}"
                observer.changed(row)
                moved = True
        if not running:
            elsewhere = any(t.status is TaskStatus.IN_PROGRESS for t in listing.tasks if t.id in by_id)
            if held or elsewhere:
                # What holds it up belongs to another session on this database (its workers, or
                # one of this plan's tasks that it took): look again soon.
                await anyio.sleep(options.wait_seconds)
                continue
            if moved:
                continue
            break
        result = await swarm.wait(list(running), mode="any", timeout=options.wait_seconds)
        for request in result.help_requests:
            observer.message(f"{request.sender} asks for help: {request.subject}")
        for worker in result.done:
            row = running.pop(worker.id)
            _ended(row, worker)
            observer.changed(row)
        if result.done:
            # Given to this run's Mayor: a Mayor's session on the same database is not handed them again.
            async with ledger.store.write() as tx:
                await tx.workers.mark_reported([worker_number(w.id) for w in result.done], now())
    _settle(state, (await ledger.list()).tasks, observer)


def _settle(state: RunState, tasks: list[TaskSummary], observer: RunObserver) -> None:
    """The rows no worker of this run ended: run by another session, deleted, or blocked."""
    keys = {row.task_id: row.key for row in state.rows}
    found = {task.id: task for task in tasks}
    for row in state.rows:
        if row.state != "waiting":
            continue
        task = found.get(row.task_id)
        if task is None:
            row.state, row.note = "failed", "deleted by another session"
        elif task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            row.state, row.note = task.status.value, f"by {task.owner or 'another session'}"
        else:
            row.state = "blocked"
            row.note = "blocked by " + ", ".join(keys.get(b, f"task {b}") for b in task.blocked_by)
        observer.changed(row)


def _ended(row: TaskRow, worker: Worker) -> None:
    row.seconds = _seconds(worker)
    row.cost_usd = worker.cost_usd
    checks = as_array((worker.validation or {}).get("checks"))
    row.checks = [check for item in checks if (check := as_object(item)) is not None]
    if worker.task_status is TaskStatus.COMPLETED:
        row.state, row.note = "completed", worker.summary or ""
    elif worker.task_status is TaskStatus.FAILED:
        row.state, row.note = "failed", worker.error or worker.summary or worker.state.value
    else:
        # Closed from elsewhere (a Mayor's close_agent): the task is pending again and will be respawned.
        row.state, row.note = "waiting", f"{worker.id} {worker.state.value}: {worker.error or ''}".strip(": ")


def _seconds(worker: Worker) -> float | None:
    if worker.ended_at is None:
        return None
    started = datetime.fromisoformat(worker.started_at)
    return (datetime.fromisoformat(worker.ended_at) - started).total_seconds()
