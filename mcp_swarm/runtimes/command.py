"""Any configured program as a worker, with no LLM: the demo, the benchmarks and scripted workers.

Its verdict is its exit status, refined by the JSON it may write to `$SWARM_RESULT_FILE`:
`{"status": "done" | "blocked", "summary": "..."}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_swarm.errors import InvalidInput
from mcp_swarm.runtimes.base import Outcome, OutputReader, Runtime, WorkerRequest, as_object

# What a placeholder in a configured argument list stands for. Each placeholder becomes part of
# one argument; nothing is split or interpreted by a shell.
PLACEHOLDERS = ("prompt", "prompt_file", "result_file", "task_id", "worker_id", "cwd")
# A result file holds a status and a short summary; more than this is not read.
RESULT_FILE_LIMIT = 1 << 20


@dataclass(frozen=True)
class CommandProfile:
    argv: Sequence[str]


class CommandRuntime(Runtime):
    name = "command"

    def __init__(self, profile: CommandProfile, name: str = "command") -> None:
        if not profile.argv:
            raise InvalidInput(f"the {name} runtime needs a non-empty argv in its configuration")
        self.profile = profile
        self.name = name

    def argv(self, request: WorkerRequest) -> list[str]:
        values = {
            "prompt": request.prompt,
            "prompt_file": str(request.prompt_file),
            "result_file": str(request.result_file),
            "task_id": request.task_id,
            "worker_id": request.worker_id,
            "cwd": str(request.cwd),
        }
        return [_fill(arg, values) for arg in self.profile.argv]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return ResultFileReader(request.result_file)


def _fill(arg: str, values: dict[str, str]) -> str:
    # str.format would also evaluate attribute and index lookups written in the configuration;
    # plain replacement of the known names is all that is wanted.
    for name in PLACEHOLDERS:
        arg = arg.replace("{" + name + "}", values[name])
    return arg


class ResultFileReader(OutputReader):
    """The output of a command is only its log; the verdict comes from the exit status and the file."""

    def __init__(self, result_file: Path) -> None:
        self.finished = False
        self._result_file = result_file
        self._last_line: str | None = None

    def feed(self, line: str) -> None:
        if line.strip():
            self._last_line = line.strip()

    def outcome(self, exit_code: int | None) -> Outcome:
        report = read_result_file(self._result_file) or {}
        status = report.get("status")
        summary = report.get("summary")
        summary = summary if isinstance(summary, str) else self._last_line
        if exit_code is None and status is None:
            # Adopted after a restart: with no exit status, only a result file is evidence.
            error = "exit status unknown (the server restarted while it ran) and no result file"
            return Outcome(succeeded=False, summary=summary, error=error)
        if exit_code not in (0, None):
            return Outcome(succeeded=False, summary=summary, error=_exit_error(exit_code))
        if status == "blocked":
            return Outcome(
                succeeded=False, summary=summary, error=f"the worker reported itself blocked: {summary}"
            )
        if status not in (None, "done"):
            return Outcome(
                succeeded=False, summary=summary, error=f"unknown status {status!r} in the result file"
            )
        return Outcome(succeeded=True, summary=summary)


def read_result_file(path: Path) -> dict[str, Any] | None:
    try:
        # The worker writes this file, so it may have made it a link to a file it may not read
        # itself (outside its sandbox), for its summary to show: a link is not followed. Nor does
        # a FIFO in its place block us, nor a huge file fill our memory.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            data = json.loads(file.read(RESULT_FILE_LIMIT).decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
    return as_object(data)


def _exit_error(exit_code: int | None) -> str | None:
    if exit_code is None or exit_code == 0:
        return None
    if exit_code < 0:
        return f"the command was ended by signal {-exit_code}"
    return f"the command exited with status {exit_code}"
