"""Integrations that survive a kill: one at a time across processes, and a journal of each.

An integration changes things that cannot change together: the main tree (its index and files),
its history (the wave's commit), the swarm's record of which workers are integrated, and then the
worktrees. A process killed between two of these must leave a state that the next integration
finishes or undoes by itself, never one that blocks it. So before it touches the main tree an
integration writes down what it is about to do: the commit it starts from, each file it will
change with the content it will give it, then the commit's message and workers, then the commit.
Worktrees are removed only once the integration is recorded, and the journal goes last.

The next integration reads a journal left behind (`finish_interrupted`):
- the journal's commit is in HEAD's history: the work is done; it is recorded, the worktrees are
  removed;
- otherwise the files it changed are put back as HEAD has them, in the index and the working tree,
  but only if each holds what HEAD or the integration gave it: a file changed since is the user's
  and is never touched (the integration is then refused, naming it). The workers are still
  unintegrated, so the integration is simply done again.

Both files live in the main tree's own git directory, beside the index they protect, so every
process integrating into this working tree finds them, whichever project directory it serves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from mcp_swarm.workspace.worktrees import (
    PATHS_PER_CALL,
    Repository,
    Worktree,
    WorktreeError,
    remove,
    repository_of,
    run_git,
    split_z,
)

logger = logging.getLogger(__name__)

LOCK_NAME = "mcp-swarm-integration.lock"
JOURNAL_NAME = "mcp-swarm-integration.json"
# How long an integration waits for another process's to end before it gives up, saying so.
LOCK_WAIT_SECONDS = 120.0
# How long it waits for a git command still writing the main index (one a killed integration
# started, which goes on without it) before it says the index is locked.
INDEX_LOCK_WAIT_SECONDS = 20.0
_POLL_SECONDS = 0.05

# Records that workers are integrated, by the wave's commit (None: none was needed).
Recorder = Callable[[str | None, Sequence[str]], Awaitable[None]]

# The lock file this task holds, so that an integration within an integration does not wait
# for itself.
_held: ContextVar[Path | None] = ContextVar("mcp_swarm_integration_lock", default=None)


async def _git_path(repo: Repository, name: str) -> Path:
    found = await run_git(["rev-parse", "--path-format=absolute", "--git-path", name], repo.top)
    return Path(found.text)


# --- one integration at a time ---------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


@asynccontextmanager
async def integrating(project: Path, wait_seconds: float = LOCK_WAIT_SECONDS) -> AsyncGenerator[Repository]:
    """Hold the main tree's integration lock: no other process or task integrates meanwhile.

    An flock, so the kernel releases it when its holder dies, however it dies. Yields the
    repository as it is once the lock is held.
    """
    repo = await repository_of(project)
    path = await _git_path(repo, LOCK_NAME)
    if _held.get() == path:
        yield repo
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise WorktreeError(f"cannot open the integration lock {path}: {exc.strerror or exc}") from exc
    try:
        deadline = anyio.current_time() + wait_seconds
        while not _try_lock(fd):
            if anyio.current_time() >= deadline:
                raise WorktreeError(
                    f"another process has been integrating into {repo.top} for {wait_seconds:.0f} s "
                    f"(it holds {path}); integrate again when it is done"
                )
            await anyio.sleep(_POLL_SECONDS)
        token = _held.set(path)
        try:
            yield await repository_of(project)  # HEAD as the lock's previous holder left it
        finally:
            _held.reset(token)
    finally:
        os.close(fd)  # releases the lock


# --- the journal -----------------------------------------------------------------------------


@dataclass(slots=True)
class JournaledWorker:
    worker_id: str
    path: str
    branch: str


@dataclass(slots=True)
class Journal:
    """What an integration is doing, written before each step that touches the main tree."""

    # HEAD when it began.
    base: str
    # Each file it changes in the main tree, with the blobs it may leave there (None: no file).
    files: dict[str, list[str | None]] = field(default_factory=lambda: dict[str, list[str | None]]())
    # The wave's commit message, written before git commit runs; then the commit itself.
    message: str | None = None
    commit: str | None = None
    # The workers it integrates, written with the message.
    workers: list[JournaledWorker] = field(default_factory=lambda: list[JournaledWorker]())
    # Whether the workers are recorded as integrated: only the worktrees are left to remove.
    recorded: bool = False


class JournalFile:
    """The journal of the main tree of `repo`: written whole and renamed into place, never torn."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    async def of(cls, repo: Repository) -> JournalFile:
        return cls(await _git_path(repo, JOURNAL_NAME))

    async def read(self) -> Journal | None:
        try:
            data: Any = json.loads(await anyio.Path(self.path).read_text())
            workers = [JournaledWorker(**worker) for worker in data.pop("workers", [])]
            return Journal(**data, workers=workers)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise WorktreeError(
                f"the integration journal {self.path} cannot be read ({exc}); if no integration is "
                "running, check `git status` in the main tree, delete that file, and integrate again"
            ) from exc

    async def write(self, journal: Journal) -> None:
        text = json.dumps(asdict(journal), separators=(",", ":"))
        await anyio.to_thread.run_sync(self._write, text)

    def _write(self, text: str) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path)

    async def delete(self) -> None:
        await anyio.Path(self.path).unlink(missing_ok=True)


