"""A real agent CLI as the Mayor of a swarm over HTTP, with real agent workers: the seed's plan.

`mcp-swarm serve --http` runs in a project whose runtime is the same CLI; the Mayor is that CLI
too, run headless with the server as its only MCP server over streamable HTTP (Claude Code:
`--mcp-config` with `"type": "http"`, the url and an `Authorization` header that takes the token
from the environment; Codex: `mcp_servers.swarm.url` and `bearer_token_env_var` in its
config.toml). Both send an `X-Swarm-Mayor` name, as a Mayor on a shared server should.

The Mayor's scripted model plans the seed's user auth system, five tasks in four waves (1 Create
User model; 2 Add password hashing and 3 Create login endpoint after 1; 4 Add JWT tokens after 3;
5 Write tests after 2, 3 and 4), with TaskCreate and TaskUpdate, then spawns each ready wave and
waits for it, until TaskList shows all five completed. Each worker is the real CLI with its own
scripted model (one server for all workers, a script per task: tests/support/scripted_llm/
routed.py): it reads its task with the worker tool `my_task`, writes its file with the agent's own
file tool, and reports with `report_result`, through the swarm's worker tools (registered by the
runtime, as every worker's are). What is checked: the Mayor's calls and the answers it got (each
wave spawned when its blockers were completed, each wait returning that wave's results), the
ledger (five tasks completed, each by a worker that reported its own task), the files, and that
every worker belongs to the Mayor's name.

The hermetic setups of the CLIs are those of test_claude.py and test_codex.py (and
tests/support/agent_clis.py for workers), which explain every variable.
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

from tests.support.agent_clis import (
    QUIET_CLAUDE,
    AgentCLI,
    Answer,
    ClaudeCLI,
    CodexCLI,
    WriteFile,
    hermetic,
    run_to_end,
)
from tests.support.gated_workers import rows
from tests.support.http_server import http_server, new_token
from tests.support.scripted_llm import (
    FunctionCall,
    ResponsesTurn,
    ScriptedAnthropicServer,
    ScriptStep,
    TextTurn,
    ToolCall,
    ToolCallsTurn,
    ToolUseTurn,
)
from tests.support.scripted_llm.codex_config import write_codex_config
from tests.support.scripted_llm.routed import RoutedAnthropicServer, RoutedToolSearchServer
from tests.support.scripted_llm.tool_search import ToolSearchOpenAIServer

pytestmark = [pytest.mark.agent_cli, pytest.mark.slow]

SERVER = "swarm"
# The Mayor's whole run: five workers in four waves, each a CLI start and a few model turns.
MAYOR_TIMEOUT_SECONDS = 170
# One wave's wait, well inside the clients' tool timeouts set below.
WAIT_SECONDS = 120
TOOL_TIMEOUT_SECONDS = 200
PROMPT = "Build the user auth system as a swarm: plan it, then run it wave by wave."
FINAL_TEXT = "All five tasks of the auth system are completed."


@dataclass(frozen=True)
class Task:
    id: str
    subject: str
    blocked_by: Sequence[str]
    file: str
    content: str

    @property
    def marker(self) -> str:
        """What the task's validation looks for in its file (a pattern: no regex syntax in it)."""
        return f"auth system part {self.id}"


PLAN = [
    Task("1", "Create User model", [], "models.py", "class User:\n    name: str\n"),
    Task("2", "Add password hashing", ["1"], "passwords.py", "def hash_password(text):\n    return text\n"),
    Task("3", "Create login endpoint", ["1"], "login.py", "def login(name, password):\n    return name\n"),
    Task("4", "Add JWT tokens", ["3"], "tokens.py", "def make_token(name):\n    return name\n"),
    Task("5", "Write tests", ["2", "3", "4"], "test_auth.py", "def test_login():\n    assert True\n"),
]
WAVES = [["1"], ["2", "3"], ["4"], ["5"]]


@dataclass(frozen=True)
class SwarmCall:
    """The model calls a tool of the swarm server (the Mayor's, or a worker's)."""

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict[str, Any])
    call_id: str = ""


