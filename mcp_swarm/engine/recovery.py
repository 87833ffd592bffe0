"""Recovery at start-up: the live workers a dead server left behind are adopted or declared lost.

A server that dies (SIGKILL, a crash, the machine's OOM killer) leaves rows of workers that are
still `starting` or `running`, supervised by nobody. The next server to start on the database
goes through them:

- a worker whose supervisor still runs belongs to that server (two Mayor sessions on one file),
  and is left alone;
- otherwise the new server claims it with a compare-and-set on its `supervisor`, so that of two
  servers starting at once exactly one adopts each worker;
- a claimed worker whose process its placement finds still running (for a child of the server:
  the recorded pid with the recorded start time, or, if the pid was never written, the session
  leader carrying its id in its environment) is supervised as if this server had started it,
  and its verdict is recorded once, when it ends;
- a claimed worker whose process is gone became `lost`: its task goes back to `pending` (the
  attempt stays counted in its history) for the Mayor to spawn again.

This is explicit, once, at start-up: nothing is adopted behind a running server's back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_swarm.engine.verdicts import Verdict
from mcp_swarm.models import TaskStatus, Worker, WorkerState
from mcp_swarm.placement.base import Placed, Placement
from mcp_swarm.placement.processes import supervisor_alive
from mcp_swarm.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    adopted: list[str]
    lost: list[str]
    seconds: float


async def recover(
    store: Store,
    supervisor: str,
    *,
    placements: Mapping[str, Placement],
    files: Callable[[int], Path],
    runtimes: Container[str],
    grace: float,
    adopt: Callable[[Worker, Placed], Awaitable[None]],
    record: Callable[[Verdict], Awaitable[bool]],
) -> Recovered:
    """Adopt or declare lost the live workers of servers that are gone.

    `supervisor` names this server; a worker's mode picks its placement in `placements`, `files`
    gives a worker's own directory, and only a worker whose runtime is in `runtimes` can be
    judged. `adopt` supervises a worker taken back; `record` writes the verdict on a lost one.
    """
    began = time.perf_counter()
    adopted: list[str] = []
    lost: list[str] = []
    async with store.read(snapshot=False) as tx:
        live = await tx.workers.live()
    for worker in live:
        if worker.supervisor == supervisor or supervisor_alive(worker.supervisor):
            continue
        async with store.write() as tx:
            claimed = await tx.workers.claim(
                worker.number,
                attempt=worker.attempt,
                previous=worker.supervisor,
                supervisor=supervisor,
            )
        if not claimed:
            continue  # another server took it first
        placement = placements[worker.mode]
        found = await placement.adopt(worker, files(worker.number), grace, keep=worker.runtime in runtimes)
        if isinstance(found, Placed):
            await adopt(worker, found)
            adopted.append(worker.id)
        else:
            await record(
                Verdict(worker.number, worker.attempt, WorkerState.LOST, TaskStatus.PENDING, error=found)
            )
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
