"""Several Mayor sessions on one `mcp-swarm serve --http` process, through the SDK's own
streamable HTTP client: each session's plain `wait` returns the results of the workers it
spawned, once; a Mayor whose connection dropped gets its results when it comes back under its
name; the name comes from the X-Swarm-Mayor header, else from the client's own name.

The workers are real processes held at gates (tests/support/gated_workers.py), so each test
decides when they end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import Implementation

from mcp_swarm.server.mayor_scope import MAX_MAYOR_CHARS
from tests.support.gated_workers import gated_project, go, rows
from tests.support.http_server import http_server, new_token
from tests.support.mcp_client import call, refuse

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 30


@asynccontextmanager
async def mayor(
    url: str, token: str, name: str | None = None, *, client: str = "mcp-swarm-tests"
) -> AsyncGenerator[Client]:
    """A Mayor's session: the token, and `name` as its X-Swarm-Mayor header (None: no header);
    `client` is the name its MCP handshake gives."""
    headers = {"Authorization": f"Bearer {token}"}
    if name is not None:
        headers["X-Swarm-Mayor"] = name
    http = create_mcp_http_client(headers=headers)
    identity = Implementation(name=client, version="1")
    # legacy: the initialize handshake, as Claude Code and Codex connect.
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode="legacy", client_info=identity) as session,
    ):
        yield session


async def spawn(session: Client, *subjects: str) -> list[str]:
    """Create a task for each subject and spawn exactly those: their worker ids, in order."""
    ids = [(await call(session, "TaskCreate", subject=s, description=s))["id"] for s in subjects]
    spawned = await call(session, "spawn", taskIds=ids)
    assert [w["taskId"] for w in spawned["workers"]] == ids, spawned
    return [str(w["workerId"]) for w in spawned["workers"]]


def done_ids(result: dict[str, Any]) -> list[str]:
    return [str(d["workerId"]) for d in result["done"]]


async def test_two_sessions_each_wait_for_their_own_workers_and_get_each_result_once(
    tmp_path: Path,
) -> None:
    gates = gated_project(tmp_path, max_workers=4)
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        async with mayor(server.url, token, "alice") as alice, mayor(server.url, token, "bob") as bob:
            alices = await spawn(alice, "alice's first", "alice's second")
            bobs = await spawn(bob, "bob's")

            # While they run, each sees its own running workers, and only those.
            running = await call(alice, "wait", timeoutSeconds=0.2)
            assert (running["done"], running["running"], running["timedOut"]) == ([], alices, True)
            running = await call(bob, "wait", timeoutSeconds=0.2)
            assert (running["done"], running["running"]) == ([], bobs)

            # Bob's worker ends first: alice's wait for the first of hers is not woken by it.
            go(gates, *bobs)
            assert done_ids(await call(bob, "wait", workerIds=bobs, timeoutSeconds=DEADLINE)) == bobs
            early = await call(alice, "wait", mode="any", timeoutSeconds=0.3)
            assert (early["done"], early["timedOut"]) == ([], True)

            go(gates, *alices)
            mine = await call(alice, "wait", timeoutSeconds=DEADLINE)
            assert (done_ids(mine), mine["running"]) == (alices, [])
            assert {d["taskStatus"] for d in mine["done"]} == {"completed"}
            theirs = await call(bob, "wait", timeoutSeconds=DEADLINE)
            assert done_ids(theirs) == bobs
            # Once: nothing is left for either, and neither waits (nothing of theirs runs).
            for session in (alice, bob):
                again = await call(session, "wait", timeoutSeconds=DEADLINE)
                assert (again["done"], again["running"]) == ([], [])
                assert "timedOut" not in again

    assert rows(tmp_path, "SELECT 'worker-' || id, mayor FROM workers ORDER BY id") == [
        (alices[0], "alice"),
        (alices[1], "alice"),
        (bobs[0], "bob"),
    ]


async def test_a_mayor_that_comes_back_gets_its_results_once_and_no_one_else_does(tmp_path: Path) -> None:
    gates = gated_project(tmp_path, max_workers=4)
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        async with mayor(server.url, token, "alice") as alice:
            [worker] = await spawn(alice, "outlives the connection")
        # Alice's connection is gone; her worker runs on, and ends while no one is connected.
        go(gates, worker)
        async with mayor(server.url, token, "bob") as bob:
            # Bob may look at it by id (that hands nothing over)...
            [seen] = (await call(bob, "wait", workerIds=[worker], timeoutSeconds=DEADLINE))["done"]
            assert (seen["state"], seen["taskStatus"]) == ("succeeded", "completed")
            # ...but his plain wait does not take it.
            assert (await call(bob, "wait", timeoutSeconds=DEADLINE))["done"] == []
        async with mayor(server.url, token, "alice") as alice_again:
            back = await call(alice_again, "wait", timeoutSeconds=DEADLINE)
            assert done_ids(back) == [worker]
            assert back["done"][0]["summary"] == f"{worker} finished"
            again = await call(alice_again, "wait", timeoutSeconds=DEADLINE)
            assert again["done"] == []
        async with mayor(server.url, token, "alice") as third:
            assert (await call(third, "wait", timeoutSeconds=DEADLINE))["done"] == []


async def test_without_a_header_the_clients_name_is_the_mayors(tmp_path: Path) -> None:
    gates = gated_project(tmp_path, max_workers=4)
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        async with (
            mayor(server.url, token, client="editor-one") as one,
            mayor(server.url, token, client="editor-two") as two,
        ):
            [ones] = await spawn(one, "one's")
            [twos] = await spawn(two, "two's")
            go(gates, ones, twos)
            assert done_ids(await call(one, "wait", timeoutSeconds=DEADLINE)) == [ones]
            assert done_ids(await call(two, "wait", timeoutSeconds=DEADLINE)) == [twos]
    assert rows(tmp_path, "SELECT mayor FROM workers ORDER BY id") == [("editor-one",), ("editor-two",)]


@pytest.mark.parametrize("name", ["", "m" * (MAX_MAYOR_CHARS + 1)], ids=["empty", "too-long"])
async def test_a_mayor_name_that_is_no_name_is_refused_and_changes_nothing(tmp_path: Path, name: str) -> None:
    gated_project(tmp_path, max_workers=4)
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        async with mayor(server.url, token) as planner:
            await call(planner, "TaskCreate", subject="waits for a Mayor", description="")
        async with mayor(server.url, token, name) as nameless:
            for tool in ("spawn", "wait"):
                message = await refuse(nameless, tool)
                assert "X-Swarm-Mayor" in message, message
                assert f"1 to {MAX_MAYOR_CHARS}" in message, message
                assert f"it has {len(name)}" in message, message
    assert rows(tmp_path, "SELECT count(*) FROM workers") == [(0,)]
    assert rows(tmp_path, "SELECT status, owner FROM tasks") == [("pending", None)]