@dataclass(frozen=True)
class Final:
    text: str


MayorStep = SwarmCall | Final
WorkerStep = SwarmCall | WriteFile | Answer


def mayor_script() -> list[MayorStep]:
    """Plan with TaskCreate (blockers named where known) and TaskUpdate (task 5's added after),
    then spawn and wait for each wave, then TaskList."""
    steps: list[MayorStep] = []
    for task in PLAN:
        arguments: dict[str, Any] = {
            "subject": task.subject,
            "description": f"Write {task.file} for the auth system.",
            "metadata": {
                "validation": {
                    "files_exist": [task.file],
                    "content_check": [{"file": task.file, "pattern": task.marker}],
                }
            },
        }
        if task.blocked_by and task.id != "5":
            arguments["blockedBy"] = list(task.blocked_by)
        steps.append(SwarmCall("TaskCreate", arguments, f"call_create_{task.id}"))
    steps.append(SwarmCall("TaskUpdate", {"taskId": "5", "addBlockedBy": ["2", "3", "4"]}, "call_link_5"))
    for wave in range(1, len(WAVES) + 1):
        steps.append(SwarmCall("spawn", {}, f"call_spawn_{wave}"))
        steps.append(SwarmCall("wait", {"timeoutSeconds": WAIT_SECONDS}, f"call_wait_{wave}"))
    steps.append(SwarmCall("TaskList", {}, "call_list"))
    steps.append(Final(FINAL_TEXT))
    return steps


def written(task: Task) -> str:
    """What the task's worker writes to its file."""
    return f"# {task.marker}: {task.subject}\n{task.content}"


def worker_script(task: Task) -> list[WorkerStep]:
    return [
        SwarmCall("my_task", {}, f"call_w{task.id}_task"),
        WriteFile(task.file, written(task), f"call_w{task.id}_write"),
        SwarmCall(
            "report_result", {"status": "done", "summary": f"Wrote {task.file}"}, f"call_w{task.id}_report"
        ),
        Answer(f"Task {task.id}: wrote {task.file}."),
    ]


