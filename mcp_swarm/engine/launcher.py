"""Where a worker's files live and how its process starts: as our child, or in a tmux session.

The engine decides which tasks get workers; this module only prepares an attempt (its prompt
file, a fresh result file, its environment) and starts it, handing back what the supervisor
needs. It records nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

import anyio

from mcp_swarm.config import DEFAULT_MAX_LOG_BYTES, Mode, allowed_environment
from mcp_swarm.engine.supervision import Launch
from mcp_swarm.models import TaskStatus, Worker, WorkerState, worker_name
from mcp_swarm.placement.distributed import start_in_tmux, status_file
from mcp_swarm.placement.logtail import FileId, log_position
from mcp_swarm.placement.processes import ProcessIdentity, ProcessStartError, StartedChild, start_child, watch
from mcp_swarm.placement.tmux import Tmux, TmuxError
from mcp_swarm.placement.worker_wrapper import MAX_LOG_BYTES_VARIABLE
from mcp_swarm.runtimes.base import Runtime, WorkerRequest


@dataclass(frozen=True)
class Attempt:
    """One attempt of a worker, ready to start: which worker, which attempt, and its command line."""

    number: int
    attempt: int
    argv: list[str]
    request: WorkerRequest


class Launcher:
    def __init__(
        self,
        *,
        state_dir: Path,
        project_dir: Path,
        db_path: Path,
        env_allow: Sequence[str],
        tmux: Tmux,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
    ) -> None:
        self.state_dir = state_dir
        self.max_log_bytes = max_log_bytes
        self.project_dir = project_dir
        self.db_path = db_path
        self.env_allow = tuple(env_allow)
        self.tmux = tmux

    def log(self, number: int) -> Path:
        return self.state_dir / "logs" / f"{worker_name(number)}.log"

    def files(self, number: int) -> Path:
        """The directory of the files only some workers have: a prompt file (for a runtime that
        reads one), the exit statuses of a tmux worker, the logs of its task's checks. It is made
        when one of them is written: a directory per worker would cost every worker an inode."""
        return self.state_dir / "workers" / worker_name(number)

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
            swarm_db=self.db_path,
        )

    def shared_environment(self) -> dict[str, str]:
        """What every worker of one spawn inherits from ours: the allow-listed variables."""
        return allowed_environment(os.environ, self.env_allow, {"SWARM_DB": str(self.db_path)})

    def checks_environment(self) -> dict[str, str]:
        """The environment of a task's validation commands: the same allow-list."""
        return allowed_environment(os.environ, self.env_allow, {})

    async def start(
        self, attempts: Sequence[Attempt], runtime: Runtime, shared_env: Mapping[str, str], mode: Mode
    ) -> list[Launch | ProcessStartError | TmuxError]:
        """Start each attempt; for each, its Launch, or why it could not start."""
        if mode == "distributed":
            results: list[Launch | ProcessStartError | TmuxError] = []
            for attempt in attempts:
                try:
                    results.append(await self._start_in_tmux(attempt, runtime, shared_env))
                except (ProcessStartError, TmuxError) as exc:
                    results.append(exc)
            return results
        # A local worker's files and process are made in a thread, so that the event loop records
        # the ends of the last wave meanwhile. What the kernel does for the files (a new inode is
        # 100-300 us here) runs beside it; fork and exec do not, as CPython's fork_exec keeps the
        # interpreter's lock until the child has executed (measured: 0.28 ms a worker).
        started = await anyio.to_thread.run_sync(self._start_children, attempts, runtime, shared_env)
        return [
            result if isinstance(result, ProcessStartError) else self._launch(attempt, runtime, *result)
            for attempt, result in zip(attempts, started, strict=True)
        ]

    def _start_children(
        self, attempts: Sequence[Attempt], runtime: Runtime, shared_env: Mapping[str, str]
    ) -> list[tuple[StartedChild, ProcessIdentity, int, FileId] | ProcessStartError]:
        started: list[tuple[StartedChild, int, FileId] | ProcessStartError] = []
        for attempt in attempts:
            try:
                env, offset, log_id = self._prepare(attempt, runtime, shared_env, "local")
                request = attempt.request
                child = start_child(attempt.argv, cwd=request.cwd, env=env, output=self.log(attempt.number))
            except ProcessStartError as exc:
                started.append(exc)
            else:
                started.append((child, offset, log_id))
        # Identified once all are started (see StartedChild.identify).
        identified: list[tuple[StartedChild, ProcessIdentity, int, FileId] | ProcessStartError] = []
        for result in started:
            if isinstance(result, ProcessStartError):
                identified.append(result)
            else:
                child, offset, log_id = result
                identified.append((child, child.identify(), offset, log_id))
        return identified

    def _launch(
        self,
        attempt: Attempt,
        runtime: Runtime,
        child: StartedChild,
        identity: ProcessIdentity,
        offset: int,
        log_id: FileId,
    ) -> Launch:
        number, request = attempt.number, attempt.request
        reader = runtime.reader(request)
        process = watch(child, identity)
        return Launch(number, attempt.attempt, process, reader, request, offset, log_id=log_id)

    async def _start_in_tmux(
        self, attempt: Attempt, runtime: Runtime, shared_env: Mapping[str, str]
    ) -> Launch:
        env, offset, log_id = self._prepare(attempt, runtime, shared_env, "distributed")
        # For the wrapper, which rotates the log; it takes the variable out of the worker's.
        env[MAX_LOG_BYTES_VARIABLE] = str(self.max_log_bytes)
        number, request = attempt.number, attempt.request
        process, session = await start_in_tmux(
            self.tmux, request.worker_id, attempt.attempt, attempt.argv, cwd=request.cwd, env=env,
            log=self.log(number), files=self.files(number),
        )  # fmt: skip
        reader = runtime.reader(request)
        return Launch(number, attempt.attempt, process, reader, request, offset, session, log_id=log_id)

    def _prepare(
        self, attempt: Attempt, runtime: Runtime, shared_env: Mapping[str, str], mode: Mode
    ) -> tuple[dict[str, str], int, FileId]:
        """An attempt's files, made afresh (ProcessStartError if they cannot be), and its environment;
        where its output will begin in the log, and in which file."""
        number, request = attempt.number, attempt.request
        log = self.log(number)
        # The agent CLIs take the prompt as an argument: a prompt file is made only for a command
        # line that names it, as a new inode costs every worker a tenth of a millisecond or more.
        writes_prompt = any(str(request.prompt_file) in arg for arg in attempt.argv)
        ours = [log, request.result_file, *([request.prompt_file] if writes_prompt else [])]
        if mode == "distributed":  # its wrapper writes the exit status
            ours.append(status_file(self.files(number), attempt.attempt))
        try:
            self._make_ours(ours)
            if writes_prompt:
                _write_new(request.prompt_file, request.prompt)
            request.result_file.unlink(missing_ok=True)
            # A later attempt appends to the same log; its reader must start after the earlier output.
            offset, log_id = log_position(log)
        except OSError as exc:
            raise ProcessStartError(f"cannot start a worker: cannot write its files: {exc}") from exc
        env = runtime.environment(
            {
                **shared_env,
                "SWARM_TASK_ID": request.task_id,
                "SWARM_WORKER_ID": request.worker_id,
                "SWARM_RESULT_FILE": str(request.result_file),
            }
        )
        return env, offset, log_id

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

    def attach_hint(self, worker: Worker) -> str | None:
        """How to watch a worker's tmux session: while it runs, and after a failure (it is kept)."""
        # Completed, closed or lost: its session was removed. Any other is running or kept.
        gone = worker.task_status is TaskStatus.COMPLETED or worker.state in (
            WorkerState.CANCELLED,
            WorkerState.LOST,
        )
        if worker.tmux_session is None or gone:
            return None
        return self.tmux.attach_command(worker.tmux_session)


def _write_new(path: Path, text: str) -> None:
    """Write `path` as a new file: whatever was planted at its name is unlinked, never written."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
