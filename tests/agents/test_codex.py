"""The real Codex CLI works as a headless worker agent, with a scripted model behind it.

The model is ``ScriptedOpenAIServer`` on 127.0.0.1; the agent is the installed ``codex`` CLI run as
``codex exec --json``. What is checked is what mcp-swarm relies on when it hands work to Codex: the
agent's own tools change files in its working directory (and only there), the JSONL events report
the thread id, the final message and the usage, a failed model call is visible in the events and
the exit code, and ``codex exec resume`` continues the same conversation.

Running Codex 0.169 hermetically takes:

* a fresh ``CODEX_HOME`` (config, sessions, sqlite state, bundled skills all go there; no login is
  needed for a provider with ``env_key``) and a fresh ``HOME`` for the shell Codex snapshots at
  start (``bash -l``);
* a ``config.toml`` selecting a ``model_providers`` entry with ``wire_api = "responses"``, whose
  ``env_key`` names a variable holding a dummy key (sent as ``Authorization: Bearer``);
* ``model = "gpt-5.5"``: a slug from the CLI's bundled catalogue, so that it neither emits a
  "Model metadata ... not found" error item nor falls back to metadata without ``apply_patch``,
  and one of the last that offers plain function tools: newer slugs switch to "code mode", where
  every action is JavaScript run by an ``exec`` tool;
* ``[features] plugins = false``: otherwise every start runs ``git ls-remote`` against GitHub and
  then fetches the curated plugin repository from api.github.com and chatgpt.com;
* ``[analytics] enabled = false``: otherwise OpenTelemetry metrics go to ab.chatgpt.com;
* ``request_max_retries = 0`` and ``stream_max_retries = 0`` on the provider: otherwise a failing
  model call is made 30 times with back-off (about 25 s) before the turn fails;
* none of the ``CODEX_*``/``OPENAI_*`` variables of the calling environment (an enclosing Codex
  session's, or a real key), and no proxy for 127.0.0.1.

With that, ``strace -f -e trace=connect`` shows no connection other than to the scripted server,
no DNS lookup, and no ``git`` child. Codex still prints a warning to stderr that it will not create
its helper-binary ``PATH`` aliases under ``/tmp`` (where pytest's temporary directories live);
that only affects a model running ``apply_patch`` as a shell command, not the ``apply_patch`` tool.
The one thing left outside the test's directories is an empty ``/tmp/codex-daemon-<uid>``, a
mount point the sandbox creates at that fixed path.

``--sandbox workspace-write`` works in this container (as root, without a system ``bwrap``):
commands run under the bubblewrap bundled with the CLI, in new user, pid, ipc and network
namespaces, with a seccomp filter; the working directory is writable and the rest of the file
system read-only. By default ``/tmp`` and ``$TMPDIR`` are writable too; the config here excludes
them so that "outside the workspace" can be tested inside pytest's own temporary directory.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.scripted_llm import (
    CallOutput,
    CustomToolCall,
    FailedResponseTurn,
    FunctionCall,
    HTTPErrorTurn,
    MessageTurn,
    ResponsesTurn,
    ScriptedOpenAIServer,
    ToolCallsTurn,
)
from tests.support.scripted_llm.codex_config import CODEX_KEY_VARIABLE, write_codex_config

pytestmark = pytest.mark.agent_cli

CLI_TIMEOUT_SECONDS = 120
# What `codex exec` 0.169 exits with when the turn fails (`turn.failed`); success is 0.
FAILED_TURN_EXIT_CODE = 1

# Variables that would make the CLI use a real key or endpoint, believe it runs inside another
# Codex session, flood stderr with tracing, or send 127.0.0.1 traffic through a proxy.
_INHERITED_PREFIXES = ("CODEX_", "OPENAI_")
_INHERITED_NAMES = frozenset({"rust_log", "http_proxy", "https_proxy", "all_proxy", "no_proxy"})


def _codex_executable() -> str:
    path = shutil.which("codex")
    if path is None:
        message = "the Codex CLI (`codex`) is not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{message}; CI must install it (./dev test puts .tools/npm/node_modules/.bin on PATH)"
            )
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Workspace:
    """The directories of one hermetic Codex setup: its homes and the worker's working directory."""

    root: Path
    home: Path
    codex_home: Path
    workdir: Path
    tmpdir: Path


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    home = tmp_path / "home"
    codex_home = home / ".codex"
    workdir = tmp_path / "work"
    tmpdir = tmp_path / "tmp"
    codex_home.mkdir(parents=True)
    workdir.mkdir()
    tmpdir.mkdir()
    return Workspace(tmp_path, home, codex_home, workdir, tmpdir)


