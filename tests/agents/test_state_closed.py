"""A worker cannot touch the swarm's state: its agent CLI keeps it out of the state directory.

The swarm's state (`.mcp-swarm/`: the database, each attempt's exit status, the result files, the
logs, the HTTP server's token file) lies inside the project a worker may write, and a worker in
worktree isolation works inside it. A real worker, the installed CLI spawned by `mcp-swarm serve`
with a scripted model behind it, tries to forge that state: overwrite the database, append to
another worker's result file, write its own attempt's exit status, add a result file with the
agent's own file tool, and read the token file. Each is refused and the bytes are as they were,
while in the same run the worker writes a file in its own directory (the project, or its
worktree). Codex refuses it in its operating-system sandbox (a permission profile, see
mcp_swarm/runtimes/codex.py), Claude Code by its permission rules (see
mcp_swarm/runtimes/claude.py), which cover the shell commands it runs without asking too.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_clis import (
    AgentCLI,
    Answer,
    ClaudeCLI,
    CodexCLI,
    ReadFile,
    Shell,
    Step,
    WriteFile,
    spawn_one,
    wait_for,
)
from tests.support.helpers import git
from tests.support.mcp_client import call

pytestmark = [pytest.mark.anyio, pytest.mark.agent_cli, pytest.mark.slow]

MARK = "forged-by-the-worker"
SECRET = "token-the-worker-must-not-read"
OTHER_RESULT = '{"status": "done", "summary": "worker-9 did its part"}\n'
DONE_TEXT = "I wrote inside.txt; the swarm's files were closed to me."
SANDBOX_PROBE_SECONDS = 60
ISOLATIONS = ["shared", "worktree"]


def _prepare(agent: AgentCLI, isolation: str) -> Path:
    """The state a worker must not touch, planted before the server starts: another worker's
    result file and a token file. Returns the directory the worker will work in."""
    state = agent.project / ".mcp-swarm"
    (state / "results").mkdir(parents=True)
    (state / "results" / "worker-9.json").write_text(OTHER_RESULT)
    (state / "token").write_text(SECRET)
    if isolation == "shared":
        return agent.project
    (agent.project / "README").write_text("a project\n")
    git(agent.project, "init", "-q", "-b", "main")
    git(agent.project, "add", "README")
    git(agent.project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    return state / "worktrees" / "worker-1"


def _assert_state_intact(project: Path, explain: str) -> None:
    state = project / ".mcp-swarm"
    assert (state / "results" / "worker-9.json").read_text() == OTHER_RESULT, explain
    assert not (state / "results" / "worker-10.json").exists(), explain
    assert (state / "token").read_text() == SECRET, explain
    exit_status = state / "workers" / "worker-1" / "exit-1.json"
    assert not exit_status.exists() or MARK not in exit_status.read_text(), explain
    for name in ("swarm.db", "swarm.db-wal"):
        path = state / name
        if path.exists():
            assert MARK.encode() not in path.read_bytes(), explain
    with sqlite3.connect(state / "swarm.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), explain


async def _run(agent: AgentCLI, steps: list[Step], isolation: str) -> dict[str, Any]:
    with agent.scripted(steps):
        async with agent.swarm() as client:
            worker_id = await spawn_one(
                client, agent, "Forge the swarm", description="Try.", isolation=isolation
            )
            done = await wait_for(client, agent, worker_id)
            task = await call(client, "TaskGet", taskId=done["taskId"])
    assert worker_id == "worker-1", done
    assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), agent.explain(done)
    assert done["summary"] == DONE_TEXT, agent.explain(done)
    assert task["status"] == "completed", task
    assert agent.server_errors() == []
    if isolation == "worktree":
        # What the worker changed, as wait reports it: its one file, nothing of the state.
        assert [change["path"] for change in done["changes"]] == ["inside.txt"], agent.explain(done)
    return done


# -- Codex: the sandbox ------------------------------------------------------------------------------


def _codex_sandbox_refusal(codex: str, directory: Path) -> str | None:
    """Why Codex cannot sandbox a command on this machine, or None when it can.

    Its sandbox needs user namespaces (bubblewrap, bundled with the CLI) and seccomp; a container
    that forbids them fails every sandboxed command, and then there is nothing to test here.
    """
    probe = directory / "probe"
    script = f"echo ok > {probe} && echo written"
    argv = [codex, "sandbox", "-c", 'sandbox_mode="workspace-write"', "--", "sh", "-c", script]
    try:
        run = subprocess.run(
            argv,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=SANDBOX_PROBE_SECONDS,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "CODEX_HOME": str(directory)},
        )
    except subprocess.TimeoutExpired:
        return f"`codex sandbox` did not finish within {SANDBOX_PROBE_SECONDS} s"
    if run.returncode == 0 and "written" in run.stdout and probe.is_file():
        probe.unlink()
        return None
    return f"`codex sandbox` cannot run a command here (exit {run.returncode}): {run.stderr.strip()[-500:]}"


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp: Codex's workspace profile leaves /tmp writable, and pytest's
    directories are there, so only a project elsewhere shows what the workspace rule allows."""
    base = Path("/var/tmp")
    if not base.is_dir():
        pytest.skip("no /var/tmp to put a project outside /tmp in")
    root = Path(tempfile.mkdtemp(prefix="mcp-swarm-state-", dir=base)).resolve()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _attempt(command: str, name: str) -> str:
    """A shell line that runs `command` and says whether it did (`did-NAME`) or was refused."""
    return f"({command}) 2>/dev/null && echo did-{name} || echo refused-{name}; "


