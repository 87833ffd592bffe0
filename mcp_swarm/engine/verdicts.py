"""Recording how workers ended: once per attempt, and many in one transaction when they end together.

Each worker's supervisor hands its verdict to the `VerdictRecorder` and waits until it is in the
database. Verdicts that arrive while a transaction is being written are written together in the
next one (a group commit): a wave of fifty short workers that end within milliseconds of each
other costs a handful of transactions, not fifty.

A verdict is never dropped because the database cannot take it at that moment (another process
holds the write lock past the busy timeout, the disk is full, the file was made read-only): it
is kept and tried again with a growing pause until it is written. Only when the server stops
does it give up, after one last try: the worker's row still says it runs, and the next server's
recovery judges it from what it left (its log, its result file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from mcp_swarm.engine.batching import Grouped
from mcp_swarm.errors import StoreUnavailable
from mcp_swarm.models import TaskStatus, WorkerState, now, worker_name
from mcp_swarm.store import Store
from mcp_swarm.store.tasks import EventRow


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


logger = logging.getLogger(__name__)

# Pauses between tries of a verdict the database refused for now: short at first (a lock held a
# little past the busy timeout), then at most every few seconds.
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0


class VerdictRecorder:
    def __init__(self, store: Store, on_recorded: Callable[[], None]) -> None:
        self._store = store
        self._on_recorded = on_recorded
        self._record = Grouped(self._write)
        self._stopping = anyio.Event()
        # Why verdicts wait, as last logged: said once per reason, not once per try or verdict.
        self._waiting_because: str | None = None

    def stop(self) -> None:
        """The server is stopping: a verdict the database refuses gets one more try, not more."""
        self._stopping.set()

    async def record(self, verdict: Verdict, *, patient: bool = True) -> bool:
        """Write the verdict; False if that attempt already had one (the first verdict stands), or
        if the server stops before the database takes it (recovery judges that worker later).

        Cancelled while its turn has not come, the verdict is withdrawn and nothing is written;
        once its transaction has begun, it completes. A database that refuses it for now
        (StoreUnavailable) is tried again until it takes it; unless not `patient` (a tool call
        whose caller is waiting), which gets the StoreUnavailable and its reason at once.
        """
        pause = FIRST_RETRY_SECONDS
        last_try = False
        while True:
            try:
                written = await self._record(verdict)
            except StoreUnavailable as exc:
                if not patient:
                    raise
                if last_try or not exc.transient:
                    logger.error(
                        "the end of %s is not recorded: %s; the next server judges it from its log",
                        worker_name(verdict.number),
                        exc,
                    )
                    return False
                self._waiting(str(exc))
                with anyio.move_on_after(pause):
                    await self._stopping.wait()
                last_try = self._stopping.is_set()
                pause = min(pause * 2, MAX_RETRY_SECONDS)
                continue
            if self._waiting_because is not None:
                logger.warning("the database takes verdicts again (%s)", worker_name(verdict.number))
                self._waiting_because = None
            return written

    def _waiting(self, reason: str) -> None:
        if reason != self._waiting_because:
            logger.warning("a worker's verdict waits to be written, and is tried again: %s", reason)
            self._waiting_because = reason

    async def _write(self, verdicts: Sequence[Verdict]) -> list[bool]:
        """Write verdicts that arrived together, in one transaction of a few statements."""
        at = now()
        recorded = [False] * len(verdicts)
        events: list[EventRow] = []
        async with self._store.write() as tx:
            # One statement cannot say which of two verdicts on one worker came first: a later one
            # waits for a later round, which finds the worker ended.
            for round_ in _rounds(list(enumerate(verdicts)), key=lambda item: item[1].number):
                tasks = await tx.workers.finish_many([verdict for _, verdict in round_], at)
                releases: list[tuple[int, str, TaskStatus]] = []
                for index, verdict in round_:
                    if verdict.number in tasks:
                        recorded[index] = True
                        releases.append(
                            (tasks[verdict.number], worker_name(verdict.number), verdict.task_status)
                        )
                # Only the worker that owns a task may move it: a task reassigned since is not its.
                for batch in _rounds(releases, key=lambda release: release[0]):
                    moved = await tx.tasks.release_many(batch, at)
                    events.extend(
                        event for release in batch if release[0] in moved for event in _events(release, at)
                    )
            await tx.tasks.record_events(events)
            unreported = [
                v.number for v, done in zip(verdicts, recorded, strict=True) if done and not v.report
            ]
            if unreported:
                await tx.workers.mark_reported(unreported, at)
        self._on_recorded()
        return recorded


Keyed = TypeVar("Keyed")


def _rounds(items: list[Keyed], *, key: Callable[[Keyed], int]) -> list[list[Keyed]]:
    """The items in rounds, in order, each round holding each key at most once."""
    rounds: list[list[Keyed]] = []
    seen: list[set[int]] = []
    for item in items:
        k = key(item)
        n = next((i for i, keys in enumerate(seen) if k not in keys), len(rounds))
        if n == len(rounds):
            rounds.append([])
            seen.append(set())
        rounds[n].append(item)
        seen[n].add(k)
    return rounds


def _events(release: tuple[int, str, TaskStatus], at: str) -> list[EventRow]:
    task_id, owner, status = release
    events: list[EventRow] = [(task_id, at, owner, "status", TaskStatus.IN_PROGRESS.value, status.value)]
    if status is TaskStatus.PENDING:
        events.append((task_id, at, owner, "owner", owner, None))
    return events
