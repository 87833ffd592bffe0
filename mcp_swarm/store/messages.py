"""Every SQL statement about Agent Mail messages.

Rows come back as plain `MessageRow` tuples: the ledger (`mcp_swarm.ledger.mail`) owns the model, and
importing it here would make the store depend on the ledger, the layer above it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import aiosqlite

_COLUMNS = "id, at, sender, recipient, task_id, type, subject, body, read_at"


class MessageRow(NamedTuple):
    id: int
    at: str
    sender: str
    recipient: str
    task_id: int | None
    type: str
    subject: str
    body: str
    read_at: str | None


def _row(row: sqlite3.Row) -> MessageRow:
    return MessageRow(*row)


class MessageQueries:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))  # type: ignore[arg-type]

    async def insert(
        self,
        *,
        at: str,
        sender: str,
        recipient: str,
        task_id: int | None,
        type: str,
        subject: str,
        body: str,
    ) -> MessageRow:
        rows = await self._rows(
            "INSERT INTO messages (at, sender, recipient, task_id, type, subject, body) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
            (at, sender, recipient, task_id, type, subject, body),
        )
        return _row(rows[0])

    async def inbox(
        self, recipient: str, *, since_id: int, limit: int, unread_only: bool
    ) -> list[MessageRow]:
        """Messages to `recipient` after `since_id`, oldest first."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM messages WHERE recipient = ? AND id > ? "
            "AND (NOT ? OR read_at IS NULL) ORDER BY id LIMIT ?",
            (recipient, since_id, unread_only, limit),
        )
        return [_row(row) for row in rows]

    async def unread_from_workers(
        self, recipient: str, *, type: str, after_id: int, mayor: str | None
    ) -> list[MessageRow]:
        """Unread messages of one type to `recipient` after `after_id` from the workers `mayor`
        spawned (None: those spawned with no Mayor's name), oldest first; none is marked."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM messages AS m WHERE recipient = ? AND type = ? AND m.id > ? "
            "AND read_at IS NULL AND EXISTS (SELECT 1 FROM workers AS w "
            "WHERE w.id = CAST(substr(m.sender, 8) AS INTEGER) AND m.sender = 'worker-' || w.id "
            "AND w.mayor IS ?) ORDER BY m.id",
            (recipient, type, after_id, mayor),
        )
        return [_row(row) for row in rows]

    async def mark_read(self, ids: Iterable[int], at: str) -> None:
        # A message already read keeps the time it was first read.
        await self._rows(
            "UPDATE messages SET read_at = ? "
            "WHERE id IN (SELECT value FROM json_each(?)) AND read_at IS NULL",
            (at, json.dumps(sorted(set(ids)))),
        )
