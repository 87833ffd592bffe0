"""Finding a worker's processes by the id each carries in its environment (SWARM_WORKER_ID).

A process's environment as it started is readable in /proc/<pid>/environ, and it outlives every
change of process group, session or parent: it is how a worker is found whose pid was never
recorded (its server died in between), and what it left behind when its wrapper was killed before
it could stop them (see placement/wrapped.py). Processes of other users cannot be read and are
left out.
"""

from __future__ import annotations

import logging
import os
import signal

import anyio

from mcp_swarm.placement.processes import (
    EXITED,
    FIRST_LOOK,
    KILL_TIMEOUT,
    LAST_LOOK,
    PROC,
    ProcessIdentity,
    all_processes,
    read_stat,
)

logger = logging.getLogger(__name__)


def session_leaders_with(variable: str, value: str) -> list[ProcessIdentity]:
    """Live session leaders whose environment has `variable=value`, as started (/proc/<pid>/environ).

    This finds a worker whose pid was never recorded (its server died between starting it and
    writing the pid down): every worker leads its own session and carries its id in its
    environment. Processes of other users cannot be read and are left out.
    """
    wanted = f"{variable}={value}".encode()
    return [
        ProcessIdentity(pid, stat.start_time)
        for pid, stat in all_processes()
        if stat.sid == pid and stat.state not in EXITED and _carries(pid, wanted)
    ]


def _carries(pid: int, wanted: bytes) -> bool:
    """Whether process `pid` started with the environment entry `wanted`; False if unreadable."""
    try:
        return wanted in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def strays(variable: str, value: str, since: int) -> list[int]:
    """Live processes started at or after `since` whose environment has `variable=value`.

    What a worker left behind when its wrapper was killed before it could stop them (see
    placement/wrapped.py): they were re-parented away from the wrapper, and may have left its
    process group and session too, but they carry the worker's id in the environment they started
    with. Processes of other users cannot be read and are left out, and so is this one.
    """
    wanted = f"{variable}={value}".encode()
    me = os.getpid()
    return sorted(
        pid
        for pid, stat in all_processes()
        if pid != me and stat.start_time >= since and stat.state not in EXITED and _carries(pid, wanted)
    )


async def kill_strays(variable: str, value: str, since: int) -> None:
    """SIGKILL the `strays` until none is left (or KILL_TIMEOUT passes): they are owed no grace,
    as the wrapper that would have given it is gone."""
    with anyio.move_on_after(KILL_TIMEOUT):
        delay = FIRST_LOOK
        while found := await anyio.to_thread.run_sync(strays, variable, value, since):
            for pid in found:
                _kill_if_still(pid, variable, value, since)
            await anyio.sleep(delay)
            delay = min(2 * delay, LAST_LOOK)


def _kill_if_still(pid: int, variable: str, value: str, since: int) -> None:
    """SIGKILL `pid` if it is still that stray: through a pidfd opened before looking again, so
    that a pid reused meanwhile is never hit."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # gone already (or no pidfds here: it is left rather than risk another process)
    try:
        stat = read_stat(pid)
        if stat is not None and stat.start_time >= since and _carries(pid, f"{variable}={value}".encode()):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        logger.warning("no permission to send SIGKILL to %d", pid)
    finally:
        os.close(pidfd)
