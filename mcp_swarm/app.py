"""The engine built from settings, one way for every command that runs workers.

`mcp-swarm serve` (server/mayor.py) and the CLI's own Mayors (`run`, `demo`) all build it here, so
that a worker started from the command line is started exactly as one spawned through the MCP
tools.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from mcp_swarm.config import DEFAULT_ENV_ALLOW, Settings
from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.integrations.completion_hooks import completion_hooks
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes.base import Runtime
from mcp_swarm.runtimes.command import CommandProfile, CommandRuntime
from mcp_swarm.runtimes.registry import DEMO_RUNTIME, build_runtimes
from mcp_swarm.store import Store


def demo_runtime(pace: float | None = None) -> CommandRuntime:
    """Scripted workers that need no agent CLI and no LLM (`mcp_swarm.cli.demo_worker`).

    The interpreter running this CLI runs them too, so they work wherever mcp-swarm is installed.
    """
    argv = [sys.executable, "-m", "mcp_swarm.cli.demo_worker"]
    if pace is not None:
        argv += ["--pace", f"{pace:g}"]
    return CommandRuntime(CommandProfile(argv), name=DEMO_RUNTIME)


def engine_runtimes(settings: Settings, extra: Mapping[str, Runtime] | None = None) -> dict[str, Runtime]:
    """The built-in runtimes and `extra`; a configured runtime of the same name replaces either."""
    runtimes = build_runtimes(settings.runtimes)
    for name, runtime in (extra or {}).items():
        if name not in settings.runtimes:
            runtimes[name] = runtime
    return runtimes


def build_engine(settings: Settings, store: Store, *, runtimes: Mapping[str, Runtime] | None = None) -> Swarm:
    """The engine as `mcp-swarm serve` builds it; `runtimes` defaults to `engine_runtimes(settings)`."""
    ledger = Ledger(store, actor="mayor")
    return Swarm(
        store,
        engine_runtimes(settings) if runtimes is None else runtimes,
        default_runtime=settings.default_runtime,
        state_dir=settings.state_dir,
        project_dir=settings.project_dir,
        limits=WorkerLimits(
            max_workers=settings.max_workers,
            timeout_seconds=settings.timeout_seconds,
            idle_seconds=settings.idle_seconds,
            max_log_bytes=settings.max_log_bytes,
        ),
        env_allow=DEFAULT_ENV_ALLOW if settings.env_allow is None else settings.env_allow,
        mode=settings.mode,
        placements=placements(tmux_socket=settings.tmux_socket, max_log_bytes=settings.max_log_bytes),
        hooks=completion_hooks(ledger),
    )
