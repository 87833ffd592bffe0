"""The floor under bench_swarm: the same Mayor's loop over stdio, against a server with no state.

What any server of the tool contract pays for each worker, and nothing more: a JSON-RPC round trip
for `spawn` and for `wait` (over mcp-swarm's own stdio transport), the process started in a
thread in a session of its own with stdin from /dev/null, a log file of its own, and its end seen
through a pidfd. No database, no assignment, no dependencies (the client runs the waves one after
the other), no verdicts, no checks. bench_swarm runs the same swarm through it beside mcp-swarm and
xargs: mcp-swarm's time over this one's is what its engine costs; this one's over xargs is what
MCP and starting processes from CPython cost anyway, which no engine can win back.

Started by bench_swarm (`_run_bare`) as `python -m benchmarks.bare_server LOG_DIR PROGRAM [ARG...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from mcp_swarm.server.stdio_wire import BoundedStdioServer

# The child is never waited for by this server's own code while it runs (its pidfd says when it
# ended), so Popen's own bookkeeping is all the state kept per worker.
Child = subprocess.Popen[bytes]


class BareSwarm:
    """Starts `argv` once per queued run, at most max_workers at a time, and counts the ends."""

    def __init__(self, argv: list[str], logs: Path) -> None:
        self._argv = argv
        self._logs = logs
        self._queued = 0
        self._started = 0
        self._live: dict[int, Child] = {}
        self._ended = 0
        self._failed = 0
        self._changed = anyio.Event()

    def queue(self, count: int) -> int:
        self._queued += count
        return self._queued

    async def spawn(self, max_workers: int) -> int:
        count = min(self._queued, max(0, max_workers - len(self._live)))
        self._queued -= count
        first = self._started + 1
        self._started += count
        children = await anyio.to_thread.run_sync(self._start, range(first, first + count))
        loop = asyncio.get_running_loop()
        for child in children:
            pidfd = os.pidfd_open(child.pid)
            self._live[child.pid] = child
            loop.add_reader(pidfd, self._on_end, loop, child, pidfd)
        return count

    def _start(self, numbers: range) -> list[Child]:
        children: list[Child] = []
        for number in numbers:
            log = self._logs / f"worker-{number}.log"
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                children.append(
                    subprocess.Popen(
                        self._argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True
                    )
                )
            finally:
                os.close(fd)
        return children

    def _on_end(self, loop: asyncio.AbstractEventLoop, child: Child, pidfd: int) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        del self._live[child.pid]
        if child.wait() != 0:  # it has ended: wait() only reaps it
            self._failed += 1
        self._ended += 1
        self._changed.set()

    async def wait(self) -> dict[str, int]:
        """Returns once a run has ended since the last wait: how many ended, failed, still run."""
        while not self._ended:
            self._changed = anyio.Event()
            await self._changed.wait()
        ended, failed, self._ended, self._failed = self._ended, self._failed, 0, 0
        return {"ended": ended, "failed": failed, "running": len(self._live)}


def serve(logs: Path, argv: list[str]) -> None:
    swarm = BareSwarm(argv, logs)
    server: BoundedStdioServer[Any] = BoundedStdioServer("mcp-swarm-bench-bare")

    @server.tool()
    def queue(count: int) -> dict[str, int]:  # pyright: ignore[reportUnusedFunction]
        """Add `count` runs of the program to the queue."""
        return {"queued": swarm.queue(count)}

    @server.tool()
    async def spawn(maxWorkers: int) -> dict[str, int]:  # pyright: ignore[reportUnusedFunction]
        """Start queued runs until maxWorkers run."""
        return {"started": await swarm.spawn(maxWorkers)}

    @server.tool()
    async def wait() -> dict[str, int]:  # pyright: ignore[reportUnusedFunction]
        """Wait until a run has ended."""
        return await swarm.wait()

    server.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve on stdio until the client goes away."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("logs", type=Path, help="the directory for the runs' logs")
    parser.add_argument(
        "program", nargs=argparse.REMAINDER, help="the program each run starts, and its arguments"
    )
    args = parser.parse_args(argv)
    if not args.program:
        parser.error("a program to run is needed")
    serve(args.logs, args.program)
    return 0


if __name__ == "__main__":
    sys.exit(main())
