"""Every SQL statement about file reservations.

A reservation is open while it is neither released nor expired. Times are `models.now()` strings,
fixed-width UTC with a `Z`, so SQLite's text comparison orders them as time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import aiosqlite

_COLUMNS = "id, holder, pattern, exclusive, reason, created_at, expires_at"


class ReservationRow(NamedTuple):
    id: int
    holder: str
    pattern: str
    exclusive: bool
    reason: str | None
    created_at: str
    expires_at: str


def _row(row: sqlite3.Row) -> ReservationRow:
    return ReservationRow(
        id=row["id"],
        holder=row["holder"],
        pattern=row["pattern"],
        exclusive=bool(row["exclusive"]),
        reason=row["reason"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


class ReservationQueries:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))  # type: ignore[arg-type]

    async def open(self, now: str, *, holder: str | None = None) -> list[ReservationRow]:
        """The reservations open at `now` (of one holder, or of all), oldest first."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM reservations WHERE released_at IS NULL AND expires_at > ? "
            "AND (? IS NULL OR holder = ?) ORDER BY id",
            (now, holder, holder),
        )
        return [_row(row) for row in rows]

    async def insert(
        self, *, holder: str, pattern: str, exclusive: bool, reason: str | None, now: str, expires_at: str
    ) -> ReservationRow:
        rows = await self._rows(
            "INSERT INTO reservations (holder, pattern, exclusive, reason, created_at, expires_at) "
            f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
            (holder, pattern, int(exclusive), reason, now, expires_at),
        )
        return _row(rows[0])

    async def renew(
        self, reservation_id: int, *, exclusive: bool, reason: str | None, expires_at: str
    ) -> ReservationRow:
        rows = await self._rows(
            "UPDATE reservations SET exclusive = ?, reason = ?, expires_at = ? "
            f"WHERE id = ? RETURNING {_COLUMNS}",
            (int(exclusive), reason, expires_at, reservation_id),
        )
        return _row(rows[0])

    async def release(self, holder: str, now: str, *, patterns: Sequence[str] | None = None) -> int:
        """Release the holder's open reservations (all, or those of these patterns); how many."""
        rows = await self._rows(
            "UPDATE reservations SET released_at = :now "
            "WHERE holder = :holder AND released_at IS NULL AND expires_at > :now "
            "AND (:patterns IS NULL OR pattern IN (SELECT value FROM json_each(:patterns))) RETURNING 1",
            {
                "now": now,
                "holder": holder,
                "patterns": None if patterns is None else json.dumps(list(patterns)),
            },
        )
        return len(rows)
