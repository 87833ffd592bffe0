"""Recording how workers ended: once per attempt, and many in one transaction when they end together.

Each worker's supervisor hands its verdict to the `VerdictRecorder` and waits until it is in the
database. Verdicts that arrive while a transaction is being written are written together in the
next one (a group commit): a wave of fifty short workers that end within milliseconds of each
other costs a handful of transactions, not fifty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from mcp_swarm.ledger import now
from mcp_swarm.models import TaskStatus, WorkerState, worker_name
from mcp_swarm.store import Store, Transaction

EventRow = tuple[int, str, str, str, Any, Any]


@dataclass(frozen=True)
class Verdict:
    """How one attempt of a worker ended, and where that leaves its task."""

    number: int
    # None: whichever attempt is live when the verdict is written (closing a worker, or stopping).
    attempt: int | None
    state: WorkerState
    task_status: TaskStatus
    error: str | None = None
    exit_code: int | None = None
    summary: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    validation: dict[str, Any] | None = None
    # What it changed in its worktree (worktree isolation).
    changes: list[dict[str, Any]] | None = None
    # False for a worker that never started: nobody is waiting for it, so wait() does not return it.
    report: bool = True


@dataclass
class _Pending:
    verdict: Verdict
    written: bool = False
    recorded: bool = False
    error: Exception | None = None


class VerdictRecorder:
    def __init__(self, store: Store, on_recorded: Callable[[], None]) -> None:
        self._store = store
        self._on_recorded = on_recorded
        self._queue: list[_Pending] = []
        self._writing = anyio.Lock()

    async def record(self, verdict: Verdict) -> bool:
        """Write the verdict; False if that attempt already had one (the first verdict stands).

        Cancelled while its turn has not come, the verdict is withdrawn and nothing is written;
        once its transaction has begun, it completes.
        """
        pending = _Pending(verdict)
        self._queue.append(pending)
        try:
            async with self._writing:
                if not pending.written:
                    batch, self._queue = self._queue, []
                    try:
                        with anyio.CancelScope(shield=True):
                            await self._write(batch)
                    except Exception as exc:  # every verdict of the batch is lost, and each caller hears why
                        for item in batch:
                            item.error = exc
                    for item in batch:
                        item.written = True
        except BaseException:
            if pending in self._queue:
                self._queue.remove(pending)
            raise
        if pending.error is not None:
            raise pending.error
        return pending.recorded

    async def _write(self, batch: list[_Pending]) -> None:
        at = now()
        events: list[EventRow] = []
        unreported: list[int] = []
        async with self._store.write() as tx:
            for item in batch:
                item.recorded = await _record(tx, item.verdict, at, events)
                if item.recorded and not item.verdict.report:
                    unreported.append(item.verdict.number)
            await tx.tasks.record_events(events)
            if unreported:
                await tx.workers.mark_reported(unreported, at)
        self._on_recorded()


async def _record(tx: Transaction, verdict: Verdict, at: str, events: list[EventRow]) -> bool:
    task_id = await tx.workers.finish(
        verdict.number,
        attempt=verdict.attempt,
        state=verdict.state,
        now=at,
        task_status=verdict.task_status,
        exit_code=verdict.exit_code,
        summary=verdict.summary,
        error=verdict.error,
        session_id=verdict.session_id,
        cost_usd=verdict.cost_usd,
        num_turns=verdict.num_turns,
        validation=verdict.validation,
        changes=verdict.changes,
    )
    if task_id is None:
        return False
    owner = worker_name(verdict.number)
    # Only the worker that owns the task may move it: a task reassigned since is not ours.
    if await tx.tasks.release(task_id, owner=owner, status=verdict.task_status, now=at):
        in_progress = TaskStatus.IN_PROGRESS.value
        events.append((task_id, at, owner, "status", in_progress, verdict.task_status.value))
        if verdict.task_status is TaskStatus.PENDING:
            events.append((task_id, at, owner, "owner", owner, None))
    return True