@dataclass(frozen=True)
class MayorRun:
    argv: Sequence[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    def explain(self) -> str:
        code = "timed out" if self.returncode is None else self.returncode
        return (
            f"\nMayor: exit {code} after {self.seconds:.1f} s\n--- stdout ---\n{self.stdout[-8000:]}"
            f"\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def run_mayor(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> MayorRun:
    """The Mayor CLI to its end; on timeout it is killed with everything it started."""
    started = time.monotonic()
    code, stdout, stderr = run_to_end(argv, cwd=cwd, env=env, timeout=MAYOR_TIMEOUT_SECONDS)
    return MayorRun(argv, code, stdout, stderr, time.monotonic() - started)


class MayorCLI:
    """One agent CLI as both the Mayor (over HTTP) and the workers' runtime."""

    mayor_name: str
    workers: AgentCLI

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mayor_home = root / "mayor-home"
        self.mayor_home.mkdir()

    @abstractmethod
    def scripted(self) -> AbstractContextManager[None]:
        """Run the Mayor's scripted model and the workers' (a script per task)."""

    @abstractmethod
    def run(self, url: str, token: str) -> MayorRun:
        """The Mayor CLI, headless, against the server at `url`, to its end."""

    @abstractmethod
    def mayor_answer(self, call_id: str) -> Any:
        """The JSON answer the Mayor's model got for one of its swarm calls (which must have worked)."""

    @abstractmethod
    def worker_answer(self, call_id: str) -> Any:
        """The JSON answer a worker's model got for one of its swarm calls (which must have worked)."""

    @abstractmethod
    def check_ended_well(self, run: MayorRun) -> None:
        """The Mayor's own account of its run: no error, the closing text."""

    @abstractmethod
    def unrouted(self) -> list[str]:
        """Worker requests that no task's script answered."""


class ClaudeMayor(MayorCLI):
    mayor_name = "claude-mayor"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.workers = self.claude = ClaudeCLI(root)
        self._mayor: ScriptedAnthropicServer | None = None
        self._workers: RoutedAnthropicServer | None = None

    def _turn(self, step: MayorStep | WorkerStep) -> ScriptStep:
        if isinstance(step, SwarmCall):
            return ToolUseTurn([ToolCall(f"mcp__{SERVER}__{step.tool}", step.arguments, id=step.call_id)])
        if isinstance(step, Final):
            return TextTurn(step.text)
        return self.claude._turn(step)  # pyright: ignore[reportPrivateUsage]

    @contextmanager
    def scripted(self) -> Generator[None]:
        scripts = {task.id: [self._turn(step) for step in worker_script(task)] for task in PLAN}
        with (
            ScriptedAnthropicServer([self._turn(step) for step in mayor_script()]) as mayor,
            RoutedAnthropicServer(scripts) as workers,
        ):
            self._mayor, self._workers = mayor, workers
            self.claude._llm = workers  # pyright: ignore[reportPrivateUsage]
            yield

    def run(self, url: str, token: str) -> MayorRun:
        assert self._mayor is not None
        entry = {
            "type": "http",
            "url": url,
            # The token from the environment, never written down; the Mayor's name beside it.
            "headers": {"Authorization": "Bearer ${MCP_SWARM_TOKEN}", "X-Swarm-Mayor": self.mayor_name},
        }
        config = self.root / "mayor-mcp.json"
        config.write_text(json.dumps({"mcpServers": {SERVER: entry}}), encoding="utf-8")
        argv = [
            self.claude.program, "-p", PROMPT, "--output-format", "stream-json", "--verbose",
            "--mcp-config", str(config), "--strict-mcp-config", "--allowedTools", f"mcp__{SERVER}",
        ]  # fmt: skip
        env = hermetic(
            ("ANTHROPIC_", "CLAUDE", "AWS_BEARER_TOKEN_BEDROCK"),
            HOME=str(self.mayor_home),
            CLAUDE_CONFIG_DIR=str(self.mayor_home / ".claude"),
            ANTHROPIC_BASE_URL=self._mayor.base_url,
            ANTHROPIC_API_KEY="sk-ant-scripted-mayor-key",
            **QUIET_CLAUDE,
            MCP_CONNECTION_NONBLOCKING="0",
            MCP_CONNECT_TIMEOUT_MS="60000",
            MCP_TOOL_TIMEOUT=str(TOOL_TIMEOUT_SECONDS * 1000),
            NO_PROXY="127.0.0.1,localhost",
            MCP_SWARM_TOKEN=token,
        )
        return run_mayor(argv, cwd=self.claude.project, env=env)

    def mayor_answer(self, call_id: str) -> Any:
        assert self._mayor is not None
        result = self._mayor.tool_result(call_id)
        assert not result.is_error, f"{call_id} failed: {result.text}"
        return result.json()

    def worker_answer(self, call_id: str) -> Any:
        assert self._workers is not None
        result = self._workers.tool_result(call_id)
        assert not result.is_error, f"{call_id} failed: {result.text}"
        return result.json()

    def check_ended_well(self, run: MayorRun) -> None:
        events = [
            cast(dict[str, Any], json.loads(line)) for line in run.stdout.splitlines() if line.startswith("{")
        ]
        init = next(e for e in events if e.get("type") == "system" and e.get("subtype") == "init")
        assert {"name": SERVER, "status": "connected"} in init.get("mcp_servers", []), run.explain()
        result = events[-1]
        assert (result.get("type"), result.get("is_error"), result.get("result")) == (
            "result", False, FINAL_TEXT,
        ), run.explain()  # fmt: skip
        assert self._mayor is not None
        assert self._mayor.script_exhausted, run.explain()
        assert self._mayor.errors == [], self._mayor.errors

    def unrouted(self) -> list[str]:
        return [] if self._workers is None else self._workers.conversations.unrouted


# What the Codex Mayor's model searches for before its first swarm call (Codex defers MCP tools).
MAYOR_SEARCH = {"query": "swarm TaskCreate TaskUpdate TaskList spawn wait", "limit": 40}
WORKER_SEARCH = {"query": f"{SERVER} my_task report_result", "limit": 20}


class CodexMayor(MayorCLI):
    mayor_name = "codex-mayor"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.workers = self.codex = CodexCLI(root)
        self.mayor_codex_home = self.mayor_home / ".codex"
        self.mayor_codex_home.mkdir()
        self._mayor: ToolSearchOpenAIServer | None = None
        self._workers: RoutedToolSearchServer | None = None

    def _turns(
        self, steps: Sequence[MayorStep | WorkerStep], search: Mapping[str, Any]
    ) -> list[ResponsesTurn]:
        turns: list[ResponsesTurn] = []
        searched = False
        for step in steps:
            if isinstance(step, Final):
                turns.append(self.codex._turn(Answer(step.text)))  # pyright: ignore[reportPrivateUsage]
                continue
            if not isinstance(step, SwarmCall):
                turns.append(self.codex._turn(step))  # pyright: ignore[reportPrivateUsage]
                continue
            if not searched:
                searched = True
                # As a real model does: find the deferred tools first.
                call_id = f"{step.call_id}_search"
                turns.append(ToolCallsTurn([FunctionCall("tool_search", search, call_id=call_id)]))
            call = FunctionCall(f"mcp__{SERVER}__{step.tool}", step.arguments, call_id=step.call_id)
            turns.append(ToolCallsTurn([call]))
        return turns

    @contextmanager
    def scripted(self) -> Generator[None]:
        scripts = {task.id: self._turns(worker_script(task), WORKER_SEARCH) for task in PLAN}
        with (
            ToolSearchOpenAIServer(self._turns(mayor_script(), MAYOR_SEARCH)) as mayor,
            RoutedToolSearchServer(scripts) as workers,
        ):
            self._mayor, self._workers = mayor, workers
            self.codex._llm = workers  # pyright: ignore[reportPrivateUsage]
            write_codex_config(self.codex.codex_home, workers.base_url)
            yield

    def run(self, url: str, token: str) -> MayorRun:
        assert self._mayor is not None
        config = write_codex_config(self.mayor_codex_home, self._mayor.base_url)
        with config.open("a", encoding="utf-8") as out:
            # The token from the environment, never written down; the Mayor's name beside it.
            out.write(
                f"\n[mcp_servers.{SERVER}]\nurl = {json.dumps(url)}\n"
                'bearer_token_env_var = "MCP_SWARM_TOKEN"\n'
                f'http_headers = {{ "X-Swarm-Mayor" = {json.dumps(self.mayor_name)} }}\n'
                "required = true\nstartup_timeout_sec = 60\n"
                # Headless, nobody answers an approval prompt: without this, `codex exec` refuses
                # the tools annotated destructive (TaskUpdate) with "requires approval".
                'default_tools_approval_mode = "approve"\n'
                f"tool_timeout_sec = {TOOL_TIMEOUT_SECONDS}\n"
            )
        tmpdir = self.root / "mayor-tmp"
        tmpdir.mkdir()
        argv = [
            self.codex.program, "exec", "--json", "--skip-git-repo-check", "-C", str(self.codex.project),
            "--strict-config", "--", PROMPT,
        ]  # fmt: skip
        env = hermetic(
            ("CODEX_", "OPENAI_"),
            HOME=str(self.mayor_home),
            CODEX_HOME=str(self.mayor_codex_home),
            TMPDIR=str(tmpdir),
            NO_PROXY="127.0.0.1,localhost",
            SCRIPTED_OPENAI_API_KEY="sk-scripted-mayor-key",
            MCP_SWARM_TOKEN=token,
        )
        return run_mayor(argv, cwd=self.codex.project, env=env)

    @staticmethod
    def _json(text: str) -> Any:
        # Codex prefixes an MCP tool's answer with "Wall time: ...\nOutput:\n".
        assert "{" in text, text
        return json.loads(text[text.index("{") :])

    def mayor_answer(self, call_id: str) -> Any:
        assert self._mayor is not None
        return self._json(self._mayor.call_output(call_id).text)

    def worker_answer(self, call_id: str) -> Any:
        assert self._workers is not None
        return self._json(self._workers.call_output(call_id).text)

    def check_ended_well(self, run: MayorRun) -> None:
        assert run.returncode == 0, run.explain()
        events = [
            cast(dict[str, Any], json.loads(line)) for line in run.stdout.splitlines() if line.startswith("{")
        ]
        assert any(e.get("type") == "turn.completed" for e in events), run.explain()
        messages = [
            e["item"].get("text")
            for e in events
            if e.get("type") == "item.completed" and e.get("item", {}).get("type") == "agent_message"
        ]
        assert messages[-1:] == [FINAL_TEXT], run.explain()
        assert self._mayor is not None
        assert self._mayor.script_exhausted, run.explain()
        assert self._mayor.errors == [], self._mayor.errors

    def unrouted(self) -> list[str]:
        return [] if self._workers is None else self._workers.conversations.unrouted


@pytest.fixture(params=[ClaudeMayor, CodexMayor], ids=["claude", "codex"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> MayorCLI:
    kind = cast(type[MayorCLI], request.param)
    return kind(tmp_path)


def test_the_mayor_runs_the_seed_plan_over_http_with_real_workers(cli: MayorCLI) -> None:
    project = cli.workers.project
    token = new_token()
    with cli.scripted():
        cli.workers.write_config()
        workers_env = cli.workers.environment()
        with http_server(project, token=token, **workers_env) as server:  # pyright: ignore[reportArgumentType]
            run = cli.run(server.url, token)
            explain = run.explain() + cli.workers.explain() + f"\nserver stderr:\n{server.stderr[-4000:]}"
            assert run.returncode == 0, explain
            cli.check_ended_well(run)

            # The plan, as the Mayor made it.
            for task in PLAN:
                created = cli.mayor_answer(f"call_create_{task.id}")
                assert (created["id"], created["subject"]) == (task.id, task.subject), explain
            assert cli.mayor_answer("call_link_5")["blockedBy"] == ["2", "3", "4"], explain

            # Each wave spawned once its blockers were completed, and its wait returned its results.
            worker_of: dict[str, str] = {}
            for wave, task_ids in enumerate(WAVES, start=1):
                spawned = cli.mayor_answer(f"call_spawn_{wave}")
                assert sorted(w["taskId"] for w in spawned["workers"]) == task_ids, explain
                assert spawned.get("skipped", []) == [], explain
                worker_of |= {w["taskId"]: w["workerId"] for w in spawned["workers"]}
                waited = cli.mayor_answer(f"call_wait_{wave}")
                assert "timedOut" not in waited, explain
                assert waited["running"] == [], explain
                done = {d["taskId"]: d for d in waited["done"]}
                assert sorted(done) == task_ids, explain
                for task_id in task_ids:
                    result = done[task_id]
                    assert result["workerId"] == worker_of[task_id], explain
                    assert (result["state"], result["taskStatus"]) == ("succeeded", "completed"), explain
            listing = cli.mayor_answer("call_list")
            assert listing["counts"] == {"completed": 5, "ready": 0}, explain

        # Each worker read its own task and reported on it through the worker tools.
        for task in PLAN:
            own = cli.worker_answer(f"call_w{task.id}_task")
            assert (own["id"], own["owner"]) == (task.id, worker_of[task.id]), explain
            report = cli.worker_answer(f"call_w{task.id}_report")
            assert (report["type"], report["taskId"]) == ("done", task.id), explain
            assert (project / task.file).read_text() == written(task), explain
        assert cli.unrouted() == [], explain
        assert cli.workers.server_errors() == [], explain

    workers = rows(
        project, "SELECT task_id, 'worker-' || id, mayor, reported_at IS NOT NULL FROM workers ORDER BY id"
    )
    assert sorted(workers) == sorted(
        (int(task.id), worker_of[task.id], cli.mayor_name, 1) for task in PLAN
    ), explain
    reports = rows(project, "SELECT sender, task_id FROM messages WHERE type = 'done' ORDER BY id")
    assert sorted(reports) == sorted((worker_of[task.id], int(task.id)) for task in PLAN), explain
