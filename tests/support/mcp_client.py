"""Connecting the SDK's own client to mcp-swarm, in memory or over real stdio."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent

from mcp_swarm.config import load_settings
from mcp_swarm.server.mayor import build_server

Transport = Literal["memory", "stdio"]
# The transports a test runs through, as fixture params. Over stdio each run starts a server process
# (about a second), so that run is slow: the quick loop runs the same test in memory.
TRANSPORTS = ["memory", pytest.param("stdio", marks=pytest.mark.slow)]


# The first two messages of a session, for tests that speak JSON-RPC on the wire themselves.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def installed_command() -> str:
    """The `mcp-swarm` console script installed next to this interpreter."""
    script = Path(sys.executable).parent / "mcp-swarm"
    if not script.exists():
        raise RuntimeError(f"mcp-swarm is not installed in {script.parent}; run pip install -e '.[test]'")
    return str(script)


def stdio_parameters(db: Path, *extra: str, cwd: Path | None = None) -> StdioServerParameters:
    return StdioServerParameters(
        command=installed_command(), args=["serve", "--db", str(db), *extra], cwd=cwd
    )


@asynccontextmanager
async def connect(transport: Transport, db: Path) -> AsyncGenerator[Client]:
    if transport == "memory":
        server = build_server(load_settings(cwd=db.parent, db=db))
        async with Client(server) as client:
            yield client
    else:
        # legacy: the initialize handshake, as Claude Code and Codex connect.
        async with Client(stdio_parameters(db), mode="legacy") as client:
            yield client


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call a tool that must succeed; return its JSON answer, checked to match the structured one."""
    result = await client.call_tool(tool, arguments)
    text = text_of(result)
    assert not result.is_error, f"{tool}({arguments}) failed: {text}"
    payload = json.loads(text)
    assert result.structured_content == payload
    return payload


async def refuse(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must be refused; return the error message."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) should have been refused, got {text_of(result)}"
    return text_of(result)


@asynccontextmanager
async def project_session(project: Path) -> AsyncGenerator[Client]:
    """A Mayor's session on `mcp-swarm serve` started in `project`, whose server the test may kill.

    A server killed under the client makes the client's own exit fail; only that exit is excused,
    so a failure in the body still fails the test.
    """
    params = stdio_parameters(project / "unused.db", cwd=project)
    params.args = ["serve"]
    session = Client(params, mode="legacy")
    client = await session.__aenter__()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await session.__aexit__(None, None, None)


def serving(project: Path) -> list[int]:
    """The pids of the `mcp-swarm serve` processes running in `project`, from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and Path(os.readlink(entry / "cwd")) == project:
                found.append(int(entry.name))
    return found
