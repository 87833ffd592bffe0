"""Reading a swarm's database without ever writing to it: for `status` and `logs`.

`Store.open` migrates the file and keeps a writer connection, which a look at the swarm must
not do: the file may belong to a running server, or to a newer mcp-swarm. This opens one
connection with `query_only` on (SQLite refuses every write on it) and runs the store's own
queries on it, so no SQL is written twice. Not `mode=ro`: a read-only connection to a WAL file
cannot remove the -wal and -shm files it had to create, and would leave them behind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import anyio

from mcp_swarm.errors import InvalidInput
from mcp_swarm.models import Task, Worker
from mcp_swarm.store import Transaction
from mcp_swarm.store.database import SchemaTooNew, busy_timeout_ms
from mcp_swarm.store.failures import explain, unwritable
from mcp_swarm.store.schema import SCHEMA_VERSION


@dataclass(frozen=True)
class Snapshot:
    """The ledger and its workers at one moment."""

    tasks: list[Task]
    workers: list[Worker]
    version: int  # changes whenever anyone commits to the file
    counts: dict[str, int] = field(default_factory=dict[str, int])


class ReadOnlyDatabase:
    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn

    async def snapshot(self) -> Snapshot:
        await self._conn.execute("BEGIN")
        try:
            tx = Transaction(self._conn)
            summaries = await tx.tasks.summaries()
            tasks = await tx.tasks.many([int(summary.id) for summary in summaries])
            workers: list[Worker] = []
            for task in tasks:
                workers.extend(await tx.workers.for_task(int(task.id)))
            counts = await tx.tasks.counts()
            version = await self.data_version()
        finally:
            await self._conn.execute("COMMIT")
        workers.sort(key=lambda worker: worker.number)
        return Snapshot(tasks, workers, version, counts)

    async def worker(self, number: int) -> Worker | None:
        return await Transaction(self._conn).workers.get(number)

    async def data_version(self) -> int:
        rows = await self._conn.execute_fetchall("PRAGMA data_version")
        return int(next(iter(rows))[0])


@asynccontextmanager
async def open_read_only(path: Path) -> AsyncGenerator[ReadOnlyDatabase]:
    """The database at `path`, read-only; InvalidInput if it is missing, foreign or of another schema."""
    if not await anyio.Path(path).is_file():
        raise InvalidInput(
            f"no swarm database at {path}; `mcp-swarm run`, `mcp-swarm serve` or `--db PATH` first"
        )
    try:
        # mode=rw: an existing file only, never a new one.
        uri = f"{(await anyio.Path(path).resolve()).as_uri()}?mode=rw"
        conn = await aiosqlite.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise explain(exc, path) or InvalidInput(f"cannot open {path}: {exc}") from exc
    try:
        await conn.execute("PRAGMA schema_version")
    except sqlite3.Error as exc:
        await conn.close()
        raise unwritable(path) or explain(exc, path) or exc from exc
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA query_only = ON")
        await conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")
        version = await _user_version(conn, path)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                path,
                f"{path} was written by a newer mcp-swarm (schema {version}, this one knows "
                f"{SCHEMA_VERSION}): upgrade mcp-swarm, or point --db elsewhere",
            )
        if version < SCHEMA_VERSION:
            raise InvalidInput(
                f"{path} has an older schema ({version} < {SCHEMA_VERSION}); a `mcp-swarm serve` or "
                "`mcp-swarm run` on it brings it up to date"
            )
        try:
            yield ReadOnlyDatabase(path, conn)
        except sqlite3.Error as exc:
            raise explain(exc, path) or exc from exc
    finally:
        await conn.close()


async def _user_version(conn: aiosqlite.Connection, path: Path) -> int:
    try:
        rows = await conn.execute_fetchall("PRAGMA user_version")
    except sqlite3.DatabaseError as exc:
        raise explain(exc, path) or InvalidInput(f"{path} is not a swarm database: {exc}") from exc
    return int(next(iter(rows))[0])
