"""Distributed mode end to end: `mcp-swarm serve --mode distributed`, workers in tmux sessions.

Real servers over stdio, a real tmux server on a private socket (never the user's), real worker
processes. The workers outlive the server that started them and are adopted by the next one;
completed workers' sessions are removed, failed ones kept until close_agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_swarm.placement.processes import group_members
from mcp_swarm.placement.tmux import Tmux
from tests.support import helpers
from tests.support.mcp_client import call, project_session, serving
from tests.support.worker_endpoints import configure_gated, handed_endpoint, worker_session

if shutil.which("tmux") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("tmux is not installed; CI must install it (apt-get install tmux)", pytrace=False)
    pytest.skip("tmux is not installed", allow_module_level=True)

pytestmark = [pytest.mark.anyio, pytest.mark.tmux]
DEADLINE = 30.0

# Runs until its go file appears, then exits with the status written in it.
GATED = """
import os, pathlib, sys, time
go = pathlib.Path(sys.argv[1]) / ("go-" + os.environ["SWARM_WORKER_ID"])
print("working on task", os.environ["SWARM_TASK_ID"], flush=True)
while not go.exists():
    time.sleep(0.01)
print("done", flush=True)
sys.exit(int(go.read_text() or 0))
"""


# A fixture: a tmux server of the test's own, killed afterwards.
socket = helpers.tmux_socket


def project(tmp_path: Path, socket: str) -> Path:
    (tmp_path / "gated.py").write_text(GATED)
    argv = [sys.executable, str(tmp_path / "gated.py"), str(tmp_path)]
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "gated"\nmode = "distributed"\ntmux_socket = {json.dumps(socket)}\n\n'
        f'[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    return tmp_path


def go(tmp_path: Path, worker_id: str, status: int = 0) -> None:
    (tmp_path / f"go-{worker_id}").write_text(str(status))


async def until(check: Any) -> None:
    with anyio.fail_after(DEADLINE):
        while not await check():  # noqa: ASYNC110 - tmux and other processes give no event to wait on
            await anyio.sleep(0.01)


@pytest.mark.slow
async def test_workers_in_tmux_outlive_the_server_and_are_adopted_by_the_next(
    tmp_path: Path, socket: str
) -> None:
    project(tmp_path, socket)
    tmux = Tmux(socket)
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreatePlan", tasks=[{"subject": "passes"}, {"subject": "fails"}])
        workers = (await call(client, "spawn"))["workers"]
        assert [w["workerId"] for w in workers] == ["worker-1", "worker-2"]
        for worker in workers:
            assert worker["attach"] == tmux.attach_command(f"swarm-{worker['workerId']}")
        assert sorted(await tmux.list_sessions()) == ["swarm-worker-1", "swarm-worker-2"]
        task = await call(client, "TaskGet", taskId="1")
        assert task["workers"][0]["attach"] == workers[0]["attach"]
    # The Mayor's session ended and its server with it; in distributed mode the workers go on.
    pids = [worker["pid"] for worker in workers]
    assert all(group_members(pid) for pid in pids)
    assert sorted(await tmux.list_sessions()) == ["swarm-worker-1", "swarm-worker-2"]
    # worker-1 ends while no server runs: its exit status is in its session's status file.
    go(tmp_path, "worker-1")

    async def ended() -> bool:
        return not group_members(pids[0])

    await until(ended)
    async with project_session(tmp_path) as client:
        go(tmp_path, "worker-2", status=3)
        result = await call(client, "wait", timeoutSeconds=20)
        done = {d["workerId"]: d for d in result["done"]}
        assert (done["worker-1"]["state"], done["worker-1"]["taskStatus"]) == ("succeeded", "completed")
        assert done["worker-1"]["exitCode"] == 0
        assert "attach" not in done["worker-1"]
        assert (done["worker-2"]["state"], done["worker-2"]["exitCode"]) == ("failed", 3)
        assert done["worker-2"]["taskStatus"] == "failed"
        assert done["worker-2"]["attach"] == tmux.attach_command("swarm-worker-2")
        # The completed worker's session is gone; the failed one is kept, its output on screen.
        assert await tmux.list_sessions() == ["swarm-worker-2"]
        assert await tmux.pane_dead("swarm-worker-2") is True
        assert "done" in await tmux.capture("swarm-worker-2")
        closed = await call(client, "close_agent", workerId="worker-2", taskStatus="failed")
        assert closed["taskStatus"] == "failed"
        assert await tmux.list_sessions() == []
    log = (tmp_path / ".mcp-swarm" / "logs" / "worker-1.log").read_text()
    assert log.splitlines() == ["working on task 1", "done"]


@pytest.mark.slow
async def test_a_sigkilled_server_leaves_tmux_workers_running_and_the_next_one_adopts_them(
    tmp_path: Path, socket: str
) -> None:
    project(tmp_path, socket)
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreate", subject="long", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        [server] = serving(tmp_path)
        os.kill(server, signal.SIGKILL)
    assert group_members(worker["pid"])
    async with project_session(tmp_path) as client:
        running = await call(client, "wait", timeoutSeconds=0)
        assert running["running"] == ["worker-1"]
        go(tmp_path, "worker-1")
        result = await call(client, "wait", timeoutSeconds=20)
        [done] = result["done"]
        assert (done["state"], done["taskStatus"], done["exitCode"]) == ("succeeded", "completed", 0)
    assert await Tmux(socket).list_sessions() == []


@pytest.mark.slow
async def test_a_tmux_worker_reaches_the_swarm_again_through_the_server_that_adopts_it(
    tmp_path: Path, socket: str
) -> None:
    """Its SWARM_URL is the endpoint of the server that started it: the next server on the state
    directory takes that port again, and the worker's token holds while its attempt is live."""
    gates = configure_gated(tmp_path, tmux_socket=socket)
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreate", subject="outlive the server", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        url, token = await handed_endpoint(gates, worker["workerId"])
        async with worker_session(url, token) as own:
            assert (await call(own, "my_task"))["owner"] == worker["workerId"]
    assert group_members(worker["pid"])  # the server is gone; the worker goes on
    async with project_session(tmp_path) as client:
        async with worker_session(url, token) as own:
            assert (await call(own, "my_task"))["owner"] == worker["workerId"]
            await call(own, "report_result", status="done", summary="still reaching the Mayor")
        (gates / "go").write_text("")
        result = await call(client, "wait", timeoutSeconds=20)
        assert [(d["workerId"], d["taskStatus"]) for d in result["done"]] == [
            (worker["workerId"], "completed")
        ]
        inbox = (await call(client, "fetch_inbox"))["messages"]
        assert [(m["from"], m["subject"]) for m in inbox] == [
            (worker["workerId"], "still reaching the Mayor")
        ]
