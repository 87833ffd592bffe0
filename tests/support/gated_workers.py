"""A worker held at a gate: it says it started (its pid in a file), runs until the test lets it
go (or for a set time), and reports through its result file. The result file is the evidence that
survives its server; the tests that kill, signal or replace servers under such workers share it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from mcp_swarm.placement.processes import group_members
from tests.support.proc import stat_fields

# How long a test waits for a gated worker to start.
START_DEADLINE = 30.0

GATED_WORKER = """
import json, os, sys, time, pathlib
gates, me = pathlib.Path(sys.argv[1]), os.environ["SWARM_WORKER_ID"]
(gates / f"started-{me}").write_text(str(os.getpid()))
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
else:
    while not (gates / f"go-{me}").exists():
        time.sleep(0.01)
json.dump({"status": "done", "summary": f"{me} finished"}, open(os.environ["SWARM_RESULT_FILE"], "w"))
"""


def gated_project(
    directory: Path, *extra_args: str, max_workers: int, config: str = "", script: str = GATED_WORKER
) -> Path:
    """A project in `directory` whose default runtime, `gated`, runs `script` with the gates
    directory (and `extra_args`); `config` is added to its mcp-swarm.toml. Returns the gates."""
    gates = directory / "gates"
    gates.mkdir()
    (directory / "worker.py").write_text(script)
    argv = [sys.executable, str(directory / "worker.py"), str(gates), *extra_args]
    (directory / "mcp-swarm.toml").write_text(
        f'default_runtime = "gated"\nmax_workers = {max_workers}\n{config}\n'
        f'[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    return gates


def started_pid(gates: Path, worker_id: str) -> int | None:
    """The worker's pid once it has started; None before. It creates the file before it writes
    its pid into it, so an empty file is not yet a start."""
    marker = gates / f"started-{worker_id}"
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def started_identity(gates: Path, worker_id: str) -> tuple[int, str]:
    """The worker's pid once it has started, with its start time (field 22 of /proc/PID/stat),
    so that a test can tell it from a later process given the same pid."""
    deadline = time.monotonic() + START_DEADLINE
    # Another process's doing, with no event to wait on: looked at until it is so.
    while (pid := started_pid(gates, worker_id)) is None:
        assert time.monotonic() < deadline, f"{worker_id} did not start"
        time.sleep(0.01)
    fields = stat_fields(pid)
    assert fields is not None
    return pid, fields[19]


async def started(gates: Path, worker_id: str, deadline: float = 60.0) -> int:
    """The worker's pid, once it has started (within `deadline` seconds), for async tests."""
    with anyio.fail_after(deadline):
        # Another process's doing, with no event to wait on: looked at until it is so.
        while (pid := started_pid(gates, worker_id)) is None:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return pid


async def until_group_gone(pid: int, deadline: float = 60.0) -> None:
    """Wait until the process group `pid` leads has no process left (within `deadline` seconds)."""
    with anyio.fail_after(deadline):
        # A server's child, not ours: no exit event to wait on, so /proc is looked at.
        while group_members(pid):  # noqa: ASYNC110
            await anyio.sleep(0.01)


def go(gates: Path, *worker_ids: str) -> None:
    """Let the workers finish."""
    for worker_id in worker_ids:
        (gates / f"go-{worker_id}").write_text("")


def rows(project: Path, sql: str) -> list[Any]:
    """What `sql` reads from the project's database, opened read-only."""
    uri = f"file:{project / '.mcp-swarm' / 'swarm.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return conn.execute(sql).fetchall()
