"""What ended work leaves on disk, and its removal: `mcp-swarm clean`.

A worker that has ended leaves its log (and the older part of it, `<log>.1`), its own directory
(prompt, exit statuses, check logs), its result file and, in worktree isolation, a git worktree
with its branch. Those files are what grows; they go. The records stay: a task's history (who
ran it, how it ended, what it cost) is small, and a plan's run needs its completed tasks to
resume. A worktree whose completed work has not been integrated yet holds changes that exist
nowhere else: it is kept, and said so.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio

from mcp_swarm.engine.integration import worktree_of
from mcp_swarm.models import TaskStatus, Worker
from mcp_swarm.placement.logtail import rotated_path
from mcp_swarm.placement.logtimes import times_path
from mcp_swarm.store import Store
from mcp_swarm.workspace.paths import without_links
from mcp_swarm.workspace.worktrees import Worktree
from mcp_swarm.workspace.worktrees import remove as remove_worktree


class WorkerFiles(Protocol):
    """Where a worker's files lie (the engine's Launcher)."""

    state_dir: Path

    def log(self, number: int) -> Path: ...
    def files(self, number: int) -> Path: ...
    def result_file(self, number: int) -> Path: ...


@dataclass
class EndedWork:
    """What `clean` would remove, found in one read."""

    live: list[str] = field(default_factory=list[str])  # live workers: clean waits for them
    files: list[Path] = field(default_factory=list[Path])  # files and directories that exist
    worktrees: list[Worktree] = field(default_factory=list[Worktree])
    kept: list[str] = field(default_factory=list[str])  # why a worktree stays

    @property
    def empty(self) -> bool:
        return not self.files and not self.worktrees


async def ended_work(store: Store, launcher: WorkerFiles) -> EndedWork:
    async with store.read() as tx:
        live = await tx.workers.live()
        ended = await tx.workers.ended()
    work = EndedWork(live=[worker.id for worker in live])
    # In one thread: a few stats for each ended worker, and a database may have thousands.
    await anyio.to_thread.run_sync(_find_files, work, ended, launcher)
    return work


def _find_files(work: EndedWork, ended: list[Worker], launcher: WorkerFiles) -> None:
    for worker in ended:
        log = launcher.log(worker.number)
        for path in (
            log,
            rotated_path(log),
            times_path(log),
            times_path(rotated_path(log)),
            launcher.files(worker.number),
            launcher.result_file(worker.number),
        ):
            if path.exists() and without_links(path, launcher.state_dir):
                work.files.append(path)
        worktree = worktree_of(worker)
        if worktree is not None and worktree.path.exists():
            if _unintegrated(worker):
                work.kept.append(
                    f"the worktree of {worker.id} ({worktree.path}): its completed work is not "
                    "integrated yet (the Mayor's integrate tool brings it in)"
                )
            else:
                work.worktrees.append(worktree)


def _unintegrated(worker: Worker) -> bool:
    return worker.task_status is TaskStatus.COMPLETED and worker.integrated_commit is None


async def remove_ended(work: EndedWork, project_dir: Path) -> None:
    await anyio.to_thread.run_sync(_remove_files, work.files)
    for worktree in work.worktrees:
        await remove_worktree(project_dir, worktree)


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
