"""Two `mcp-swarm serve` processes on one database file: two Mayor sessions writing at once."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_swarm.ledger import Ledger
from mcp_swarm.store import Store
from tests.mcp_client import call, stdio_parameters

pytestmark = pytest.mark.anyio

SHARED_TASKS = 8
CALLERS_PER_SERVER = 4
CREATES_PER_CALLER = 30


async def test_two_servers_lose_no_write_and_never_hand_out_an_id_twice(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(Client(stdio_parameters(db), mode="legacy")) for _ in range(2)
        ]
        for index in range(SHARED_TASKS):
            await call(servers[0], "TaskCreate", subject=f"shared {index}", description="")

        created: list[tuple[int, int, str]] = []  # (server, caller, id)

        async def caller(server_index: int, caller_index: int) -> None:
            client = servers[server_index]
            mine = f"s{server_index}c{caller_index}"
            for round_ in range(CREATES_PER_CALLER):
                task = await call(client, "TaskCreate", subject=f"{mine} #{round_}", description="")
                created.append((server_index, caller_index, task["id"]))
                shared = str(1 + (round_ + caller_index) % SHARED_TASKS)
                # A read-modify-write of the same row from both processes: the merge must keep both.
                await call(client, "TaskUpdate", taskId=shared, metadata={f"{mine}-{round_}": round_})
                await call(client, "TaskUpdate", taskId=task["id"], addBlockedBy=[shared])

        async with anyio.create_task_group() as group:
            for server_index in range(2):
                for caller_index in range(CALLERS_PER_SERVER):
                    group.start_soon(caller, server_index, caller_index)

        total = SHARED_TASKS + 2 * CALLERS_PER_SERVER * CREATES_PER_CALLER
        ids = [task_id for _, _, task_id in created]
        assert len(set(ids)) == len(ids), "an id was handed out twice"
        assert sorted(int(i) for i in ids) == list(range(SHARED_TASKS + 1, total + 1))

        # Each server sees the other's work.
        for client in servers:
            listing = await call(client, "TaskList")
            assert len(listing["tasks"]) == total
            assert listing["counts"]["pending"] == total
        metadata_keys: set[str] = set()
        for shared in range(1, SHARED_TASKS + 1):
            metadata_keys |= set((await call(servers[1], "TaskGet", taskId=str(shared)))["metadata"])
        expected_keys = {
            f"s{s}c{c}-{r}"
            for s in range(2)
            for c in range(CALLERS_PER_SERVER)
            for r in range(CREATES_PER_CALLER)
        }
        assert metadata_keys == expected_keys, "a metadata merge was lost"

    async with await Store.open(db) as store:
        assert await store.integrity_check() == []
        history = await Ledger(store).history(limit=100_000)
    by_field: dict[str, int] = {}
    for event in history:
        by_field[event.field.split(".")[0]] = by_field.get(event.field.split(".")[0], 0) + 1
    # Every change is in the history once: each creation, each metadata key, each dependency.
    assert by_field == {
        "created": total,
        "metadata": len(expected_keys),
        "blockedBy": total - SHARED_TASKS,
    }
    assert {event.actor for event in history} == {"mayor"}
