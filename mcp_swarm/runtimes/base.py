"""What a runtime is: a way to start a worker agent and to read what it did.

A runtime builds argument lists and interprets output; it never starts or stops a process (that
is `mcp_swarm.placement.processes`) and never decides a task's fate (that is the engine). This split is the
one httpx makes between a client and its transports: the engine is written once, and a fake
runtime in the tests exercises all of it with no agent CLI installed.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mcp_swarm.errors import RuntimeNotCapable


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """Everything a runtime needs to build the command line of one worker attempt."""

    worker_id: str
    task_id: str
    prompt: str
    prompt_file: Path
    result_file: Path
    cwd: Path
    model: str | None = None
    # The server's worker endpoint (streamable HTTP): agent runtimes register it with their CLI as
    # the MCP server `swarm`, the bearer token read from the worker's `SWARM_TOKEN`. None: no swarm.
    swarm_url: str | None = None
    # The swarm's own state (its database, logs, status and result files), which the worker must
    # not write: a runtime that confines its agent (Codex's sandbox, Claude Code's permission
    # rules) closes these paths to it. Empty: nothing to close.
    state_paths: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a finished worker said about itself. Evidence, not yet a verdict on the task."""

    succeeded: bool
    summary: str | None = None
    error: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None


class OutputReader(ABC):
    """Reads a worker's output line by line, as the engine tails its log.

    `finished` turns true at the runtime's final event, so that a process still alive after it
    can be stopped rather than waited for.
    """

    finished: bool = False

    @abstractmethod
    def feed(self, line: str) -> None: ...

    @abstractmethod
    def outcome(self, exit_code: int | None) -> Outcome:
        """The evidence, once the process has ended. exit_code None: unknown, because the process
        was adopted after a restart and was not our child; the output alone decides then."""


class Runtime(ABC):
    name: str

    @abstractmethod
    def argv(self, request: WorkerRequest) -> list[str]:
        """The command line of a fresh attempt."""

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        """The command line that continues an earlier attempt's own session with a message."""
        raise RuntimeNotCapable(
            f"the {self.name} runtime cannot continue a worker's session; spawn the task again instead"
        )

    @abstractmethod
    def reader(self, request: WorkerRequest) -> OutputReader:
        """A fresh reader for one attempt's output."""

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """The worker's environment, from the allow-listed one the engine built."""
        return dict(env)


def json_event(line: str) -> dict[str, Any] | None:
    """One line of a JSON-lines stream as an object, or None for anything else (noise, partial)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return as_object(event)


def as_object(value: object) -> dict[str, Any] | None:
    """A JSON value as an object with string keys, or None: output of agents is not trusted."""
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def as_array(value: object) -> list[Any]:
    return cast(list[Any], value) if isinstance(value, list) else []


# Where a command worker may write its result (runtimes/command.py). Agent runtimes drop it: their
# verdict comes from their events and worker tools, and the file lies in the state they may not write.
RESULT_FILE_VARIABLE = "SWARM_RESULT_FILE"

# The name a worker's agent CLI knows the worker endpoint by: its tools are `mcp__swarm__*` (Codex: see
# runtimes/codex.py).
SERVER_NAME = "swarm"
# The variable of the worker's environment that holds its attempt's token: the agent CLIs read it
# from there (never from their command line, which any user can read).
TOKEN_VARIABLE = "SWARM_TOKEN"  # noqa: S105 - the name of a variable, not a secret
