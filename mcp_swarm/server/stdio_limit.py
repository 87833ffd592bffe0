"""One MCP message on stdio is at most MAX_MESSAGE_BYTES: the server never holds a larger one.

The SDK's stdio transport reads a line at a time, all of it, then decodes and parses it: a client
that sends one line of hundreds of megabytes (a runaway TaskCreatePlan, a bug) has the server
hold it several times over (measured: 1 GB resident for one line of 200 MB). The SDK takes the
stream it reads as an argument, so the cap is in our reader of the wire (server/stdio_wire.py) rather
than a fork: lines up to the limit pass whole; a longer one is dropped as it comes, never kept,
and if it was a request its caller gets an error for its id rather than waiting for ever.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque

from mcp_types import RequestId

logger = logging.getLogger(__name__)

# Far above what an agent sends in one call (a model's whole output is a few hundred KB), and
# what a plan of a thousand tasks with long descriptions comes to.
MAX_MESSAGE_BYTES = 16 << 20
# Kept of a dropped line's start and end: where a request's method and id are.
_KEPT = 4096
_ID = rb'(-?[0-9]{1,18}|"(?:[^"\\]|\\.){0,200}")'
# The Python SDK writes the id first, the TypeScript one last, after the params; a "method" before
# any nested value makes it a request (a response to one of ours has none).
_ID_FIRST = re.compile(rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*' + _ID)
_ID_LAST = re.compile(rb'"id"\s*:\s*' + _ID + rb'\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}\s*$')
_REQUEST = re.compile(rb'\s*\{[^{}\[\]]*"method"\s*:')


class BoundedLines:
    """Splits the bytes of the wire into lines, with every line longer than `limit` taken out as
    it comes: of such a line only its first and last few KiB are kept, to answer its request."""

    def __init__(self, limit: int) -> None:
        self.ended = False
        self._limit = limit
        self._ready: deque[bytes] = deque()  # whole lines, newline included
        self._refusals: list[tuple[RequestId, int]] = []
        self._line = bytearray()  # the line being read, while it is within the limit
        self._dropping = False
        self._dropped = 0
        self._head = b""
        self._tail = b""

    def next_line(self) -> bytes | None:
        return self._ready.popleft() if self._ready else None

    def take_refusals(self) -> list[tuple[RequestId, int]]:
        """(id, size) of each request left out since the last call: each is to be answered."""
        refusals, self._refusals = self._refusals, []
        return refusals

    def take(self, data: bytes) -> None:
        """Take what was read; empty at the end of the stream."""
        if not data:
            self.ended = True
            if self._dropping:
                self._end_of_dropped()
            elif self._line:
                self._ready.append(bytes(self._line))  # a last line without its newline
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
                self._line += b"\n"
                self._ready.append(bytes(self._line))
                self._line.clear()
            start = end + 1

    def _drop(self, piece: bytes) -> None:
        self._dropped += len(piece)
        self._tail = (self._tail + piece)[-_KEPT:] if len(piece) < _KEPT else piece[-_KEPT:]

    def _end_of_dropped(self) -> None:
        request = _request_id(self._head, self._tail)
        logger.warning("dropped a message of %d bytes, over the limit of %d", self._dropped, self._limit)
        if request is not None:
            self._refusals.append((request, self._dropped))
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
