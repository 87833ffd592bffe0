"""Worktree isolation for the engine: a worker's worktree, what it changed, and integration.

Workers never commit; the Mayor integrates. `integrate_completed` takes the completed workers
whose worktrees have not been integrated yet, orders them by their tasks' dependencies, and
hands them to `integrate` (workspace/merge.py), which applies each one's changes to the main tree and
commits once for the wave. What was integrated is recorded, so no change comes in twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from mcp_swarm.errors import InvalidInput
from mcp_swarm.models import Task, Worker, now, worker_number
from mcp_swarm.store import Store
from mcp_swarm.workspace.journal import finish_interrupted, integrating, interrupted
from mcp_swarm.workspace.merge import integrate
from mcp_swarm.workspace.worktrees import FileChange, IntegrationItem, Worktree, WorktreeError, changes

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntegratedWorker:
    """A worker whose changes are now in the main tree."""

    task_id: str
    worker_id: str
    files: list[FileChange]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A worker whose changes were not integrated; neither tree was changed for it."""

    task_id: str
    worker_id: str
    reason: Literal["uncommitted_changes", "does_not_apply"]
    files: list[str]
    message: str


@dataclass(frozen=True, slots=True)
class Integration:
    """What one integration did. `note` says why there was nothing to do, when there was not."""

    integrated: list[IntegratedWorker] = field(default_factory=lambda: list[IntegratedWorker]())
    # The wave's commit, if one was made.
    commit: str | None = None
    conflicts: list[Conflict] = field(default_factory=lambda: list[Conflict]())
    # The workers after a conflict, left for a later integration.
    not_attempted: list[str] = field(default_factory=lambda: list[str]())
    note: str | None = None


def worktree_record(worktree: Worktree) -> dict[str, str]:
    return {
        "path": str(worktree.path),
        "branch": worktree.branch,
        "base_commit": worktree.base_commit,
        "subdirectory": worktree.subdirectory,
    }


def worktree_of(worker: Worker) -> Worktree | None:
    if worker.worktree is None:
        return None
    record = worker.worktree
    return Worktree(
        Path(record["path"]), record["branch"], record["base_commit"], record.get("subdirectory", "")
    )


def change_records(files: Sequence[FileChange]) -> list[dict[str, Any]]:
    """Compact: what a Mayor needs to see of each changed file."""
    return [
        # Not `in (None, False)`: 0 == False, and a count of 0 is worth showing.
        {key: value for key, value in asdict(change).items() if value is not None and value is not False}
        for change in files
    ]


async def changes_of(worktree: Worktree) -> list[dict[str, Any]] | None:
    """What a worker changed in its worktree; None (and a log line) if it cannot be read."""
    try:
        return change_records(await changes(worktree))
    except WorktreeError as exc:
        logger.warning("cannot read the changes in %s: %s", worktree.path, exc)
        return None


def _in_dependency_order(workers: list[Worker], edges: list[tuple[int, int]]) -> list[Worker]:
    """Blockers before the tasks that waited for them; otherwise in task order."""
    by_task = {int(worker.task_id): worker for worker in workers}
    waiting_on: dict[int, set[int]] = {task: set() for task in by_task}
    for task, blocker in edges:
        waiting_on[task].add(blocker)
    ordered: list[Worker] = []
    while waiting_on:
        ready = sorted(task for task, blockers in waiting_on.items() if not blockers)
        if not ready:  # a cycle cannot be created; were one there, task order decides
            ready = sorted(waiting_on)
        for task in ready:
            ordered.append(by_task[task])
            del waiting_on[task]
        for blockers in waiting_on.values():
            blockers.difference_update(ready)
    return ordered


async def _candidates(
    store: Store, worker_ids: Sequence[str] | None
) -> tuple[list[Worker], list[tuple[int, int]], dict[str, Task]]:
    """The workers to integrate, the dependencies among their tasks, and those tasks by id."""
    async with store.read() as tx:
        candidates = await tx.workers.integrable()
        if worker_ids is not None:
            wanted = set(worker_ids)
            known = {worker.id for worker in candidates}
            if unknown := sorted(wanted - known):
                raise InvalidInput(
                    f"nothing to integrate for {', '.join(unknown)}: only workers that completed "
                    "their task in a worktree (spawn isolation=worktree), not yet integrated"
                )
            candidates = [worker for worker in candidates if worker.id in wanted]
        edges = await tx.tasks.dependencies_among(int(worker.task_id) for worker in candidates)
        tasks = {task.id: task for task in await tx.tasks.many([int(w.task_id) for w in candidates])}
    return candidates, edges, tasks


async def integrate_completed(
    store: Store, project_dir: Path, lock: anyio.Lock, worker_ids: Sequence[str] | None = None
) -> Integration:
    """Bring the completed, not yet integrated workers' changes into the main tree as one commit.

    `lock` is held throughout, and the main tree's integration lock once there is work: each
    integration reads and commits the main tree. An integration that a killed process left is
    first finished (its workers recorded) or undone (its workers integrated again)."""

    async def record(commit: str | None, integrated: Sequence[str]) -> None:
        async with store.write() as tx:
            await tx.workers.mark_integrated(
                [worker_number(worker) for worker in integrated], commit or "", now()
            )

    async with lock:
        candidates, _, _ = await _candidates(store, worker_ids)
        if not candidates and not await interrupted(project_dir):
            return Integration(note="nothing to integrate")
        async with integrating(project_dir):
            finished = await finish_interrupted(project_dir, record)
            if finished is not None:
                # Those it recorded are no longer to integrate: asked for by id, they are done.
                wanted = (
                    None if worker_ids is None else [w for w in worker_ids if w not in finished.worker_ids]
                )
                candidates, edges, tasks = await _candidates(store, wanted)
            else:
                candidates, edges, tasks = await _candidates(store, worker_ids)
            if not candidates:
                done = ", ".join(finished.worker_ids) if finished is not None else ""
                return Integration(
                    commit=None if finished is None else finished.commit,
                    note="nothing to integrate"
                    if finished is None
                    else f"finished the interrupted integration of {done}",
                )
            items: list[IntegrationItem] = []
            for worker in _in_dependency_order(candidates, edges):
                worktree = worktree_of(worker)
                assert worktree is not None  # noqa: S101 - integrable() has only workers with a worktree
                items.append(
                    IntegrationItem(worker.task_id, tasks[worker.task_id].subject, worker.id, worktree)
                )
            report = await integrate(
                project_dir, items, f"Integrate {len(items)} task(s) done by the swarm", record=record
            )
    return Integration(
        integrated=[
            IntegratedWorker(done.item.task_id, done.item.worker_id, done.files) for done in report.integrated
        ],
        commit=report.commit,
        conflicts=[
            Conflict(c.item.task_id, c.item.worker_id, c.reason, c.files, c.message) for c in report.conflicts
        ],
        not_attempted=[item.worker_id for item in report.not_attempted],
    )
