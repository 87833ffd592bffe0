"""Small things several test modules need: a named pipe to read a child's lines from, a ledger
whose tasks are already run by workers, a private tmux socket, git run in a repository, and the
names in a directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, now, worker_name
from mcp_swarm.store import Store

# Long enough for a slow machine, short enough that a broken test fails rather than hangs.
DEADLINE = 20.0


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


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())
