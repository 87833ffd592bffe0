"""Workers get an environment built from an allow-list: the server's secrets stay with the server.

`mcp-swarm serve` runs over stdio with secrets in its environment (a cloud key, a token, a
password). Real workers dump the environment they were given (tests/support/stand_ins/record_run), and so
do a task's validation command and a git hook the server's git runs: none of them may see a
secret unless `env_allow` in mcp-swarm.toml names it. In distributed mode the worker's parent (the
wrapper in its tmux pane) and the tmux server are looked at too, since a secret on either would
reach every later session. A worker gets the address of the server's worker endpoint and its own
attempt's token, and never the database's path.
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest

from mcp_swarm.placement.wrapped import WRAPPER_COMMAND
from tests.support import helpers
from tests.support.helpers import git
from tests.support.recorded_runs import Record, configure, read_record, record_argv, run_one, serve

pytestmark = pytest.mark.anyio

# A fixture: a tmux server of the test's own, killed afterwards.
tmux_socket = helpers.tmux_socket

SECRETS = {
    name: f"{name.lower()}-{uuid.uuid4().hex}"
    for name in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "MY_PASSWORD")
}


def leaked(environment: dict[str, str]) -> list[str]:
    """The secrets found in an environment, by name or by value (under any name)."""
    values = set(environment.values())
    return sorted(name for name, value in SECRETS.items() if name in environment or value in values)


def task_with_check(records: Path) -> dict[str, object]:
    check = record_argv(records / "check.json")
    return {"subject": "Show me", "description": "", "metadata": {"validation": {"command": check}}}


@pytest.mark.parametrize("mode", ["local", pytest.param("distributed", marks=pytest.mark.tmux)])
async def test_secrets_of_the_server_reach_no_worker_and_no_check(
    tmp_path: Path, tmux_socket: str, mode: str
) -> None:
    records = tmp_path / "records"
    configure(tmp_path, records, socket=tmux_socket if mode == "distributed" else None)
    async with serve(tmp_path, SECRETS) as client:
        done = await run_one(client, task_with_check(records))
    assert done["taskStatus"] == "completed", done
    worker, check = read_record(records / "worker-1.json"), read_record(records / "check.json")
    assert leaked(worker.env) == []
    assert leaked(check.env) == []
    # What a worker is given besides the allow-list: its endpoint and its attempt's token, and
    # never the database (nor a path to it).
    assert (worker.env["SWARM_TASK_ID"], worker.env["SWARM_WORKER_ID"]) == ("1", "worker-1")
    assert {"SWARM_URL", "SWARM_TOKEN", "SWARM_RESULT_FILE", "PATH", "HOME"} <= set(worker.env)
    assert worker.env["SWARM_URL"].startswith("http://127.0.0.1:")
    assert "SWARM_DB" not in worker.env
    assert not [name for name, value in worker.env.items() if "swarm.db" in value]
    # The token is in the environment only: not on the worker's command line, nor its wrapper's.
    token = worker.env["SWARM_TOKEN"]
    assert len(token) >= 40
    assert not any(token in arg for arg in worker.argv)
    assert {"PATH", "HOME"} <= set(check.env)
    # A task's checks are no worker: they get no token.
    assert not {"SWARM_URL", "SWARM_TOKEN"} & set(check.env)
    if mode == "distributed":
        # The wrapper in the pane, whose environment is the tmux server's global one (which every
        # later session inherits) and tmux's own: no secret on its command line or in its environment.
        assert worker.parent_cmdline[1:5] == list(WRAPPER_COMMAND)
        assert "TMUX" in worker.parent_env
        assert leaked(worker.parent_env) == []
        assert not any(value in " ".join(worker.parent_cmdline) for value in SECRETS.values())
        assert token not in " ".join(worker.parent_cmdline)
        assert "SWARM_TOKEN" not in worker.parent_env
        # The file that carried the worker's environment to the wrapper is gone.
        assert list((tmp_path / ".mcp-swarm" / "workers").rglob("*.env")) == []


@pytest.mark.parametrize("mode", ["local", pytest.param("distributed", marks=pytest.mark.tmux)])
async def test_env_allow_passes_exactly_the_variables_it_names(
    tmp_path: Path, tmux_socket: str, mode: str
) -> None:
    records = tmp_path / "records"
    allow = ["PATH", "MY_*"]
    socket = tmux_socket if mode == "distributed" else None
    configure(tmp_path, records, [f"env_allow = {json.dumps(allow)}"], socket=socket)
    async with serve(tmp_path, SECRETS) as client:
        done = await run_one(client, task_with_check(records))
    assert done["taskStatus"] == "completed", done
    for record in (read_record(records / "worker-1.json"), read_record(records / "check.json")):
        assert leaked(record.env) == ["MY_PASSWORD"]
        assert record.env["MY_PASSWORD"] == SECRETS["MY_PASSWORD"]
        assert "HOME" not in record.env, "only the names allowed"
    worker = read_record(records / "worker-1.json")
    assert {name for name in worker.env if not name.startswith("SWARM_")} == {"PATH", "MY_PASSWORD"}


async def test_git_and_the_hooks_it_runs_get_no_secrets(tmp_path: Path) -> None:
    """A hook in the project's repository (which a worker of the shared tree can write) runs with
    the environment of the server's git: `git worktree add` runs post-checkout."""
    project, records = tmp_path / "project", tmp_path / "records"
    project.mkdir()
    configure(project, records)
    (project / "README.md").write_text("# repo\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
    _hook(project, "post-checkout", record_argv(records / "hook.json"))
    identity = {"GIT_AUTHOR_NAME": "Lead", "GIT_AUTHOR_EMAIL": "lead@example.com"}
    async with serve(project, {**SECRETS, **identity}) as client:
        done = await run_one(client, {"subject": "In a worktree", "description": ""}, isolation="worktree")
    assert done["taskStatus"] == "completed", done
    hook: Record = read_record(records / "hook.json")
    assert hook.cwd == str(project / ".mcp-swarm" / "worktrees" / "worker-1")
    assert leaked(hook.env) == []
    # What git needs of the user's is still there: where their configuration is, who they are.
    assert {"PATH", "HOME", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"} <= set(hook.env)


def _hook(project: Path, name: str, argv: list[str]) -> None:
    hook = project / ".git" / "hooks" / name
    hook.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
    hook.chmod(0o755)
