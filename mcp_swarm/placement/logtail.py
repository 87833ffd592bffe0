"""Following a worker's log as it grows, line by line, in bounded memory, and bounding it on disk.

The worker writes its log itself (nothing flows through the server), so the server reads the
file behind it. A worker may print gigabytes, or megabytes with no newline (a progress bar that
only uses carriage returns): the reader holds at most one chunk and one unfinished line, and a
line longer than `max_line` is skipped rather than kept; the log still has it.

Rotation. Past `max_bytes`, the older output moves to `<log>.1` (replacing an older one) and the
log starts over, so a worker costs about twice the limit on disk. Who rotates depends on who
writes:

- A local worker writes through its own descriptor, opened O_APPEND, which nobody else can move
  to a new file. So the follower rotates as logrotate's copytruncate does: it copies the newest
  `max_bytes` to `<log>.1` (in the kernel: copy_file_range), then takes them out of the log; the
  worker's next write, being an append, lands after what is left. The follower must be the one,
  rather than the worker's output running through a pipe to us: a local worker outlives a server
  that dies (the next one adopts it), and a pipe would kill it with SIGPIPE. Taking the copied
  part out is atomic where the file system collapses a range of a file (ext4, XFS): nothing is
  lost. Elsewhere the log is truncated, and what the worker writes between the last look at its
  size and the truncation is lost: the copy catches up with the worker until a look finds nothing
  new, and the cut follows at once, so only a worker that never pauses can lose anything (the
  middle of a flood, not the line it writes before it exits). Either way the limit is checked at
  the follower's looks (five a second, and at once again after a rotation): a worker that writes
  faster passes it in between by what it writes meanwhile. When the worker has ended, the log
  keeps its last words (`settle`).
- A tmux worker's output runs through its wrapper (placement/worker_wrapper.py), the log's only writer,
  which renames the log to `<log>.1` and opens a new one: exact, and nothing is lost.

Either way the follower sees the file it reads become `<log>.1`: it reads that to its end, then
the log from its start. Of a rotated file it is behind in, it reads only the last TAIL_BYTES: the
runtimes' verdicts are in the last lines (a final event), and the middle of a flood that passed
the limit is not worth parsing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from mcp_swarm.placement.logtimes import FileId, TimesWriter, id_of, path_id

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# A claude stream-json event with a large tool result can run to a few MB on one line.
MAX_LINE_BYTES = 8 << 20
# The worker writes on while the older output is copied: what it added meanwhile is copied too,
# this many times at most (each round a few hundred microseconds), before the log is cut.
_CATCH_UP_ROUNDS = 64
# How much of a rotated file is read when we are behind in it: its last lines, a final event.
TAIL_BYTES = 256 << 10
_SKIPPED = b"\n[mcp-swarm: output skipped here while the log was rotated]\n"

# A worker can write in the state directory: a link it planted at one of these names must not
# have us read, copy over or truncate a file of its choosing.
_NO_LINKS = os.O_NOFOLLOW | os.O_CLOEXEC


# What a look at a worker's last words reads: the end of its log, never the whole file.
LAST_LINES_BYTES = 8 << 10
# A line of a tail shown to a person or the Mayor is cut to this many characters.
LAST_LINE_CHARS = 200


def last_lines(log: Path | None, count: int) -> list[str]:
    """The last `count` non-blank lines a worker printed, each cut to LAST_LINE_CHARS; read from the
    end of its log, through no link. Empty if there is no log (it never printed, or was removed)."""
    if log is None or count < 1:
        return []
    fd = _open(log)
    if fd is None:
        return []
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, LAST_LINES_BYTES, max(0, size - LAST_LINES_BYTES))
    except OSError:
        return []
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if size > LAST_LINES_BYTES and lines:
        lines = lines[1:]  # the first may be the end of a line cut in two by the read
    return [_cut(line) for line in lines[-count:]]


def _cut(line: str) -> str:
    return line if len(line) <= LAST_LINE_CHARS else line[: LAST_LINE_CHARS - 1] + "…"


def rotated_path(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def log_position(log: Path) -> tuple[int, FileId]:
    """Where output written from now on begins: the log's size and the file, created if need be.

    The file is named by its identity, not only its path, because a tmux worker's wrapper may
    rotate it before the follower first opens it; the follower then finds it at `<log>.1`.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _NO_LINKS, 0o600)
    try:
        stat = os.fstat(fd)
    finally:
        os.close(fd)
    return stat.st_size, (stat.st_dev, stat.st_ino)


