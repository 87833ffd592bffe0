"""SIGTERM, SIGHUP and SIGINT end `mcp-swarm serve` as the end of its input does.

A process manager stopping the server, a terminal closing under it, Ctrl-C: the server stops its
local workers (every process of theirs gone), returns their tasks to pending with the attempt
kept in the worker's history, leaves tmux workers running for the next server to adopt, and
exits within 5 seconds with the conventional status, 128 + the signal's number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_swarm.placement.processes import group_members
from tests.support import helpers
from tests.support.gated_workers import gated_project, rows, started_identity
from tests.support.helpers import STOP_SIGNAL_SEQUENCES
from tests.support.mcp_client import INITIALIZE, INITIALIZED, call, installed_command, project_session
from tests.support.proc import same_process_lives

pytestmark = pytest.mark.slow

DEADLINE = 30.0
# The promise: the server is gone this soon after the signal.
EXIT_WITHIN = 5.0

socket = helpers.tmux_socket


def project(tmp_path: Path, extra_config: str = "") -> Path:
    return gated_project(tmp_path, max_workers=4, config=extra_config)


class RawSession:
    """A Mayor speaking JSON-RPC to a `serve` process of the test's own, so that the test sends it
    signals and reads its exit status; its stdin stays open, so only the signal can end it."""

    def __init__(self, tmp_path: Path) -> None:
        self.process = subprocess.Popen(
            [installed_command(), "serve"],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._id = 0
        self._send(INITIALIZE)
        self._answer(0)
        self._send(INITIALIZED)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _answer(self, id_: int) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            assert line, "the server closed stdout"
            message = json.loads(line)
            if message.get("id") == id_:
                return message

    def call(self, tool: str, **arguments: Any) -> Any:
        self._id += 1
        self._send({"jsonrpc": "2.0", "id": self._id, "method": "tools/call",
                    "params": {"name": tool, "arguments": arguments}})  # fmt: skip
        result = self._answer(self._id)["result"]
        assert not result.get("isError"), result
        return result["structuredContent"]

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.parametrize("signals", STOP_SIGNAL_SEQUENCES)
def test_a_stop_signal_stops_local_workers_and_returns_their_tasks(
    tmp_path: Path, signals: tuple[signal.Signals, ...]
) -> None:
    gates = project(tmp_path)
    session = RawSession(tmp_path)
    try:
        session.call("TaskCreatePlan", tasks=[{"subject": f"task {n}"} for n in range(1, 4)])
        spawned = session.call("spawn")["workers"]
        assert [w["workerId"] for w in spawned] == ["worker-1", "worker-2", "worker-3"]
        processes = {w["workerId"]: started_identity(gates, w["workerId"]) for w in spawned}
        # The client is still connected: only the signal can end the server.
        sent = time.monotonic()
        for each in signals:
            session.process.send_signal(each)
        status = session.process.wait(timeout=DEADLINE)
        took = time.monotonic() - sent
        stderr = session.process.stderr.read() if session.process.stderr else ""
    finally:
        session.close()
    try:
        for worker_id, (pid, start_time) in processes.items():
            assert not same_process_lives(pid, start_time), f"{worker_id} (pid {pid}) outlived the server"
            assert not group_members(pid), f"a process of {worker_id}'s group outlived the server"
    finally:
        for pid, start_time in processes.values():  # orphans of a failed run are not left behind
            if same_process_lives(pid, start_time):
                os.killpg(pid, signal.SIGKILL)
    # Two signals at once: the status names the one the server took first.
    assert status in {128 + each for each in signals}, f"serve exited with {status} after {signals}: {stderr}"
    assert took < EXIT_WITHIN, f"serve took {took:.1f} s to exit after {signals}"
    assert "Traceback" not in stderr
    assert rows(tmp_path, "SELECT id, status, owner FROM tasks ORDER BY id") == [
        (1, "pending", None),
        (2, "pending", None),
        (3, "pending", None),
    ]
    # The attempt is kept in the history: each task's worker, cancelled, with the reason.
    assert rows(tmp_path, "SELECT id, task_id, attempt, state, error FROM workers ORDER BY id") == [
        (1, 1, 1, "cancelled", "the server stopped"),
        (2, 2, 1, "cancelled", "the server stopped"),
        (3, 3, 1, "cancelled", "the server stopped"),
    ]


@pytest.mark.tmux
@pytest.mark.anyio
async def test_sigterm_leaves_tmux_workers_running_for_the_next_server(tmp_path: Path, socket: str) -> None:
    gates = project(tmp_path, f'mode = "distributed"\ntmux_socket = {json.dumps(socket)}\n')
    session = RawSession(tmp_path)
    try:
        session.call("TaskCreate", subject="long", description="")
        [worker] = session.call("spawn")["workers"]
        pid, start_time = started_identity(gates, "worker-1")
        sent = time.monotonic()
        session.process.send_signal(signal.SIGTERM)
        status = session.process.wait(timeout=DEADLINE)
        took = time.monotonic() - sent
    finally:
        session.close()
    assert (status, took < EXIT_WITHIN) == (128 + signal.SIGTERM, True), f"status {status} after {took:.1f} s"
    assert same_process_lives(pid, start_time), "the tmux worker died with the server"
    assert worker["workerId"] == "worker-1"
    assert rows(tmp_path, "SELECT status, owner FROM tasks") == [("in_progress", "worker-1")]
    assert rows(tmp_path, "SELECT state FROM workers") == [("running",)]
    # The next server adopts it and judges it when it ends.
    async with project_session(tmp_path) as client:
        running = await call(client, "wait", timeoutSeconds=0)
        assert running["running"] == ["worker-1"]
        (gates / "go-worker-1").write_text("")
        result = await call(client, "wait", timeoutSeconds=DEADLINE)
        [done] = result["done"]
        assert (done["workerId"], done["state"], done["taskStatus"]) == ("worker-1", "succeeded", "completed")
        assert done["summary"] == "worker-1 finished"