def _hermetic_env(workspace: Workspace) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_INHERITED_PREFIXES) and name.lower() not in _INHERITED_NAMES
    }
    env.update(
        HOME=str(workspace.home),
        CODEX_HOME=str(workspace.codex_home),
        # The sandbox creates its bubblewrap mount points in $TMPDIR, and leaves them there.
        TMPDIR=str(workspace.tmpdir),
        NO_PROXY="127.0.0.1,localhost",
    )
    env[CODEX_KEY_VARIABLE] = "sk-scripted-test-key"
    return env


def _exec_flags(workspace: Workspace) -> list[str]:
    # `codex exec resume` accepts neither -C nor --sandbox itself: both go before the subcommand.
    # --strict-config makes a renamed or dropped config key fail the run instead of being ignored.
    return [
        "--json",
        "--skip-git-repo-check",
        "--strict-config",
        "-C",
        str(workspace.workdir),
        "--sandbox",
        "workspace-write",
    ]


@dataclass(frozen=True)
class CodexRun:
    """What one ``codex exec`` process produced, for assertions and for failure messages."""

    command: Sequence[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    llm: ScriptedOpenAIServer

    def explain(self) -> str:
        requests = [(r.kind, r.method, r.path, r.thread_id) for r in self.llm.requests]
        return (
            f"\ncommand: {shlex.join(self.command)}"
            f"\nexit code: {'timed out' if self.returncode is None else self.returncode}"
            f" after {self.seconds:.1f}s"
            f"\nscripted LLM: {self.llm.turns_consumed} turns consumed, errors {self.llm.errors}"
            f"\nrequests: {requests}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def events(self) -> list[dict[str, Any]]:
        """The JSONL events the CLI printed; with --json, stdout carries nothing else."""
        try:
            return [
                cast(dict[str, Any], json.loads(line)) for line in self.stdout.splitlines() if line.strip()
            ]
        except ValueError as exc:
            raise AssertionError(f"stdout is not JSONL: {exc}{self.explain()}") from exc

    def event_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.events()]

    def completed_items(self, item_type: str) -> list[dict[str, Any]]:
        """The ``item`` of every ``item.completed`` event of one item type, in order."""
        return [
            cast(dict[str, Any], event["item"])
            for event in self.events()
            if event.get("type") == "item.completed" and event.get("item", {}).get("type") == item_type
        ]

    @property
    def thread_id(self) -> str:
        started = [e for e in self.events() if e.get("type") == "thread.started"]
        assert len(started) == 1, self.explain()
        return str(started[0].get("thread_id"))

    def call_output(self, call_id: str) -> CallOutput:
        try:
            return self.llm.call_output(call_id)
        except KeyError as exc:
            raise AssertionError(f"{exc}{self.explain()}") from exc


def _run_codex(
    codex: str, args: Sequence[str], *, workspace: Workspace, llm: ScriptedOpenAIServer
) -> CodexRun:
    """Run ``codex`` with ``args`` to completion; on timeout, kill it with everything it started.

    Its own session makes the CLI and its helpers one process group; sandboxed commands get a
    session of their own from bubblewrap, but with ``--die-with-parent``, so a hung run cannot leave
    a shell behind. ``None`` stands for "timed out".
    """
    write_codex_config(workspace.codex_home, llm.base_url, confine_tmp=True)
    argv = [codex, *args]
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        cwd=workspace.root,
        env=_hermetic_env(workspace),
        # Without a prompt argument Codex reads one from stdin, and with one it still appends
        # piped stdin to it: an empty stdin keeps the prompt exactly as given.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        returncode: int | None
        try:
            stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_SECONDS)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            returncode = None
    return CodexRun(argv, returncode, stdout, stderr, time.monotonic() - started, llm)


