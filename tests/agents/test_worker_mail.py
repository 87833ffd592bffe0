"""Real agent CLIs as workers talk to the Mayor through the server's worker endpoint.

The Mayor's `mcp-swarm serve` spawns the worker (the real `claude` or `codex` CLI, a scripted model
behind it, set up as in tests/agents/test_workers.py); the runtime registers the server's worker
endpoint (streamable HTTP on 127.0.0.1) with the CLI, its bearer token read from the worker's
`SWARM_TOKEN`. The scripted model calls the worker tools as a real model would, and the test reads
what reached the Mayor's inbox. What is checked is the chain a unit test cannot reach: the flags
the runtimes add, the CLI reaching the endpoint with the attempt's token (Claude Code expanding
`${SWARM_TOKEN}` in the header, Codex reading `bearer_token_env_var`) and allowing its tools
without a prompt, the tools' names as each CLI offers them, and the worker's messages landing in
the Mayor's database about the worker's own task.

How each CLI offers the tools:

* Claude Code offers every tool of the server up front, as `mcp__swarm__<tool>`.
* Codex 0.169 defers MCP tools: the model first calls the client-side `tool_search` tool, whose
  answer (`tool_search_output`) holds a namespace `mcp__swarm_worker` with the tools found, and
  then calls one as a `function_call` named `<tool>` in that namespace. The scripted Responses
  server here (`ToolSearchOpenAIServer`) writes those two item kinds. (The server is named
  `swarm_worker` for Codex: see runtimes/codex.py.)
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Generator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import Client

from mcp_swarm.config import load_settings
from mcp_swarm.ledger.mail import MAYOR, Mailbox
from mcp_swarm.server import answers
from mcp_swarm.server.worker import WORKER_TOOLS
from mcp_swarm.store import Store
from tests.support.agent_clis import WAIT_SECONDS, AgentCLI, Answer, ClaudeCLI, CodexCLI, Step, spawn_one
from tests.support.mcp_client import call, installed_command
from tests.support.scripted_llm import (
    FunctionCall,
    ResponsesTurn,
    ScriptedAnthropicServer,
    ToolCall,
    ToolCallsTurn,
    ToolUseTurn,
)
from tests.support.scripted_llm.codex_config import write_codex_config
from tests.support.scripted_llm.tool_search import TOOL_SEARCH_CALL, ToolSearchOpenAIServer

pytestmark = [pytest.mark.anyio, pytest.mark.agent_cli, pytest.mark.slow]

# The Mayor's own tools, which a worker must never be offered.
MAYOR_TOOLS = ("spawn", "wait", "send_input", "close_agent", "TaskCreate", "TaskUpdate", "TaskList")


@dataclass(frozen=True)
class SwarmCall:
    """The model calls a tool of the worker's swarm server."""

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict[str, Any])
    call_id: str = ""


MailStep = Step | SwarmCall


class MailAgent(AgentCLI):
    """An agent CLI whose scripted model can also call the worker's swarm tools."""

    # The name the runtime gives the worker endpoint in the CLI's configuration.
    server: str

    @abstractmethod
    def mail_script(self, steps: Sequence[MailStep]) -> AbstractContextManager[None]:
        """Run the scripted model for `steps`, swarm calls included."""

    @abstractmethod
    def tool_answer(self, call_id: str) -> dict[str, Any]:
        """The JSON answer the model got back for one scripted swarm call (which must have worked)."""

    @abstractmethod
    def offered_swarm_tools(self) -> set[str]:
        """The names of the swarm server's tools as the model saw them, without the prefix."""


class ClaudeMailCLI(ClaudeCLI, MailAgent):
    server = "swarm"

    @contextmanager
    def mail_script(self, steps: Sequence[MailStep]) -> Generator[None]:
        turns = [
            ToolUseTurn([ToolCall(f"mcp__{self.server}__{step.tool}", step.arguments, id=step.call_id)])
            if isinstance(step, SwarmCall)
            else self._turn(step)
            for step in steps
        ]
        with ScriptedAnthropicServer(turns) as llm:
            self._llm = llm
            yield

    def tool_answer(self, call_id: str) -> dict[str, Any]:
        result = self.llm.tool_result(call_id)
        assert not result.is_error, f"{call_id} failed: {result.text}{self.explain()}"
        return cast(dict[str, Any], result.json())

    def offered_swarm_tools(self) -> set[str]:
        # The first request already: the CLI waited for the server before asking the model.
        first = self.llm.main_requests[0]
        prefix = f"mcp__{self.server}__"
        return {name.removeprefix(prefix) for name in first.tool_names if name.startswith(prefix)}


