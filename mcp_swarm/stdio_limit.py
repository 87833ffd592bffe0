"""One MCP message on stdio is at most MAX_MESSAGE_BYTES: the server never holds a larger one.

The SDK's stdio transport reads a line at a time, all of it, then decodes and parses it: a client
that sends one line of hundreds of megabytes (a runaway TaskCreatePlan, a bug) has the server
hold it several times over (measured: 1 GB resident for one line of 200 MB). The SDK takes the
stream it reads as an argument, so the cap is a reader of ours in front of it rather than a fork:
lines up to the limit pass whole; a longer one is dropped as it comes, never kept, and if it was a
request its caller gets an error for its id rather than waiting for ever.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.from_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError, RequestId

logger = logging.getLogger(__name__)

# Far above what an agent sends in one call (a model's whole output is a few hundred KB), and
# what a plan of a thousand tasks with long descriptions comes to.
MAX_MESSAGE_BYTES = 16 << 20
_READ_BYTES = 1 << 16
# Kept of a dropped line's start and end: where a request's method and id are.
_KEPT = 4096
_ID = rb'(-?[0-9]{1,18}|"(?:[^"\\]|\\.){0,200}")'
# The Python SDK writes the id first, the TypeScript one last, after the params; a "method" before
# any nested value makes it a request (a response to one of ours has none).
_ID_FIRST = re.compile(rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*' + _ID)
_ID_LAST = re.compile(rb'"id"\s*:\s*' + _ID + rb'\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}\s*$')
_REQUEST = re.compile(rb'\s*\{[^{}\[\]]*"method"\s*:')

LifespanT = TypeVar("LifespanT")


class BoundedStdioServer(MCPServer[LifespanT]):
    """An MCPServer whose stdio transport takes no message over MAX_MESSAGE_BYTES."""

    async def run_stdio_async(self) -> None:
        async with bounded_stdio_server() as (read_stream, write_stream):
            server = self._lowlevel_server
            await server.run(read_stream, write_stream, server.create_initialization_options())


@asynccontextmanager
async def bounded_stdio_server(limit: int = MAX_MESSAGE_BYTES) -> AsyncGenerator[tuple[Any, Any]]:
    """The SDK's `stdio_server`, reading stdin through `BoundedLines`."""
    # The SDK moves fd 0 aside itself only when it opens stdin: we do it here, so that nothing else
    # (a child that inherits it) reads the client's messages. fd 1 it still does itself.
    wire = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    os.dup2(devnull, 0)
    os.close(devnull)
    lines = BoundedLines(wire, limit)
    text = io.TextIOWrapper(io.BufferedReader(lines, _READ_BYTES), encoding="utf-8", errors="replace")
    try:
        async with stdio_server(stdin=anyio.wrap_file(text)) as (read_stream, write_stream):

            def refuse(request: RequestId, size: int) -> None:
                message = (
                    f"refused: this message is {size} bytes, and one may be at most {limit} "
                    f"({limit >> 20} MiB); send less at once (a large plan in several TaskCreatePlan calls)"
                )
                error = JSONRPCError(
                    jsonrpc="2.0", id=request, error=ErrorData(code=INVALID_REQUEST, message=message)
                )
                # Called in the thread that reads stdin; the answer goes out with the others.
                anyio.from_thread.run(write_stream.send, SessionMessage(error))

            lines.refuse = refuse
            yield read_stream, write_stream
    finally:
        # Back as it was; the duplicate stays open, as the SDK leaves its own: a reading thread may
        # still be blocked on it, and a closed descriptor could be reused under it.
        os.dup2(wire, 0)


class BoundedLines(io.RawIOBase):
    """The bytes of a stream with every line longer than `limit` taken out as it comes."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__()
        self.refuse: Callable[[RequestId, int], None] | None = None
        self._fd = fd
        self._limit = limit
        self._ready = bytearray()  # whole lines, to hand out from `_given` on
        self._given = 0
        self._line = bytearray()  # the line being read, while it is within the limit
        self._dropping = False
        self._dropped = 0
        self._head = b""
        self._tail = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._given == len(self._ready) and not self._ended:
            self._ready.clear()
            self._given = 0
            self._take(os.read(self._fd, _READ_BYTES))
        count = min(len(buffer), len(self._ready) - self._given)
        buffer[:count] = self._ready[self._given : self._given + count]
        self._given += count
        return count

    def _take(self, data: bytes) -> None:
        if not data:
            self._ended = True
            if self._dropping:
                self._end_of_dropped()
            else:
                self._ready += self._line  # a last line without its newline
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if self._dropping:
                self._drop(piece)
            elif len(self._line) + len(piece) > self._limit:
                # Only the start of it is kept: no copy of the whole line.
                self._head = bytes(self._line[:_KEPT]) + piece[: max(0, _KEPT - len(self._line))]
                self._dropping, self._dropped = True, len(self._line)
                self._line.clear()
                self._drop(piece)
            else:
                self._line += piece
            if end < 0:
                return
            if self._dropping:
                self._end_of_dropped()
            else:
                self._ready += self._line
                self._ready += b"\n"
                self._line.clear()
            start = end + 1

    def _drop(self, piece: bytes) -> None:
        self._dropped += len(piece)
        self._tail = (self._tail + piece)[-_KEPT:] if len(piece) < _KEPT else piece[-_KEPT:]

    def _end_of_dropped(self) -> None:
        request = _request_id(self._head, self._tail)
        logger.warning("dropped a message of %d bytes, over the limit of %d", self._dropped, self._limit)
        if request is not None and self.refuse is not None:
            self.refuse(request, self._dropped)
        self._dropping, self._dropped, self._head, self._tail = False, 0, b"", b""


def _request_id(head: bytes, tail: bytes) -> RequestId | None:
    """The id of the request a dropped line was, if its start and end show it; None otherwise."""
    if not _REQUEST.match(head):
        return None
    found = _ID_FIRST.match(head) or _ID_LAST.search(tail)
    if found is None:
        return None
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return None
    return value if isinstance(value, int | str) else None
