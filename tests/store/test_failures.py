"""The store's failures in plain words: a foreign, damaged or locked file is a StoreUnavailable
that names it and says what to do, and a failed open leaves nothing running behind it."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from mcp_swarm.errors import StoreUnavailable
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask
from mcp_swarm.store import Store
from mcp_swarm.store.failures import LOCKED

pytestmark = pytest.mark.anyio


def truncated_database(path: Path) -> Path:
    """A real swarm database cut in half, as a full disk or a careless copy leaves one."""
    whole = path.with_name("whole.db")
    with contextlib.closing(sqlite3.connect(whole)) as conn:
        conn.execute("CREATE TABLE filler (x)")
        conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
        conn.commit()
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def connection_threads() -> set[threading.Thread]:
    """The live threads of database connections (aiosqlite runs each connection in one)."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("text", "is not an mcp-swarm database"),
        ("truncated", "is damaged"),
    ],
)
async def test_a_file_that_is_no_database_is_refused_by_name_and_leaves_no_thread(
    tmp_path: Path, content: str, words: str
) -> None:
    path = tmp_path / "swarm.db"
    if content == "text":
        path.write_text("notes, not a database\n" * 10)
    else:
        truncated_database(path)
    before = path.read_bytes()
    threads = connection_threads()
    with pytest.raises(StoreUnavailable) as raised:
        await Store.open(path)
    message = str(raised.value)
    assert str(path) in message
    assert words in message
    assert "point --db elsewhere" in message
    # A connection left open keeps a thread that keeps the process alive: `serve` hung on this.
    # (Closing ends the thread a moment after it answers: it is given a few seconds to go.)
    for thread in connection_threads() - threads:
        await anyio.to_thread.run_sync(thread.join, 5.0)
    assert connection_threads() == threads
    assert path.read_bytes() == before  # nothing was changed


async def test_a_write_under_a_lock_held_past_the_busy_timeout_fails_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "swarm.db"
    async with await Store.open(path, busy_ms=200) as store:
        ledger = Ledger(store)
        await ledger.create(NewTask(subject="before"))
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable) as raised:
                await ledger.create(NewTask(subject="while locked"))
            assert LOCKED in str(raised.value)
            assert raised.value.transient
            # Reads go on under another process's write lock.
            assert [t.subject for t in (await ledger.list()).tasks] == ["before"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The failed write left no transaction open: the next one goes through.
        await ledger.create(NewTask(subject="after"))
        assert [t.subject for t in (await ledger.list()).tasks] == ["before", "after"]
