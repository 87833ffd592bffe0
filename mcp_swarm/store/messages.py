"""Every SQL statement about Agent Mail messages."""

from __future__ import annotations

import aiosqlite


class MessageQueries:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
