"""Probes of /proc, sharing no code with the modules under test: whether a process lives, its
parent, group, session and children, what it runs, its files, its memory."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (state, ppid, pgrp, session, ...), or None if there is no pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].decode().split()


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def same_process_lives(pid: int, start_time: str) -> bool:
    """Whether the process that had this pid and start time still runs (a reused pid is not it)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and fields[19] == start_time


def parent(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None, f"no process {pid}"
    return int(fields[1])


def group_and_session(pid: int) -> tuple[int, int]:
    fields = stat_fields(pid)
    assert fields is not None, f"no process {pid}"
    return int(fields[2]), int(fields[3])


def in_group(pgid: int) -> list[int]:
    """Every live process whose process group is pgid."""
    found: list[int] = []
    for name in os.listdir("/proc"):
        fields = stat_fields(int(name)) if name.isdigit() else None
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(name))
    return found


def children(pid: int) -> list[int]:
    found: list[int] = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := stat_fields(int(name))) and int(fields[1]) == pid:
            found.append(int(name))
    return found


def command_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().removesuffix("\n")


def running(pid: int, program: str) -> bool:
    """Whether process pid has exactly one child, and that child runs `program`."""
    kids = children(pid)
    try:
        return len(kids) == 1 and command_name(kids[0]) == program
    except OSError:  # it has just exited
        return False


def proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def peak_rss_kib(pid: int) -> int:
    """The most memory the process has ever had resident (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def server_pid(db: Path) -> int:
    """The pid of the one `mcp-swarm serve` child of this process that serves `db`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 1 :].split()[1])
        if ppid == os.getpid() and b"serve" in argv and str(db).encode() in argv:
            found.append(int(entry.name))
    assert len(found) == 1, f"expected one server for {db}, found {found}"
    return found[0]


def memory_kib(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB: VmRSS (resident now) or VmHWM (resident at peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")
