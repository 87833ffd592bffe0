"""Worktree isolation through the tools: spawn(isolation="worktree"), changes in wait, integrate.

A real git repository, real `mcp-swarm serve` over stdio, real workers writing files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp import Client

from tests.support.helpers import git
from tests.support.mcp_client import call, stdio_parameters

pytestmark = pytest.mark.anyio

# Writes out-<task>.txt; with "@shared" in its prompt also shared.txt, with its task id in it.
WORKER = """
import os, pathlib, sys
task = os.environ["SWARM_TASK_ID"]
pathlib.Path(f"out-{task}.txt").write_text(f"done by task {task}\\n")
if "@shared" in pathlib.Path(sys.argv[1]).read_text():
    pathlib.Path("shared.txt").write_text(f"task {task} was here\\n")
"""


def project(tmp_path: Path, *, repository: bool = True) -> Path:
    repo = tmp_path / "my project"
    repo.mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    argv = [sys.executable, str(tmp_path / "worker.py"), "{prompt_file}"]
    (repo / "mcp-swarm.toml").write_text(
        f'default_runtime = "writer"\n\n[runtimes.writer]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    (repo / "README.md").write_text("a project\n")
    if repository:
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    return repo


def mayor(repo: Path) -> Client:
    params = stdio_parameters(repo / "unused.db", cwd=repo)
    params.args = ["serve"]
    params.env = {"PATH": "/usr/bin:/bin", "HOME": str(repo.parent), "GIT_AUTHOR_NAME": "Lead",
                  "GIT_AUTHOR_EMAIL": "lead@example.com", "GIT_COMMITTER_NAME": "Lead",
                  "GIT_COMMITTER_EMAIL": "lead@example.com"}  # fmt: skip
    return Client(params, mode="legacy")


async def test_workers_change_their_own_worktrees_and_the_lead_integrates_wave_by_wave(
    tmp_path: Path,
) -> None:
    repo = project(tmp_path)
    async with mayor(repo) as client:
        await call(
            client,
            "TaskCreatePlan",
            tasks=[
                {"key": "model", "subject": "Create User model"},
                {"key": "hash", "subject": "Add password hashing", "blockedBy": ["model"]},
            ],
        )
        [worker] = (await call(client, "spawn", isolation="worktree"))["workers"]
        [done] = (await call(client, "wait", timeoutSeconds=20))["done"]
        assert done["taskStatus"] == "completed"
        assert done["changes"] == [{"path": "out-1.txt", "added": 1, "removed": 0, "status": "added"}], done
        # The worker wrote in its worktree only; nothing is committed yet, the main tree is clean.
        assert not (repo / "out-1.txt").exists()
        assert git(repo, "status", "--porcelain") == ""
        integrated = await call(client, "integrate")
        assert [(i["taskId"], i["workerId"]) for i in integrated["integrated"]] == [("1", worker["workerId"])]
        assert (repo / "out-1.txt").read_text() == "done by task 1\n"
        message = git(repo, "log", "-1", "--format=%B")
        assert "#1 Create User model" in message
        assert git(repo, "rev-parse", "HEAD").strip() == integrated["commit"]
        assert not (repo / ".mcp-swarm" / "worktrees" / worker["workerId"]).exists()
        # The next wave branches from the integrated HEAD: it sees the first task's file.
        [second] = (await call(client, "spawn", isolation="worktree"))["workers"]
        [done] = (await call(client, "wait", timeoutSeconds=20))["done"]
        assert [c["path"] for c in done["changes"]] == ["out-2.txt"]
        assert (await call(client, "integrate"))["integrated"][0]["workerId"] == second["workerId"]
        assert git(repo, "log", "--format=%s").splitlines()[-1] == "start"
        assert len(git(repo, "log", "--format=%H").splitlines()) == 3  # start + one commit per wave
        assert (await call(client, "integrate")) == {"integrated": [], "message": "nothing to integrate"}


async def test_a_conflict_stops_that_worker_and_leaves_both_trees_as_they_were(tmp_path: Path) -> None:
    repo = project(tmp_path)
    async with mayor(repo) as client:
        plan = [
            {"subject": "first", "description": "@shared"},
            {"subject": "second", "description": "@shared"},
        ]
        await call(client, "TaskCreatePlan", tasks=plan)
        workers = (await call(client, "spawn", isolation="worktree"))["workers"]
        assert len(workers) == 2  # in worktrees, no write scope holds them apart
        done: list[dict[str, object]] = []
        while len(done) < 2:
            done += (await call(client, "wait", timeoutSeconds=20))["done"]
        report = await call(client, "integrate")
        assert [i["taskId"] for i in report["integrated"]] == ["1"]
        [conflict] = report["conflicts"]
        assert (conflict["taskId"], conflict["reason"]) == ("2", "does_not_apply")
        assert "shared.txt" in conflict["files"]
        # The main tree has the first task's work, committed; the second's worktree is untouched.
        assert (repo / "shared.txt").read_text() == "task 1 was here\n"
        assert git(repo, "status", "--porcelain") == ""
        second = repo / ".mcp-swarm" / "worktrees" / workers[1]["workerId"]
        assert (second / "shared.txt").read_text() == "task 2 was here\n"


async def test_worktree_isolation_outside_a_git_repository_is_refused_per_task(tmp_path: Path) -> None:
    repo = project(tmp_path, repository=False)
    async with mayor(repo) as client:
        await call(client, "TaskCreate", subject="anything", description="")
        spawned = await call(client, "spawn", isolation="worktree")
        assert spawned["workers"] == []
        [skipped] = spawned["skipped"]
        assert "git" in skipped["reason"]
        task = await call(client, "TaskGet", taskId="1")
        assert task["status"] == "pending"
