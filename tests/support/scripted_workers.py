"""Workers scripted by the words of their prompt (as in tests/engine/test_swarm.py), the runtimes
that read them, a project that runs them, and the engine supervising them on a fresh database."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes import CommandProfile, CommandRuntime, Outcome, OutputReader, Runtime, WorkerRequest
from mcp_swarm.runtimes.base import json_event
from mcp_swarm.store import Store
from tests.support.mcp_client import stdio_parameters


def write_project(directory: Path, argv: list[str]) -> Path:
    """A project whose mcp-swarm.toml makes `argv` the default (command) runtime, "scripted"."""
    directory.mkdir(parents=True, exist_ok=True)
    quoted = ", ".join(json.dumps(arg) for arg in argv)  # a JSON string is a TOML basic string
    (directory / "mcp-swarm.toml").write_text(
        f'default_runtime = "scripted"\n\n[runtimes.scripted]\ntype = "command"\nargv = [{quoted}]\n'
    )
    return directory


def serve(project: Path, db: Path) -> Client:
    """`mcp-swarm serve --db DB` started in `project`, over real stdio."""
    return Client(stdio_parameters(db, cwd=project), mode="legacy")


@asynccontextmanager
async def running_engine(tmp_path: Path, runtime: Runtime, limits: WorkerLimits) -> AsyncGenerator[Swarm]:
    """The engine on a fresh database, supervising until the block ends (then it stops every worker)."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    async with await Store.open(tmp_path / "state" / "swarm.db") as store:
        engine = Swarm(
            store,
            {runtime.name: runtime},
            default_runtime=runtime.name,
            state_dir=tmp_path / "state",
            project_dir=project,
            limits=limits,
            placements=placements(max_log_bytes=limits.max_log_bytes),
        )
        async with anyio.create_task_group() as group:
            await group.start(engine.run)
            yield engine
            group.cancel_scope.cancel()


# A scripted worker: it acts on the words of its prompt file.
WORKER = r"""
import json, os, subprocess, sys, time
prompt = open(sys.argv[1]).read()
task = os.environ["SWARM_TASK_ID"]
def grandchild():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if "@final-then-linger" in prompt:
    grandchild()
    print("working on", task, flush=True)
    print(json.dumps({"final": True, "ok": True, "summary": "final word on " + task}), flush=True)
    time.sleep(600)
if "@silent" in prompt:
    grandchild()
    time.sleep(600)
if "@chatty" in prompt:
    # Five times the idle limit in all, never more than a tenth of it without a line.
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        print("still working", flush=True)
        time.sleep(0.05)
if "@hang" in prompt:
    time.sleep(600)
if "@fail" in prompt:
    print("it broke", flush=True)
    sys.exit(3)
if "@stream-without-newline" in prompt:
    # A progress bar that only ever returns the carriage: 32 MiB without a newline, then the end.
    for _ in range(32):
        sys.stdout.buffer.write(b"\r" + b"#" * (1024 * 1024 - 1))
        sys.stdout.buffer.flush()
        time.sleep(0.02)
    # A JSON-lines protocol puts each event on a line of its own, after the bar too.
    print()
    print(json.dumps({"final": True, "ok": True, "summary": "streamed"}), flush=True)
if "@flood-then-last-line" in prompt:
    for _ in range(32):
        sys.stdout.buffer.write((b"x" * 63 + b"\n") * 16384)
    sys.stdout.buffer.write(b"the last line\n")
    sys.stdout.buffer.flush()
"""


def command_runtime(tmp_path: Path) -> CommandRuntime:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return CommandRuntime(CommandProfile([sys.executable, str(script), "{prompt_file}"]), name="scripted")


class FinalEventReader(OutputReader):
    """A runtime whose last word is a line {"final": true, "ok": ..., "summary": ...}."""

    def __init__(self) -> None:
        self.finished = False
        self.final: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is not None and event.get("final") is True:
            self.final = event
            self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        # The verdict is the final event's, whatever the exit code of a process stopped after it.
        if self.final is None:
            return Outcome(succeeded=False, error=f"no final event; exit code {exit_code}")
        summary = self.final.get("summary")
        return Outcome(
            succeeded=self.final.get("ok") is True, summary=summary if isinstance(summary, str) else None
        )


class FinalEventRuntime(Runtime):
    name = "final-event"

    def __init__(self, script: Path) -> None:
        self.script = script

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script), str(request.prompt_file)]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return FinalEventReader()
