"""spawn, wait and close_agent over real stdio, with a command runtime from mcp-swarm.toml."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import TaskStatus
from mcp_swarm.placement.processes import group_members
from mcp_swarm.store import Store
from tests.support.mcp_client import call, refuse, stdio_parameters

pytestmark = pytest.mark.anyio

WORKER = r"""
import json, os, sys, time
prompt = open(sys.argv[1]).read()
if "@fail" in prompt:
    for n in range(8):
        print("step", n, flush=True)
    print("error: the port is taken", file=sys.stderr, flush=True)
    sys.exit(3)
if "@hang" in prompt:
    print("hanging", flush=True)
    time.sleep(600)
if "@fail" in prompt:
    print("config.toml: no such file", flush=True)
    sys.exit(3)
json.dump({"status": "done", "summary": "finished " + os.environ["SWARM_TASK_ID"]},
          open(os.environ["SWARM_RESULT_FILE"], "w"))
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "worker.py").write_text(WORKER)
    argv = [sys.executable, str(tmp_path / "worker.py"), "{prompt_file}"]
    quoted = ", ".join(f'"{arg}"' for arg in argv)
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "scripted"\n\n[runtimes.scripted]\ntype = "command"\nargv = [{quoted}]\n'
    )
    return tmp_path


def client_for(tmp_path: Path) -> Client:
    params = stdio_parameters(tmp_path / "unused.db", cwd=project(tmp_path))
    params.args = ["serve"]
    return Client(params, mode="legacy")


