"""Supervising one worker: from its start to the evidence of how it ended, and the verdict on it.

The supervisor wakes the moment the process exits (an event, not a poll), tails the log for the
runtime's final event and for silence, enforces the time limits, and turns the evidence (exit
status, final event, the task's validation checks) into a `Verdict`. Recording it is the
caller's part.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import anyio

from mcp_swarm.config import DEFAULT_MAX_LOG_BYTES
from mcp_swarm.engine.batching import Grouped
from mcp_swarm.engine.validation import run_checks
from mcp_swarm.engine.verdicts import Verdict
from mcp_swarm.engine.worker_io import clean_summary
from mcp_swarm.models import TaskStatus, WorkerState
from mcp_swarm.placement.base import LogFollower, Placement
from mcp_swarm.placement.logtail import FileId
from mcp_swarm.placement.processes import WorkerProcess
from mcp_swarm.runtimes.base import Outcome, OutputReader, WorkerRequest, as_object
from mcp_swarm.store import Store
from mcp_swarm.workspace.worktrees import Worktree

EndedBy = tuple[WorkerState, str]
# A session id goes back to the runtime's CLI (`--resume ID`): the shape of the ids claude and
# codex print (UUIDs), not whatever a worker's output says.
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_MAX_TURNS = 2**31 - 1


class CompletionHook(Protocol):
    """A last check of a task whose worker succeeded and whose validation passed, run by the
    server: `ol hero ratchet` for a task imported from OL, closing the bead of a beads task.

    It answers None when the task is none of its business, else a check result in the form of
    `run_checks`' ({"check", "passed", "detail"?}); a failed one fails the task with its detail.
    """

    async def __call__(
        self, task_id: str, metadata: Mapping[str, Any], cwd: Path
    ) -> dict[str, Any] | None: ...


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerLimits:
    max_workers: int = 5
    timeout_seconds: float = 30 * 60
    idle_seconds: float = 10 * 60
    # How long a process may linger after its runtime's final event before it is stopped.
    linger_seconds: float = 10.0
    stop_grace_seconds: float = 5.0
    tail_interval: float = 0.2
    # Past this, a worker's older output moves to `<log>.1` (placement/logtail.py).
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES


@dataclass(frozen=True)
class Launch:
    """A worker's process, just started (or adopted), and what its supervisor needs to judge it."""

    number: int
    attempt: int
    process: WorkerProcess
    reader: OutputReader
    request: WorkerRequest
    offset: int  # where this attempt's output begins in the log
    # Where its process lives (a child of this server, a tmux session...).
    placement: Placement
    # The placement's name for its home, recorded with it (a tmux session, which outlives this
    # server); and how a user watches it live, where that can be done.
    session: str | None = None
    attach: str | None = None
    # Worktree isolation: its own git worktree, whose changes are read when it ends.
    worktree: Worktree | None = None
    # The file `offset` is in: a tmux worker's log may be rotated before it is first read.
    log_id: FileId | None = None


class MetadataReader:
    """A task's metadata, read as its worker ends: the validation checks and what the completion
    hooks look at. Read then, not at spawn, so that checks changed meanwhile are the ones run; and
    read for many supervisors at once when a wave ends together (see engine/batching.py)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._read = Grouped(self._read_many)

    async def __call__(self, task_id: int) -> dict[str, Any] | None:
        """The task's metadata; None if there is no such task."""
        return await self._read(task_id)

    async def _read_many(self, task_ids: Sequence[int]) -> list[dict[str, Any] | None]:
        async with self._store.read(snapshot=False) as tx:
            found = await tx.tasks.metadata(task_ids)
        return [found.get(task_id) for task_id in task_ids]


