"""When each stretch of a worker's log was first seen: a small file beside the log, `<log>.times`.

The log holds what the worker printed and nothing else, so it cannot say when a line was printed.
Its follower (placement/logtail.py) reads it as it grows, at most a fraction of a second behind
the worker, and after each read that got data appends `<end offset> <unix time>` here: every
byte before that offset had been written by then. `mcp-swarm logs` stamps a line with the time of
the first record past the line's first byte, which is when it was written, give or take the
follower's pace; a line no record reaches (written while no server followed the log) has none.

The first line names the file the records are about, by its identity: a log renamed to `<log>.1`
(the tmux wrapper rotates so) takes its records along, and records of another file never stamp
this one. A gap, where the follower started or skipped past output it did not read, is a record
without a time (`<end offset> -`). A rotation by copy and cut moves records with the output they
describe (`split`).
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

FileId = tuple[int, int]  # (st_dev, st_ino): a file, whatever name it has now

_HEADER = "mcp-swarm log times"
# A link planted at the sidecar's name must not have us write a file of the worker's choosing.
_NO_LINKS = os.O_NOFOLLOW | os.O_CLOEXEC
# Records past this size are not read back (a file that large was not written by us).
_MAX_READ = 16 << 20


def times_path(log: Path) -> Path:
    return log.with_name(log.name + ".times")


def id_of(stat: os.stat_result) -> FileId:
    return stat.st_dev, stat.st_ino


def path_id(path: Path) -> FileId | None:
    """The file at `path` (not one a link there points to); None if there is none."""
    try:
        return id_of(os.stat(path, follow_symlinks=False))
    except OSError:
        return None


Record = tuple[int, float | None]  # end offset, and when it was seen (None: a gap)


@dataclass(frozen=True, slots=True)
class LineTimes:
    """The records of one log file, increasing in offset: when each line of it was first seen."""

    ends: list[int]
    times: list[float | None]

    def at(self, offset: int) -> float | None:
        """When the byte at `offset` was first seen; None if no follower saw it."""
        index = bisect_right(self.ends, offset)
        return self.times[index] if index < len(self.times) else None


NO_TIMES = LineTimes([], [])


def _parse(text: str) -> tuple[FileId | None, list[Record]]:
    lines = text.split("\n")
    head = lines[0].split(" ")
    if len(head) != 5 or " ".join(head[:3]) != _HEADER:
        return None, []
    try:
        file_id = (int(head[3]), int(head[4]))
    except ValueError:
        return None, []
    records: list[Record] = []
    for line in lines[1:]:
        end, _, when = line.partition(" ")
        try:
            records.append((int(end), None if when == "-" else float(when)))
        except ValueError:
            continue  # a record cut short by a crash mid-write: the next ones still count
    return file_id, records


def _read(path: Path) -> tuple[FileId | None, list[Record]]:
    try:
        fd = os.open(path, os.O_RDONLY | _NO_LINKS)
    except OSError:
        return None, []
    try:
        return _parse(os.read(fd, _MAX_READ).decode("ascii", errors="replace"))
    except OSError:
        return None, []
    finally:
        os.close(fd)


def line_times(log: Path, file_id: FileId) -> LineTimes:
    """The records of the log file `file_id` (the one just opened at `log`), increasing: a
    record that reaches no further than an earlier one adds nothing."""
    found, records = _read(times_path(log))
    if found != file_id:
        return NO_TIMES
    ends: list[int] = []
    times: list[float | None] = []
    for end, when in records:
        if not ends or end > ends[-1]:
            ends.append(end)
            times.append(when)
    return LineTimes(ends, times)


def _write_new(path: Path, file_id: FileId, records: list[Record]) -> None:
    """Replace the sidecar at `path` with these records, all at once."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_LINKS, 0o600)
    try:
        body = "".join(f"{end} {'-' if when is None else f'{when:.3f}'}\n" for end, when in records)
        os.write(fd, f"{_HEADER} {file_id[0]} {file_id[1]}\n{body}".encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)


