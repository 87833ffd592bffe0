"""Recovery at start-up: the live workers a dead server left behind are adopted or declared lost.

A server that dies (SIGKILL, a crash, the machine's OOM killer) leaves rows of workers that are
still `starting` or `running`, supervised by nobody. The next server to start on the database
goes through them:

- a worker whose supervisor still runs belongs to that server (two Mayor sessions on one file),
  and is left alone;
- otherwise the new server claims it with a compare-and-set on its `supervisor`, so that of two
  servers starting at once exactly one adopts each worker;
- a claimed worker whose process still runs (the recorded pid with the recorded start time, or,
  if the pid was never written, the session leader carrying its id in its environment) is
  supervised as if this server had started it, and its verdict is recorded once, when it ends;
- a claimed worker whose process is gone became `lost`: its task goes back to `pending` (the
  attempt stays counted in its history) for the Mayor to spawn again.

This is explicit, once, at start-up: nothing is adopted behind a running server's back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp_swarm.engine.verdicts import Verdict
from mcp_swarm.models import TaskStatus, Worker, WorkerState
from mcp_swarm.placement.distributed import exit_status_of, status_file, tmux_process
from mcp_swarm.placement.processes import (
    AdoptedProcess,
    ProcessIdentity,
    is_running,
    session_leaders_with,
    stop_group,
    supervisor_alive,
)
from mcp_swarm.placement.tmux import session_name

if TYPE_CHECKING:
    from mcp_swarm.engine.swarm import Swarm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    adopted: list[str]
    lost: list[str]
    seconds: float


def recorded_identity(worker: Worker) -> ProcessIdentity | None:
    if worker.pid is None or worker.pid_start_time is None:
        return None
    return ProcessIdentity(worker.pid, worker.pid_start_time)


def locate(worker: Worker) -> ProcessIdentity | None:
    """The worker's process if it still runs: by its recorded identity, else by its environment."""
    if worker.pid is not None and worker.pid_start_time is not None:
        identity = ProcessIdentity(worker.pid, worker.pid_start_time)
        return identity if is_running(identity) else None
    # Started, but its pid never recorded: the server died in between. Every worker leads its own
    # session and carries SWARM_WORKER_ID; an attempt ends before the next one starts, so there is
    # at most one.
    found = session_leaders_with("SWARM_WORKER_ID", worker.id)
    return found[0] if len(found) == 1 else None


async def recover(swarm: Swarm) -> Recovered:
    began = time.perf_counter()
    adopted: list[str] = []
    lost: list[str] = []
    async with swarm.store.read(snapshot=False) as tx:
        live = await tx.workers.live()
    for worker in live:
        if worker.supervisor == swarm.supervisor or supervisor_alive(worker.supervisor):
            continue
        async with swarm.store.write() as tx:
            claimed = await tx.workers.claim(
                worker.number,
                attempt=worker.attempt,
                previous=worker.supervisor,
                supervisor=swarm.supervisor,
            )
        if not claimed:
            continue  # another server took it first
        if await _adopt(swarm, worker):
            adopted.append(worker.id)
        else:
            lost.append(worker.id)
    recovered = Recovered(adopted, lost, time.perf_counter() - began)
    if adopted or lost:
        logger.warning(
            "recovered after a restart in %.3f s: adopted %d (%s), lost %d (%s)",
            recovered.seconds,
            len(adopted),
            _some(adopted),
            len(lost),
            _some(lost),
        )
    return recovered


def _some(names: list[str], shown: int = 10) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


async def _adopt(swarm: Swarm, worker: Worker) -> bool:
    number = worker.number
    if worker.mode == "distributed":
        return await _adopt_distributed(swarm, worker, number)
    identity = locate(worker)
    if identity is not None and worker.runtime in swarm.runtimes:
        process = AdoptedProcess(identity, exit_status=lambda: None)
        await swarm.adopt(worker, process, record_pid=worker.pid is None)
        return True
    if identity is not None:
        # Running, but its runtime is no longer configured: nothing could judge its output.
        await stop_group(identity, identity.pid, swarm.limits.stop_grace_seconds)
        error = f"its runtime {worker.runtime!r} is no longer configured; it was stopped after a restart"
    else:
        error = "its process was gone when the server restarted; its task is pending again"
    await swarm.record(Verdict(number, worker.attempt, WorkerState.LOST, TaskStatus.PENDING, error=error))
    return False


async def _adopt_distributed(swarm: Swarm, worker: Worker, number: int) -> bool:
    """A worker in a tmux session: its wrapper records the exit status, so one that ended while no
    server ran is judged as if it had been watched."""
    files = swarm.launcher.files(number)
    ended = exit_status_of(status_file(files, worker.attempt))() is not None
    identity = recorded_identity(worker)
    if identity is not None and worker.runtime in swarm.runtimes and (ended or is_running(identity)):
        await swarm.adopt(worker, tmux_process(identity, files, worker.attempt), record_pid=False)
        return True
    # Its wrapper's pid was never recorded (the server died while starting it), or it is gone
    # with no exit status: the session, if any, is ended before the task is freed, so that the
    # task never runs twice at once.
    await swarm.tmux.kill_session(worker.tmux_session or session_name(worker.id))
    if identity is not None:
        await stop_group(identity, identity.pid, swarm.limits.stop_grace_seconds)
    error = "its tmux session ended with no exit status while no server ran; its task is pending again"
    await swarm.record(Verdict(number, worker.attempt, WorkerState.LOST, TaskStatus.PENDING, error=error))
    return False
