"""Recovery: the live workers a dead server left behind are adopted or declared lost.

A server that dies (SIGKILL, a crash, the machine's OOM killer) leaves rows of workers that are
still `starting` or `running`, supervised by nobody. A server goes through them when it starts
on the database, and every PEER_LOOK seconds while it runs (`watch_peers`), so that a server
that dies while another one keeps running on the same file (two Mayor sessions) has its workers
taken over within seconds, not at the next start:

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

A server is dead when its process (pid and start time) is gone, so nothing is ever adopted
behind a running server's back. The adopting server's Mayor is handed the adopted workers'
results, as those of its own workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from mcp_swarm.engine.verdicts import Verdict
from mcp_swarm.models import TaskStatus, Worker, WorkerState
from mcp_swarm.placement.base import Placed, Placement
from mcp_swarm.placement.processes import supervisor_alive
from mcp_swarm.store import Store

logger = logging.getLogger(__name__)

# How often a running server looks for the live workers of servers that died meanwhile: a peer's
# death is noticed within this, plus the time its workers' placement takes to find them.
PEER_LOOK = 2.0


@dataclass(frozen=True)
class Recovered:
    adopted: list[str]
    lost: list[str]
    seconds: float
    # The other servers, still running, that supervise live workers: while none of them dies and
    # no worker row changes, looking again would find nothing (see watch_peers).
    peers: frozenset[str] = frozenset()


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
    at_start: bool = True,
) -> Recovered:
    """Adopt or declare lost the live workers of servers that are gone.

    `supervisor` names this server; a worker's mode picks its placement in `placements`, `files`
    gives a worker's own directory, and only a worker whose runtime is in `runtimes` can be
    judged. `adopt` supervises a worker taken back; `record` writes the verdict on a lost one.
    `at_start` says, for the log, whether this server is starting or found a peer dead.
    """
    began = time.perf_counter()
    adopted: list[str] = []
    lost: list[str] = []
    # Looked up once per server, not once per worker: one server may have left hundreds. The
    # servers are read first, in one small query: while all of them run (every look of a peer
    # watch but those after a death), no worker row is read at all.
    async with store.read(snapshot=False) as tx:
        supervisors = await tx.workers.live_by_supervisor()
    alive: dict[str | None, bool] = {supervisor: True}
    gone: list[str] = []
    for name in supervisors:
        if name not in alive:
            alive[name] = supervisor_alive(name)
            if not alive[name]:
                gone.append(_pid_of(name))
    live: list[Worker] = []
    if gone:
        async with store.read(snapshot=False) as tx:
            live = await tx.workers.live()
    for worker in live:
        if worker.supervisor not in alive:
            alive[worker.supervisor] = supervisor_alive(worker.supervisor)
            if not alive[worker.supervisor]:
                gone.append(_pid_of(worker.supervisor))
        if alive[worker.supervisor]:
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
    peers = frozenset(name for name, running in alive.items() if running and name not in (None, supervisor))
    recovered = Recovered(adopted, lost, time.perf_counter() - began, peers)
    if adopted or lost:
        logger.warning(
            "%s in %.3f s: adopted %d (%s), lost %d (%s)",
            "recovered after a restart"
            if at_start
            else f"took over the workers of servers that died (pid {_some(gone)})",
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


def _pid_of(supervisor: str | None) -> str:
    return "unknown" if supervisor is None else supervisor.partition(":")[0]


async def watch_peers(
    store: Store, look: Callable[[], Awaitable[Recovered]], *, every: float = PEER_LOOK
) -> None:
    """Run `look` (a `recover` of this server) every `every` seconds until cancelled.

    A look is skipped while nothing could have changed: no commit to the file since the last one
    began (SQLite's data_version) and every other server it saw still runs (a /proc look each).
    A look that fails (the database locked by another process for longer than its timeout, say)
    is logged and tried again at the next: it must never end the server.
    """
    last: tuple[int, frozenset[str]] | None = None
    while True:
        await anyio.sleep(every)
        try:
            # Read before the look: a commit while it reads changes the version, and is looked at next.
            version = await store.data_version()
            if last is not None and last[0] == version and all(map(supervisor_alive, last[1])):
                continue
            last = None
            last = (version, (await look()).peers)
        except Exception as exc:  # any failure of one look: the next one tries again
            logger.warning("looking for the workers of servers that are gone failed: %s", exc)