class LogTail:
    def __init__(
        self,
        path: Path,
        feed: Callable[[str], None],
        *,
        offset: int = 0,
        file_id: FileId | None = None,
        max_bytes: int | None = None,
        max_line: int = MAX_LINE_BYTES,
        chunk: int = CHUNK_BYTES,
    ) -> None:
        """`offset` is where to start in the file `file_id` (the log, if not given). With
        `max_bytes`, this follower rotates the log itself (see `rotate`)."""
        self.path = path
        self.offset = offset
        self.rotations = 0
        self._first_id = file_id
        self._max_bytes = max_bytes
        self._feed = feed
        self._max_line = max_line
        self._chunk = chunk
        self._pending = bytearray()
        self._skipping = False
        self._handle: int | None = None
        self._handle_id: FileId | None = None
        # Whether the log carries on exactly where the rotated file being read ends. Not after a
        # truncation of ours while the worker wrote: the cut may fall inside one of its writes, whose
        # rest is lost, and the next line must not be glued to half of that one.
        self._log_follows_on = True
        self._warned = False
        # When each stretch was read, beside the log: `mcp-swarm logs` stamps its lines with it.
        self._times = TimesWriter(path, rotated_path(path))

    # -- reading ----------------------------------------------------------------------------

    def read_some(self) -> bool:
        """Read and feed one chunk of new output; False when there was none."""
        # A rotated file read to its end leads to the next one; more than two hops in one look
        # would mean rotations faster than we can open files, and the next look carries on.
        for _ in range(3):
            if self._handle is None and not self._open_first():
                return False
            assert self._handle is not None  # noqa: S101 - open, or _open_first() just opened it
            live = path_id(self.path) == self._handle_id
            if not live:
                self._skip_to_tail()
            data = os.pread(self._handle, self._chunk, self.offset)
            if data:
                self._times.seen(self._handle_id, live, self.offset, self.offset + len(data), time.time())
                self.offset += len(data)
                self._take(data)
                return True
            if live or not self._move_on():
                return False
        return False

    def drain(self) -> None:
        """Read everything written so far, then the unfinished last line: the process has ended."""
        while self.read_some():
            pass
        self.finish()

    def finish(self) -> None:
        """Feed the unfinished last line, and let go of the file."""
        if self._pending and not self._skipping:
            self._emit()
        self.close()
        self._times.close()

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None

    def _take(self, data: bytes) -> None:
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

    def _emit(self) -> None:
        line = self._pending.decode("utf-8", errors="replace")
        self._pending.clear()
        self._feed(line)

    def _switch(self, fd: int, offset: int, *, continuous: bool) -> None:
        """Read `fd` from `offset` on. Not `continuous`: what it holds does not follow on from what
        was read so far, so an unfinished line is dropped."""
        self.close()
        self._handle, self._handle_id, self.offset = fd, id_of(os.fstat(fd)), offset
        if not continuous:
            self._pending.clear()
            self._skipping = False

    def _open_first(self) -> bool:
        fd = _open(self.path)
        if fd is None:
            return False  # not written yet
        first = self._first_id
        if first is None or id_of(os.fstat(fd)) == first:
            # A log shorter than where we were told to start was cut meanwhile: all of it is new.
            offset = self.offset if self.offset <= os.fstat(fd).st_size else 0
            self._switch(fd, offset, continuous=True)
            return True
        # The file this attempt began in was rotated before we got to it. (A file system may give
        # its inode, once it is deleted, to a newer log, which then passes for it: only a flood of
        # twice the limit before our first look does that, and all it costs is the middle of it.)
        older = _open(rotated_path(self.path))
        if older is not None and id_of(os.fstat(older)) == first:
            os.close(fd)
            self._switch(older, self.offset, continuous=True)
        elif older is not None:
            os.close(fd)
            self._switch(older, 0, continuous=False)  # rotated twice: the newer one
        else:
            self._switch(fd, 0, continuous=False)
        return True

    def _move_on(self) -> bool:
        """The rotated file being read is done: on to `<log>.1` if a later rotation put another
        file there, else to the log. False if there is neither."""
        newer = _open(rotated_path(self.path))
        if newer is not None:
            newer_id = id_of(os.fstat(newer))
            if newer_id != self._handle_id and newer_id != path_id(self.path):
                self._switch(newer, 0, continuous=False)
                return True
            os.close(newer)
        fd = _open(self.path)
        if fd is None:
            return False
        self._switch(fd, 0, continuous=self._log_follows_on)
        return True

    def _skip_to_tail(self) -> None:
        """In a rotated file, skip to its last TAIL_BYTES: only the last lines decide anything."""
        assert self._handle is not None  # noqa: S101 - called only while a file is open
        start = os.fstat(self._handle).st_size - TAIL_BYTES
        if start <= self.offset:
            return
        self.offset = start
        self._pending.clear()
        # In the middle of a line, unless the byte before ends one: that rest of a line is dropped.
        self._skipping = os.pread(self._handle, 1, start - 1) != b"\n"

    # -- rotating ---------------------------------------------------------------------------

    def over_limit(self) -> bool:
        """Whether this follower rotates the log and it has passed its limit."""
        if self._max_bytes is None:
            return False
        try:
            return os.stat(self.path, follow_symlinks=False).st_size > self._max_bytes
        except OSError:
            return False

    async def rotate(self) -> bool:
        """Move the older output to `<log>.1` while the worker writes: copy, then truncate (see the
        module's docstring). False if it could not: the log is left as it is, and why is logged."""
        copy = await anyio.to_thread.run_sync(self._copy_older, False)  # up to the limit: a thread
        # The cut is made here, not in that thread: there, between its last look at the size and
        # the truncation, it could wait milliseconds for the interpreter's lock, and what the
        # worker wrote meanwhile (its last line, say) would be lost.
        return copy is not None and self._cut(copy)

    async def settle(self) -> None:
        """The worker has ended: leave its last words in the log, which `mcp-swarm logs` shows.

        A log past the limit is cut as if it had been rotated at every multiple of it: the part
        after the last multiple stays in the log, moved to its start. A log that a rotation emptied
        just before the end takes the rotated file back.
        """
        if self._max_bytes is None:
            return
        try:
            size = os.stat(self.path, follow_symlinks=False).st_size
        except OSError:
            return
        # Most logs are under the limit and were never rotated: nothing to do, and no thread for it.
        if size > self._max_bytes:
            await anyio.to_thread.run_sync(self._cut_ended)
        elif size == 0 and self.rotations:
            await anyio.to_thread.run_sync(self._take_back)

    def _cut_ended(self) -> None:
        copy = self._copy_older(True)
        if copy is not None:
            self._cut(copy)

    def _take_back(self) -> None:
        rotated = rotated_path(self.path)
        fd = _open(rotated)
        if fd is None:
            return
        rotated_id, live_id = id_of(os.fstat(fd)), path_id(self.path)
        try:
            os.replace(rotated, self.path)
        except OSError:
            os.close(fd)
            return
        self._times.taken_back()
        if self._handle_id == rotated_id:
            os.close(fd)  # being read already: it is the log now
        elif self._handle_id == live_id:
            # We were reading the log, so what was rotated out of it had all been read.
            self._switch(fd, os.fstat(fd).st_size, continuous=True)
        else:
            self._switch(fd, 0, continuous=False)

    def _copy_older(self, ended: bool) -> _Copy | None:
        """Copy what is to go to `<log>.1` into a new file. `ended`: nothing writes to the log any
        more, and the part after the last multiple of the limit stays in it."""
        limit = self._max_bytes
        assert limit is not None  # noqa: S101 - only a follower with a limit rotates
        if self._handle is None:
            self._open_first()  # where we were told to start, before anything moves
        temporary = rotated_path(self.path).with_name(f"{self.path.name}.1.{os.getpid()}.tmp")
        out: int | None = None
        try:
            live = os.open(self.path, os.O_RDWR | _NO_LINKS)
        except OSError as exc:
            self._cannot_rotate(exc)
            return None
        try:
            stat = os.fstat(live)
            if stat.st_size <= limit:
                os.close(live)
                return None
            cut = (stat.st_size - 1) // limit * limit if ended else stat.st_size
            start = max(0, cut - limit)
            temporary.unlink(missing_ok=True)
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINKS, 0o600)
            _copy(live, start, out, 0, cut - start)
        except OSError as exc:
            self._cannot_rotate(exc)
            _abandon(live, out, temporary)
            return None
        return _Copy(live, id_of(stat), out, temporary, start, cut, stat.st_size, ended)

    def _cut(self, copy: _Copy) -> bool:
        """Cut the log after its older part was copied, put the copy in place, and follow it."""
        cut, exact, moved = copy.cut, True, copy.cut - copy.start
        held = self._times.hold(copy.live_id)
        try:
            if copy.ended:
                _copy(copy.live, cut, copy.live, 0, copy.size - cut)
                os.ftruncate(copy.live, copy.size - cut)
            else:
                cut, exact, moved = self._take_out(copy)
            rotated_id = id_of(os.fstat(copy.out))
            os.replace(copy.temporary, rotated_path(self.path))
        except OSError as exc:
            self._cannot_rotate(exc)
            _abandon(copy.live, copy.out, copy.temporary)
            self._times.restore(held, copy.live_id)
            return False
        self._times.split(held, copy.live_id, rotated_id, copy.start, cut, moved)
        os.close(copy.live)
        os.close(copy.out)
        self.rotations += 1
        self._log_follows_on = exact
        if self._handle_id != copy.live_id:
            return True  # reading an older rotated file: the move to this one comes after it
        if self.offset >= cut:
            self.offset -= cut  # after the end: in the part kept in the log
            if not exact:
                self._pending.clear()
                self._skipping = False
            return True
        fd = _open(rotated_path(self.path))
        if fd is not None:
            # Where we were is now in the copy; before its start, it is gone.
            self._switch(fd, max(0, self.offset - copy.start), continuous=self.offset >= copy.start)
        return True

    def _take_out(self, copy: _Copy) -> tuple[int, bool, int]:
        """Take the copied part out of the log the worker is writing: where the log was cut,
        whether nothing the worker wrote was lost, and how much of the log from the copy's start
        is in the copy as it was.

        Where the file system can (ext4, XFS), the copied part is collapsed out of the file: an
        atomic change that keeps whatever the worker appended meanwhile. It takes whole blocks, so
        the copy ends at the last block boundary and the log keeps the rest. Elsewhere (tmpfs,
        btrfs) the log is truncated, after a catch-up (see `_catch_up`).
        """
        block = os.fstat(copy.live).st_blksize
        aligned = (copy.cut - 1) // block * block  # short of the end: a collapse may not reach it
        if aligned > copy.start and _collapse(copy.live, aligned):
            os.ftruncate(copy.out, aligned - copy.start)
            return aligned, True, aligned - copy.start
        cut, moved = self._catch_up(copy)
        return cut, False, moved

    def _catch_up(self, copy: _Copy) -> tuple[int, int]:
        """Copy what the worker wrote while we copied, until a look at the size finds nothing new,
        and truncate the log at once: a worker that writes its last line and exits is caught,
        whatever it wrote just before. Of a flood, only its newest TAIL_BYTES are kept, in place of
        what an earlier round kept of it. Where the log was cut is returned, and how much of the
        log from the copy's start the copy holds unchanged (less than all of it, past a flood)."""
        cut, end = copy.cut, copy.cut - copy.start  # how far the log was copied, and to where
        kept = end  # where a flood's newest bytes go in the copy
        skipped = False
        for _ in range(_CATCH_UP_ROUNDS):
            now = os.fstat(copy.live).st_size
            if now == cut:
                break
            if end - kept + now - cut > TAIL_BYTES:
                # Over the log's own lines, on a line of its own: the gap glues no two together.
                end = kept + os.pwrite(copy.out, _SKIPPED, kept)
                newest = now - TAIL_BYTES
                skipped = True
            else:
                newest = cut
            _copy(copy.live, newest, copy.out, end, now - newest)
            end += now - newest
            cut = now
        # Nothing between the last look and this: what the worker writes in between is lost.
        os.ftruncate(copy.live, 0)
        os.ftruncate(copy.out, end)  # a shorter flood's tail written over a longer one's
        return cut, (kept if skipped else cut - copy.start)

    def _cannot_rotate(self, exc: OSError) -> None:
        # Once: it is tried again at every look, and a full disk would fill the server's log too.
        if not self._warned:
            self._warned = True
            logger.warning("cannot rotate %s: %s", self.path, exc.strerror or exc)


