"""The placements mcp-swarm has, by the mode that names each: what the engine looks a worker's up in."""

from __future__ import annotations

from mcp_swarm.config import DEFAULT_MAX_LOG_BYTES, DEFAULT_TMUX_SOCKET
from mcp_swarm.placement.base import Placement
from mcp_swarm.placement.local import LocalChildren
from mcp_swarm.placement.tmux import Tmux
from mcp_swarm.placement.tmux_sessions import TmuxSessions


def placements(
    *, tmux_socket: str = DEFAULT_TMUX_SOCKET, max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
) -> dict[str, Placement]:
    """One placement per mode. `max_log_bytes` bounds a worker's log where its own side rotates it."""
    return {
        "local": LocalChildren(),
        "distributed": TmuxSessions(Tmux(tmux_socket), max_log_bytes=max_log_bytes),
    }
