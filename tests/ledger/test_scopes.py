"""Write scopes: tasks whose declared files overlap never run at once in the shared working tree.

Real `mcp-swarm serve` over stdio, real workers that run until the test lets them go.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp import Client

from tests.support.mcp_client import call, stdio_parameters

pytestmark = pytest.mark.anyio

# Runs until its go file appears.
GATED = (
    "import os, pathlib, sys, time\n"
    "go = pathlib.Path(sys.argv[1]) / ('go-' + os.environ['SWARM_TASK_ID'])\n"
    "while not go.exists():\n    time.sleep(0.01)\n"
)


def mayor(tmp_path: Path) -> Client:
    (tmp_path / "gated.py").write_text(GATED)
    argv = [sys.executable, str(tmp_path / "gated.py"), str(tmp_path)]
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "gated"\n\n[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    params = stdio_parameters(tmp_path / "unused.db", cwd=tmp_path)
    params.args = ["serve"]
    return Client(params, mode="legacy")


def task(subject: str, files: object = None) -> dict[str, object]:
    return {"subject": subject, **({"metadata": {"files": files}} if files is not None else {})}


async def finish(client: Client, tmp_path: Path, task_ids: list[str]) -> None:
    for task_id in task_ids:
        (tmp_path / f"go-{task_id}").write_text("")
    while (await call(client, "wait", timeoutSeconds=20))["running"]:
        pass


async def test_overlapping_scopes_never_run_at_once_and_the_later_task_waits(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(
            client,
            "TaskCreatePlan",
            tasks=[
                task("auth module", ["src/auth/*.py"]),
                task("login page", ["./src/auth/login.py"]),
                task("docs", ["docs"]),
                task("no scope declared"),
                task("readme in docs", "docs/README.md"),
            ],
        )
        spawned = await call(client, "spawn")
        assert sorted(w["taskId"] for w in spawned["workers"]) == ["1", "3", "4"]
        skipped = {s["taskId"]: s["reason"] for s in spawned["skipped"]}
        assert set(skipped) == {"2", "5"}
        assert all(s["retry"] is True for s in spawned["skipped"])  # they start once task 1 or 3 ends
        assert "task 1" in skipped["2"]
        assert "src/auth/*.py" in skipped["2"]
        assert "src/auth/login.py" in skipped["2"]
        assert "task 3" in skipped["5"]
        # Not assigned: still pending, no owner.
        assert (await call(client, "TaskGet", taskId="2"))["status"] == "pending"
        # While task 1 runs, its scope still holds task 2 back, in a later spawn too.
        again = await call(client, "spawn")
        assert again["workers"] == []
        assert {s["taskId"] for s in again["skipped"]} == {"2", "5"}
        await finish(client, tmp_path, ["1", "3", "4"])
        # Their tasks ended: the held-back ones start now.
        spawned = await call(client, "spawn")
        assert sorted(w["taskId"] for w in spawned["workers"]) == ["2", "5"]
        await finish(client, tmp_path, ["2", "5"])
        assert (await call(client, "TaskList"))["counts"] == {"completed": 5, "ready": 0}


async def test_a_task_held_back_by_its_scope_leaves_its_slot_to_the_next_ready_task(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(
            client,
            "TaskCreatePlan",
            tasks=[task("a", ["src/x.py"]), task("b", ["src/x.py"]), task("c", ["src/y.py"])],
        )
        spawned = await call(client, "spawn", maxWorkers=2)
        assert sorted(w["taskId"] for w in spawned["workers"]) == ["1", "3"]
        assert spawned["skipped"] == [
            {"taskId": "2", "reason": spawned["skipped"][0]["reason"], "retry": True}
        ]
        # Both slots taken: the next spawn leaves task 2 for want of a slot, also to retry.
        [full] = (await call(client, "spawn", maxWorkers=2))["skipped"]
        assert full["reason"].startswith("maxWorkers (2) reached")
        assert full["retry"] is True
        await finish(client, tmp_path, ["1", "3"])


async def test_a_malformed_scope_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(
            client, "TaskCreatePlan", tasks=[task("bad", {"not": "a list"}), task("escapes", ["../x"])]
        )
        spawned = await call(client, "spawn")
        assert spawned["workers"] == []
        reasons = {s["taskId"]: s["reason"] for s in spawned["skipped"]}
        assert not any("retry" in s for s in spawned["skipped"])  # spawning again would not help
        assert "metadata.files must be a list" in reasons["1"]
        assert "outside the project" in reasons["2"]
        assert (await call(client, "TaskList"))["counts"]["pending"] == 2
