"""Every SQL statement about file reservations."""

from __future__ import annotations

import aiosqlite


class ReservationQueries:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