@dataclass(frozen=True, slots=True)
class _Copy:
    """A rotation under way: the older part of the log copied, the log not yet cut."""

    live: int  # the log, open for writing
    live_id: FileId
    out: int  # the copy
    temporary: Path
    start: int  # where in the log the copy begins, and ends
    cut: int
    size: int
    ended: bool


def _abandon(live: int, out: int | None, temporary: Path) -> None:
    os.close(live)
    if out is not None:
        os.close(out)
    with contextlib.suppress(OSError):
        temporary.unlink()


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | _NO_LINKS)
    except OSError:
        return None


_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int
_FALLOC_FL_COLLAPSE_RANGE = 0x08  # linux/falloc.h; Python's os has no fallocate with a mode


def _collapse(fd: int, length: int) -> bool:
    """Remove the first `length` bytes of a file, the rest moving to its start; False where the
    file system cannot."""
    if _fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(code, os.strerror(code))


def _copy(source: int, source_offset: int, target: int, target_offset: int, count: int) -> None:
    """Copy `count` bytes between files in the kernel, by pieces where it cannot."""
    while count > 0:
        try:
            done = os.copy_file_range(source, target, count, source_offset, target_offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            piece = os.pread(source, min(count, CHUNK_BYTES), source_offset)
            done = os.pwrite(target, piece, target_offset) if piece else 0
        if done == 0:
            return  # the source is shorter than it was
        source_offset += done
        target_offset += done
        count -= done
