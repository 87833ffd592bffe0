"""A broken or foreign state file is explained, never hung on; a long lock or a full disk never
kills the server and never loses a verdict.

Real processes throughout: `mcp-swarm serve` and the other commands as the user runs them, a
write lock held by another sqlite3 connection, and a small tmpfs filled with zeros for the full
disk (mounting needs root, which CI has; elsewhere those tests say why they skip).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcp_swarm.store.failures import DISK_FULL, LOCKED
from mcp_swarm.store.schema import SCHEMA_VERSION
from tests.support.gated_workers import go, started, until_group_gone
from tests.support.mcp_client import INITIALIZE, INITIALIZED, call, installed_command, refuse

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 30.0
# A command that meets a broken state file must have said so and exited by then.
PROMPT_EXIT_SECONDS = 10.0
IS_ROOT = os.geteuid() == 0
NEEDS_ROOT = "mounting a tmpfs (a full disk, a read-only file system) needs root; CI runs as root"


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Generator[Path]:
    """A tmpfs of `size` mounted on `directory`, unmounted at the end."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        # Lazy: a process the test started may still hold a file open there for a moment.
        subprocess.run(["umount", "-l", str(directory)], check=True)


def read_only(directory: Path) -> None:
    """Make the tmpfs on `directory` read-only, as a read-only file system is to root too."""
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """A file of zeros that takes every free block of the file system `directory` is on."""
    filler = directory / "filler"
    # Unbuffered, so that the last partial write is not left in a buffer to fail again on close.
    with filler.open("wb", buffering=0) as out:
        chunk = bytes(64 * 1024)
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


def real_database(path: Path) -> Path:
    """A swarm database as `mcp-swarm` leaves it, with one task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_command(["serve", "--db", str(path)], stdin_open=False)
    return path


def run_command(args: list[str], *, stdin_open: bool) -> tuple[int, str, float]:
    """Run `mcp-swarm ARGS`; its exit status, stderr and how long it took. With `stdin_open`,
    its stdin is a pipe the test never closes, as an MCP client's is: a `serve` that waits for
    the client instead of exiting shows as a timeout."""
    began = time.monotonic()
    process = subprocess.Popen(
        [installed_command(), *args],
        stdin=subprocess.PIPE if stdin_open else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=PROMPT_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"mcp-swarm {' '.join(args)} still ran after {PROMPT_EXIT_SECONDS}s:\n{stderr}")
    finally:
        if process.stdin is not None:
            process.stdin.close()
    return process.returncode, stderr, time.monotonic() - began


# -- 6. a broken or foreign state file ----------------------------------------------------------

STATES = ["text", "truncated", "newer-schema", "read-only-file", "read-only-directory", "full-disk"]


def commands(db: Path, plan: Path) -> dict[str, list[str]]:
    return {
        "serve": ["serve", "--db", str(db)],
        "status": ["status", "--db", str(db)],
        "logs": ["logs", "worker-1", "--db", str(db)],
        "run": ["run", str(plan), "--runtime", "demo", "--db", str(db)],
    }


@contextlib.contextmanager
def broken_state(kind: str, tmp_path: Path) -> Generator[tuple[Path, str]]:
    """The database path of a broken state of `kind`, and words its explanation must hold."""
    if kind in ("read-only-file", "read-only-directory", "full-disk") and not IS_ROOT:
        pytest.skip(NEEDS_ROOT)
    db = tmp_path / "state" / "swarm.db"
    if kind == "text":
        db.parent.mkdir()
        db.write_text("my notes, not a database\n")
        yield db, "is not an mcp-swarm database"
    elif kind == "truncated":
        db.parent.mkdir()
        real_database(tmp_path / "whole" / "swarm.db")
        data = (tmp_path / "whole" / "swarm.db").read_bytes()
        db.write_bytes(data[: len(data) // 2])
        yield db, "is damaged"
    elif kind == "newer-schema":
        real_database(db)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        yield db, "newer"
    elif kind == "read-only-file":
        with tmpfs(db.parent, "4m"):
            real_database(db)
            read_only(db.parent)
            yield db, "read-only"
    elif kind == "read-only-directory":
        with tmpfs(db.parent, "4m"):
            read_only(db.parent)
            yield db, "read-only"
    else:
        with tmpfs(db.parent, "4m"):
            real_database(db)
            fill(db.parent)
            yield db, DISK_FULL


@pytest.mark.parametrize("command", ["serve", "status", "logs", "run"])
@pytest.mark.parametrize("kind", STATES)
def test_every_command_explains_a_broken_state_file_in_a_line_and_exits(
    tmp_path: Path, kind: str, command: str
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('[[tasks]]\nkey = "a"\nsubject = "A"\ndescription = "a task"\n')
    with broken_state(kind, tmp_path) as (db, words):
        before = db.read_bytes() if db.exists() else None
        code, stderr, seconds = run_command(commands(db, plan)[command], stdin_open=True)
        after = db.read_bytes() if db.exists() else None
    assert code != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, stderr
    assert lines[0].startswith("mcp-swarm: ")
    assert str(db) in stderr or str(db.parent) in stderr
    absent = (command in ("status", "logs")) and before is None
    # A command that only reads says the file is not there; every other names what is wrong.
    assert ("no swarm database" in stderr) if absent else (words in stderr), stderr
    assert seconds < PROMPT_EXIT_SECONDS
    assert after == before  # a broken file is explained, never changed


# -- 7. a long lock or a full disk when a verdict is written ------------------------------------

# Says it started, then ends (exit 0, no output) when the test lets it go.
GATED = """
import os, sys, time, pathlib
gates, me = pathlib.Path(sys.argv[1]), os.environ["SWARM_WORKER_ID"]
(gates / f"started-{me}").write_text(str(os.getpid()))
while not (gates / f"go-{me}").exists():
    time.sleep(0.01)