class CodexMailCLI(CodexCLI, MailAgent):
    server = "swarm_worker"
    # A `[mcp_servers.swarm]` table for the user's own configuration (the Mayor's server, as
    # `mcp-swarm install codex` writes it), or "" for none.
    users_swarm_server = ""

    @contextmanager
    def mail_script(self, steps: Sequence[MailStep]) -> Generator[None]:
        turns: list[ResponsesTurn] = []
        searched = False
        for step in steps:
            if not isinstance(step, SwarmCall):
                turns.append(self._turn(step))
                continue
            if not searched:
                searched = True
                # As a real model does: find the deferred tools first (all of them, by server name).
                search = {"query": f"{self.server} mayor task progress help result", "limit": 20}
                turns.append(ToolCallsTurn([FunctionCall("tool_search", search, call_id=TOOL_SEARCH_CALL)]))
            call = FunctionCall(f"mcp__{self.server}__{step.tool}", step.arguments, call_id=step.call_id)
            turns.append(ToolCallsTurn([call]))
        with ToolSearchOpenAIServer(turns) as llm:
            self._llm = llm
            config = write_codex_config(self.codex_home, llm.base_url)
            if self.users_swarm_server:
                with config.open("a", encoding="utf-8") as out:
                    out.write(self.users_swarm_server)
            yield

    def tool_answer(self, call_id: str) -> dict[str, Any]:
        text = self.llm.call_output(call_id).text
        # Codex prefixes an MCP tool's answer with "Wall time: ...\nOutput:\n".
        assert "{" in text, f"{call_id}: {text}{self.explain()}"
        answer = json.loads(text[text.index("{") :])
        assert isinstance(answer, dict), text
        return cast(dict[str, Any], answer)

    def offered_swarm_tools(self) -> set[str]:
        return self.offered_tools().get(f"mcp__{self.server}", set())

    def offered_tools(self) -> dict[str, set[str]]:
        """The tools tool_search found, by namespace (one per MCP server)."""
        found: dict[str, set[str]] = {}
        for request in self.llm.main_requests:
            for item in request.input_items:
                if item.get("type") != "tool_search_output":
                    continue
                for namespace in cast(list[dict[str, Any]], item.get("tools", [])):
                    names = {str(tool["name"]) for tool in namespace.get("tools", [])}
                    found.setdefault(str(namespace.get("name")), set()).update(names)
        return found


class CodexBesideTheMayorCLI(CodexMailCLI):
    """Codex whose user configuration registers the Mayor's own server as `swarm`, as
    `mcp-swarm install codex` does."""

    users_swarm_server = f"""
[mcp_servers.swarm]
command = {json.dumps(installed_command())}
args = ["serve"]
"""


@pytest.fixture(params=[ClaudeMailCLI, CodexMailCLI], ids=["claude", "codex"])
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> MailAgent:
    kind = cast(type[MailAgent], request.param)
    return kind(tmp_path)


