"""Workers as children of the server: started in a thread under the worker wrapper, watched
through a pidfd, and stopped with their whole process group when the server stops.

Each worker runs under the wrapper in direct mode (see wrapped.py): the wrapper leads the
worker's session and process group, its output goes straight to the log, and when it ends the
wrapper stops whatever it left running and writes its exit status to a file of the attempt.

A server that dies leaves its children running; the next one adopts each by its recorded pid
and start time, or, if the pid was never written, by the id each worker carries in its
environment. A worker that ended meanwhile left its exit status, and is judged from it (and its
log and result file) as if it had been watched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio

from mcp_swarm.errors import SwarmError
from mcp_swarm.models import LIVE_WORKER_STATES, Worker
from mcp_swarm.placement.base import Placed, Placement, Start, recorded_identity, stop_recorded
from mcp_swarm.placement.by_environment import kill_strays, session_leaders_with
from mcp_swarm.placement.processes import (
    AdoptedProcess,
    ProcessIdentity,
    ProcessStartError,
    StartedChild,
    is_running,
    watch,
)
from mcp_swarm.placement.wrapped import (
    WORKER_KEY_VARIABLE,
    WrappedProcess,
    exit_status_of,
    start_wrapped,
    status_file,
    worker_key,
)


class LocalChildren(Placement):
    async def start(self, starts: Sequence[Start]) -> list[Placed | SwarmError]:
        # A worker's files and process are made in a thread, so that the event loop records the
        # ends of the last wave meanwhile. What the kernel does for the files (a new inode is
        # 100-300 us here) runs beside it; fork and exec do not, as CPython's fork_exec keeps the
        # interpreter's lock until the child has executed (measured: 0.28 ms a worker).
        started = await anyio.to_thread.run_sync(_start_children, starts)
        placed: list[Placed | SwarmError] = []
        for start, result in zip(starts, started, strict=True):
            if isinstance(result, ProcessStartError):
                placed.append(result)
            else:
                status = status_file(start.files, start.attempt)
                placed.append(Placed(WrappedProcess(watch(*result), status, worker=True)))
        return placed

    async def adopt(self, worker: Worker, files: Path, grace: float, *, keep: bool) -> Placed | str:
        status = status_file(files, worker.attempt)
        ended = exit_status_of(status)() is not None
        identity = locate(worker, files)
        if identity is None and ended:
            # It ended while no server ran: its wrapper recorded how, and the engine judges it from
            # that, its log and its result file, as the server that started it would have.
            identity = recorded_identity(worker)
        if identity is None:
            return "its process was gone when the server restarted; its task is pending again"
        process = WrappedProcess(AdoptedProcess(identity, exit_status=lambda: None), status, worker=True)
        if keep:
            return Placed(process)
        await process.stop(grace)
        return f"its runtime {worker.runtime!r} is no longer configured; it was stopped after a restart"

    async def stop(self, worker: Worker, files: Path, grace: float) -> None:
        await stop_recorded(worker, grace)
        if worker.state in LIVE_WORKER_STATES and worker.pid_start_time is not None:
            # Its wrapper stops what the worker left when the worker ends; if the wrapper was killed
            # first, what is left is found by the worker's key (another server's worker included).
            await kill_strays(WORKER_KEY_VARIABLE, worker_key(files), worker.pid_start_time)

    async def finished(self, session: str | None, *, completed: bool) -> None:
        """Nothing is left of a child that has ended."""


def _start_children(
    starts: Sequence[Start],
) -> list[tuple[StartedChild, ProcessIdentity] | ProcessStartError]:
    started: list[StartedChild | ProcessStartError] = []
    for start in starts:
        status = status_file(start.files, start.attempt)
        try:
            env = {**start.prepare((status,)), WORKER_KEY_VARIABLE: worker_key(start.files)}
            status.unlink(missing_ok=True)
            child = start_wrapped(start.argv, cwd=start.cwd, env=env, output=start.log, status=status)
        except ProcessStartError as exc:
            started.append(exc)
        except OSError as exc:
            reason = f"cannot start a worker: cannot remove {status}: {exc.strerror}"
            started.append(ProcessStartError(reason))
        else:
            started.append(child)
    # Identified once all are started (see StartedChild.identify).
    return [
        result if isinstance(result, ProcessStartError) else (result, result.identify()) for result in started
    ]


def locate(worker: Worker, files: Path) -> ProcessIdentity | None:
    """The worker's process (its wrapper) if it still runs: by its recorded identity, else by its
    environment."""
    if worker.pid is not None and worker.pid_start_time is not None:
        identity = ProcessIdentity(worker.pid, worker.pid_start_time)
        return identity if is_running(identity) else None
    # Started, but its pid never recorded: the server died in between. Every worker's wrapper leads
    # its own session and carries its key; an attempt ends before the next one starts, so there
    # is at most one.
    found = session_leaders_with(WORKER_KEY_VARIABLE, worker_key(files))
    return found[0] if len(found) == 1 else None
