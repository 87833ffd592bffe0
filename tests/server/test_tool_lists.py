"""The tools both servers offer, held byte for byte against a snapshot.

A client (and a skill written for Claude Code's own task tools) relies on each tool's name,
description and schemas. A change to any of them must be deliberate: rewrite the snapshots with
`MCP_SWARM_UPDATE_SNAPSHOTS=1 ./dev test tests/server/test_tool_lists.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_swarm.config import load_settings
from mcp_swarm.server.mayor import build_server
from mcp_swarm.server.worker_endpoint import worker_endpoint
from mcp_swarm.store import Store
from tests.support import FIXTURES
from tests.support.helpers import assigned_workers
from tests.support.worker_endpoints import mint_tokens, worker_session

pytestmark = pytest.mark.anyio

SNAPSHOTS = FIXTURES / "tools"


async def _listed(client: Client) -> str:
    tools = (await client.list_tools()).tools
    dumped: list[dict[str, Any]] = [
        tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools
    ]
    return json.dumps({"instructions": client.instructions, "tools": dumped}, indent=2, sort_keys=True) + "\n"


def _check(name: str, listed: str) -> None:
    snapshot = SNAPSHOTS / f"{name}.json"
    if os.environ.get("MCP_SWARM_UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(listed, encoding="utf-8")
    assert listed == snapshot.read_text(encoding="utf-8"), f"the {name} server's tools changed"


async def test_the_mayor_servers_tools_are_the_snapshot(tmp_path: Path) -> None:
    server = build_server(load_settings(cwd=tmp_path, db=tmp_path / "swarm.db"))
    async with Client(server) as client:
        _check("mayor", await _listed(client))


async def test_the_worker_servers_tools_are_the_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    async with await Store.open(db) as store:
        [number] = await assigned_workers(store, 1)
        [token] = (await mint_tokens(store, [number])).values()
        async with (
            worker_endpoint(store, load_settings(cwd=tmp_path, db=db)) as endpoint,
            worker_session(endpoint.url, token) as client,
        ):
            _check("worker", await _listed(client))


def _undescribed(schema: dict[str, Any], node: dict[str, Any], where: str) -> list[str]:
    """The properties under `node`, nested ones too (list items, referenced models, unions), that
    carry no description: a parameter an agent must guess at."""
    if "$ref" in node:
        node = schema["$defs"][str(node["$ref"]).rsplit("/", 1)[-1]]
    found: list[str] = []
    for name, prop in node.get("properties", {}).items():
        if not prop.get("description"):
            found.append(f"{where}{name}")
        found += _undescribed(schema, prop, f"{where}{name}.")
    if "items" in node:
        found += _undescribed(schema, node["items"], where.removesuffix(".") + "[].")
    for branch in node.get("anyOf", []):
        found += _undescribed(schema, branch, where)
    return found


async def _undescribed_parameters(client: Client) -> list[str]:
    tools = (await client.list_tools()).tools
    assert tools
    return [
        f"{tool.name}: {name}"
        for tool in tools
        for name in _undescribed(tool.input_schema, tool.input_schema, "")
    ]


async def test_every_parameter_of_every_tool_has_a_description(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    settings = load_settings(cwd=tmp_path, db=db)
    async with Client(build_server(settings)) as mayor:
        missing = await _undescribed_parameters(mayor)
    async with await Store.open(db) as store:
        [number] = await assigned_workers(store, 1)
        [token] = (await mint_tokens(store, [number])).values()
        async with (
            worker_endpoint(store, settings) as endpoint,
            worker_session(endpoint.url, token) as worker,
        ):
            missing += [f"worker {name}" for name in await _undescribed_parameters(worker)]
    assert missing == []
