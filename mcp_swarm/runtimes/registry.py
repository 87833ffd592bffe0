"""Which runtimes exist: the built-in ones, and those the configuration defines or tunes.

Commands come only from configuration, never from a tool argument: a caller can pick a
configured runtime by name, not introduce a program.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping

from mcp_swarm.config import RuntimeSettings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.runtimes.base import Runtime
from mcp_swarm.runtimes.claude import ClaudeProfile, ClaudeRuntime
from mcp_swarm.runtimes.codex import CodexProfile, CodexRuntime
from mcp_swarm.runtimes.command import CommandProfile, CommandRuntime

# The scripted workers of `mcp-swarm demo` (app.py builds them): a name `run` knows without a
# configuration.
DEMO_RUNTIME = "demo"


def _build(name: str, spec: RuntimeSettings) -> Runtime:
    if spec.type == "command":
        if not spec.argv:
            raise InvalidInput(f"[runtimes.{name}] is a command runtime and needs argv = [...]")
        return CommandRuntime(CommandProfile([*spec.argv, *spec.extra_args]), name=name)
    if spec.type == "claude":
        claude = ClaudeProfile()
        runtime: Runtime = ClaudeRuntime(
            ClaudeProfile(
                program=spec.program or claude.program,
                permission_mode=spec.permission_mode or claude.permission_mode,
                allowed_tools=claude.allowed_tools if spec.allowed_tools is None else spec.allowed_tools,
                model=spec.model,
                max_turns=spec.max_turns,
                extra_args=spec.extra_args,
            )
        )
    else:
        codex = CodexProfile()
        runtime = CodexRuntime(
            CodexProfile(
                program=spec.program or codex.program,
                sandbox=spec.sandbox or codex.sandbox,
                model=spec.model,
                extra_args=spec.extra_args,
            )
        )
    runtime.name = name
    return runtime


def build_runtimes(configured: Mapping[str, RuntimeSettings]) -> dict[str, Runtime]:
    runtimes: dict[str, Runtime] = {"claude": ClaudeRuntime(), "codex": CodexRuntime()}
    for name, spec in configured.items():
        runtimes[name] = _build(name, spec)
    return runtimes


def default_runtime(
    runtimes: Mapping[str, Runtime], configured: str | None, client_name: str | None
) -> str | None:
    """The configured default; else the connected client's own CLI; else codex or claude on PATH."""
    if configured is not None:
        return configured
    installed = [name for name in ("codex", "claude") if _installed(runtimes.get(name))]
    client = (client_name or "").lower()
    for name in installed:
        if name in client:
            return name
    return installed[0] if installed else None


def _installed(runtime: Runtime | None) -> bool:
    program = getattr(getattr(runtime, "profile", None), "program", None)
    return isinstance(program, str) and shutil.which(program) is not None
