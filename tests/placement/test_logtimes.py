"""The times a log's follower records beside it: when each line was first seen, through rotations.

A real writer process appends to the log through its own descriptor, as a local worker does, and
puts in every line the time it wrote it; the follower reads and rotates the log as the server's
supervision does. Every stamp must be no earlier than its line was written and not long after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mcp_swarm.placement.logtail import LogTail, rotated_path
from mcp_swarm.placement.logtimes import LineTimes, line_times, times_path
from tests.support.helpers import logs

pytestmark = pytest.mark.anyio
__all__ = ["logs"]

# Lines of about 100 bytes, each with the time it was written, `count` of them at `pace` a second.
WRITER = """
import os, sys, time
log, count, pace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for n in range(count):
    os.write(fd, f"{n:06d} {time.time():.6f} {'x' * 80}\\n".encode())
    time.sleep(1 / pace)
"""
# How late a stamp may be: the follower looks every 20 ms here; a loaded machine stalls it more.
LATE = 5.0


def times_of(log: Path) -> LineTimes:
    stat = os.stat(log)
    return line_times(log, (stat.st_dev, stat.st_ino))


def stamped_lines(log: Path) -> list[tuple[str, float | None]]:
    """Each whole line of the file with the time its record gives it."""
    data, times = log.read_bytes(), times_of(log)
    out: list[tuple[str, float | None]] = []
    offset = 0
    for line in data.split(b"\n")[:-1]:
        out.append((line.decode(), times.at(offset)))
        offset += len(line) + 1
    return out


async def follow(log: Path, writer: subprocess.Popen[bytes], max_bytes: int | None) -> LogTail:
    """Follow the log as supervision does until the writer ends, then settle and drain it."""
    tail = LogTail(log, lambda _line: None, max_bytes=max_bytes)
    while writer.poll() is None:
        if tail.over_limit():
            await tail.rotate()
        while tail.read_some():
            pass
        await anyio.sleep(0.02)  # the follower's pace, as supervision's
    await tail.settle()
    tail.drain()
    return tail


def check_stamps(lines: list[tuple[str, float | None]], *, skip_first: bool) -> None:
    """Every line has a stamp no earlier than it was written, not long after, and in order."""
    if skip_first:
        lines = lines[1:]  # a rotation may cut a line in two: its rest begins the next file
    assert lines
    previous = 0.0
    for text, stamp in lines:
        written = float(text.split(" ")[1])
        assert stamp is not None, text
        assert written <= stamp + 0.001 < written + LATE, (text, stamp)  # stamps keep milliseconds
        assert stamp >= previous, (text, stamp)
        previous = stamp


def start_writer(log: Path, count: int, pace: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(count), str(pace)], stdin=subprocess.DEVNULL
    )


async def test_each_line_is_stamped_with_when_the_follower_first_saw_it(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    log.touch()
    writer = start_writer(log, 30, 60)
    await follow(log, writer, None)
    assert writer.wait() == 0
    lines = stamped_lines(log)
    assert len(lines) == 30
    check_stamps(lines, skip_first=False)
    assert times_path(log).stat().st_mode & 0o777 == 0o600
    # Half a second of output is not all stamped with one time: the records follow the writer.
    assert lines[-1][1] != lines[0][1]


@pytest.mark.slow
async def test_stamps_move_with_the_output_when_the_log_is_rotated(logs: Path) -> None:
    log = logs / "worker-1.log"
    log.touch()
    limit = 16 << 10
    writer = start_writer(log, 600, 400)  # about 60 kB in 1.5 s: three rotations and more
    tail = await follow(log, writer, limit)
    assert writer.wait() == 0
    assert tail.rotations >= 2
    check_stamps(stamped_lines(log), skip_first=True)
    rotated = stamped_lines(rotated_path(log))
    check_stamps(rotated, skip_first=True)
    # The rotated file's lines come before the log's, and every line of both was written last.
    assert int(rotated[-1][0].split(" ")[0]) < int(stamped_lines(log)[-1][0].split(" ")[0]) == 599


async def test_records_of_another_file_stamp_nothing(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    log.write_bytes(b"one\ntwo\n")
    tail = LogTail(log, lambda _line: None)
    tail.drain()
    assert all(stamp is not None for _, stamp in stamped_lines(log))
    # The log replaced by another file (a server that never followed it wrote it): no stamps.
    log.rename(tmp_path / "elsewhere")
    log.write_bytes(b"one\ntwo\n")
    assert [stamp for _, stamp in stamped_lines(log)] == [None, None]


async def test_a_link_at_the_times_file_is_not_written_through(tmp_path: Path) -> None:
    log, target = tmp_path / "worker-1.log", tmp_path / "precious"
    target.write_text("keep me\n")
    times_path(log).symlink_to(target)
    log.write_bytes(b"one\n")
    LogTail(log, lambda _line: None).drain()
    # The link was replaced by a file of ours, never followed.
    assert target.read_text() == "keep me\n"
    assert not times_path(log).is_symlink()
    assert [stamp is not None for _, stamp in stamped_lines(log)] == [True]


async def test_records_go_along_when_the_log_is_renamed_to_its_rotated_name(tmp_path: Path) -> None:
    # As a tmux worker's wrapper rotates: the log becomes `<log>.1`, a new log begins.
    log = tmp_path / "worker-1.log"
    log.write_bytes(b"one\ntwo\n")
    tail = LogTail(log, lambda _line: None)
    assert tail.read_some()
    with log.open("ab") as handle:
        handle.write(b"three\n")  # written before the rename, read after it
    log.rename(rotated_path(log))
    log.write_bytes(b"four\n")
    tail.drain()
    assert [(line, stamp is not None) for line, stamp in stamped_lines(rotated_path(log))] == [
        ("one", True), ("two", True), ("three", True)
    ]  # fmt: skip
    assert [(line, stamp is not None) for line, stamp in stamped_lines(log)] == [("four", True)]