def _run_script(
    script: Sequence[ResponsesTurn], prompt: str, workspace: Workspace
) -> tuple[CodexRun, ScriptedOpenAIServer]:
    codex = _codex_executable()
    with ScriptedOpenAIServer(script) as llm:
        run = _run_codex(codex, ["exec", *_exec_flags(workspace), prompt], workspace=workspace, llm=llm)
    return run, llm


# -- a worker doing work -----------------------------------------------------------------------------

REPORT_TEXT = "written by the worker"
PLAN_PATCH = """\
*** Begin Patch
*** Add File: notes/plan.md
+# Plan
+1. Write the report
*** End Patch
"""
FINAL_TEXT = "The report and the plan are written."


def test_worker_writes_files_with_its_own_tools(workspace: Workspace) -> None:
    script = [
        ToolCallsTurn(
            [FunctionCall("exec_command", {"cmd": f"printf '{REPORT_TEXT}\\n' > report.txt"}, "call_report")],
            text="I will write the report first.",
        ),
        ToolCallsTurn([CustomToolCall("apply_patch", PLAN_PATCH, "call_plan")]),
        MessageTurn(FINAL_TEXT),
    ]
    run, llm = _run_script(script, "Write the report and the plan.", workspace)

    assert run.returncode == 0, run.explain()
    assert (workspace.workdir / "report.txt").read_text() == f"{REPORT_TEXT}\n", run.explain()
    assert (workspace.workdir / "notes" / "plan.md").read_text() == "# Plan\n1. Write the report\n"

    types = run.event_types()
    assert types[:2] == ["thread.started", "turn.started"], run.explain()
    assert types[-1] == "turn.completed", run.explain()
    assert "error" not in types, run.explain()
    assert "turn.failed" not in types, run.explain()
    uuid.UUID(run.thread_id)  # a thread id is a UUID (v7), which `resume` takes back

    commands = run.completed_items("command_execution")
    assert [(c["status"], c["exit_code"]) for c in commands] == [("completed", 0)], run.explain()
    changes = run.completed_items("file_change")
    assert [c["changes"] for c in changes] == [
        [{"path": str(workspace.workdir / "notes" / "plan.md"), "kind": "add"}]
    ], run.explain()
    messages = [m["text"] for m in run.completed_items("agent_message")]
    assert messages == ["I will write the report first.", FINAL_TEXT], run.explain()

    # One request per scripted turn, each offering the tools the script uses, each continuing the
    # conversation of the one before, all in the thread the events name.
    requests = llm.main_requests
    assert len(requests) == len(script), run.explain()
    assert llm.errors == [], run.explain()
    for request in requests:
        assert {"exec_command", "apply_patch"} <= set(request.tool_names), request.tool_names
        assert request.thread_id == run.thread_id, run.explain()
    for earlier, later in itertools.pairwise(requests):
        assert later.extends(earlier), run.explain()

    report = run.call_output("call_report")
    assert report.type == "function_call_output", report
    assert "Process exited with code 0" in report.text, report
    plan = run.call_output("call_plan")
    assert plan.type == "custom_tool_call_output", plan
    assert "Success" in plan.text, plan
    assert "notes/plan.md" in plan.text, plan

    # turn.completed reports the scripted usage summed over the turn's model requests.
    usage = run.events()[-1]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (10 * len(script), 5 * len(script)), usage


def test_sandbox_keeps_the_worker_inside_its_workspace(workspace: Workspace) -> None:
    outside = workspace.root / "outside"
    outside.mkdir()
    target = outside / "escaped.txt"
    script = [
        ToolCallsTurn([FunctionCall("exec_command", {"cmd": f"echo escaped > {target}"}, "call_escape")]),
        MessageTurn("I could not write there."),
    ]
    run, _ = _run_script(script, "Write outside the workspace.", workspace)

    assert run.returncode == 0, run.explain()
    assert not target.exists(), run.explain()
    escape = run.call_output("call_escape")
    assert "Process exited with code 1" in escape.text, escape
    assert "Read-only file system" in escape.text, escape
    # The model always hears of the refusal, the events only sometimes: a command Codex recognises
    # as refused by the sandbox usually shows neither item.started nor item.completed (all but two
    # of some 65 runs here), and otherwise shows as an ordinary failed command. Whoever watches a
    # worker through its events alone cannot count on seeing such attempts.
    commands = run.completed_items("command_execution")
    assert [(c["status"], c["exit_code"]) for c in commands] in ([], [("failed", 1)]), run.explain()


