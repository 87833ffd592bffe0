"""A worker cannot change the swarm's state: its agent CLI keeps it out of the state directory.

The swarm's state (`.mcp-swarm/`: the database, each attempt's exit status, the result files, the
logs) lies inside the project a worker may write. A real worker, the installed CLI spawned by
`mcp-swarm serve` with a scripted model behind it, tries to forge that state: overwrite the
database, append to another worker's result file, write its own attempt's exit status, add a
result file with the agent's own file tool. Each is refused and the bytes are as they were, while
in the same run the worker writes a file of the project. Codex refuses it in its operating-system
sandbox (a permission profile, see mcp_swarm/runtimes/codex.py), Claude Code by its permission
rules (see mcp_swarm/runtimes/claude.py), which cover its shell too.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_clis import (
    AgentCLI,
    Answer,
    ClaudeCLI,
    CodexCLI,
    Shell,
    Step,
    WriteFile,
    spawn_one,
    wait_for,
)
from tests.support.mcp_client import call

pytestmark = [pytest.mark.anyio, pytest.mark.agent_cli, pytest.mark.slow]

MARK = "forged-by-the-worker"
OTHER_RESULT = '{"status": "done", "summary": "worker-9 did its part"}\n'
DONE_TEXT = "I wrote inside.txt; the swarm's files were closed to me."
SANDBOX_PROBE_SECONDS = 60


def _plant_state(project: Path) -> Path:
    """Another worker's result file, in the state directory before the server starts."""
    results = project / ".mcp-swarm" / "results"
    results.mkdir(parents=True)
    other = results / "worker-9.json"
    other.write_text(OTHER_RESULT)
    return other


def _assert_state_intact(project: Path, other: Path, explain: str) -> None:
    state = project / ".mcp-swarm"
    assert other.read_text() == OTHER_RESULT, explain
    assert not (state / "results" / "worker-10.json").exists(), explain
    exit_status = state / "workers" / "worker-1" / "exit-1.json"
    assert not exit_status.exists() or MARK not in exit_status.read_text(), explain
    for name in ("swarm.db", "swarm.db-wal"):
        path = state / name
        if path.exists():
            assert MARK.encode() not in path.read_bytes(), explain
    with sqlite3.connect(state / "swarm.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), explain


async def _run(agent: AgentCLI, steps: list[Step]) -> dict[str, object]:
    with agent.scripted(steps):
        async with agent.swarm() as client:
            worker_id = await spawn_one(client, agent, "Forge the swarm", description="Try it.")
            done = await wait_for(client, agent, worker_id)
            task = await call(client, "TaskGet", taskId=done["taskId"])
    assert worker_id == "worker-1", done
    assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), agent.explain(done)
    assert done["summary"] == DONE_TEXT, agent.explain(done)
    assert task["status"] == "completed", task
    assert agent.server_errors() == []
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
    """A shell line that runs `command` and says whether it wrote (`wrote-NAME`) or was refused."""
    return f"({command}) 2>/dev/null && echo wrote-{name} || echo refused-{name}; "


CODEX_ATTACK = (
    _attempt(f"printf {MARK} > .mcp-swarm/swarm.db", "db")
    + _attempt(f"printf {MARK} >> .mcp-swarm/results/worker-9.json", "result")
    + _attempt(
        f'printf \'{{"exit_code": 0, "{MARK}": 1}}\' > .mcp-swarm/workers/worker-1/exit-1.json', "exit"
    )
    + "printf ok > inside.txt && echo wrote-inside"
)


async def test_codex_worker_cannot_write_the_swarms_state(outside_tmp: Path) -> None:
    agent = CodexCLI(outside_tmp)
    refusal = _codex_sandbox_refusal(agent.program, outside_tmp)
    if refusal is not None:
        pytest.skip(refusal)
    other = _plant_state(agent.project)
    steps: list[Step] = [
        Shell(CODEX_ATTACK, "call_attack"),
        WriteFile(".mcp-swarm/results/worker-10.json", '{"status": "done"}\n', "call_patch"),
        Answer(DONE_TEXT),
    ]
    done = await _run(agent, steps)
    explain = agent.explain(done)

    attack, _ = agent.tool_output("call_attack")
    for what in ("db", "result", "exit"):
        assert f"refused-{what}" in attack, attack + explain
        assert f"wrote-{what}" not in attack, attack + explain
    assert "wrote-inside" in attack, attack + explain
    assert (agent.project / "inside.txt").read_text() == "ok", explain
    patch, _ = agent.tool_output("call_patch")
    assert "rejected" in patch, patch + explain
    _assert_state_intact(agent.project, other, explain)


# -- Claude Code: the permission rules --------------------------------------------------------------


async def test_claude_worker_cannot_write_the_swarms_state(tmp_path: Path) -> None:
    agent = ClaudeCLI(tmp_path)
    other = _plant_state(agent.project)
    # One simple command each: acceptEdits runs these without asking (a compound command would be
    # refused for want of an approval, whatever the rules say).
    attacks = {
        "call_db": Shell(f"echo {MARK} > .mcp-swarm/swarm.db", "call_db"),
        "call_result": Shell(f"echo {MARK} >> .mcp-swarm/results/worker-9.json", "call_result"),
        "call_exit": WriteFile(".mcp-swarm/workers/worker-1/exit-1.json", f'{{"{MARK}": 0}}\n', "call_exit"),
        "call_new": WriteFile(".mcp-swarm/results/worker-10.json", '{"status": "done"}\n', "call_new"),
    }
    steps: list[Step] = [*attacks.values(), WriteFile("inside.txt", "ok\n", "call_inside"), Answer(DONE_TEXT)]
    done = await _run(agent, steps)
    explain = agent.explain(done)

    for call_id in attacks:
        text, is_error = agent.tool_output(call_id)
        assert is_error, f"{call_id}: {text}{explain}"
        assert "denied" in text, f"{call_id}: {text}{explain}"
    text, is_error = agent.tool_output("call_inside")
    assert not is_error, text + explain
    assert (agent.project / "inside.txt").read_text() == "ok\n", explain
    _assert_state_intact(agent.project, other, explain)
