"""The server's stdin and stdout, read and written on the event loop: no thread per message.

The SDK's stdio transport reads each line in a worker thread and writes each message in two more
(write, then flush): three hops between threads per tool call, each a wake-up of the event loop
and a turn at the interpreter's lock, while the workers' supervisors want both. When stdin and
stdout are pipes or sockets (as when an MCP client starts the server) they are made
non-blocking, and the event loop's own poll says when to read and write. Anything else (a file,
a terminal) is read and written in a thread as before.

The SDK takes the two streams as arguments (`anyio.AsyncFile[str]`), and calls nothing of them
but iteration over the lines of one and `write`/`flush` of the other: those are what the classes
here provide, so no SDK internals are touched.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import stat
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio import AsyncFile, CancelScope
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError, RequestId

from mcp_swarm.errors import SwarmError
from mcp_swarm.server.stdio_limit import MAX_MESSAGE_BYTES, BoundedLines

_READ_BYTES = 1 << 16

# What a process manager, a closed terminal and Ctrl-C send: each ends the server as the end of
# its input does, through the lifespan's way out (local workers stopped, their tasks pending).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

logger = logging.getLogger(__name__)

LifespanT = TypeVar("LifespanT")


class BoundedStdioServer(MCPServer[LifespanT]):
    """An MCPServer on stdio that reads and writes on the event loop and takes no message over
    MAX_MESSAGE_BYTES (server/stdio_limit.py).

    `preflight`, if given, runs before the transport opens: a domain error from it (a state file
    that is not a database, a worker that does not exist) ends the process at once with one line
    on stderr and exit status 2, as the command line's other refusals do. Were it left to the
    lifespan, the transport, already reading stdin, would answer nothing and wait for the client.
    """

    def __init__(
        self, *args: Any, preflight: Callable[[], Awaitable[object]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._preflight = preflight

    # The signal that ended the server, if one did: `serve` exits with 128 + its number.
    stopped_by: signal.Signals | None = None

    async def preflight(self) -> None:
        """The check before any transport opens (over HTTP too); a domain error if it fails."""
        if self._preflight is not None:
            await self._preflight()

    async def run_stdio_async(self) -> None:
        """Serve until the client closes stdin or a stop signal arrives, then leave the same way.

        The signals stay caught until the server is out, so a second one (a terminal sends SIGHUP,
        then its shell SIGTERM) cannot cut the way out short.
        """
        try:
            await self.preflight()
        except SwarmError as exc:
            print(f"mcp-swarm: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with anyio.create_task_group() as group:
                group.start_soon(self._stop_on_signal, signals, group.cancel_scope)
                async with bounded_stdio_server() as (read_stream, write_stream):
                    server = self._lowlevel_server
                    await server.run(read_stream, write_stream, server.create_initialization_options())
                group.cancel_scope.cancel()

    async def _stop_on_signal(self, signals: AsyncIterator[signal.Signals], scope: CancelScope) -> None:
        async for signum in signals:
            logger.info("%s received: stopping", signum.name)
            self.stopped_by = signum
            scope.cancel()
            return


@asynccontextmanager
async def bounded_stdio_server(limit: int = MAX_MESSAGE_BYTES) -> AsyncGenerator[tuple[Any, Any]]:
    """The SDK's `stdio_server`, on our reader and writer of the wire."""
    answer: list[Callable[[SessionMessage], Awaitable[None]]] = []

    async def refuse(request: RequestId, size: int) -> None:
        message = (
            f"refused: this message is {size} bytes, and one may be at most {limit} "
            f"({limit >> 20} MiB); send less at once (a large plan in several TaskCreatePlan calls)"
        )
        error = JSONRPCError(
            jsonrpc="2.0", id=request, error=ErrorData(code=INVALID_REQUEST, message=message)
        )
        await answer[0](SessionMessage(error))

    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # The SDK moves fd 0 and 1 aside itself only for streams it opens: here, so that nothing
        # else (a child that inherits them, a stray print) reads or writes the client's messages.
        with claimed(0, null) as (stdin, stdin_polled), claimed(1, 2) as (stdout, stdout_polled):
            reader = WireReader(stdin, stdin_polled, limit, refuse)
            writer = WireWriter(stdout, stdout_polled)
            async with stdio_server(stdin=reader, stdout=writer) as (read_stream, write_stream):
                answer.append(write_stream.send)
                yield read_stream, write_stream
    finally:
        os.close(null)


def _pollable(fd: int) -> bool:
    """Whether the event loop can poll `fd`: a pipe or a socket (a regular file it cannot)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextmanager
def claimed(fd: int, diversion: int) -> Generator[tuple[int, bool]]:
    """Take the wire away from `fd`: a private duplicate of it, and whether that is polled.

    `fd` itself then points at `diversion` (the null device for stdin, stderr for stdout), so a
    child that inherits it, or a stray print, cannot read or write the client's messages. On the
    way out it points at the wire again, with its flags as they were. The duplicate stays open, as
    the SDK leaves its own: a thread (the fallback) may still be blocked on it, and a closed
    descriptor could be reused under it.
    """
    wire = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(diversion, fd)
    flags = fcntl.fcntl(wire, fcntl.F_GETFL)
    polled = _pollable(wire)
    if polled:
        # On the open pipe, which the client made for this server: a terminal or a file shared
        # with other programs is never made non-blocking.
        fcntl.fcntl(wire, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        yield wire, polled
    finally:
        fcntl.fcntl(wire, fcntl.F_SETFL, flags)
        os.dup2(wire, fd)


class WireReader(AsyncFile[str]):
    """The client's messages, one line each, with every line over the limit left out (see
    server/stdio_limit.py); `refused` hears of each request left out, to answer it."""

    def __init__(
        self, fd: int, polled: bool, limit: int, refused: Callable[[RequestId, int], Awaitable[None]]
    ) -> None:
        super().__init__(os.fdopen(fd, "r", encoding="utf-8", closefd=False))
        self._fd = fd
        self._polled = polled
        self._lines = BoundedLines(limit)
        self._refused = refused

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            while (line := self._lines.next_line()) is not None:
                yield line.decode("utf-8", errors="replace")
            for request, size in self._lines.take_refusals():
                await self._refused(request, size)
            if self._lines.ended:
                return
            self._lines.take(await self._read())

    async def _read(self) -> bytes:
        if not self._polled:
            # Abandoned on cancellation: a thread blocked in read cannot be stopped, and must not
            # hold up the server's exit.
            return await anyio.to_thread.run_sync(_read_blocking, self._fd, abandon_on_cancel=True)
        while True:
            try:
                return os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)


class WireWriter(AsyncFile[str]):
    """The server's messages to the client, each written whole before the next."""

    def __init__(self, fd: int, polled: bool) -> None:
        super().__init__(os.fdopen(fd, "w", encoding="utf-8", closefd=False))
        self._fd = fd
        self._polled = polled

    async def write(self, b: Any) -> int:
        data = b.encode("utf-8") if isinstance(b, str) else bytes(b)
        if not self._polled:
            await anyio.to_thread.run_sync(_write_all, self._fd, data)
            return len(b)
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                # The client is slow to read: only this message's writer waits, not the loop.
                await anyio.wait_writable(self._fd)
        return len(b)

    async def flush(self) -> None:
        return  # nothing is buffered here


def _read_blocking(fd: int) -> bytes:
    try:
        return os.read(fd, _READ_BYTES)
    except OSError as exc:
        if exc.errno == errno.EIO:  # a terminal that was closed: the end of the input
            return b""
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