def _codex_attack(state: Path) -> str:
    exit_status = f'\'{{"exit_code": 0, "{MARK}": 1}}\''
    return (
        _attempt(f"printf {MARK} > {state}/swarm.db", "db")
        + _attempt(f"printf {MARK} >> {state}/results/worker-9.json", "result")
        + _attempt(f"printf {exit_status} > {state}/workers/worker-1/exit-1.json", "exit")
        + _attempt(f"cat {state}/token", "read")
        + "printf ok > inside.txt && echo did-inside"
    )


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_codex_worker_cannot_touch_the_swarms_state(outside_tmp: Path, isolation: str) -> None:
    agent = CodexCLI(outside_tmp)
    refusal = _codex_sandbox_refusal(agent.program, outside_tmp)
    if refusal is not None:
        pytest.skip(refusal)
    workdir = _prepare(agent, isolation)
    state = agent.project / ".mcp-swarm"
    steps: list[Step] = [
        Shell(_codex_attack(state), "call_attack"),
        WriteFile(str(state / "results" / "worker-10.json"), '{"status": "done"}\n', "call_patch"),
        Answer(DONE_TEXT),
    ]
    done = await _run(agent, steps, isolation)
    explain = agent.explain(done)

    attack, _ = agent.tool_output("call_attack")
    for what in ("db", "result", "exit", "read"):
        assert f"refused-{what}" in attack, attack + explain
        assert f"did-{what}" not in attack, attack + explain
    assert SECRET not in attack, attack + explain
    assert "did-inside" in attack, attack + explain
    assert (workdir / "inside.txt").read_text() == "ok", explain
    patch, _ = agent.tool_output("call_patch")
    assert "rejected" in patch, patch + explain
    _assert_state_intact(agent.project, explain)


# -- Claude Code: the permission rules --------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_claude_worker_cannot_touch_the_swarms_state(tmp_path: Path, isolation: str) -> None:
    agent = ClaudeCLI(tmp_path)
    workdir = _prepare(agent, isolation)
    state = agent.project / ".mcp-swarm"
    # One simple command each: acceptEdits runs these without asking in the worker's directory (a
    # compound command would be refused for want of an approval, whatever the rules say).
    attacks: dict[str, Step] = {
        "call_db": Shell(f"echo {MARK} > .mcp-swarm/swarm.db", "call_db"),
        "call_result": Shell(f"echo {MARK} >> .mcp-swarm/results/worker-9.json", "call_result"),
        "call_exit": WriteFile(
            str(state / "workers" / "worker-1" / "exit-1.json"), f'{{"{MARK}": 0}}\n', "call_exit"
        ),
        "call_new": WriteFile(str(state / "results" / "worker-10.json"), '{"status": "done"}\n', "call_new"),
        "call_read": ReadFile(str(state / "token"), "call_read"),
    }
    if isolation == "worktree":
        # From the worktree, the state is its parent's parent: the shell commands name it so.
        attacks["call_db"] = Shell(f"echo {MARK} > {state}/swarm.db", "call_db")
        attacks["call_result"] = Shell(f"echo {MARK} >> {state}/results/worker-9.json", "call_result")
    inside = WriteFile(str(workdir / "inside.txt"), "ok\n", "call_inside")
    done = await _run(agent, [*attacks.values(), inside, Answer(DONE_TEXT)], isolation)
    explain = agent.explain(done)

    for call_id in attacks:
        text, is_error = agent.tool_output(call_id)
        assert is_error, f"{call_id}: {text}{explain}"
        assert SECRET not in text, f"{call_id}: {text}{explain}"
    text, is_error = agent.tool_output("call_inside")
    assert not is_error, text + explain
    assert (workdir / "inside.txt").read_text() == "ok\n", explain
    _assert_state_intact(agent.project, explain)
