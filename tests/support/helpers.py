"""Small things several test modules need: a named pipe to read a child's lines from, a ledger
whose tasks are already run by workers, an engine running for a block, the ways a server is told
to stop, a private tmux socket, git run in a repository, and the names in a directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from mcp_swarm.engine.swarm import Swarm
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, now, worker_name
from mcp_swarm.store import Store

# Long enough for a slow machine, short enough that a broken test fails rather than hangs.
DEADLINE = 20.0

# How a server is told to stop: a process manager, a terminal closing, Ctrl-C, and a terminal
# closing (SIGHUP) followed by its shell's SIGTERM while the server is stopping.
STOP_SIGNAL_SEQUENCES = [
    pytest.param(signals, id="-then-".join(signum.name for signum in signals))
    for signals in [(signal.SIGTERM,), (signal.SIGHUP,), (signal.SIGINT,), (signal.SIGHUP, signal.SIGTERM)]
]


class Fifo:
    """A named pipe a child writes lines to, read without blocking the event loop."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        # Opened before the child starts, so its blocking open for writing finds a reader. Until a
        # writer has opened it, the pipe shows neither data nor hang-up.
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._buffer = b""

    async def line(self) -> str:
        with anyio.fail_after(DEADLINE):
            while b"\n" not in self._buffer:
                await anyio.wait_readable(self._fd)
                try:
                    chunk = os.read(self._fd, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise EOFError(f"the writer of {self.path} closed it (or died) before a whole line")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        os.close(self._fd)


async def assigned_workers(store: Store, count: int) -> list[int]:
    """`count` tasks, each in_progress under a live worker of its own, as spawn leaves them."""
    created = await Ledger(store).create_plan([PlanTask(subject=f"task {n}") for n in range(count)])
    task_ids = [int(task_id) for task_id in created.ids]
    at = now()
    async with store.write() as tx:
        numbers = await tx.workers.insert_many(task_ids, runtime="command", cwd="/", now=at, supervisor="1:1")
        await tx.workers.set_logs({number: f"/logs/{number}.log" for number in numbers.values()})
        await tx.tasks.assign({task_id: worker_name(number) for task_id, number in numbers.items()}, at)
    return [numbers[task_id] for task_id in task_ids]


@asynccontextmanager
async def running(swarm: Swarm, *, supervisor: str | None = None) -> AsyncGenerator[Swarm]:
    """`swarm` running (supervising its workers) until the block ends. `supervisor` ("pid:start
    time"), when given, is the server the engine says it is: one that is gone leaves its workers
    for the next engine on the database to adopt."""
    if supervisor is not None:
        swarm.supervisor = supervisor
    async with anyio.create_task_group() as group:
        await group.start(swarm.run)
        yield swarm
        group.cancel_scope.cancel()


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A tmux socket of the test's own, in a short directory (unix socket paths are limited)."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    directory = tempfile.mkdtemp(prefix="swarm-tmux-", dir="/tmp")
    path = os.path.join(directory, "tmux.sock")
    yield path
    subprocess.run(["tmux", "-S", path, "kill-server"], capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["here", "tmpfs"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory for logs, once pytest's own (ext4, XFS: a rotation collapses the log) and once
    on tmpfs, which collapses no range of a file, so that a rotation truncates there."""
    if request.param == "here":
        yield tmp_path
        return
    if not Path("/dev/shm").is_dir() or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm for a log on tmpfs")
    directory = tempfile.mkdtemp(dir="/dev/shm")
    yield Path(directory)
    shutil.rmtree(directory)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())