# --- finishing or undoing an interrupted integration -----------------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    """An interrupted integration that is now complete: its commit and workers."""

    commit: str | None
    worker_ids: list[str]


async def interrupted(project: Path) -> bool:
    """Whether an integration into the repository of `project` was interrupted (False outside git)."""
    try:
        repo = await repository_of(project)
        return await anyio.Path((await JournalFile.of(repo)).path).exists()
    except WorktreeError:
        return False


async def finish_interrupted(project: Path, record: Recorder | None) -> Finished | None:
    """Complete or undo an integration that a killed process left; call it holding `integrating`.

    Returns what it completed; None if there was nothing to complete (there was no journal, or the
    interrupted integration had made no commit and was undone, so its workers are to be
    integrated again). Raises WorktreeError, changing nothing, if files it would undo have changed
    since.
    """
    async with integrating(project) as repo:
        journal_file = await JournalFile.of(repo)
        journal = await journal_file.read()
        if journal is None:
            return None
        await _wait_for_index(repo)
        commit = await _commit_made(repo, journal)
        if commit is None and not journal.recorded:
            await _undo(repo, journal)
            await journal_file.delete()
            logger.warning("undid an integration into %s that was interrupted before its commit", repo.top)
            return None
        ids = [worker.worker_id for worker in journal.workers]
        if not journal.recorded and record is not None:
            await record(commit, ids)
            journal.recorded = True
            await journal_file.write(journal)
        await remove_worktrees(project, journal)
        await journal_file.delete()
        logger.warning("finished an interrupted integration into %s: commit %s", repo.top, commit)
        return Finished(commit, ids)


async def remove_worktrees(project: Path, journal: Journal) -> None:
    for worker in journal.workers:
        try:
            await remove(project, Worktree(Path(worker.path), worker.branch, ""))
        except WorktreeError as exc:
            # The work is committed and recorded; a worktree left behind is only clutter.
            logger.warning("worktree of worker %s not removed: %s", worker.worker_id, exc)


async def _wait_for_index(repo: Repository) -> None:
    """Wait while a git command (one a killed integration started goes on) writes the index."""
    lock = anyio.Path(await _git_path(repo, "index.lock"))
    deadline = anyio.current_time() + INDEX_LOCK_WAIT_SECONDS
    while await lock.exists():
        if anyio.current_time() >= deadline:
            raise WorktreeError(
                f"the index of {repo.top} is locked ({lock} exists): a git command is running there, "
                "or one was killed. If none is running, delete that file and integrate again"
            )
        await anyio.sleep(_POLL_SECONDS)


async def _is_ancestor(repo: Repository, commit: str) -> bool:
    found = await run_git(["merge-base", "--is-ancestor", commit, "HEAD"], repo.top, check=False)
    return found.returncode == 0