class TimesWriter:
    """Appends the records of what one follower reads. Failing to write them costs stamps, never
    the worker's output: errors are swallowed."""

    def __init__(self, log: Path, rotated: Path) -> None:
        self._log = log
        self._rotated = rotated
        self._fd: int | None = None
        self._key: tuple[FileId, bool] | None = None  # the file the open sidecar is about, live or not
        self._end = 0  # how far the open sidecar's records reach

    def seen(self, file_id: FileId | None, live: bool, start: int, end: int, when: float) -> None:
        """Bytes `start` to `end` of the file `file_id` (the log if `live`, else `<log>.1`) were
        read at `when`."""
        if file_id is None:
            return
        try:
            if self._key != (file_id, live):
                self._claim(file_id, live)
            if self._fd is None:
                return
            gap = f"{start} -\n" if start > self._end else ""
            os.write(self._fd, f"{gap}{end} {when:.3f}\n".encode())
            self._end = max(self._end, end)
        except OSError:
            self.close()

    def _claim(self, file_id: FileId, live: bool) -> None:
        """Open the sidecar of the file being read: its records, carried over from its older name
        if it was renamed, or none yet."""
        self.close()
        self._key = (file_id, live)
        log = self._log if live else self._rotated
        if path_id(log) != file_id:
            return  # a rotated file no longer at either name: nobody will look at its lines
        path, older = times_path(log), times_path(self._log)
        if live and self._create(path, file_id):
            return  # the usual case, a worker's first output: no records yet, and one open
        found, records = _read(path)
        if found != file_id and not live:
            # The log was renamed to `<log>.1`: its records go along, if they are its own.
            older_id, _ = _read(older)
            if older_id == file_id:
                os.replace(older, path)
                found, records = _read(path)
        elif found is not None and found != file_id and path_id(self._rotated) == found:
            # The log has a new file and the records there are of the one now at `<log>.1`.
            with contextlib.suppress(OSError):
                os.replace(path, times_path(self._rotated))
        if found != file_id:
            _write_new(path, file_id, [])
            records = []
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | _NO_LINKS)
        self._end = max((end for end, _ in records), default=0)

    def _create(self, path: Path, file_id: FileId) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _NO_LINKS, 0o600)
        except FileExistsError:
            return False
        self._fd, self._end = fd, 0
        os.write(fd, f"{_HEADER} {file_id[0]} {file_id[1]}\n".encode())
        return True

    def hold(self, live_id: FileId) -> list[Record]:
        """A rotation by copy and cut is about to move the log's bytes: take its records out of
        reach until `split` puts them where the bytes went (a record read in between would stamp a
        line with the time of a later one). `restore` puts them back if it fails."""
        self.close()
        self._key = None
        path = times_path(self._log)
        found, records = _read(path)
        with contextlib.suppress(OSError):
            path.unlink()
        return records if found == live_id else []

    def restore(self, held: list[Record], live_id: FileId) -> None:
        with contextlib.suppress(OSError):
            _write_new(times_path(self._log), live_id, held)

    def split(
        self, held: list[Record], live_id: FileId, rotated_id: FileId, start: int, cut: int, moved: int
    ) -> None:
        """The log's bytes `start` to `start + moved` went to the start of a new `<log>.1`
        (`rotated_id`), and its first `cut` were taken out: the records go along."""
        with contextlib.suppress(OSError):
            _write_new(times_path(self._rotated), rotated_id, _shifted(held, start, start + moved))
            _write_new(times_path(self._log), live_id, _shifted(held, cut, None))

    def taken_back(self) -> None:
        """`<log>.1` was renamed back to the log: so are its records."""
        self.close()
        self._key = None
        with contextlib.suppress(OSError):
            os.replace(times_path(self._rotated), times_path(self._log))

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _shifted(records: list[Record], start: int, stop: int | None) -> list[Record]:
    """The records of bytes `start` to `stop` (the end if None), at offsets from `start`. The first
    record past `stop` still says when all of it had been seen."""
    out: list[Record] = []
    reached = start
    for end, when in records:
        if end <= reached:
            continue  # before the part, or reaching no further than an earlier record
        reached = end
        if stop is not None and end >= stop:
            out.append((stop - start, when))
            break
        out.append((end - start, when))
    return out
