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
from mcp_swarm.models import TaskStatus, Worker, WorkerState, worker_name
from mcp_swarm.processes import start_process
from mcp_swarm.runtimes.base import Runtime, WorkerRequest
from mcp_swarm.supervision import Launch
from mcp_swarm.tmux import Tmux
from mcp_swarm.worker_io import worker_environment


class Launcher:
    def __init__(
        self, *, state_dir: Path, project_dir: Path, db_path: Path, env_allow: Sequence[str], tmux: Tmux
    ) -> None:
        self.state_dir = state_dir
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
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
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
        request.prompt_file.parent.mkdir(parents=True, exist_ok=True)
        request.prompt_file.write_text(request.prompt, encoding="utf-8")
        request.result_file.unlink(missing_ok=True)
        log = self.log(number)
        # A later attempt appends to the same log; its reader must start after the earlier output.
        offset = log.stat().st_size if log.exists() else 0
        env = runtime.environment(
            {
                **shared_env,
                "SWARM_TASK_ID": request.task_id,
                "SWARM_WORKER_ID": request.worker_id,
                "SWARM_RESULT_FILE": str(request.result_file),
            }
        )
        if mode == "distributed":
            process, session = await start_in_tmux(
                self.tmux, request.worker_id, attempt, argv, cwd=request.cwd, env=env, log=log,
                files=self.files(number),
            )  # fmt: skip
            return Launch(number, attempt, process, runtime.reader(request), request, offset, session)
        process = await start_process(argv, cwd=request.cwd, env=env, output=log)
        return Launch(number, attempt, process, runtime.reader(request), request, offset)

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