async def _commit_made(repo: Repository, journal: Journal) -> str | None:
    """The journal's commit, if HEAD's history holds it.

    Killed while git commit ran, the journal has the message but not the commit: the commit is
    then the one on HEAD's first-parent line whose parent is the journal's base and whose message
    has every line of the journal's (a hook may have added to it).
    """
    if journal.commit is not None:
        return journal.commit if await _is_ancestor(repo, journal.commit) else None
    if journal.message is None or not await _is_ancestor(repo, journal.base):
        return None
    line = await run_git(["rev-list", "--first-parent", "--reverse", f"{journal.base}..HEAD"], repo.top)
    if not line.text:
        return None
    first = line.text.split("\n", 1)[0]
    parent = await run_git(["rev-parse", "--verify", "--quiet", f"{first}^1"], repo.top, check=False)
    if parent.text != journal.base:
        return None
    body = (await run_git(["log", "-1", "--format=%B", first], repo.top)).text
    wanted = [text for text in journal.message.splitlines() if text.strip()]
    return first if all(text in body.splitlines() for text in wanted) else None


async def _undo(repo: Repository, journal: Journal) -> None:
    """Put the journal's files back as HEAD has them, if they hold only the integration's changes."""
    if repo.head != journal.base:
        # The user has moved HEAD since (a commit, a reset): what is there now is theirs, and the
        # usual checks before an integration speak for it.
        logger.warning("HEAD of %s moved since an interrupted integration; its journal is dropped", repo.top)
        return
    paths = sorted(journal.files)
    staged = await run_git(
        ["diff-index", "--cached", "--name-only", "-z", "--no-renames", "HEAD", "--"], repo.top
    )
    foreign = sorted(set(split_z(staged.stdout)) - set(paths))
    head = await _blobs(repo, ["ls-tree", "-r", "-z", "--full-tree", "HEAD", "--"], paths)
    index = await _blobs(repo, ["ls-files", "--stage", "-z", "--"], paths)
    tree = await _working_blobs(repo, paths)
    for path in paths:
        ours = {head.get(path), *journal.files[path]}
        if index.get(path) not in ours or tree.get(path) not in ours:
            foreign.append(path)
    if foreign:
        raise WorktreeError(
            f"an integration into {repo.top} was interrupted before its commit, and these files have "
            f"changed since in ways that are not the integration's: {', '.join(sorted(set(foreign)))}. "
            "Nothing was changed. Commit them, or make them as HEAD has them (git restore --staged "
            "--worktree), then integrate again"
        )
    for start in range(0, len(paths), PATHS_PER_CALL):
        chunk = paths[start : start + PATHS_PER_CALL]
        await run_git(["--literal-pathspecs", "reset", "-q", "HEAD", "--", *chunk], repo.top)
        tracked = [path for path in chunk if path in head]
        if tracked:
            await run_git(["--literal-pathspecs", "checkout", "-q", "--", *tracked], repo.top)
    for path in paths:
        if path not in head:
            with contextlib.suppress(FileNotFoundError):
                await anyio.Path(repo.top / path).unlink()


async def _blobs(repo: Repository, command: list[str], paths: Sequence[str]) -> dict[str, str]:
    """path -> blob id, from ls-tree or ls-files --stage (`<mode> <type|blob> <id>...\\t<path>`)."""
    found: dict[str, str] = {}
    for start in range(0, len(paths), PATHS_PER_CALL):
        listed = await run_git(
            ["--literal-pathspecs", *command, *paths[start : start + PATHS_PER_CALL]], repo.top
        )
        for entry in split_z(listed.stdout):
            meta, _, path = entry.partition("\t")
            fields = meta.split()
            if command[0] == "ls-tree":
                found[path] = fields[2]
            elif fields[2] == "0":  # ls-files: only the merged entry; a conflict stage is never ours
                found[path] = fields[1]
    return found


async def _working_blobs(repo: Repository, paths: Sequence[str]) -> dict[str, str]:
    """path -> the blob git would store for the file in the working tree; absent files left out."""
    found: dict[str, str] = {}
    files: list[str] = []
    for path in paths:
        full = repo.top / path
        if full.is_symlink():
            target = os.fsencode(os.readlink(full))
            hashed = await run_git(
                ["hash-object", "-t", "blob", "--no-filters", "--stdin"], repo.top, input=target
            )
            found[path] = hashed.text
        elif full.is_file():
            files.append(path)
    for start in range(0, len(files), PATHS_PER_CALL):
        chunk = files[start : start + PATHS_PER_CALL]
        hashed = await run_git(["hash-object", "--stdin-paths"], repo.top, input="\n".join(chunk).encode())
        found.update(zip(chunk, hashed.text.split("\n"), strict=True))
    return found