"""


def gated_project(tmp_path: Path) -> tuple[Path, Path]:
    project, gates = tmp_path / "project", tmp_path / "gates"
    project.mkdir()
    gates.mkdir()
    (tmp_path / "worker.py").write_text(GATED)
    argv = [sys.executable, str(tmp_path / "worker.py"), str(gates)]
    (project / "mcp-swarm.toml").write_text(
        f'default_runtime = "gated"\n\n[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    return project, gates


@asynccontextmanager
async def mayor(project: Path, db: Path, **env: str) -> AsyncGenerator[tuple[Client, int]]:
    """A Mayor's session on `mcp-swarm serve --db DB` in `project`, and the server's pid."""
    params = StdioServerParameters(
        command=installed_command(), args=["serve", "--db", str(db)], cwd=project, env={**os.environ, **env}
    )
    async with Client(params, mode="legacy") as client:
        yield client, server_pid(db)


def server_pid(db: Path) -> int:
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and str(db).encode() in argv and entry.name.isdigit():
                return int(entry.name)
    raise AssertionError(f"no mcp-swarm serve on {db}")


def alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "stat").read_text().split(") ")[1][0] != "Z"
    return False


def worker_row(db: Path, number: int) -> tuple[str, str]:
    """The worker's state and its task's status, as the database has them now."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA query_only = ON")
        return conn.execute(
            "SELECT w.state, t.status FROM workers w JOIN tasks t ON t.id = w.task_id WHERE w.id = ?",
            (number,),
        ).fetchone()


async def started_and_let_go(gates: Path, worker_id: str) -> None:
    """Wait until the worker has started, let it end, and wait until its process is gone."""
    pid = await started(gates, worker_id, DEADLINE)
    go(gates, worker_id)
    await until_group_gone(pid, DEADLINE)


