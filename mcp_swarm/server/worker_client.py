"""A worker's side of the worker endpoint, for workers written in Python (the demo's scripted
workers): the MCP SDK's streamable HTTP client, with the attempt's token as its bearer token."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from mcp_swarm.errors import SwarmError


class EndpointRefused(SwarmError):
    """The worker endpoint refused a call (the attempt ended, or the call was wrong)."""


class WorkerClient:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """A worker tool's JSON answer; EndpointRefused with its message if the tool refused."""
        result: CallToolResult = await self._client.call_tool(tool, arguments or {})
        block = result.content[0] if result.content else None
        text = block.text if isinstance(block, TextContent) else ""
        if result.is_error:
            raise EndpointRefused(f"{tool}: {text}")
        answer: object = json.loads(text)
        return cast(dict[str, Any], answer) if isinstance(answer, dict) else {}


@asynccontextmanager
async def worker_client(url: str, token: str, *, timeout: float = 60) -> AsyncGenerator[WorkerClient]:  # noqa: ASYNC109 - the HTTP client's own timeout
    """A session with the endpoint at `url` (`$SWARM_URL`) as the worker whose token it is."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    # legacy: the initialize handshake, as the agent CLIs connect.
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        yield WorkerClient(client)
