"""The SQLite store and the ledger's history, without MCP in the way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from mcp_swarm.errors import DependencyCycle
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, PlanTask, TaskChanges, TaskStatus
from mcp_swarm.store import SchemaTooNew, Store
from mcp_swarm.store.schema import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


async def test_every_connection_gets_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "swarm.db") as store:
        for conn in (store._writer, store._reader):  # pyright: ignore[reportPrivateUsage]
            assert next(iter(await conn.execute_fetchall("PRAGMA journal_mode")))[0] == "wal"
            assert next(iter(await conn.execute_fetchall("PRAGMA foreign_keys")))[0] == 1
            assert next(iter(await conn.execute_fetchall("PRAGMA busy_timeout")))[0] >= 5000
        assert await store.integrity_check() == []


async def test_schema_is_versioned_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "swarm.db"
    async with await Store.open(path) as store:
        await Ledger(store).create(NewTask(subject="kept"))
    async with await Store.open(path) as store:
        listing = await Ledger(store).list()
        assert [task.subject for task in listing.tasks] == ["kept"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_database_from_a_newer_version_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="upgrade mcp-swarm"):
        await Store.open(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


async def test_history_records_every_change_with_old_new_and_actor(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "swarm.db") as store:
        mayor = Ledger(store, actor="mayor")
        cli = Ledger(store, actor="cli")
        await mayor.create(NewTask(subject="A", metadata={"k": 1}))
        await mayor.create(NewTask(subject="B", blocked_by=["1"]))
        await cli.update("1", TaskChanges(status=TaskStatus.IN_PROGRESS, owner="worker-1"))
        await mayor.update("1", TaskChanges(metadata={"k": None, "n": 2}, subject="A2"))
        await mayor.update("1", TaskChanges(subject="A2"))  # no change, no event
        await mayor.update("2", TaskChanges(add_blocks=[]))
        with pytest.raises(DependencyCycle):
            await mayor.update("1", TaskChanges(add_blocked_by=["2"], owner="lost"))

        events = [(e.task_id, e.actor, e.field, e.old, e.new) for e in await mayor.history()]
        assert events == [
            ("1", "mayor", "created", None, {"subject": "A"}),
            ("2", "mayor", "created", None, {"subject": "B", "blockedBy": ["1"]}),
            ("1", "cli", "owner", None, "worker-1"),
            ("1", "cli", "status", "pending", "in_progress"),
            ("1", "mayor", "subject", "A", "A2"),
            ("1", "mayor", "metadata.k", 1, None),
            ("1", "mayor", "metadata.n", None, 2),
        ]
        assert [e.field for e in await mayor.history("2")] == ["created"]
        assert all(e.at.endswith("Z") for e in await mayor.history())


async def test_a_cancelled_call_leaves_its_transaction_whole(tmp_path: Path) -> None:
    """Cancel a large plan while it is being written: it lands whole, or not at all, and the
    store keeps working."""
    plan = [
        PlanTask(key=f"t{i}", subject=f"Task {i}", blocked_by=[f"t{i - 1}"] if i else []) for i in range(1000)
    ]
    async with await Store.open(tmp_path / "swarm.db") as store:
        ledger = Ledger(store)
        with anyio.move_on_after(0.005) as scope:
            await ledger.create_plan(plan)
            await anyio.lowlevel.checkpoint()
        # A thousand inserts take far longer than 5 ms: the deadline struck mid-transaction.
        assert scope.cancelled_caught
        listing = await ledger.list()
        assert len(listing.tasks) in (0, len(plan))
        created = await ledger.create(NewTask(subject="after"))
        assert created.id == str(len(listing.tasks) + 1)
        assert await store.integrity_check() == []


async def test_plan_of_a_thousand_task_chain_is_accepted(tmp_path: Path) -> None:
    """A long chain must not hit a recursion limit in the cycle check."""
    plan = [
        PlanTask(key=f"t{i}", subject=f"T{i}", blocked_by=[f"t{i + 1}"] if i < 999 else [])
        for i in range(1000)
    ]
    async with await Store.open(tmp_path / "swarm.db") as store:
        ledger = Ledger(store)
        created = await ledger.create_plan(plan)
        assert len(created.ids) == 1000
        with pytest.raises(DependencyCycle) as refused:
            await ledger.update(created.ids[-1], TaskChanges(add_blocked_by=[created.ids[0]]))
        assert len(refused.value.cycle) == 1001
