"""The real agent CLIs (Claude Code and Codex) as mcp-swarm worker runtimes, each with a scripted
LLM server behind it on 127.0.0.1 (`ScriptedAnthropicServer` or `ScriptedOpenAIServer`).

`AgentCLI` sets up a project whose `mcp-swarm.toml` picks the runtime (claude or codex, the
installed CLI) and lets exactly the hermetic variables of the server's environment through to its
workers (`env_allow`), and scripts the model in terms both CLIs share (`WriteFile`, `Answer`,
`Refuse`). The hermetic setups are those of tests/agents/test_claude.py and test_codex.py, which
explain every variable; here the workers need no MCP server of their own, so the MCP variables are
left out.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import Client, StdioServerParameters

from tests.support.mcp_client import call, installed_command
from tests.support.scripted_llm import (
    APIErrorTurn,
    CustomToolCall,
    FunctionCall,
    HTTPErrorTurn,
    MessageTurn,
    RecordedRequest,
    ResponsesRequest,
    ResponsesTurn,
    ScriptedAnthropicServer,
    ScriptedOpenAIServer,
    ScriptStep,
    TextTurn,
    ToolCall,
    ToolCallsTurn,
    ToolUseTurn,
)
from tests.support.scripted_llm.codex_config import CODEX_KEY_VARIABLE, write_codex_config

# A worker runs for 1-3 s here; these bounds only turn a hang into a readable failure well inside
# pytest's own timeout.
WORKER_TIMEOUT_SECONDS = 120
WAIT_SECONDS = 150


# -- what the scripted model does, in the terms of either CLI ----------------------------------------


@dataclass(frozen=True)
class WriteFile:
    """The model writes a file of the project with the agent's own file tool."""

    name: str
    content: str
    call_id: str


@dataclass(frozen=True)
class Shell:
    """The model runs a shell command with the agent's own tool (Claude: Bash; Codex: exec_command)."""

    command: str
    call_id: str


@dataclass(frozen=True)
class ReadFile:
    """The model reads a file (Claude: the Read tool; Codex, which has none: `cat` in its shell)."""

    path: str
    call_id: str


@dataclass(frozen=True)
class Answer:
    """The model ends its turn with this text: the worker's summary."""

    text: str


@dataclass(frozen=True)
class Refuse:
    """The model call is refused with an HTTP 400, which neither CLI retries."""

    message: str


Step = WriteFile | Shell | ReadFile | Answer | Refuse


@dataclass(frozen=True)
class ModelCall:
    """One agent-loop request to the scripted model, reduced to what either API shows alike."""

    session: str | None
    user_texts: list[str]
    assistant_texts: list[str]
    answered_calls: list[str]
    # The conversation as resent, where the API resends it unchanged (Responses with store=false);
    # None for Claude, which moves its cache markers from message to message.
    items: list[Any] | None = None