async def watch_until_end(
    launch: Launch, log: Path, limit: float, limits: WorkerLimits
) -> tuple[int | None, EndedBy | None]:
    """Until the process has ended: its exit status, and why the engine ended it, if it did."""
    process, reader = launch.process, launch.reader
    tail = launch.placement.follow_log(
        log, reader.feed, offset=launch.offset, file_id=launch.log_id, max_bytes=limits.max_log_bytes
    )
    last_output = time.monotonic()
    finished_at: float | None = None
    ended_by: EndedBy | None = None

    # What a flood writes between two looks takes the log past its limit: the first looks come
    # sooner (a worker may flood from its start), and after a rotation the next comes at once.
    first_look = limits.tail_interval / 16

    async def watch() -> None:
        nonlocal last_output, finished_at, ended_by
        pause = first_look
        while True:
            # Before reading too: of output past the limit only the rotated tail is worth parsing.
            rotated = await _rotate_if_over(tail)
            # One chunk per look: a flood is read across looks, never all at once.
            if tail.read_some():
                last_output = time.monotonic()
            rotated = await _rotate_if_over(tail) or rotated
            pause = 0.0 if rotated else min(max(2 * pause, first_look), limits.tail_interval)
            if reader.finished and finished_at is None:
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - finished_at > limits.linger_seconds:
                await process.stop(limits.stop_grace_seconds)
                return
            if time.monotonic() - last_output > limits.idle_seconds:
                ended_by = (WorkerState.TIMED_OUT, f"no output for {limits.idle_seconds:g} s")
                await process.stop(limits.stop_grace_seconds)
                return
            await anyio.sleep(pause)

    with anyio.move_on_after(limit) as deadline:
        # Until the first look, only the end is waited for: most short workers end before it, and
        # then no task is started to follow their log while they run.
        with anyio.move_on_after(first_look) as before_first_look:
            await process.wait()
        if before_first_look.cancelled_caught:
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                await process.wait()
                group.cancel_scope.cancel()
    if deadline.cancelled_caught:
        ended_by = (WorkerState.TIMED_OUT, f"still running after {limit:g} s")
        await process.stop(limits.stop_grace_seconds)
    exit_code = await process.wait()
    await tail.settle()
    # Chunk by chunk, letting other tasks run between them: what is left may be up to the limit.
    while tail.read_some():
        await anyio.lowlevel.checkpoint()
    tail.finish()
    return exit_code, ended_by


async def _rotate_if_over(tail: LogFollower) -> bool:
    return tail.over_limit() and await tail.rotate()


def _admissible(outcome: Outcome) -> Outcome:
    """What the worker's output says of itself, as far as it may go into the database and the
    Mayor's answers: its words (in the error too) cleaned and cut, numbers that SQLite and strict
    JSON can hold (an integer past 64 bits would fail the verdict's transaction, an infinite cost
    would be no JSON), and a session id shaped like one. The rest is dropped, not fatal."""
    cost, turns, session = outcome.cost_usd, outcome.num_turns, outcome.session_id
    return replace(
        outcome,
        summary=clean_summary(outcome.summary),
        error=clean_summary(outcome.error),
        session_id=session if session is not None and _SESSION_ID.fullmatch(session) else None,
        cost_usd=cost if cost is not None and math.isfinite(cost) and cost >= 0 else None,
        num_turns=turns if turns is not None and 0 <= turns <= _MAX_TURNS else None,
    )


async def judge(
    launch: Launch,
    exit_code: int | None,
    ended_by: EndedBy | None,
    metadata_of: MetadataReader,
    checks_env: Callable[[], Mapping[str, str]],
    files: Path,
    hooks: Sequence[CompletionHook] = (),
) -> Verdict:
    """The verdict on an ended attempt: the runtime's evidence, then the task's validation checks."""
    outcome = _admissible(launch.reader.outcome(exit_code))
    verdict = Verdict(
        launch.number,
        launch.attempt,
        WorkerState.SUCCEEDED,
        TaskStatus.COMPLETED,
        exit_code=exit_code,
        summary=outcome.summary,
        session_id=outcome.session_id,
        cost_usd=outcome.cost_usd,
        num_turns=outcome.num_turns,
    )
    if ended_by is not None:
        state, error = ended_by
        return replace(verdict, state=state, task_status=TaskStatus.FAILED, error=error)
    if not outcome.succeeded:
        return replace(verdict, state=WorkerState.FAILED, task_status=TaskStatus.FAILED, error=outcome.error)
    metadata = await metadata_of(int(launch.request.task_id))
    checks = as_object(metadata.get("validation")) if metadata else None
    validation: dict[str, Any] | None = None
    if checks:
        validation = await run_checks(checks, launch.request.cwd, checks_env(), files)
    if (validation is None or validation["passed"]) and metadata:
        for hook in hooks:
            try:
                result = await hook(launch.request.task_id, metadata, launch.request.cwd)
            except Exception as exc:  # one hook's bug must not stop every supervisor
                logger.exception("completion hook %r failed on task %s", hook, launch.request.task_id)
                result = {"check": type(hook).__name__, "passed": False, "detail": f"it failed: {exc}"}
            if result is not None:
                validation = validation or {"passed": True, "checks": []}
                validation["checks"].append(result)
                validation["passed"] = validation["passed"] and bool(result["passed"])
    if validation is None:
        return verdict
    verdict = replace(verdict, validation=validation)
    if validation["passed"]:
        return verdict
    failed = [
        f"{check['check']}: {check['detail']}" if check.get("detail") else check["check"]
        for check in validation["checks"]
        if not check["passed"]
    ]
    return replace(verdict, task_status=TaskStatus.FAILED, error="validation failed: " + "; ".join(failed))
