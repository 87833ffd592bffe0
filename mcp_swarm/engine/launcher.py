"""A worker's attempt made ready to start: its files (the prompt, a fresh result file, the log)
and its environment. Where its process then lives is the placement's part (placement/).

The engine decides which tasks get workers; this module prepares each attempt, asks the
placement to start it, and hands back what the supervisor needs. It records nothing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

from mcp_swarm.config import allowed_environment
from mcp_swarm.engine.supervision import Launch
from mcp_swarm.errors import SwarmError
from mcp_swarm.models import worker_name
from mcp_swarm.placement.base import Placed, Placement, Start
from mcp_swarm.placement.logtail import FileId, log_position
from mcp_swarm.placement.processes import ProcessStartError
from mcp_swarm.runtimes.base import Runtime, WorkerRequest
from mcp_swarm.workspace.worktrees import WORKTREES_DIR

# What the swarm keeps in its state directory besides the database: logs, each worker's files
# (prompts, exit statuses), result files, the CLI's run locks, the HTTP server's token file.
STATE_ENTRIES = ("logs", "workers", "results", "runs", "token")
# SQLite's companions of the database file, made and removed as it works.
_DB_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass
class Attempt:
    """One attempt of a worker, ready to start: which worker, which attempt, and its command line.
    Once prepared: where its output begins in the log, and in which file."""

    number: int
    attempt: int
    argv: list[str]
    request: WorkerRequest
    # The attempt's token for the worker endpoint (its hash is in the database): in its environment.
    token: str | None = None
    offset: int = 0
    log_id: FileId | None = None


class Launcher:
    def __init__(
        self, *, state_dir: Path, project_dir: Path, db_path: Path, env_allow: Sequence[str]
    ) -> None:
        self.state_dir = state_dir
        self.project_dir = project_dir
        # Never given to a worker: only closed to it (state_paths).
        self.db_path = db_path
        self.env_allow = tuple(env_allow)
        # The server's worker endpoint (server/worker_endpoint.py), once it serves: workers reach
        # the swarm there with their attempt's token. None (an engine without a server): they
        # get neither, and agent runtimes register no swarm server.
        self.worker_url: str | None = None

    def log(self, number: int) -> Path:
        return self.state_dir / "logs" / f"{worker_name(number)}.log"

    def files(self, number: int) -> Path:
        """The directory of a worker's own files: the exit status of each attempt (written by its
        wrapper, see placement/wrapped.py), a prompt file (for a runtime that reads one), the logs
        of its task's checks. It is made when the first of them is to be written."""
        return self.state_dir / "workers" / worker_name(number)

    def start_file(self, number: int, attempt: int) -> Path:
        """Where a continued attempt's output begins in the log (see `attempt_start`)."""
        return self.files(number) / f"start-{attempt}.json"

    def attempt_start(self, number: int, attempt: int) -> tuple[int, FileId | None]:
        """Where the output of that attempt begins in the worker's log, and in which file: for a
        server that adopts it, so that its reader does not take an earlier attempt's final event
        for this one's. The first attempt begins the log."""
        if attempt == 1:
            return 0, None
        try:
            recorded = json.loads(self.start_file(number, attempt).read_text())
            offset, device, inode = recorded["offset"], *recorded["file"]
            return int(offset), (int(device), int(inode))
        except (OSError, ValueError, KeyError, TypeError):
            # Not written (a server older than this one started it): from the start, as before.
            return 0, None

    def result_file(self, number: int) -> Path:
        """Where a worker may write its result (`$SWARM_RESULT_FILE`), in a directory made once."""
        return self.state_dir / "results" / f"{worker_name(number)}.json"

    def request(
        self, number: int, task_id: str, prompt: str, model: str | None, cwd: Path | None = None
    ) -> WorkerRequest:
        files = self.files(number)
        return WorkerRequest(
            worker_id=worker_name(number),
            task_id=task_id,
            prompt=prompt,
            prompt_file=files / "prompt.md",
            result_file=self.result_file(number),
            cwd=cwd or self.project_dir,
            model=model,
            swarm_url=self.worker_url,
            state_paths=self.state_paths(cwd or self.project_dir),
        )

    def state_paths(self, cwd: Path) -> tuple[Path, ...]:
        """What a worker working in `cwd` must neither read nor write: the swarm's state. None of
        the paths holds `cwd`, so that a runtime can close each of them whole.

        The state directory, where it holds neither the worker's directory nor the project; else
        (a worktree inside it, or a database kept in the project's root or above it) the swarm's
        own entries in it, and the other workers' worktrees as they are now.
        """
        state, project = self.state_dir, self.project_dir
        if not _within(cwd, state) and not _within(project, state):
            return (state,)
        db = self.db_path
        entries = [db, *(db.with_name(db.name + suffix) for suffix in _DB_COMPANIONS)]
        entries += [state / name for name in STATE_ENTRIES]
        worktrees = state / WORKTREES_DIR
        if cwd.parent == worktrees:
            with contextlib.suppress(OSError):
                entries += sorted(path for path in worktrees.iterdir() if path != cwd)
        return tuple(entries)

    def shared_environment(self) -> dict[str, str]:
        """What every worker of one spawn inherits from ours: the allow-listed variables (never the
        database's path: a worker reaches the swarm through the endpoint only)."""
        return allowed_environment(os.environ, self.env_allow, {})

    def checks_environment(self) -> dict[str, str]:
        """The environment of a task's validation commands: the same allow-list."""
        return allowed_environment(os.environ, self.env_allow, {})

    async def start(
        self, attempts: Sequence[Attempt], runtime: Runtime, placement: Placement
    ) -> list[Launch | SwarmError]:
        """Start each attempt in `placement`; for each, its Launch, or why it could not start."""
        shared_env = self.shared_environment()
        starts = [
            Start(
                worker_name(attempt.number),
                attempt.attempt,
                attempt.argv,
                attempt.request.cwd,
                self.log(attempt.number),
                self.files(attempt.number),
                functools.partial(self._prepare, attempt, runtime, shared_env),
            )
            for attempt in attempts
        ]
        placed = await placement.start(starts)
        return [
            self._launch(attempt, runtime, placement, result) if isinstance(result, Placed) else result
            for attempt, result in zip(attempts, placed, strict=True)
        ]

    def _launch(self, attempt: Attempt, runtime: Runtime, placement: Placement, placed: Placed) -> Launch:
        request = attempt.request
        return Launch(
            attempt.number, attempt.attempt, placed.process, runtime.reader(request), request, attempt.offset,
            placement, session=placed.session, attach=placed.attach, log_id=attempt.log_id,
        )  # fmt: skip

    def _prepare(
        self, attempt: Attempt, runtime: Runtime, shared_env: Mapping[str, str], theirs: Sequence[Path]
    ) -> dict[str, str]:
        """An attempt's files, made afresh with the placement's own (`theirs`), and its environment;
        ProcessStartError if they cannot be made. Notes in `attempt` where its output will begin
        in the log, and in which file. It runs in whichever thread the placement starts it in."""
        number, request = attempt.number, attempt.request
        log = self.log(number)
        # The agent CLIs take the prompt as an argument: a prompt file is made only for a command
        # line that names it, as a new inode costs every worker a tenth of a millisecond or more.
        writes_prompt = any(str(request.prompt_file) in arg for arg in attempt.argv)
        # A continued attempt appends to the log: where it begins is kept for a server that adopts it.
        start = [self.start_file(number, attempt.attempt)] if attempt.attempt > 1 else []
        ours = [log, request.result_file, *([request.prompt_file] if writes_prompt else []), *start, *theirs]
        try:
            self._make_ours(ours)
            if writes_prompt:
                _write_new(request.prompt_file, request.prompt)
            request.result_file.unlink(missing_ok=True)
            # A later attempt appends to the same log; its reader must start after the earlier output.
            attempt.offset, attempt.log_id = log_position(log)
            if start:
                _write_new(start[0], json.dumps({"offset": attempt.offset, "file": list(attempt.log_id)}))
        except OSError as exc:
            raise ProcessStartError(f"cannot start a worker: cannot write its files: {exc}") from exc
        endpoint = (
            {"SWARM_URL": request.swarm_url, "SWARM_TOKEN": attempt.token}
            if request.swarm_url is not None and attempt.token is not None
            else {}
        )
        return runtime.environment(
            {
                **shared_env,
                "SWARM_TASK_ID": request.task_id,
                "SWARM_WORKER_ID": request.worker_id,
                "SWARM_RESULT_FILE": str(request.result_file),
                **endpoint,
            }
        )

    def _make_ours(self, files: Sequence[Path]) -> None:
        """Make the directories of a worker's files, and refuse files reached through a link.

        A worker may write in the state directory (in shared isolation it is in its project): a
        link it planted would have us truncate, append to or delete a file of its choosing,
        anywhere. One lstat per name below the state directory: this is on spawn's hot path.
        """
        for directory in dict.fromkeys(path.parent for path in files):
            current = self.state_dir
            for part in directory.relative_to(self.state_dir).parts:
                current = current / part
                try:
                    mode = os.lstat(current).st_mode
                except FileNotFoundError:
                    with contextlib.suppress(FileExistsError):  # made meanwhile by another server
                        os.mkdir(current)
                    mode = os.lstat(current).st_mode
                if S_ISLNK(mode) or not S_ISDIR(mode):
                    raise ProcessStartError(
                        f"cannot start a worker: {directory} is reached through a symbolic link or "
                        f"is no directory, which could lead outside {self.state_dir}; remove it"
                    )
        for path in files:
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue
            if S_ISLNK(stat.st_mode):
                raise ProcessStartError(
                    f"cannot start a worker: {path} is reached through a symbolic link, which could "
                    f"lead outside {self.state_dir}; remove the link"
                )
            # A hard link is a name for a file that may lie anywhere on the file system.
            if not S_ISREG(stat.st_mode) or stat.st_nlink != 1:
                raise ProcessStartError(
                    f"cannot start a worker: {path} is not a file of its own (a hard link, or no "
                    "regular file); remove it"
                )


def _write_new(path: Path, text: str) -> None:
    """Write `path` as a new file: whatever was planted at its name is unlinked, never written."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents
