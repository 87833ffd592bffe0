"""A local worker that ends while no server runs is judged on restart as if it had been watched.

The server is SIGKILLed while its worker runs (a Mayor's session closed hard, a crash); the worker
then ends on its own. The next server on the database must judge it from the evidence the worker
left, exactly as the server that started it would have: its result file, its runtime's final
event in its log, its exit status. It must not declare it lost and run its task again.

Real `mcp-swarm serve` processes over stdio, real workers, real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.gated_workers import started, until_group_gone
from tests.support.mcp_client import call, project_session, serving

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 60.0

# Says it started, waits until the test lets it go (by then its server is dead), and then ends as
# its mode says. Every run is counted in a file, so that a task run twice shows.
WORKER = r"""
import json, os, sys, time, pathlib
gates, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
me = os.environ["SWARM_WORKER_ID"]
with open(gates / "runs", "a") as runs:
    runs.write(me + "\n")
(gates / f"started-{me}").write_text(str(os.getpid()))
while not (gates / f"go-{me}").exists():
    time.sleep(0.01)
if mode == "result-file":
    with open(os.environ["SWARM_RESULT_FILE"], "w") as result:
        json.dump({"status": "done", "summary": f"{me} wrote its result"}, result)
    sys.exit(0)
if mode == "exit-0":
    print(f"{me} said its last line", flush=True)
    sys.exit(0)
if mode == "exit-3":
    print("something went wrong", flush=True)
    sys.exit(3)
# An agent CLI: claude -p --output-format stream-json, whose final event is the verdict.
is_error = mode == "claude-error"
events = [
    {"type": "system", "subtype": "init", "session_id": "5e55a0b1-0000-4000-8000-000000000001"},
    {"type": "assistant", "message": {"content": [{"type": "text", "text": "working"}]}},
    {"type": "result", "subtype": "success", "is_error": is_error,
     "result": "API Error: 529 overloaded" if is_error else f"{me}: claude says done",
     "session_id": "5e55a0b1-0000-4000-8000-000000000001", "total_cost_usd": 0.25, "num_turns": 3},
]
for event in events:
    print(json.dumps(event), flush=True)
# claude -p can exit 0 after an API error: only the final event tells.
sys.exit(0)
"""


def project(tmp_path: Path, mode: str) -> Path:
    gates = tmp_path / "gates"
    gates.mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    if mode.startswith("claude"):
        # A stand-in for the claude CLI: the claude runtime runs it with claude's own flags, which
        # it ignores, and reads its output as claude's stream.
        program = tmp_path / "claude"
        program.write_text(
            f"#!{sys.executable}\nimport sys\nsys.argv = [sys.argv[0], {str(gates)!r}, {mode!r}]\n"
        )
        with program.open("a") as file:
            file.write(WORKER)
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        runtime = f'[runtimes.claude]\ntype = "claude"\nprogram = {json.dumps(str(program))}\n'
        default = "claude"
    else:
        argv = [sys.executable, str(tmp_path / "worker.py"), str(gates), mode]
        runtime = f'[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
        default = "gated"
    (tmp_path / "mcp-swarm.toml").write_text(f'default_runtime = "{default}"\n\n{runtime}')
    return tmp_path


async def spawn_and_kill_the_server(tmp_path: Path) -> dict[str, Any]:
    """Spawn one worker, SIGKILL its server once the worker runs, and return what spawn said."""
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreate", subject="the task", description="do it")
        [worker] = (await call(client, "spawn"))["workers"]
        await started(tmp_path / "gates", worker["workerId"])
        for server in serving(tmp_path):
            os.kill(server, signal.SIGKILL)
    return worker


async def end_while_no_server_runs(tmp_path: Path) -> dict[str, Any]:
    """Spawn one worker, SIGKILL its server, let the worker end, and return what spawn said."""
    worker = await spawn_and_kill_the_server(tmp_path)
    (tmp_path / "gates" / f"go-{worker['workerId']}").write_text("")
    await until_group_gone(worker["pid"])
    return worker


async def judged_after_restart(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    async with project_session(tmp_path) as client:
        result = await call(client, "wait", timeoutSeconds=30)
        task = await call(client, "TaskGet", taskId="1")
    [done] = result["done"]
    return done, task


def runs(tmp_path: Path) -> list[str]:
    return (tmp_path / "gates" / "runs").read_text().split()


@pytest.mark.parametrize(
    ("mode", "state", "task_status", "exit_code", "summary"),
    [
        ("result-file", "succeeded", "completed", 0, "worker-1 wrote its result"),
        ("exit-0", "succeeded", "completed", 0, "worker-1 said its last line"),
        ("exit-3", "failed", "failed", 3, "something went wrong"),
        ("claude", "succeeded", "completed", 0, "worker-1: claude says done"),
        ("claude-error", "failed", "failed", 0, "API Error: 529 overloaded"),
    ],
)
async def test_a_worker_that_ended_while_no_server_ran_is_judged_as_if_watched(
    tmp_path: Path, mode: str, state: str, task_status: str, exit_code: int, summary: str
) -> None:
    project(tmp_path, mode)
    worker = await end_while_no_server_runs(tmp_path)
    done, task = await judged_after_restart(tmp_path)

    assert done["workerId"] == worker["workerId"]
    assert (done["state"], done["taskStatus"], done.get("exitCode")) == (state, task_status, exit_code), done
    assert done.get("summary") == summary, done
    assert task["status"] == task_status
    # Judged, not lost: one worker ran the task, once.
    assert [w["state"] for w in task["workers"]] == [state]
    assert runs(tmp_path) == ["worker-1"]
    if mode == "exit-3":
        assert done.get("error") == "the command exited with status 3", done
    if mode.startswith("claude"):
        assert done.get("costUsd") == 0.25, done
    if mode == "claude-error":
        assert "claude reported an error" in done.get("error", ""), done


async def test_a_worker_whose_wrapper_was_killed_too_is_still_lost(tmp_path: Path) -> None:
    """No exit status, no evidence: the task is pending again, as before."""
    project(tmp_path, "result-file")
    worker = await spawn_and_kill_the_server(tmp_path)
    os.killpg(worker["pid"], signal.SIGKILL)
    await until_group_gone(worker["pid"])
    done, task = await judged_after_restart(tmp_path)
    assert (done["state"], done["taskStatus"]) == ("lost", "pending"), done
    assert task["status"] == "pending"
