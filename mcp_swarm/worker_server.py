"""The worker-side MCP server: `mcp-swarm serve --worker <workerId>`."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from mcp_swarm.config import Settings


def build_worker_server(settings: Settings, worker_id: str) -> MCPServer[Any]:
    raise NotImplementedError