# -- a failing model call ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turn", "shown"),
    [
        # Codex replaces the body of a 5xx by a generic "high demand" text.
        pytest.param(HTTPErrorTurn(500, "scripted outage"), None, id="http-500"),
        pytest.param(
            HTTPErrorTurn(400, "scripted bad request", "invalid_request_error"),
            "scripted bad request",
            id="http-400",
        ),
        pytest.param(FailedResponseTurn("scripted stream failure"), "scripted stream failure", id="failed"),
    ],
)
def test_failed_model_call_fails_the_run(
    workspace: Workspace, turn: ResponsesTurn, shown: str | None
) -> None:
    run, llm = _run_script([turn], "Do something.", workspace)

    assert run.returncode == FAILED_TURN_EXIT_CODE, run.explain()
    types = run.event_types()
    assert types[:2] == ["thread.started", "turn.started"], run.explain()
    assert types[-2:] == ["error", "turn.failed"], run.explain()
    assert "turn.completed" not in types, run.explain()
    assert run.completed_items("agent_message") == [], run.explain()
    failure = run.events()[-1]["error"]["message"]
    assert failure, run.explain()
    if shown is not None:
        assert shown in failure, run.explain()
    # Retries are off, so the one scripted failure is the whole story.
    assert len(llm.main_requests) == 1, run.explain()


# -- resuming a thread -------------------------------------------------------------------------------

RESUME_MESSAGE = "Now do the second part."


def test_resume_continues_the_same_conversation(workspace: Workspace) -> None:
    codex = _codex_executable()
    script = [
        ToolCallsTurn([FunctionCall("exec_command", {"cmd": "echo one > first.txt"}, "call_first")]),
        MessageTurn("First part done."),
        ToolCallsTurn([FunctionCall("exec_command", {"cmd": "echo two > second.txt"}, "call_second")]),
        MessageTurn("Second part done."),
    ]
    with ScriptedOpenAIServer(script) as llm:
        first = _run_codex(
            codex, ["exec", *_exec_flags(workspace), "Do the first part."], workspace=workspace, llm=llm
        )
        assert first.returncode == 0, first.explain()
        before = llm.main_requests
        thread_id = first.thread_id
        resume = ["exec", *_exec_flags(workspace), "resume", thread_id, RESUME_MESSAGE]
        second = _run_codex(codex, resume, workspace=workspace, llm=llm)

    assert second.returncode == 0, second.explain()
    assert second.thread_id == thread_id, second.explain()
    assert [m["text"] for m in second.completed_items("agent_message")] == ["Second part done."]
    assert (workspace.workdir / "first.txt").read_text() == "one\n"
    assert (workspace.workdir / "second.txt").read_text() == "two\n"

    after = llm.main_requests[len(before) :]
    assert len(before) == 2, first.explain()
    assert len(after) == 2, second.explain()
    resumed = after[0]
    # The resumed request replays the whole first run (its last request, then the answer to it)
    # before the new message, in the same thread.
    assert resumed.extends(before[-1]), second.explain()
    assert resumed.thread_id == thread_id, second.explain()
    assert resumed.messages("assistant") == ["First part done."], second.explain()
    assert resumed.messages("user")[-1] == RESUME_MESSAGE, second.explain()
    assert "call_first" in {output.call_id for output in resumed.call_outputs()}
    assert after[1].extends(resumed), second.explain()
    assert "Process exited with code 0" in second.call_output("call_second").text

    # turn.completed after a resume reports the thread's usage so far, the first run's included.
    usage = second.events()[-1]["usage"]
    assert usage["input_tokens"] == 10 * len(script), usage