async def test_a_verdict_waits_out_a_lock_held_past_the_busy_timeout_and_lands(tmp_path: Path) -> None:
    project, gates = gated_project(tmp_path)
    db = tmp_path / "state" / "swarm.db"
    async with mayor(project, db, MCP_SWARM_BUSY_TIMEOUT_MS="200") as (client, pid):
        await call(client, "TaskCreate", subject="one", description="ends while the file is locked")
        [worker] = (await call(client, "spawn"))["workers"]
        holder = sqlite3.connect(db, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's write lock, held
            # Closing the worker now cannot be recorded: refused with the reason, the worker untouched.
            message = await refuse(client, "close_agent", workerId=worker["workerId"])
            assert LOCKED in message
            await started_and_let_go(gates, worker["workerId"])
            # Any write now fails after the busy timeout, and says why.
            message = await refuse(client, "TaskCreate", subject="two", description="refused")
            assert LOCKED in message
            # Held well past the busy timeout, several tries of the verdict fail meanwhile.
            await anyio.sleep(1.5)
            assert alive(pid)
            assert worker_row(db, 1) == ("running", "in_progress")  # not yet written, not lost
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        released = time.monotonic()
        result = await call(client, "wait", timeoutSeconds=DEADLINE)
        # Tried again at most every MAX_RETRY_SECONDS: it lands soon after the lock goes.
        assert time.monotonic() - released < 5.0
        [done] = result["done"]
        assert (done["workerId"], done["state"], done["taskStatus"]) == ("worker-1", "succeeded", "completed")
        assert worker_row(db, 1) == ("succeeded", "completed")
        listing = await call(client, "TaskList")
        assert [task["subject"] for task in listing["tasks"]] == ["one"]  # the refused one left nothing
        assert alive(pid)


@pytest.mark.skipif(not IS_ROOT, reason=NEEDS_ROOT)
async def test_a_full_disk_when_a_worker_ends_keeps_the_server_and_the_verdict(tmp_path: Path) -> None:
    project, gates = gated_project(tmp_path)
    with tmpfs(tmp_path / "state", "4m") as state:
        db = state / "swarm.db"
        async with mayor(project, db) as (client, pid):
            await call(client, "TaskCreate", subject="one", description="ends while the disk is full")
            [worker] = (await call(client, "spawn"))["workers"]
            filler = fill(state)
            await started_and_let_go(gates, worker["workerId"])
            message = await refuse(client, "TaskCreate", subject="two", description="x" * 20_000)
            assert DISK_FULL in message
            assert str(db) in message
            assert alive(pid)
            assert worker_row(db, 1) == ("running", "in_progress")  # kept, not lost
            filler.unlink()
            result = await call(client, "wait", timeoutSeconds=DEADLINE)
            [done] = result["done"]
            assert (done["workerId"], done["state"], done["taskStatus"]) == (
                "worker-1",
                "succeeded",
                "completed",
            )
            listing = await call(client, "TaskList")
            assert [task["subject"] for task in listing["tasks"]] == ["one"]
            assert alive(pid)
        assert worker_row(db, 1) == ("succeeded", "completed")


def test_a_server_stopping_while_a_verdict_waits_tries_once_more_and_exits(tmp_path: Path) -> None:
    """The client closes stdin (as a Mayor's session ends) while a verdict waits for a lock: the
    server does not wait for the lock, and the worker is left for the next server's recovery.
    Spoken on the wire by hand: the SDK's client would end the server with a signal instead."""
    project, gates = gated_project(tmp_path)
    db = tmp_path / "state" / "swarm.db"
    server = subprocess.Popen(
        [installed_command(), "serve", "--db", str(db)],
        cwd=project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MCP_SWARM_BUSY_TIMEOUT_MS": "200"},
    )
    assert server.stdin is not None
    assert server.stdout is not None
    holder: sqlite3.Connection | None = None
    try:

        def ask(*messages: Mapping[str, object]) -> dict[str, Any]:
            assert server.stdin is not None
            assert server.stdout is not None
            for message in messages:
                server.stdin.write(json.dumps(message).encode() + b"\n")
            server.stdin.flush()
            answer: dict[str, Any] = json.loads(server.stdout.readline())
            assert "error" not in answer, answer
            assert not answer["result"].get("isError"), answer
            return answer

        def tool(number: int, name: str, **arguments: object) -> dict[str, Any]:
            params = {"name": name, "arguments": arguments}
            return ask({"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params})

        ask(INITIALIZE, INITIALIZED)
        tool(1, "TaskCreate", subject="one", description="ends while the file is locked")
        tool(2, "spawn")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        anyio.run(started_and_let_go, gates, "worker-1")
        stopped = time.monotonic()
        server.stdin.close()  # the session ends while the verdict waits for the lock
        server.wait(timeout=DEADLINE)
        seconds = time.monotonic() - stopped
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    assert server.stderr is not None
    stderr = server.stderr.read().decode()
    server.stdout.close()
    server.stderr.close()
    # A waiting verdict does not hold the server's exit: one more try, then it goes, cleanly.
    assert seconds < 5.0, stderr
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr
    # Not written and not made up: the worker is left to the next server's recovery.
    assert worker_row(db, 1) == ("running", "in_progress")