async def test_the_seed_plan_runs_wave_by_wave_through_spawn_and_wait(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        await call(
            client,
            "TaskCreatePlan",
            tasks=[
                {"key": "model", "subject": "Create User model"},
                {"key": "hash", "subject": "Add password hashing", "blockedBy": ["model"]},
                {"key": "login", "subject": "Create login endpoint", "blockedBy": ["model"]},
                {"key": "jwt", "subject": "Add JWT tokens", "blockedBy": ["login"]},
                {"key": "tests", "subject": "Write tests", "blockedBy": ["hash", "login", "jwt"]},
            ],
        )
        waves: list[list[str]] = []
        while (spawned := await call(client, "spawn"))["workers"]:
            waves.append(sorted(worker["taskId"] for worker in spawned["workers"]))
            result = await call(client, "wait", timeoutSeconds=60)
            assert "timedOut" not in result
            for done in result["done"]:
                assert done["state"] == "succeeded"
                assert done["taskStatus"] == "completed"
                assert done["summary"] == f"finished {done['taskId']}"
                assert await anyio.Path(done["log"]).is_file()
        assert waves == [["1"], ["2", "3"], ["4"], ["5"]]
        assert spawned["note"] == "no pending tasks: all 5 are completed"
        assert (await call(client, "TaskList"))["counts"] == {"completed": 5, "ready": 0}
        task = await call(client, "TaskGet", taskId="3")
        assert task["owner"] == "worker-3"
        assert [(w["workerId"], w["state"], w["attempt"]) for w in task["workers"]] == [
            ("worker-3", "succeeded", 1)
        ]


async def test_wait_gives_a_failed_worker_s_last_lines_and_no_tail_for_a_success(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        await call(client, "TaskCreate", subject="Fails", description="@fail")
        await call(client, "TaskCreate", subject="Works", description="")
        assert len((await call(client, "spawn"))["workers"]) == 2
        result = await call(client, "wait", timeoutSeconds=60)
        done = {entry["taskId"]: entry for entry in result["done"]}
        assert (done["1"]["state"], done["1"]["taskStatus"]) == ("failed", "failed")
        assert done["1"]["tail"] == "step 4\nstep 5\nstep 6\nstep 7\nerror: the port is taken"
        assert done["2"]["taskStatus"] == "completed"
        assert "tail" not in done["2"]


async def test_bad_spawn_and_wait_arguments_are_refused(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        await call(client, "TaskCreate", subject="A", description="")
        assert "unknown runtime 'bash'" in await refuse(client, "spawn", runtime="bash")
        assert "no task with id 9" in await refuse(client, "spawn", taskIds=["1", "9"])
        assert "maxWorkers" in await refuse(client, "spawn", maxWorkers=0)
        assert "no worker worker-9" in await refuse(client, "wait", workerIds=["worker-9"])
        assert "worker ids look like" in await refuse(client, "close_agent", workerId="1; rm -rf /")
        # Nothing was assigned by the refused calls.
        assert (await call(client, "TaskGet", taskId="1"))["status"] == "pending"


async def test_closing_stdin_stops_workers_and_frees_their_tasks(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        await call(client, "TaskCreate", subject="hangs", description="@hang")
        [worker] = (await call(client, "spawn"))["workers"]
        assert group_members(worker["pid"]) != []
        closed_at = time.monotonic()
    # The client is gone (its end of stdin closed); the server stopped the worker on its way out.
    assert group_members(worker["pid"]) == []
    assert time.monotonic() - closed_at < 2
    async with await Store.open(tmp_path / ".mcp-swarm" / "swarm.db") as store:
        task = await Ledger(store).get("1")
    assert task.status is TaskStatus.PENDING
    assert task.owner is None


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        ("env_allow = []\n", set[str]()),
        ('env_allow = ["KEEP_*"]\n', {"KEEP_ME"}),
        ("", {"PATH", "ANTHROPIC_API_KEY"}),
    ],
)
async def test_workers_get_only_the_allowed_environment(
    tmp_path: Path, allow: str, expected: set[str]
) -> None:
    dump = tmp_path / "env.json"
    script = f"import json, os; json.dump(sorted(os.environ), open({str(dump)!r}, 'w'))"
    argv = ", ".join(f'"{arg}"' for arg in [sys.executable, "-c", script])
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "dump"\n{allow}\n[runtimes.dump]\ntype = "command"\nargv = [{argv}]\n'
    )
    params = stdio_parameters(tmp_path / "unused.db", cwd=tmp_path)
    params.args = ["serve"]
    params.env = {
        "PATH": "/usr/bin:/bin",
        "ANTHROPIC_API_KEY": "sk-test",
        "SECRET_TOKEN": "do-not-leak",
        "KEEP_ME": "1",
    }
    async with Client(params, mode="legacy") as client:
        await call(client, "TaskCreate", subject="dump", description="")
        await call(client, "spawn")
        await call(client, "wait", timeoutSeconds=30)
    names = set(json.loads(await anyio.Path(dump).read_text()))
    swarm_names = {"SWARM_TASK_ID", "SWARM_WORKER_ID", "SWARM_WORKER_KEY", "SWARM_URL", "SWARM_TOKEN"}
    swarm_names.add("SWARM_RESULT_FILE")
    # Python itself may set LC_CTYPE on start (locale coercion); nothing else may appear.
    passed = names - swarm_names - {"LC_CTYPE"}
    if allow:
        assert passed == expected
    else:  # the default allow-list: what the SDK's client gives its server, less what is not allowed
        assert expected <= passed <= expected | {"HOME", "SHELL", "TERM", "USER", "LOGNAME", "LANG"}
    assert "SECRET_TOKEN" not in names
    assert swarm_names <= names
    assert "SWARM_DB" not in names  # a worker reaches the swarm through the endpoint only


@pytest.mark.slow
async def test_wait_reports_progress_and_a_cancelled_wait_leaves_the_worker_running(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        await call(client, "TaskCreate", subject="hangs", description="@hang")
        [worker] = (await call(client, "spawn"))["workers"]
        updates: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            updates.append((progress, total, message))

        result = await client.call_tool("wait", {"timeoutSeconds": 1.5}, progress_callback=on_progress)
        assert result.structured_content == {"done": [], "running": [worker["workerId"]], "timedOut": True}
        assert updates
        assert updates[0] == (0.0, 1.0, "1 running")

        with anyio.move_on_after(0.5) as scope:
            await client.call_tool("wait", {"timeoutSeconds": 30})
        assert scope.cancelled_caught
        # The worker outlived the cancelled wait, and the server still answers.
        assert group_members(worker["pid"]) != []
        closed = await call(client, "close_agent", workerId=worker["workerId"])
        assert closed == {"workerId": worker["workerId"], "state": "cancelled", "taskStatus": "pending"}
        assert group_members(worker["pid"]) == []


async def test_a_spawn_that_starts_nothing_says_why_and_what_to_do(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        nothing = await call(client, "spawn")
        assert nothing == {
            "workers": [],
            "skipped": [],
            "note": "no tasks yet: create them with TaskCreate or TaskCreatePlan",
        }
        await call(
            client,
            "TaskCreatePlan",
            tasks=[
                {"key": "parse", "subject": "Parse the config @fail"},
                {"key": "check", "subject": "Check it", "blockedBy": ["parse"]},
                {"key": "use", "subject": "Use it", "blockedBy": ["check"]},
                {"key": "serve", "subject": "Serve @hang"},
                {"key": "docs", "subject": "Document it", "blockedBy": ["serve"]},
                {"key": "ship", "subject": "Ship it", "blockedBy": ["docs", "serve"]},
            ],
        )
        started = {w["taskId"]: w["workerId"] for w in (await call(client, "spawn"))["workers"]}
        assert started == {"1": "worker-1", "4": "worker-2"}
        [failed] = (await call(client, "wait", workerIds=["worker-1"], timeoutSeconds=60))["done"]
        assert failed["taskStatus"] == "failed"

        blocked = await call(client, "spawn")
        assert blocked == {
            "workers": [],
            "skipped": [],
            "note": "nothing is ready: task 1 failed (worker-1: the command exited with status 3) and "
            "blocks 2, 3; retry it with TaskUpdate status=pending, or delete it. "
            "tasks 5, 6 wait for 4 (in progress); call wait",
        }

        await call(client, "close_agent", workerId="worker-2", taskStatus="failed")
        for task_id in ("2", "3", "5", "6"):
            await call(client, "TaskUpdate", taskId=task_id, status="deleted")
        stopped = await call(client, "spawn")
        assert stopped["note"] == (
            "no pending tasks: 2 failed. task 1 failed (worker-1: the command exited with status 3). "
            "task 4 failed (worker-2: closed by the Mayor); retry with TaskUpdate status=pending"
        )
