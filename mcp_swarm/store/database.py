"""The SQLite file: connections, pragmas, migrations and transactions.

One process holds one writer connection and one reader connection. Every read-then-write runs in
`Store.write()`, which takes `BEGIN IMMEDIATE`: SQLite's write lock is held from the first read,
so two processes (two Mayor sessions on one file) can never both decide on the same stale read.
`busy_timeout` makes the second writer wait for the first instead of failing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Self

import aiosqlite
import anyio

from mcp_swarm.config import STATE_DIR_NAME, ignore_state_dir
from mcp_swarm.errors import StoreUnavailable
from mcp_swarm.store.failures import explain, unwritable
from mcp_swarm.store.messages import MessageQueries
from mcp_swarm.store.reservations import ReservationQueries
from mcp_swarm.store.schema import MIGRATIONS, SCHEMA_VERSION
from mcp_swarm.store.tasks import TaskQueries
from mcp_swarm.store.workers import WorkerQueries

BUSY_TIMEOUT_MS = 15_000
# How long a write waits for another process's write lock before it fails with "locked", in
# milliseconds; for a test (or a host that wants a shorter wait), not a user's everyday knob.
BUSY_TIMEOUT_ENV = "MCP_SWARM_BUSY_TIMEOUT_MS"

logger = logging.getLogger(__name__)


class SchemaTooNew(StoreUnavailable):
    """The database was written by a newer mcp-swarm; this one must not touch it."""


def busy_timeout_ms(environ: dict[str, str] | None = None) -> int:
    """The busy timeout: BUSY_TIMEOUT_MS, unless MCP_SWARM_BUSY_TIMEOUT_MS says otherwise."""
    text = (os.environ if environ is None else environ).get(BUSY_TIMEOUT_ENV, "")
    if not text:
        return BUSY_TIMEOUT_MS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        logger.warning("%s=%r is not a whole number of milliseconds; using %d", BUSY_TIMEOUT_ENV, text,
                       BUSY_TIMEOUT_MS)  # fmt: skip
        return BUSY_TIMEOUT_MS
    return value


class Transaction:
    """The queries available inside one transaction, grouped by what they are about."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.tasks = TaskQueries(conn)
        self.workers = WorkerQueries(conn)
        self.messages = MessageQueries(conn)
        self.reservations = ReservationQueries(conn)


async def _connect(path: Path, *, query_only: bool, busy_ms: int) -> aiosqlite.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions behind our back;
    # every BEGIN and COMMIT here is explicit.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        await conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL cannot corrupt the file; it may lose the last commits on a power cut,
        # never on a process crash.
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
        if query_only:
            await conn.execute("PRAGMA query_only = ON")
    except BaseException:
        # A connection left open keeps its thread, and that thread keeps the process from exiting:
        # a file that is not a database would leave `serve` hanging after its error.
        with anyio.CancelScope(shield=True):
            await conn.close()
        raise
    return conn


def _translated(exc: BaseException, path: Path) -> BaseException:
    """`exc` in plain words if it is about the file (see failures.py), else `exc` itself."""
    return explain(exc, path) or exc


