"""Where a worker's files live and how its process starts: as our child, or in a tmux session.

The engine decides which tasks get workers; this module only prepares an attempt (its prompt
file, a fresh result file, its environment) and starts it, handing back what the supervisor
needs. It records nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mcp_swarm.config import Mode
from mcp_swarm.distributed import start_in_tmux
from mcp_swarm.logtail import DEFAULT_MAX_LOG_BYTES, log_position
from mcp_swarm.models import TaskStatus, Worker, WorkerState, worker_name
from mcp_swarm.processes import ProcessStartError, start_process
from mcp_swarm.runtimes.base import Runtime, WorkerRequest
from mcp_swarm.supervision import Launch
from mcp_swarm.tmux import Tmux
from mcp_swarm.worker_io import own_file, without_links, worker_environment
from mcp_swarm.worker_wrapper import MAX_LOG_BYTES_VARIABLE


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
        """The directory of a worker's prompt, result file and exit statuses."""
        return self.state_dir / "workers" / worker_name(number)

    def request(
        self, number: int, task_id: str, prompt: str, model: str | None, cwd: Path | None = None
    ) -> WorkerRequest:
        files = self.files(number)
        return WorkerRequest(
            worker_id=worker_name(number),
            task_id=task_id,
            prompt=prompt,
            prompt_file=files / "prompt.md",
            result_file=files / "result.json",
            cwd=cwd or self.project_dir,
            model=model,
            swarm_db=self.db_path,
        )

    def shared_environment(self) -> dict[str, str]:
        """What every worker of one spawn inherits from ours: the allow-listed variables."""
        return worker_environment(os.environ, self.env_allow, {"SWARM_DB": str(self.db_path)})

    def checks_environment(self) -> dict[str, str]:
        """The environment of a task's validation commands: the same allow-list."""
        return worker_environment(os.environ, self.env_allow, {})

    async def start(
        self,
        number: int,
        attempt: int,
        runtime: Runtime,
        argv: list[str],
        request: WorkerRequest,
        shared_env: Mapping[str, str],
        mode: Mode,
    ) -> Launch:
        """Start one attempt. ProcessStartError or TmuxError if it cannot start."""
        log = self.log(number)
        self._refuse_links(log, request.prompt_file, request.result_file)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            request.prompt_file.parent.mkdir(parents=True, exist_ok=True)
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
        if mode == "distributed":
            # For the wrapper, which rotates the log; it takes the variable out of the worker's.
            env[MAX_LOG_BYTES_VARIABLE] = str(self.max_log_bytes)
            process, session = await start_in_tmux(
                self.tmux, request.worker_id, attempt, argv, cwd=request.cwd, env=env, log=log,
                files=self.files(number),
            )  # fmt: skip
            reader = runtime.reader(request)
            return Launch(number, attempt, process, reader, request, offset, session, log_id=log_id)
        process = await start_process(argv, cwd=request.cwd, env=env, output=log)
        return Launch(number, attempt, process, runtime.reader(request), request, offset, log_id=log_id)

    def _refuse_links(self, *paths: Path) -> None:
        """Refuse files of a worker reached through a symbolic link in the state directory.

        A worker may write there (in shared isolation the state directory is in its project): a link
        it planted would have us truncate, append to or delete a file of its choosing, anywhere.
        """
        for path in paths:
            if not without_links(path, self.state_dir):
                raise ProcessStartError(
                    f"cannot start a worker: {path} is reached through a symbolic link, which could "
                    f"lead outside {self.state_dir}; remove the link"
                )
            # A hard link is a name for a file that may lie anywhere on the file system.
            if not own_file(path):
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
