"""Claude Code as a worker: `claude -p --output-format stream-json --verbose ... -- <prompt>`.

The final `result` event carries the verdict. `claude -p` can exit 0 after an API error, so
`is_error` is read, never the exit code alone.

A worker of a swarm (the request names the server's worker endpoint) gets that endpoint as its
only MCP server, named `swarm`, an `http` server whose bearer token Claude Code reads from the
worker's `SWARM_TOKEN` (`${SWARM_TOKEN}` in the header is expanded from the environment, so the
token never appears on the command line): its tools reach the agent as `mcp__swarm__my_task`,
`mcp__swarm__report_progress`... and are allowed without a prompt, which a headless run has
nobody to answer.

Claude Code has no operating-system sandbox here: what keeps a worker out of the swarm's state is
its permission rules (`_closing`). Measured with Claude Code 2.1.197: `acceptEdits` lets the Edit
and Write tools write anywhere in the working directory, `.mcp-swarm/` included, and also runs
shell commands it takes for file operations (`touch`, `mkdir`, `cp`, `echo ... >`) without
asking, though Bash is not among the allowed tools. `permissions.deny` rules given with
`--settings` (JSON, so a path with a space or a comma stays one rule) as `Read(//path)` and
`Edit(//path)`, each also with `/**`, refuse all of these on the state paths: Read, Grep, Edit,
Write, and those shell commands (the `cat`, `cp`, `mv`, `rm`, `sed -i`, `cd dir && touch` tried).
Commands it does not take for file operations (`sh -c`, `python3 -c`, `tee`, `ln -s`) need an
approval nobody gives. Deny rules win over every allow, so the worker's own directory is never
among the paths (see Launcher.state_paths).

Agent workers do not get `SWARM_RESULT_FILE`: their verdict is the final result event and their
worker tools, and the file lies in the state they may not write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_swarm.runtimes.base import (
    RESULT_FILE_VARIABLE,
    SERVER_NAME,
    TOKEN_VARIABLE,
    Outcome,
    OutputReader,
    Runtime,
    WorkerRequest,
    as_array,
    as_object,
    json_event,
)

# Set by a Claude Code session for its own children; a worker that inherits them believes it is
# nested inside the Mayor's session and behaves differently.
_NESTING_VARIABLES = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")
# `claude -p` sends its first model request while MCP servers are still starting unless told to
# wait (the model then sees no swarm tools on its first turn, and is told to call my_task first);
# and it waits only 5 s by default, short for a Python server starting beside several others.
_MCP_WAIT = {"MCP_CONNECTION_NONBLOCKING": "0", "MCP_CONNECT_TIMEOUT_MS": "60000"}


@dataclass(frozen=True)
class ClaudeProfile:
    program: str = "claude"
    # acceptEdits lets a worker edit files in its working directory without a prompt, which a
    # headless run has nobody to answer.
    permission_mode: str = "acceptEdits"
    allowed_tools: Sequence[str] = field(default_factory=lambda: ("Read", "Edit", "Write", "Glob", "Grep"))
    model: str | None = None
    max_turns: int | None = None
    extra_args: Sequence[str] = ()


class ClaudeRuntime(Runtime):
    name = "claude"

    def __init__(self, profile: ClaudeProfile | None = None) -> None:
        self.profile = profile or ClaudeProfile()

    def _common(self, request: WorkerRequest) -> list[str]:
        profile = self.profile
        args = ["--output-format", "stream-json", "--verbose", "--permission-mode", profile.permission_mode]
        allowed = list(profile.allowed_tools)
        if request.swarm_url is not None:
            args += _swarm_server(request.swarm_url)
            # The server name allows every tool of the server; they are the worker's own.
            allowed.append(f"mcp__{SERVER_NAME}")
        if allowed:
            args += ["--allowedTools", ",".join(allowed)]
        if request.state_paths:
            args += _closing(request.state_paths)
        model = request.model or profile.model
        if model:
            args += ["--model", model]
        if profile.max_turns is not None:
            args += ["--max-turns", str(profile.max_turns)]
        return [*args, *profile.extra_args]

    def argv(self, request: WorkerRequest) -> list[str]:
        # The prompt and a resumed worker's message are the caller's text, last and after "--":
        # `-p` takes no value, so a text right after it that starts with a dash (`--help`,
        # `--dangerously-skip-permissions`) was parsed as claude's own option, not read by the
        # model. "--" also ends the variadic options (--allowedTools, --mcp-config) before it.
        return [self.profile.program, "-p", *self._common(request), "--", request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [self.profile.program, "-p", "--resume", session_id, *self._common(request), "--", message]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return ClaudeStreamReader()

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        # The MCP variables only matter when there is an MCP server, and a value given is kept.
        kept = {key: value for key, value in env.items() if key not in _NESTING_VARIABLES}
        kept.pop(RESULT_FILE_VARIABLE, None)
        return {**_MCP_WAIT, **kept}


def _swarm_server(url: str) -> list[str]:
    """The flags that give a worker its swarm server, and no other.

    --strict-mcp-config: without it the worker would also load the user's and the project's MCP
    servers, and the usual setup (`claude mcp add swarm -- mcp-swarm serve` in the project) would
    hand every worker the Mayor's own server: spawn, TaskUpdate on any task, under the very name
    of this one. A worker sees its swarm server only, whatever the user has configured.
    """
    # Claude Code expands ${VAR} in an MCP server's headers from its own environment: the token
    # stays in the worker's environment, out of the argument list that every user can read.
    headers = {"Authorization": f"Bearer ${{{TOKEN_VARIABLE}}}"}
    server = {"type": "http", "url": url, "headers": headers}
    config = json.dumps({"mcpServers": {SERVER_NAME: server}}, separators=(",", ":"))
    # The JSON itself as the value: no file to write, to clean up or to race for.
    return ["--mcp-config", config, "--strict-mcp-config"]


def _closing(paths: Sequence[Path]) -> list[str]:
    """The flags that deny the worker reading and editing `paths` and anything below them.

    `//` starts an absolute path in a rule; Edit rules cover Write and the shell's file commands,
    Read rules Grep and Glob. A path's own `*`, `?`, `[` and `\\` are escaped, as rules are
    gitignore patterns.
    """
    patterns = [pattern for path in paths for pattern in (_literal(path), _literal(path) + "/**")]
    deny = [f"{tool}(/{pattern})" for tool in ("Read", "Edit") for pattern in patterns]
    return ["--settings", json.dumps({"permissions": {"deny": deny}}, separators=(",", ":"))]


def _literal(path: Path) -> str:
    return re.sub(r"([*?\[\\])", r"\\\1", str(path))


class ClaudeStreamReader(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self._session_id: str | None = None
        self._result: dict[str, Any] | None = None
        self._last_text: str | None = None

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is None:
            return
        if isinstance(event.get("session_id"), str):
            self._session_id = event["session_id"]
        kind = event.get("type")
        if kind == "result":
            self._result = event
            self.finished = True
        elif kind == "assistant":
            message = as_object(event.get("message")) or {}
            for item in as_array(message.get("content")):
                block = as_object(item)
                if block is not None and block.get("type") == "text":
                    self._last_text = str(block.get("text", ""))

    def outcome(self, exit_code: int | None) -> Outcome:
        result = self._result
        if result is None:
            return Outcome(
                succeeded=False,
                summary=self._last_text,
                error=f"claude exited ({_status(exit_code)}) without a final result event",
                session_id=self._session_id,
            )
        text = result.get("result")
        summary = text if isinstance(text, str) else self._last_text
        is_error = bool(result.get("is_error")) or result.get("subtype") not in (None, "success")
        error: str | None = None
        if is_error:
            # An API failure comes as subtype "success" with is_error set and the HTTP status apart.
            status = result.get("api_error_status")
            kind = f"API error (HTTP {status})" if status else f"an error ({result.get('subtype', 'error')})"
            error = f"claude reported {kind}: {summary or 'no detail'}"
        elif exit_code not in (0, None):
            error = f"claude exited with status {exit_code} after a successful result"
        cost = result.get("total_cost_usd")
        turns = result.get("num_turns")
        return Outcome(
            succeeded=error is None,
            summary=summary,
            error=error,
            session_id=result.get("session_id") or self._session_id,
            cost_usd=float(cost) if isinstance(cost, int | float) else None,
            num_turns=turns if isinstance(turns, int) else None,
        )


def _status(exit_code: int | None) -> str:
    return "status unknown" if exit_code is None else f"status {exit_code}"
