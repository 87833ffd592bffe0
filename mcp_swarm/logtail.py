"""Following a worker's log as it grows, line by line, in bounded memory.

The worker writes its log itself (nothing flows through the server), so the server reads the
file behind it. A worker may print gigabytes, or megabytes with no newline (a progress bar that
only uses carriage returns): the reader holds at most one chunk and one unfinished line, and a
line longer than `max_line` is skipped rather than kept; the log still has it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20
# A claude stream-json event with a large tool result can run to a few MB on one line.
MAX_LINE_BYTES = 8 << 20


class LogTail:
    def __init__(
        self,
        path: Path,
        feed: Callable[[str], None],
        *,
        offset: int = 0,
        max_line: int = MAX_LINE_BYTES,
        chunk: int = CHUNK_BYTES,
    ) -> None:
        self.path = path
        self.offset = offset
        self._feed = feed
        self._max_line = max_line
        self._chunk = chunk
        self._pending = bytearray()
        self._skipping = False
        self._handle: BinaryIO | None = None

    def read_some(self) -> bool:
        """Read and feed one chunk of new output; False when there was none."""
        if self._handle is None:
            try:
                self._handle = self.path.open("rb")
            except OSError:
                return False
            self._handle.seek(self.offset)
        data = self._handle.read(self._chunk)
        if not data:
            return False
        self.offset += len(data)
        # A carriage return ends a line too, as on a terminal: a progress bar that only returns the
        # carriage is then many short lines, and what it prints last stands on a line of its own.
        data = data.replace(b"\r", b"\n")
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False  # the end of the overlong line: drop it, carry on
            else:
                self._pending += data[start:end]
                self._emit()
            start = end + 1
        rest = len(data) - start
        if not self._skipping:
            if len(self._pending) + rest > self._max_line:
                self._pending.clear()
                self._skipping = True
            else:
                self._pending += data[start:]
        return True

    def drain(self) -> None:
        """Read everything written so far, then the unfinished last line: the process has ended."""
        while self.read_some():
            pass
        if self._pending and not self._skipping:
            self._emit()
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _emit(self) -> None:
        line = self._pending.decode("utf-8", errors="replace")
        self._pending.clear()
        self._feed(line)
