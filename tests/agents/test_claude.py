"""A real Claude Code agent drives mcp-swarm's task tools, with a scripted model behind it.

The model is ``ScriptedAnthropicServer`` on 127.0.0.1; the agent is the installed ``claude`` CLI,
run headless (``-p``) with mcp-swarm registered as its only MCP server. What is checked is the
part a unit test cannot reach: Claude Code discovers the tools as ``mcp__swarm__*``, calls them
with the model's arguments, the ledger persists the result, and the answers make it back to the
model as ``tool_result`` blocks.

Running Claude Code 2.1.197 hermetically and headless as root takes:

* a fresh ``HOME`` and ``CLAUDE_CONFIG_DIR`` (no user settings, no login, no history);
* ``ANTHROPIC_BASE_URL`` pointing here and any ``ANTHROPIC_API_KEY``;
* ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``: without it the CLI also asks the model for a
  session title and resolves outside host names, which is traffic this test must not make;
* ``MCP_CONNECTION_NONBLOCKING=0`` and a long ``MCP_CONNECT_TIMEOUT_MS``: by default ``-p`` sends
  the first request while MCP servers are still starting (they show as ``pending`` and the model
  is offered ``WaitForMcpServers`` instead of their tools), so on a slow machine the first scripted
  call would fail with "No such tool available". Blocking mode waits for them, but by default
  only 5 s;
* ``DISABLE_TELEMETRY``, ``DISABLE_ERROR_REPORTING``, ``DISABLE_AUTOUPDATER``;
* none of the variables that mark a nested session (``CLAUDECODE``, ``CLAUDE_CODE_ENTRYPOINT``);
* ``--allowedTools`` naming the MCP tools: headless mode has nobody to approve a call, so any tool
  not allowed comes back as an error ``tool_result``. ``--dangerously-skip-permissions`` (and
  ``--permission-mode bypassPermissions``) are refused as root unless ``IS_SANDBOX=1`` is set, and
  would allow far more than this test needs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import Client, StdioServerParameters

from tests.support.agent_clis import QUIET_CLAUDE, hermetic, run_to_end
from tests.support.scripted_llm import ScriptedAnthropicServer, TextTurn, ToolCall, ToolResult, ToolUseTurn

pytestmark = pytest.mark.agent_cli

CLI_TIMEOUT_SECONDS = 120
# How long the CLI may wait for mcp-swarm to start before its first model request; well inside
# the CLI timeout so that a server that never starts still ends in a readable failure.
MCP_CONNECT_TIMEOUT_SECONDS = 60
FINAL_TEXT = "The ledger is ready."
ALLOWED_TOOLS = ("mcp__swarm__TaskCreate", "mcp__swarm__TaskUpdate", "mcp__swarm__TaskList")

# Variables that would make the CLI log in elsewhere, talk to another provider, or believe it runs
# inside another Claude Code session (hermetic also drops the proxies and our own settings).
_INHERITED_PREFIXES = ("ANTHROPIC_", "CLAUDE", "AWS_BEARER_TOKEN_BEDROCK")

SCRIPT = [
    ToolUseTurn(
        [
            ToolCall(
                "mcp__swarm__TaskCreate",
                {"subject": "Design the schema", "description": "Tables for users and sessions"},
                id="toolu_create_schema",
            )
        ],
        text="I will plan this as two tasks.",
    ),
    ToolUseTurn(
        [
            ToolCall(
                "mcp__swarm__TaskCreate",
                {"subject": "Write the migration", "description": "Alembic migration for the new tables"},
                id="toolu_create_migration",
            )
        ]
    ),
    ToolUseTurn(
        [ToolCall("mcp__swarm__TaskUpdate", {"taskId": "2", "addBlockedBy": ["1"]}, id="toolu_link")]
    ),
    ToolUseTurn([ToolCall("mcp__swarm__TaskList", {}, id="toolu_list")]),
    TextTurn(FINAL_TEXT),
]


def _claude_executable() -> str:
    path = shutil.which("claude")
    if path is None:
        message = "the Claude Code CLI (`claude`) is not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must install it (npm install -g @anthropic-ai/claude-code)")
        pytest.skip(message)
    return path


def _mcp_swarm_command() -> list[str]:
    # The console script beside the interpreter running the tests belongs to the same install as
    # the package under test; `python -m` is the fallback for an install without scripts.
    script = Path(sys.executable).with_name("mcp-swarm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcp_swarm"]


def _hermetic_env(base_url: str, home: Path) -> dict[str, str]:
    return hermetic(
        _INHERITED_PREFIXES,
        HOME=str(home),
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="sk-ant-scripted-test-key",
        **QUIET_CLAUDE,
        MCP_CONNECTION_NONBLOCKING="0",
        MCP_CONNECT_TIMEOUT_MS=str(MCP_CONNECT_TIMEOUT_SECONDS * 1000),
        NO_PROXY="127.0.0.1,localhost",
    )


@dataclass(frozen=True)
class AgentRun:
    """What one headless Claude Code session produced, for the assertions of several tests."""

    command: Sequence[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    llm: ScriptedAnthropicServer
    db_path: Path

    def explain(self) -> str:
        requests = [(r.kind, r.method, r.path) for r in self.llm.requests]
        return (
            f"\ncommand: {' '.join(self.command)}"
            f"\nexit code: {'timed out' if self.returncode is None else self.returncode}"
            f" after {self.seconds:.1f}s"
            f"\nscripted LLM: {self.llm.turns_consumed} turns consumed, errors {self.llm.errors}"
            f"\nrequests: {requests}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def events(self) -> list[dict[str, Any]]:
        """The stream-json events the CLI printed, one JSON object a line."""
        found: list[dict[str, Any]] = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                found.append(cast(dict[str, Any], json.loads(line)))
        return found

    def tool_result(self, tool_use_id: str) -> ToolResult:
        try:
            result = self.llm.tool_result(tool_use_id)
        except KeyError as exc:
            raise AssertionError(f"{exc}{self.explain()}") from exc
        assert not result.is_error, f"{tool_use_id} failed: {result.text}{self.explain()}"
        return result


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentRun]:
    claude = _claude_executable()
    root = tmp_path_factory.mktemp("claude-agent")
    home, workdir = root / "home", root / "work"
    home.mkdir()
    workdir.mkdir()
    db_path = root / "swarm.db"
    mcp_config = root / "mcp.json"
    command = _mcp_swarm_command()
    server_entry = {"command": command[0], "args": [*command[1:], "serve", "--db", str(db_path)]}
    mcp_config.write_text(json.dumps({"mcpServers": {"swarm": server_entry}}), encoding="utf-8")

    with ScriptedAnthropicServer(SCRIPT) as llm:
        argv = [
            claude,
            "-p",
            "Plan the database work as tasks in the swarm ledger.",
            "--output-format",
            "stream-json",
            "--verbose",
            "--mcp-config",
            str(mcp_config),
            "--strict-mcp-config",
            "--allowedTools",
            ",".join(ALLOWED_TOOLS),
        ]
        started = time.monotonic()
        returncode, stdout, stderr = run_to_end(
            argv, cwd=workdir, env=_hermetic_env(llm.base_url, home), timeout=CLI_TIMEOUT_SECONDS
        )
        yield AgentRun(argv, returncode, stdout, stderr, time.monotonic() - started, llm, db_path)


def test_agent_session_completes(agent_run: AgentRun) -> None:
    assert agent_run.returncode == 0, agent_run.explain()
    events = agent_run.events()
    init = next((e for e in events if e.get("type") == "system" and e.get("subtype") == "init"), None)
    assert init is not None, agent_run.explain()
    assert {"name": "swarm", "status": "connected"} in init.get("mcp_servers", []), agent_run.explain()
    result = events[-1]
    assert result.get("type") == "result", agent_run.explain()
    assert result.get("is_error") is False, agent_run.explain()
    assert result.get("result") == FINAL_TEXT, agent_run.explain()
    # Four tool turns and the closing text: one main request each, and nothing left unanswered.
    assert len(agent_run.llm.main_requests) == len(SCRIPT), agent_run.explain()
    assert agent_run.llm.script_exhausted, agent_run.explain()
    assert agent_run.llm.errors == [], agent_run.explain()
    # Every turn, the first included, must have seen the tools: a request sent before mcp-swarm
    # connected would offer WaitForMcpServers instead.
    expected = {
        f"mcp__swarm__{name}"
        for name in ("TaskCreate", "TaskCreatePlan", "TaskUpdate", "TaskGet", "TaskList")
    }
    for request in agent_run.llm.main_requests:
        assert expected <= set(request.tool_names), agent_run.explain()


def test_agent_receives_tool_results(agent_run: AgentRun) -> None:
    first = agent_run.tool_result("toolu_create_schema").json()
    assert (first["id"], first["subject"], first["status"]) == ("1", "Design the schema", "pending"), first
    assert not first.get("blockedBy"), first
    second = agent_run.tool_result("toolu_create_migration").json()
    assert second["id"] == "2", agent_run.explain()
    assert second["subject"] == "Write the migration"

    linked = agent_run.tool_result("toolu_link").json()
    assert linked["id"] == "2"
    assert linked["blockedBy"] == ["1"], linked

    listing = agent_run.tool_result("toolu_list").json()
    tasks = {task["id"]: task for task in listing["tasks"]}
    assert set(tasks) == {"1", "2"}, listing
    assert tasks["2"]["blockedBy"] == ["1"], listing
    # Empty fields are left out of the compact listing, so task 1 shows no blockers at all.
    assert not tasks["1"].get("blockedBy"), listing


@pytest.mark.anyio
async def test_ledger_keeps_what_the_agent_wrote(agent_run: AgentRun) -> None:
    assert agent_run.returncode == 0, agent_run.explain()
    command = _mcp_swarm_command()
    params = StdioServerParameters(
        command=command[0], args=[*command[1:], "serve", "--db", str(agent_run.db_path)]
    )
    async with Client(params) as client:
        listing = await client.call_tool("TaskList", {})
        blocked = await client.call_tool("TaskGet", {"taskId": "2"})
        blocker = await client.call_tool("TaskGet", {"taskId": "1"})
    for answer in (listing, blocked, blocker):
        assert not answer.is_error, answer
    tasks = {task["id"]: task for task in listing.structured_content["tasks"]}
    assert {task_id: task["subject"] for task_id, task in tasks.items()} == {
        "1": "Design the schema",
        "2": "Write the migration",
    }
    assert blocked.structured_content["description"] == "Alembic migration for the new tables"
    assert blocked.structured_content["blockedBy"] == ["1"]
    assert blocker.structured_content["blocks"] == ["2"]