def _statements(script: str) -> list[str]:
    """Split a migration into statements, so it runs inside our own transaction.

    `executescript` would commit first, which would let two processes migrate at once.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


class Store:
    """The one owner of the database file within a process."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = anyio.Lock()
        self._read_lock = anyio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, busy_ms: int | None = None) -> Self:
        """Open (creating, or bringing up to date) the database at `path`.

        A file that cannot serve (not a database, damaged, newer, read-only, on a full disk) is a
        StoreUnavailable naming it; `busy_ms` (the busy timeout) defaults to `busy_timeout_ms()`.
        """
        path = Path(path)
        busy = busy_timeout_ms() if busy_ms is None else busy_ms
        try:
            made = not path.parent.exists()
            path.parent.mkdir(parents=True, exist_ok=True)
            refused = unwritable(path)
            if refused is not None:
                raise refused
            # The project's state directory, or one made here for the database alone: nothing in
            # it is the user's, so git is told to ignore all of it.
            if made or path.parent.name == STATE_DIR_NAME:
                ignore_state_dir(path.parent)
            writer = await _connect(path, query_only=False, busy_ms=busy)
        except (sqlite3.Error, OSError) as exc:
            raise _translated(exc, path) from exc
        try:
            await _migrate(writer, path)
            reader = await _connect(path, query_only=True, busy_ms=busy)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await writer.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise _translated(exc, path) from exc
            raise
        return cls(path, writer, reader)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._reader.close()
            await self._writer.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def write(self, *, one_statement: bool = False) -> AsyncGenerator[Transaction]:
        """A read-then-write transaction: all of it happens, or none of it does.

        The body runs shielded from cancellation: a tool call cancelled by its client still
        finishes (or rolls back) the transaction it started, and is cancelled after.

        one_statement=True is for a body of a single statement (an UPDATE ... WHERE ... RETURNING,
        say), which SQLite makes atomic on its own, write lock and all: it saves the BEGIN and
        COMMIT round trips to the database's thread.
        """
        async with self._write_lock:
            with anyio.CancelScope(shield=True):
                try:
                    if one_statement:
                        yield Transaction(self._writer)
                        return
                    await self._writer.execute("BEGIN IMMEDIATE")
                    try:
                        yield Transaction(self._writer)
                        await self._writer.execute("COMMIT")
                    except BaseException:
                        await self._roll_back()
                        raise
                except sqlite3.Error as exc:
                    # A lock held too long, a full disk, a file made read-only: said plainly.
                    raise _translated(exc, self.path) from exc

    async def _roll_back(self) -> None:
        """End a failed transaction, if SQLite has not already ended it itself (it rolls back on its
        own after some errors: a full disk, an I/O error)."""
        if self._writer.in_transaction:
            try:
                await self._writer.execute("ROLLBACK")
            except sqlite3.Error as exc:
                logger.warning("rolling back a failed write on %s: %s", self.path, exc)

    @asynccontextmanager
    async def read(self, *, snapshot: bool = True) -> AsyncGenerator[Transaction]:
        """A consistent snapshot for reads that take more than one statement.

        snapshot=False is for a single statement, which SQLite makes consistent on its own: it saves
        the BEGIN and COMMIT round trips.
        """
        async with self._read_lock:
            try:
                if not snapshot:
                    yield Transaction(self._reader)
                    return
                await self._reader.execute("BEGIN")
                try:
                    yield Transaction(self._reader)
                finally:
                    with anyio.CancelScope(shield=True):
                        if self._reader.in_transaction:
                            await self._reader.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translated(exc, self.path) from exc

    async def data_version(self) -> int:
        """A number that changes whenever another connection (another process, or our writer)
        commits to the file: a cheap way to notice work done elsewhere without re-reading it."""
        async with self._read_lock:
            rows = await self._reader.execute_fetchall("PRAGMA data_version")
            return int(next(iter(rows))[0])

    async def integrity_check(self) -> list[str]:
        """SQLite's own verdict on the file and the foreign keys: empty when all is well."""
        async with self._read_lock:
            rows = await self._reader.execute_fetchall("PRAGMA integrity_check")
            problems = [str(row[0]) for row in rows if row[0] != "ok"]
            fk_rows = await self._reader.execute_fetchall("PRAGMA foreign_key_check")
            problems.extend(f"foreign key: {tuple(row)}" for row in fk_rows)
            return problems


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    with anyio.CancelScope(shield=True):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            rows = list(await conn.execute_fetchall("PRAGMA user_version"))
            current = int(rows[0][0])
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    path,
                    f"{path} has schema version {current}, newer than this mcp-swarm knows "
                    f"({SCHEMA_VERSION}): upgrade mcp-swarm, or point --db elsewhere",
                )
            for script in MIGRATIONS[current:]:
                for statement in _statements(script):
                    await conn.execute(statement)
            if current != SCHEMA_VERSION:
                await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