async def wait_until_done(client: Client, agent: AgentCLI, worker_id: str) -> dict[str, Any]:
    """The worker's result. `wait` may also wake for a help request; then it is called again."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        result = await call(client, "wait", workerIds=[worker_id], timeoutSeconds=30)
        done = [d for d in result["done"] if d.get("workerId") == worker_id]
        if done:
            return cast(dict[str, Any], done[0])
    raise AssertionError(f"{worker_id} did not end within {WAIT_SECONDS} s{agent.explain()}")


async def mayor_inbox(project: Path) -> list[dict[str, Any]]:
    """Everything sent to the Mayor, read from the swarm's database as the Mayor's side would."""
    async with await Store.open(load_settings(cwd=project).db_path) as store:
        return [answers.message(message) for message in await Mailbox(store).fetch_inbox(MAYOR, limit=500)]


PROGRESS = "Read the brief; writing notes.txt next"
HELP_SUBJECT = "Which format should the notes use?"
HELP_BODY = "Markdown or plain text? I will use plain text until told otherwise."
RESULT = "notes.txt is written, in plain text"
DONE_TEXT = "Reported to the Mayor."


async def test_a_worker_reports_to_the_mayor_through_its_swarm_server(agent: MailAgent) -> None:
    steps: list[MailStep] = [
        SwarmCall("my_task", {}, "call_my_task"),
        SwarmCall("report_progress", {"message": PROGRESS}, "call_progress"),
        SwarmCall("ask_for_help", {"subject": HELP_SUBJECT, "body": HELP_BODY}, "call_help"),
        SwarmCall("report_result", {"status": "done", "summary": RESULT}, "call_result"),
        Answer(DONE_TEXT),
    ]
    with agent.mail_script(steps):
        async with agent.swarm() as client:
            worker_id = await spawn_one(client, agent, "Write the notes", description="Put notes.txt here.")
            done = await wait_until_done(client, agent, worker_id)
            task = await call(client, "TaskGet", taskId=done["taskId"])

        assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), agent.explain(done)
        assert done["summary"] == DONE_TEXT, agent.explain(done)
        task_id = done["taskId"]

        # The worker saw its own server's tools, all of them, and none of the Mayor's.
        offered = agent.offered_swarm_tools()
        assert offered == set(WORKER_TOOLS), agent.explain(done)
        assert not offered & set(MAYOR_TOOLS)

        # my_task answered with the worker's own task, as the Mayor's TaskGet shows it.
        own = agent.tool_answer("call_my_task")
        assert (own["id"], own["subject"], own["status"], own["owner"]) == (
            task_id,
            "Write the notes",
            "in_progress",
            worker_id,
        ), agent.explain(done)
        assert own["description"] == task["description"]
        progress = agent.tool_answer("call_progress")
        assert (progress["to"], progress["taskId"], progress["type"]) == (MAYOR, task_id, "progress")
        assert agent.tool_answer("call_help")["type"] == "help_request"
        assert agent.tool_answer("call_result")["type"] == "done"
        assert agent.server_errors() == []

    inbox = await mayor_inbox(agent.project)
    assert [(m["from"], m["to"], m.get("taskId"), m["type"], m["subject"]) for m in inbox] == [
        (worker_id, MAYOR, task_id, "progress", PROGRESS),
        (worker_id, MAYOR, task_id, "help_request", HELP_SUBJECT),
        (worker_id, MAYOR, task_id, "done", RESULT),
    ], agent.explain(done)
    assert inbox[1]["body"] == HELP_BODY


FIRST_TEXT = "Started; waiting for instructions."
AGAIN = "Picked up the follow-up"
SECOND_TEXT = "Follow-up reported."


async def test_a_continued_worker_keeps_its_swarm_server(agent: MailAgent) -> None:
    steps: list[MailStep] = [
        Answer(FIRST_TEXT),
        SwarmCall("report_progress", {"message": AGAIN}, "call_again"),
        Answer(SECOND_TEXT),
    ]
    with agent.mail_script(steps):
        async with agent.swarm() as client:
            worker_id = await spawn_one(client, agent, "Wait, then report", description="Report when told.")
            first = await wait_until_done(client, agent, worker_id)
            resumed = await call(client, "send_input", workerId=worker_id, message="Report your progress")
            second = await wait_until_done(client, agent, worker_id)

        assert first["summary"] == FIRST_TEXT, agent.explain(first)
        assert resumed["attempt"] == 2, resumed
        assert (second["state"], second["summary"]) == ("succeeded", SECOND_TEXT), agent.explain(second)
        assert agent.tool_answer("call_again")["taskId"] == second["taskId"], agent.explain(second)

    inbox = await mayor_inbox(agent.project)
    assert [(m["from"], m.get("taskId"), m["type"], m["subject"]) for m in inbox] == [
        (worker_id, second["taskId"], "progress", AGAIN)
    ]


async def test_a_codex_worker_reaches_the_endpoint_beside_the_users_own_swarm_server(tmp_path: Path) -> None:
    """Codex merges `-c` overrides into the user's tables: registering the endpoint as `swarm`
    beside the user's `[mcp_servers.swarm]` command made Codex refuse its configuration, and the
    worker never started. The endpoint has its own name, and the user's swarm server (the Mayor's
    tools) is switched off for the worker."""
    agent = CodexBesideTheMayorCLI(tmp_path)
    steps: list[MailStep] = [SwarmCall("my_task", {}, "call_my_task"), Answer(DONE_TEXT)]
    with agent.mail_script(steps):
        async with agent.swarm() as client:
            worker_id = await spawn_one(client, agent, "Read your task", description="Then stop.")
            done = await wait_until_done(client, agent, worker_id)

        assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), agent.explain(done)
        assert agent.tool_answer("call_my_task")["owner"] == worker_id, agent.explain(done)
        offered = agent.offered_tools()
        assert offered.get(f"mcp__{agent.server}") == set(WORKER_TOOLS), agent.explain(done)
        assert "mcp__swarm" not in offered, agent.explain(done)
