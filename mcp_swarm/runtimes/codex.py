"""Codex as a worker: `codex exec --json --skip-git-repo-check -C <dir>`, in Codex's sandbox.

Success is read from the events, not from the exit status alone: a completed turn and no
`turn.failed`. An `error` event alone is not a failure: codex prints "Reconnecting... n/5" as
`error` events while it retries, and a retry that then succeeds completes the turn.

A worker of a swarm (the request names the server's worker endpoint) gets that endpoint as the
MCP server `swarm_worker`, a streamable HTTP server whose bearer token Codex reads from the
worker's `SWARM_TOKEN` (`bearer_token_env_var`), through `-c` overrides of the configuration; the
model sees its tools as `mcp__swarm_worker__my_task`, `mcp__swarm_worker__report_progress`...

The sandbox keeps the worker out of the swarm's state (`_sandbox_closing`). Measured with Codex
0.169 on Linux (bubblewrap and seccomp): `--sandbox workspace-write` lets shell commands write the
whole working directory, and the state directory (`.mcp-swarm/`) lies in the project: a worker
could overwrite the database. The legacy `sandbox_workspace_write` settings can only add writable
roots. A permission profile can take paths out: `default_permissions` naming a profile that
`extends = ":workspace"` (root readable; workspace, /tmp and $TMPDIR writable; its `.git` and
`.codex` read-only) with the state paths set to `"none"` leaves the workspace writable and the
state neither readable nor writable, to shell commands and `apply_patch` alike ("patch rejected:
writing outside of the project"); a closed directory cannot be removed or renamed either (it is a
mount point in the sandbox), and a path that does not exist yet cannot be made. As `-c` overrides
the profile wins over a `sandbox_mode` in the user's or a trusted project's config.toml;
`--sandbox` on the command line would win over it, so it is not passed. Another `sandbox` than
workspace-write (`read-only`, or `danger-full-access` for a worker confined otherwise) is passed
as `--sandbox`, as before.

Agent workers do not get `SWARM_RESULT_FILE`: their verdict is read from their events and their
worker tools, never from that file, and it lies in the state directory they cannot write.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mcp_swarm.runtimes.base import (
    RESULT_FILE_VARIABLE,
    SERVER_NAME,
    TOKEN_VARIABLE,
    Outcome,
    OutputReader,
    Runtime,
    WorkerRequest,
    as_object,
    json_event,
)

WORKSPACE_WRITE = "workspace-write"


@dataclass(frozen=True)
class CodexProfile:
    program: str = "codex"
    sandbox: str = WORKSPACE_WRITE
    model: str | None = None
    extra_args: Sequence[str] = ()


class CodexRuntime(Runtime):
    name = "codex"

    def __init__(self, profile: CodexProfile | None = None) -> None:
        self.profile = profile or CodexProfile()

    def _options(self, request: WorkerRequest) -> list[str]:
        args = ["--json", "--skip-git-repo-check", "-C", str(request.cwd), *self._sandbox(request)]
        model = request.model or self.profile.model
        if model:
            # One argument: codex refuses `--model -x` as a missing value, and reads `--model=-x`
            # as the model named "-x", which is what the caller asked for.
            args.append(f"--model={model}")
        if request.swarm_url is not None:
            args += _swarm_server(request.swarm_url)
        return [*args, *self.profile.extra_args]

    def argv(self, request: WorkerRequest) -> list[str]:
        # "--" ends the options: a prompt that starts with a dash stays a prompt.
        return [self.profile.program, "exec", *self._options(request), "--", request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        # The session id comes from the worker's own output: after "--" it cannot be an option.
        return [self.profile.program, "exec", *self._options(request), "resume", "--", session_id, message]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return CodexEventReader()

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        # The verdict comes from the events; the result file is in the state it may not write.
        return {key: value for key, value in env.items() if key != RESULT_FILE_VARIABLE}

    def _sandbox(self, request: WorkerRequest) -> list[str]:
        if self.profile.sandbox == WORKSPACE_WRITE and request.state_paths:
            return _sandbox_closing(request.state_paths)
        return ["--sandbox", self.profile.sandbox]


# The permission profile a worker runs under. A user's config.toml may add to it: with
# `[permissions.swarm-worker.network] enabled = true` its commands reach the network (measured
# with 0.169; the legacy `sandbox_workspace_write.network_access` no longer applies).
PERMISSION_PROFILE = "swarm-worker"


def _sandbox_closing(paths: Sequence[Path]) -> list[str]:
    """The `-c` overrides of workspace-write with `paths` neither readable nor writable.

    Codex's built-in `:workspace` profile, extended: what it allows stays Codex's own definition,
    and only the swarm's state is taken out of it. "none" rather than "read": the state directory
    holds every task's prompt and log, and a token file of the HTTP server's.
    """
    table = f"permissions.{PERMISSION_PROFILE}"
    rules = ", ".join(f'{toml_string(str(path))} = "none"' for path in paths)
    return [
        *("-c", f"default_permissions={toml_string(PERMISSION_PROFILE)}"),
        *("-c", f'{table}.extends=":workspace"'),
        *("-c", f"{table}.filesystem={{{rules}}}"),
    ]


# The name of the worker endpoint in a Codex worker's configuration. Not `swarm`: Codex merges
# `-c` overrides into the user's own tables, and `mcp-swarm install codex` gives the user a
# `[mcp_servers.swarm]` that runs the Mayor's server (a command); a `url` added to that table is
# refused ("url is not supported for stdio") and no worker would start.
CODEX_SERVER_NAME = f"{SERVER_NAME}_worker"


def _swarm_server(url: str) -> list[str]:
    """The `-c` overrides that register the worker's swarm endpoint (values are TOML).

    As seen with Codex 0.169: `exec` takes them before `resume` as well, and calls the tools of a
    configured server without asking. It offers MCP tools to the model behind `tool_search`: the
    model finds them there and calls them in the namespace `mcp__swarm_worker`; the `--json`
    events show each call as an `mcp_tool_call` item of server `swarm_worker`. The token is
    named, not given: `bearer_token_env_var` makes Codex read it from the worker's environment,
    never from its command line.

    Codex has no counterpart of Claude's --strict-mcp-config short of ignoring the user's whole
    configuration (model provider included), so a worker keeps the user's other MCP servers; but
    the user's own `swarm` server (the Mayor's, as `mcp-swarm install codex` registers it) is
    switched off, so that a worker never gets the Mayor's tools. Codex refuses `enabled = false`
    on a server it has no other keys for, so that is said only where the user has one.
    """
    table = f"mcp_servers.{CODEX_SERVER_NAME}"
    # required: the first turn waits for the server. Without it Codex starts the turn with the
    # tools ready at that moment, and a worker's first tool_search could find no swarm tools.
    overrides = [
        *("-c", f"{table}.url={toml_string(url)}"),
        *("-c", f"{table}.bearer_token_env_var={toml_string(TOKEN_VARIABLE)}"),
        *("-c", f"{table}.required=true"),
    ]
    if SERVER_NAME in _configured_servers(os.environ):
        overrides += ["-c", f"mcp_servers.{SERVER_NAME}.enabled=false"]
    return overrides


def codex_config_file(env: Mapping[str, str], home: Path | None = None) -> Path:
    """The user's Codex configuration: $CODEX_HOME/config.toml, by default ~/.codex/config.toml
    (`home`: the user's home directory, if not Path.home())."""
    codex_home = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else (home or Path.home()) / ".codex"
    return codex_home / "config.toml"


def _configured_servers(env: Mapping[str, str]) -> set[str]:
    """The MCP servers of the user's Codex configuration; none if it cannot be read (Codex would
    then say why itself)."""
    try:
        config = tomllib.loads(codex_config_file(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    servers: object = config.get("mcp_servers")
    return {str(name) for name in cast(dict[str, Any], servers)} if isinstance(servers, dict) else set()


def toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, but for two: TOML wants DEL escaped, and has
    no surrogate escapes (hence the non-ASCII characters written as they are)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


class CodexEventReader(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self._thread_id: str | None = None
        self._last_message: str | None = None
        self._completed = False
        self._failed = False
        self._errors: list[str] = []
        self._usage: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            self._thread_id = event["thread_id"]
        elif kind == "item.completed":
            item = as_object(event.get("item"))
            if item is not None and item.get("type") == "agent_message":
                self._last_message = str(item.get("text", ""))
        elif kind == "turn.completed":
            self._completed = True
            self.finished = True
            self._usage = as_object(event.get("usage"))
        elif kind in ("turn.failed", "error"):
            self._errors.append(_error_text(event))
            if kind == "turn.failed":
                self._failed = True
                self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        error: str | None = None
        if self._failed or not self._completed:
            reason = self._errors[-1] if self._errors else "no turn.completed event"
            status = "unknown" if exit_code is None else exit_code
            error = f"codex did not complete its turn (exit status {status}): {reason}"
        elif exit_code not in (0, None):
            error = f"codex exited with status {exit_code} after completing its turn"
        return Outcome(
            succeeded=error is None,
            summary=self._last_message,
            error=error,
            session_id=self._thread_id,
        )


def _error_text(event: dict[str, Any]) -> str:
    error = as_object(event.get("error"))
    if error is not None and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(event.get("message"), str):
        return str(event["message"])
    return str(event.get("type"))