class AgentCLI(ABC):
    """One agent CLI as a worker runtime: its scripted model, its hermetic setup, its configuration."""

    runtime: str
    reports_cost: bool

    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = (root / "project").resolve()
        self.home = root / "home"
        self.project.mkdir()
        self.home.mkdir()
        self.program = self._executable()

    @abstractmethod
    def _executable(self) -> str:
        """The installed CLI; skipped when missing, failed when missing on CI."""

    @abstractmethod
    def scripted(self, steps: Sequence[Step]) -> AbstractContextManager[None]:
        """Run the scripted model for `steps` (in order, one agent-loop request each)."""

    @abstractmethod
    def environment(self) -> dict[str, str]:
        """The hermetic variables the server is started with, all of them passed on to workers."""

    @abstractmethod
    def runtime_table(self) -> dict[str, str | list[str]]:
        """The `[runtimes.NAME]` table of mcp-swarm.toml."""

    @abstractmethod
    def calls(self) -> list[ModelCall]:
        """The agent-loop requests the scripted model received, in order."""

    @abstractmethod
    def requests_seen(self) -> str:
        """Every request received, for failure messages."""

    @abstractmethod
    def server_errors(self) -> list[str]:
        """What the scripted server failed to answer."""

    @abstractmethod
    def tool_output(self, call_id: str) -> tuple[str, bool | None]:
        """What the agent told the model one scripted call did, and whether it flagged it as an
        error (None where the API has no such flag)."""

    @staticmethod
    def _find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            message = f"the {name} CLI is not on PATH"
            if os.environ.get("CI") == "true":
                pytest.fail(
                    f"{message}; CI must install it (./dev test puts .tools/npm/node_modules/.bin on PATH)"
                )
            pytest.skip(message)
        return path

    def write_config(self) -> None:
        lines = [
            f"default_runtime = {_toml(self.runtime)}",
            f"env_allow = {_toml(['PATH', *sorted(self.environment())])}",
            "",
            f"[runtimes.{self.runtime}]",
            *(f"{key} = {_toml(value)}" for key, value in self.runtime_table().items()),
        ]
        (self.project / "mcp-swarm.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    @asynccontextmanager
    async def swarm(self) -> AsyncGenerator[Client]:
        """`mcp-swarm serve` in the project, with only the hermetic variables added to its environment."""
        self.write_config()
        params = StdioServerParameters(
            command=installed_command(), args=["serve"], cwd=self.project, env=self.environment()
        )
        async with Client(params, mode="legacy") as client:
            yield client

    def explain(self, result: Any = None) -> str:
        """What happened, for a failure message: the wait result, the worker's log, the requests."""
        text = f"\nresult: {json.dumps(result)}"
        log = cast(dict[str, Any], result).get("log") if isinstance(result, dict) else None
        if isinstance(log, str) and Path(log).is_file():
            text += f"\n--- worker log ---\n{Path(log).read_text(errors='replace')[-6000:]}"
        return (
            f"{text}\n--- model requests ---\n{self.requests_seen()}\nserver errors: {self.server_errors()}"
        )


def _toml(value: str | list[str]) -> str:
    # A JSON string (or array of strings) is a valid TOML one for the values written here.
    return json.dumps(value)


def _objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a JSON array; nothing for anything else."""
    items = cast(list[Any], value) if isinstance(value, list) else []
    return [cast(dict[str, Any], item) for item in items if isinstance(item, dict)]


def _texts(content: Any) -> list[str]:
    """The text blocks of an Anthropic message content: a string, or a list of typed blocks."""
    if isinstance(content, str):
        return [content]
    return [str(block.get("text", "")) for block in _objects(content) if block.get("type") == "text"]


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


class ClaudeCLI(AgentCLI):
    """`claude -p` with a fresh HOME and config, no nonessential traffic, the scripted Messages API."""

    runtime = "claude"
    reports_cost = True

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._llm: ScriptedAnthropicServer | None = None

    def _executable(self) -> str:
        return self._find("claude")

    def _turn(self, step: Step) -> ScriptStep:
        if isinstance(step, WriteFile):
            write = {"file_path": str(self.project / step.name), "content": step.content}
            return ToolUseTurn([ToolCall("Write", write, id=step.call_id)])
        if isinstance(step, Shell):
            bash = {"command": step.command, "description": "Run a command"}
            return ToolUseTurn([ToolCall("Bash", bash, id=step.call_id)])
        if isinstance(step, ReadFile):
            return ToolUseTurn([ToolCall("Read", {"file_path": step.path}, id=step.call_id)])
        if isinstance(step, Answer):
            return TextTurn(step.text)
        return APIErrorTurn(400, step.message)

    @contextmanager
    def scripted(self, steps: Sequence[Step]) -> Generator[None]:
        with ScriptedAnthropicServer([self._turn(step) for step in steps]) as llm:
            self._llm = llm
            yield

    @property
    def llm(self) -> ScriptedAnthropicServer:
        assert self._llm is not None, "the scripted model is not running"
        return self._llm

    def environment(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
            "ANTHROPIC_BASE_URL": self.llm.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-scripted-test-key",
            **QUIET_CLAUDE,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def runtime_table(self) -> dict[str, str | list[str]]:
        return {"type": "claude", "program": self.program}

    def calls(self) -> list[ModelCall]:
        return [self._call(request) for request in self.llm.main_requests]

    @staticmethod
    def _call(request: RecordedRequest) -> ModelCall:
        messages = _objects((request.body or {}).get("messages"))
        return ModelCall(
            session=_header(dict(request.headers), "X-Claude-Code-Session-Id"),
            user_texts=[t for m in messages if m.get("role") == "user" for t in _texts(m.get("content"))],
            assistant_texts=[
                t for m in messages if m.get("role") == "assistant" for t in _texts(m.get("content"))
            ],
            answered_calls=[
                str(block.get("tool_use_id"))
                for m in messages
                for block in _objects(m.get("content"))
                if block.get("type") == "tool_result"
            ],
        )

    def requests_seen(self) -> str:
        if self._llm is None:
            return "(none)"
        return "\n".join(f"{r.kind} {r.method} {r.path}" for r in self._llm.requests)

    def server_errors(self) -> list[str]:
        return [] if self._llm is None else self._llm.errors

    def tool_output(self, call_id: str) -> tuple[str, bool | None]:
        result = self.llm.tool_result(call_id)
        return result.text, result.is_error


class CodexCLI(AgentCLI):
    """`codex exec` with a fresh CODEX_HOME whose config selects the scripted Responses provider."""

    runtime = "codex"
    reports_cost = False

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.codex_home = self.home / ".codex"
        # The sandbox makes its bubblewrap mount points in $TMPDIR and leaves them there.
        self.tmpdir = root / "tmp"
        self.codex_home.mkdir()
        self.tmpdir.mkdir()
        self._llm: ScriptedOpenAIServer | None = None

    def _executable(self) -> str:
        return self._find("codex")

    def _turn(self, step: Step) -> ResponsesTurn:
        if isinstance(step, WriteFile):
            added = "".join(f"+{line}\n" for line in step.content.splitlines())
            patch = f"*** Begin Patch\n*** Add File: {step.name}\n{added}*** End Patch\n"
            return ToolCallsTurn([CustomToolCall("apply_patch", patch, step.call_id)])
        if isinstance(step, Shell):
            return ToolCallsTurn([FunctionCall("exec_command", {"cmd": step.command}, step.call_id)])
        if isinstance(step, ReadFile):
            cat = {"cmd": f"cat {shlex.quote(step.path)}"}
            return ToolCallsTurn([FunctionCall("exec_command", cat, step.call_id)])
        if isinstance(step, Answer):
            return MessageTurn(step.text)
        return HTTPErrorTurn(400, step.message, "invalid_request_error")

    @contextmanager
    def scripted(self, steps: Sequence[Step]) -> Generator[None]:
        with ScriptedOpenAIServer([self._turn(step) for step in steps]) as llm:
            self._llm = llm
            write_codex_config(self.codex_home, llm.base_url)
            yield

    @property
    def llm(self) -> ScriptedOpenAIServer:
        assert self._llm is not None, "the scripted model is not running"
        return self._llm

    def environment(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "CODEX_HOME": str(self.codex_home),
            "TMPDIR": str(self.tmpdir),
            "NO_PROXY": "127.0.0.1,localhost",
            CODEX_KEY_VARIABLE: "sk-scripted-test-key",
        }

    def runtime_table(self) -> dict[str, str | list[str]]:
        # --strict-config: a renamed or dropped config key fails the worker instead of being ignored.
        return {"type": "codex", "program": self.program, "extra_args": ["--strict-config"]}

    def calls(self) -> list[ModelCall]:
        return [self._call(request) for request in self.llm.main_requests]

    @staticmethod
    def _call(request: ResponsesRequest) -> ModelCall:
        return ModelCall(
            session=request.thread_id,
            user_texts=request.messages("user"),
            assistant_texts=request.messages("assistant"),
            answered_calls=[output.call_id for output in request.call_outputs()],
            items=list(request.input_items),
        )

    def requests_seen(self) -> str:
        if self._llm is None:
            return "(none)"
        return "\n".join(f"{r.kind} {r.method} {r.path} thread={r.thread_id}" for r in self._llm.requests)

    def server_errors(self) -> list[str]:
        return [] if self._llm is None else self._llm.errors

    def tool_output(self, call_id: str) -> tuple[str, bool | None]:
        return self.llm.call_output(call_id).text, None


# Claude Code makes no traffic but its requests to the scripted model: no session title, no
# outside host names, no telemetry, error reports or updates.
QUIET_CLAUDE = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
}


def hermetic(dropped_prefixes: tuple[str, ...], **variables: str) -> dict[str, str]:
    """The test's environment without what would point a CLI elsewhere, plus `variables`: no
    variable starting with one of `dropped_prefixes` or MCP_SWARM_, and no proxy, which would send
    127.0.0.1 traffic elsewhere."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith((*dropped_prefixes, "MCP_SWARM_"))
        and name.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "is_sandbox"}
    }
    env.update(variables)
    return env


