"""No command injection, and only configured programs run.

What a caller writes (subjects, descriptions, instructions, send_input messages, model names, ids)
reaches a program only as one argument of its own, or in a file: never through a shell, never as
an option. Proven by effect: the texts would create a marker file if a shell read them, and the
programs that receive them record their argv (tests/support/stand_ins/record_run), which must be exactly
what was sent. Local workers, workers in tmux sessions, validation commands and the real agent
CLIs (claude and codex, against scripted models on 127.0.0.1) are each checked.

A tool argument picks a configured runtime by name, never a program. Validation commands come
from task metadata, and run without a shell, with a time limit that stops them and their
children, in the worker's directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_swarm.placement.processes import group_members
from mcp_swarm.placement.wrapped import WRAPPER_COMMAND
from tests.support import helpers
from tests.support.agent_clis import WORKER_TIMEOUT_SECONDS, AgentCLI, Answer, ClaudeCLI, CodexCLI, wait_for
from tests.support.helpers import git
from tests.support.mcp_client import call, project_session, refuse
from tests.support.recorded_runs import (
    RECORD_RUN,
    RUNTIME,
    configure,
    hostile_texts,
    read_record,
    record_argv,
    run_one,
)
from tests.support.scripted_llm import ScriptedAnthropicServer, ScriptedOpenAIServer

# A fixture: a tmux server of the test's own, killed afterwards.
tmux_socket = helpers.tmux_socket

pytestmark = pytest.mark.anyio

# Shell and tmux syntax in the project's own name: its path is a worker's cwd, the `{cwd}` of a
# command runtime, tmux's `-c` (which tmux format-expands) and part of every log and file path.
# A trailing ';' would end tmux's command there.
HOSTILE_PROJECT = "proj $(touch sh-pwned) `touch bq-pwned` #(touch tmux-pwned) 'q\" ;touch semi-pwned ;"


def pwned(root: Path) -> list[Path]:
    """Marker files a shell (or tmux's `#(...)`) made anywhere under `root`."""
    return [path for path in root.rglob("*pwned*") if not path.is_dir() and path.name.endswith("pwned")]


# -- 1. caller's text reaches a worker and a check as single arguments, local and in tmux -----------


@pytest.mark.parametrize("mode", ["local", pytest.param("distributed", marks=pytest.mark.tmux)])
async def test_callers_text_reaches_worker_and_checks_as_single_arguments(
    tmp_path: Path, tmux_socket: str, mode: str
) -> None:
    project = tmp_path / HOSTILE_PROJECT
    project.mkdir()
    records, marker = tmp_path / "records", tmp_path / "pwned"
    configure(project, records, socket=tmux_socket if mode == "distributed" else None)
    texts = hostile_texts(marker)
    subject = f"--help $(touch {marker}) `touch {marker}` ; touch {marker} #(touch {marker})"
    description = "\n".join(texts)
    instructions = "\n".join(reversed(texts))
    check = record_argv(records / "check.json", *texts)
    task = {
        "subject": subject,
        "description": description,
        "activeForm": texts[1],
        "metadata": {"validation": {"command": {"argv": check}}},
    }
    async with project_session(project) as client:
        done = await run_one(client, task, instructions=instructions)

    assert (done["state"], done["taskStatus"]) == ("succeeded", "completed"), done
    worker = read_record(records / "worker-1.json")
    prompt, task_id, worker_id, prompt_file, result_file, cwd = worker.argv
    assert (task_id, worker_id, cwd) == ("1", "worker-1", str(project))
    assert _read(prompt_file) == prompt
    assert Path(result_file) == project / ".mcp-swarm" / "results" / "worker-1.json"
    for text in (subject, description, instructions):
        assert text in prompt
    assert worker.cwd == str(project)
    if mode == "distributed":
        # Through tmux, the wrapper got the worker's argv as separate arguments after its "--".
        wrapper = worker.parent_cmdline
        assert wrapper[1:5] == list(WRAPPER_COMMAND), wrapper
        after = wrapper[wrapper.index("--") + 1 :]
        assert after == [sys.executable, str(RECORD_RUN), str(records / "worker-1.json"), *worker.argv]
    assert read_record(records / "check.json").argv == texts
    assert pwned(tmp_path) == []


# -- 2. a tool argument names a configured runtime, never a program ---------------------------------


async def test_spawn_runtime_is_a_configured_name_never_a_program(tmp_path: Path) -> None:
    records, marker = tmp_path / "records", tmp_path / "pwned"
    configure(tmp_path, records)
    not_runtimes = [
        "/bin/sh",
        "sh",
        f"sh -c 'touch {marker}'",
        f"touch {marker}",
        sys.executable,
        "../support/stand_ins/record_run",
        f"{RUNTIME}; touch {marker}",
        "--help",
        "command",
    ]
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreate", subject="A task", description="")
        for runtime in not_runtimes:
            message = await refuse(client, "spawn", taskIds=["1"], runtime=runtime)
            assert f"unknown runtime {runtime!r}" in message, message
            assert f"configured runtimes: claude, codex, {RUNTIME}" in message, message
        task = await call(client, "TaskGet", taskId="1")
        assert (task["status"], task.get("owner"), task.get("workers")) == ("pending", None, None), task
        # A model is a value for the runtime; a command runtime has no use for it.
        done = await run_one(client, {"subject": "Another", "description": ""}, model="--help; -c")
    assert done["taskStatus"] == "completed", done
    # The refused spawns started no worker: this one is the first.
    assert done["workerId"] == "worker-1", done
    assert "--help; -c" not in read_record(records / "worker-1.json").argv
    assert not marker.exists()


async def test_ids_from_the_caller_are_refused_unless_they_are_ids(tmp_path: Path) -> None:
    records, marker = tmp_path / "records", tmp_path / "pwned"
    configure(tmp_path, records)
    bad = [f"1; touch {marker}", f"$(touch {marker})", "--help", "-1", "../1", "worker-1/../../x"]
    async with project_session(tmp_path) as client:
        await call(client, "TaskCreate", subject="A task", description="")
        for value in bad:
            await refuse(client, "TaskGet", taskId=value)
            await refuse(client, "TaskUpdate", taskId=value, status="completed")
            await refuse(client, "spawn", taskIds=[value])
            await refuse(client, "send_input", workerId=value, message="go on")
            await refuse(client, "close_agent", workerId=value)
            await refuse(client, "wait", workerIds=[value], timeoutSeconds=0)
        task = await call(client, "TaskGet", taskId="1")
    assert (task["status"], task.get("workers")) == ("pending", None), task
    assert not marker.exists()
    assert not records.exists() or not any(records.iterdir())


# -- 3. validation commands: no shell, a time limit, the worker's directory --------------------------


async def test_validation_command_is_an_argument_list_never_a_shell_line(tmp_path: Path) -> None:
    records, marker = tmp_path / "records", tmp_path / "pwned"
    configure(tmp_path, records)
    shell_line = f"touch {marker}"
    one_argument = f"sh -c {shell_line!r}"
    validation = {"tests": {"argv": [one_argument]}, "command": shell_line}
    async with project_session(tmp_path) as client:
        done = await run_one(
            client, {"subject": "Checked", "description": "", "metadata": {"validation": validation}}
        )
    checks = {check["check"].split()[0]: check for check in done["validation"]["checks"]}
    assert done["taskStatus"] == "failed", done
    # One argument naming a program that does not exist; a string that is no argument list.
    assert checks["tests"]["detail"].startswith(f"cannot start {one_argument!r}"), checks
    assert checks["command"]["detail"] == 'needs an argument list of strings, such as ["pytest", "-q"]'
    assert not marker.exists()


# Leaves a child that ignores SIGTERM, both in the check's process group, writes their pids, and
# sleeps: only a time limit that stops the whole group ends it.
LINGERING_CHECK = """
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)"])
open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
os.execvp("sleep", ["sleep", "1000"])
"""


@pytest.mark.slow
async def test_validation_command_time_limit_stops_it_and_its_children(tmp_path: Path) -> None:
    records, pids = tmp_path / "records", tmp_path / "pids"
    configure(tmp_path, records)
    check = {"argv": [sys.executable, "-c", LINGERING_CHECK, str(pids)], "timeoutSeconds": 1}
    task = {"subject": "Slow check", "description": "", "metadata": {"validation": {"tests": check}}}
    async with project_session(tmp_path) as client:
        done = await run_one(client, task)
    [result] = done["validation"]["checks"]
    assert (done["taskStatus"], result["passed"]) == ("failed", False), done
    assert result["detail"].startswith("timed out after 1 s"), result
    leader, child = (int(pid) for pid in pids.read_text().split())
    # The check led its own process group; nothing of it is left, the SIGTERM-proof child included.
    assert group_members(leader) == []
    assert _gone(child)


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie waiting for its parent to reap it counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


async def test_validation_command_runs_in_the_workers_own_directory(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    project.mkdir()
    records = tmp_path / "records"
    configure(project, records)
    _first_commit(project)
    check = record_argv(records / "check.json")
    task = {"subject": "In a worktree", "description": "", "metadata": {"validation": {"command": check}}}
    async with project_session(project) as client:
        done = await run_one(client, task, isolation="worktree")
    assert done["taskStatus"] == "completed", done
    worktree = project / ".mcp-swarm" / "worktrees" / "worker-1"
    assert read_record(records / "worker-1.json").cwd == str(worktree)
    assert read_record(records / "check.json").cwd == str(worktree)


def _first_commit(project: Path) -> None:
    (project / "README.md").write_text("# repo\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")


# -- 4. the real agent CLIs: a leading dash is text, not an option ----------------------------------

# Each would change what the CLI does, were it parsed as an option.
HOSTILE_MODEL = "--dangerously-skip-permissions"
HOSTILE_MESSAGE = "--dangerously-skip-permissions"


@pytest.fixture(params=[ClaudeCLI, CodexCLI], ids=["claude", "codex"])
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> AgentCLI:
    kind: type[AgentCLI] = request.param
    return kind(tmp_path)


def _models(agent: AgentCLI) -> list[Any]:
    llm = agent.llm if isinstance(agent, ClaudeCLI | CodexCLI) else None
    assert isinstance(llm, ScriptedAnthropicServer | ScriptedOpenAIServer)
    return [(request.body or {}).get("model") for request in llm.main_requests]


@pytest.mark.slow
@pytest.mark.agent_cli
async def test_agent_cli_reads_callers_text_with_a_leading_dash_as_text(
    agent: AgentCLI, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    instructions = "\n".join(hostile_texts(marker))
    with agent.scripted([Answer("first attempt"), Answer("second attempt")]):
        async with agent.swarm() as client:
            created = await call(client, "TaskCreate", subject="-c --help", description=instructions)
            spawned = await call(
                client,
                "spawn",
                taskIds=[created["id"]],
                model=HOSTILE_MODEL,
                instructions=instructions,
                timeoutSeconds=WORKER_TIMEOUT_SECONDS,
            )
            [worker] = spawned["workers"]
            first = await wait_for(client, agent, worker["workerId"])
            await call(client, "send_input", workerId=worker["workerId"], message=HOSTILE_MESSAGE)
            second = await wait_for(client, agent, worker["workerId"])

    assert (first["state"], first["summary"]) == ("succeeded", "first attempt"), agent.explain(first)
    assert (second["state"], second["summary"]) == ("succeeded", "second attempt"), agent.explain(second)
    first_call, resumed = agent.calls()
    assert any(instructions in text for text in first_call.user_texts), agent.explain(first)
    # The message arrived as the user's turn, not as claude's option of that name.
    assert resumed.user_texts[-1] == HOSTILE_MESSAGE, agent.explain(second)
    # The model named at spawn; a resumed session keeps the profile's.
    assert _models(agent)[0] == HOSTILE_MODEL, agent.explain(second)
    assert not marker.exists()
    assert agent.server_errors() == []
