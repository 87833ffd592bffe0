"""Workers in detached tmux sessions (distributed mode): each outlives the server that started it.

The session runs the worker under `mcp_swarm.placement.worker_wrapper`, which appends its output
to the worker's log (and shows it in the pane, for `tmux attach`), rotates that log, and writes
its exit status to a file of the attempt when it ends. The server watches the wrapper's pid (a
pidfd: it is tmux's child, not ours) and reads the exit status from that file, so the verdict is
the same whichever server sees the end: the one that started the worker, or one that adopted it
after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mcp_swarm.config import DEFAULT_MAX_LOG_BYTES
from mcp_swarm.errors import SwarmError
from mcp_swarm.models import TaskStatus, Worker, WorkerState
from mcp_swarm.placement.base import (
    LogFollower,
    Placed,
    Placement,
    Start,
    recorded_identity,
    stop_recorded,
)
from mcp_swarm.placement.logtail import FileId, LogTail
from mcp_swarm.placement.processes import (
    AdoptedProcess,
    ProcessIdentity,
    ProcessStartError,
    is_running,
    stop_group,
)
from mcp_swarm.placement.tmux import Tmux, TmuxError, session_name
from mcp_swarm.placement.worker_wrapper import MAX_LOG_BYTES_VARIABLE
from mcp_swarm.placement.wrapped import exit_status_of, status_file


def _process(identity: ProcessIdentity, status: Path) -> AdoptedProcess:
    return AdoptedProcess(identity, exit_status_of(status))


class TmuxSessions(Placement):
    outlives_server = True

    def __init__(self, tmux: Tmux, *, max_log_bytes: int = DEFAULT_MAX_LOG_BYTES) -> None:
        self.tmux = tmux
        self.max_log_bytes = max_log_bytes

    def __repr__(self) -> str:
        return f"TmuxSessions({self.tmux!r})"

    async def start(self, starts: Sequence[Start]) -> list[Placed | SwarmError]:
        results: list[Placed | SwarmError] = []
        for start in starts:
            try:
                results.append(await self._start(start))
            except (ProcessStartError, TmuxError) as exc:
                results.append(exc)
        return results

    async def _start(self, start: Start) -> Placed:
        """Start the attempt in its own session.

        The session is kept once the worker has ended (its pane shows the output), so that a failed
        worker can be inspected; it is removed when the task is completed or the worker closed.
        """
        status = status_file(start.files, start.attempt)
        env = start.prepare([status])
        # For the wrapper, which rotates the log; it takes the variable out of the worker's.
        env[MAX_LOG_BYTES_VARIABLE] = str(self.max_log_bytes)
        session = session_name(start.worker_id)
        status.unlink(missing_ok=True)
        # A session kept from an earlier attempt of this worker has the same name.
        await self.tmux.kill_session(session)
        started = await self.tmux.start(
            session, start.argv, cwd=start.cwd, env=env, log=start.log, status=status, keep=True
        )
        return Placed(_process(started.identity, status), session, self.tmux.attach_command(session))

    async def adopt(self, worker: Worker, files: Path, grace: float, *, keep: bool) -> Placed | str:
        # Its wrapper records the exit status, so one that ended while no server ran is judged as
        # if it had been watched.
        status = status_file(files, worker.attempt)
        ended = exit_status_of(status)() is not None
        identity = recorded_identity(worker)
        if identity is not None and keep and (ended or is_running(identity)):
            return Placed(_process(identity, status), worker.tmux_session)
        # Its wrapper's pid was never recorded (the server died while starting it), or it is gone
        # with no exit status: the session, if any, is ended before the task is freed, so that the
        # task never runs twice at once.
        await self.tmux.kill_session(worker.tmux_session or session_name(worker.id))
        if identity is not None:
            await stop_group(identity, identity.pid, grace)
        return "its tmux session ended with no exit status while no server ran; its task is pending again"

    async def stop(self, worker: Worker, files: Path, grace: float) -> None:
        await stop_recorded(worker, grace)
        if worker.tmux_session is not None:
            # Running, or kept after a failure for inspection: closing removes it.
            await self.tmux.kill_session(worker.tmux_session)

    async def finished(self, session: str | None, *, completed: bool) -> None:
        # A completed worker's session has nothing more to show; a failed one is kept for
        # inspection (tmux attach) until close_agent.
        if session is not None and completed:
            await self.tmux.kill_session(session)

    def follow_log(
        self,
        log: Path,
        feed: Callable[[str], None],
        *,
        offset: int,
        file_id: FileId | None,
        max_bytes: int,
    ) -> LogFollower:
        # The wrapper is the log's only writer, and rotates it itself.
        return LogTail(log, feed, offset=offset, file_id=file_id, max_bytes=None)

    def attach_hint(self, worker: Worker) -> str | None:
        """How to watch a worker's session: while it runs, and after a failure (it is kept)."""
        # Completed, closed or lost: its session was removed. Any other is running or kept.
        gone = worker.task_status is TaskStatus.COMPLETED or worker.state in (
            WorkerState.CANCELLED,
            WorkerState.LOST,
        )
        if worker.tmux_session is None or gone:
            return None
        return self.tmux.attach_command(worker.tmux_session)