def run_to_end(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float
) -> tuple[int | None, str, str]:
    """An agent CLI run to its end: its exit status (None: timed out), stdout and stderr.

    Its own session makes the CLI and its children one process group, so that on a timeout the
    MCP servers it started are killed with it and none is left holding the database open.
    """
    with subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return None, stdout, stderr
        return process.returncode, stdout, stderr


async def wait_for(client: Client, agent: AgentCLI, worker_id: str) -> dict[str, Any]:
    """The one result of `worker_id`, waited for with `wait` (never a sleep)."""
    result = await call(client, "wait", workerIds=[worker_id], timeoutSeconds=WAIT_SECONDS)
    assert "timedOut" not in result, agent.explain(result)
    assert result["running"] == [], agent.explain(result)
    [done] = result["done"]
    assert done["workerId"] == worker_id, agent.explain(done)
    return cast(dict[str, Any], done)


async def spawn_one(
    client: Client, agent: AgentCLI, subject: str, *, isolation: str = "shared", **task: Any
) -> str:
    created = await call(client, "TaskCreate", subject=subject, **task)
    spawned = await call(
        client, "spawn", taskIds=[created["id"]], timeoutSeconds=WORKER_TIMEOUT_SECONDS, isolation=isolation
    )
    assert spawned.get("skipped", []) == [], spawned
    [worker] = spawned["workers"]
    assert (worker["taskId"], worker["runtime"]) == (created["id"], agent.runtime), spawned
    return str(worker["workerId"])
