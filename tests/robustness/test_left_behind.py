"""Nothing a local worker starts outlives its attempt, not even a daemon that left its session.

Each worker here starts a background process the way a daemon does (fork, setsid, fork again:
a new session and process group, its parent gone, so neither the worker's process group nor its
parent links lead to it) that ignores SIGTERM and SIGHUP, and writes its pid to a file. Whether
the attempt ends by the worker's own exit, close_agent, a time limit or the server stopping, the
daemon must be gone within 2 s. The same for a task's validation command.

Real `mcp-swarm serve` processes over stdio, real processes, real signals.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_swarm.placement.processes import ProcessIdentity, is_running, read_start_time
from tests.support.mcp_client import call, project_session

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 60.0
# The promise: every process an attempt started is gone this long after the attempt ended.
GONE_WITHIN = 2.0

# Usage: daemonize.py PIDFILE. Leaves a daemon behind and returns at once.
DAEMONIZE = r"""
import os, signal, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with open(pidfile + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)
        while True:
            time.sleep(1)
    os._exit(0)
os.wait()
while not os.path.exists(pidfile):
    time.sleep(0.005)
"""

# Usage: worker.py DIR MODE. Leaves a daemon behind (DIR/daemon-<worker>), says so in
# DIR/ready-<worker>, then exits 0 ("exit"), runs until stopped ("run"), or SIGKILLs the wrapper
# it runs under and runs on ("kill-wrapper").
WORKER = r"""
import os, subprocess, sys, time, pathlib
directory, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
me = os.environ["SWARM_WORKER_ID"]
subprocess.run([sys.executable, str(directory / "daemonize.py"), str(directory / f"daemon-{me}")], check=True)
(directory / f"ready-{me}").write_text(str(time.time()))
if mode == "kill-wrapper":
    (directory / f"worker-{me}").write_text(str(os.getpid()))
    os.kill(os.getppid(), 9)
if mode in ("run", "kill-wrapper"):
    while True:
        time.sleep(1)
"""


def project(tmp_path: Path, mode: str) -> Path:
    (tmp_path / "daemonize.py").write_text(DAEMONIZE)
    (tmp_path / "worker.py").write_text(WORKER)
    argv = [sys.executable, str(tmp_path / "worker.py"), str(tmp_path), mode]
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "leaver"\n\n[runtimes.leaver]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    return tmp_path


async def daemon_of(tmp_path: Path, worker_id: str) -> ProcessIdentity:
    pidfile = anyio.Path(tmp_path / f"daemon-{worker_id}")
    ready = anyio.Path(tmp_path / f"ready-{worker_id}")
    with anyio.fail_after(DEADLINE):
        # Written by a process of the worker's: no event to wait on.
        while not await ready.exists():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    pid = int(await pidfile.read_text())
    start_time = read_start_time(pid)
    assert start_time is not None, "the daemon was gone before anything stopped it"
    return ProcessIdentity(pid, start_time)


async def gone_within(daemon: ProcessIdentity, seconds: float) -> float:
    """How long after now the daemon is gone; fails if it is not gone within `seconds`."""
    began = time.monotonic()
    with anyio.fail_after(seconds, shield=True):
        # Not our child: /proc is looked at until it is gone.
        while is_running(daemon):  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return time.monotonic() - began


async def spawn_one(client: Client, tmp_path: Path, **spawn: Any) -> tuple[dict[str, Any], ProcessIdentity]:
    """A task whose worker leaves a daemon: the worker as spawn answers it, and the daemon."""
    await call(client, "TaskCreate", subject="leaves a daemon", description="")
    [worker] = (await call(client, "spawn", **spawn))["workers"]
    return worker, await daemon_of(tmp_path, worker["workerId"])


async def test_a_daemon_left_by_a_worker_that_exits_0_is_gone_within_2_s(tmp_path: Path) -> None:
    project(tmp_path, "exit")
    async with project_session(tmp_path) as client:
        worker, daemon = await spawn_one(client, tmp_path)
        ended = float((tmp_path / f"ready-{worker['workerId']}").read_text())
        result = await call(client, "wait", timeoutSeconds=30)
        [done] = result["done"]
        assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), done
        await gone_within(daemon, GONE_WITHIN)
        # From the worker's last act to the daemon's end.
        assert time.time() - ended < GONE_WITHIN + 1.0


async def test_a_daemon_left_by_a_worker_is_gone_after_close_agent(tmp_path: Path) -> None:
    project(tmp_path, "run")
    async with project_session(tmp_path) as client:
        worker, daemon = await spawn_one(client, tmp_path)
        assert is_running(daemon)
        closed = await call(client, "close_agent", workerId=worker["workerId"])
        assert closed["state"] == "cancelled", closed
        await gone_within(daemon, GONE_WITHIN)


async def test_a_daemon_left_by_a_worker_is_gone_after_its_time_limit(tmp_path: Path) -> None:
    project(tmp_path, "run")
    async with project_session(tmp_path) as client:
        _, daemon = await spawn_one(client, tmp_path, timeoutSeconds=1)
        result = await call(client, "wait", timeoutSeconds=30)
        [done] = result["done"]
        assert done["state"] == "timed_out", done
        await gone_within(daemon, GONE_WITHIN)


async def test_a_daemon_left_by_a_worker_is_gone_after_the_server_stops(tmp_path: Path) -> None:
    project(tmp_path, "run")
    async with project_session(tmp_path) as client:
        _, daemon = await spawn_one(client, tmp_path)
        assert is_running(daemon)
    # The session is closed: the server saw the end of its stdin and stopped its local workers.
    await gone_within(daemon, GONE_WITHIN)


async def test_a_daemon_left_by_a_validation_command_is_gone(tmp_path: Path) -> None:
    project(tmp_path, "exit")
    pidfile = tmp_path / "daemon-check"
    check: dict[str, Any] = {"argv": [sys.executable, str(tmp_path / "daemonize.py"), str(pidfile)]}
    async with project_session(tmp_path) as client:
        await call(
            client,
            "TaskCreate",
            subject="checked by a command that leaves a daemon",
            description="",
            metadata={"validation": {"command": check}},
        )
        [worker] = (await call(client, "spawn"))["workers"]
        worker_daemon = await daemon_of(tmp_path, worker["workerId"])
        result = await call(client, "wait", timeoutSeconds=30)
        [done] = result["done"]
        assert (done["taskStatus"], done["validation"]["passed"]) == ("completed", True), done
        pid = int(pidfile.read_text())
        start_time = read_start_time(pid)
        # Gone already by the time the verdict was given, or very soon after.
        if start_time is not None:
            await gone_within(ProcessIdentity(pid, start_time), GONE_WITHIN)
        await gone_within(worker_daemon, GONE_WITHIN)


async def test_a_worker_that_kills_its_wrapper_leaves_nothing_behind(tmp_path: Path) -> None:
    """The wrapper is SIGKILLed before it can stop anything: the server finds what is left (the
    worker and its daemon, which left its session) by the worker's id in their environment."""
    project(tmp_path, "kill-wrapper")
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreate", subject="kills its wrapper", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        daemon = await daemon_of(tmp_path, worker["workerId"])
        result = await call(client, "wait", timeoutSeconds=30)
        [done] = result["done"]
        assert (done["state"], done["taskStatus"]) == ("failed", "failed"), done
        await gone_within(daemon, GONE_WITHIN)
        pid = int((tmp_path / f"worker-{worker['workerId']}").read_text())
        start_time = read_start_time(pid)
        if start_time is not None:
            await gone_within(ProcessIdentity(pid, start_time), GONE_WITHIN)
