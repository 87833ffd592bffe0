"""File reservations: advisory leases on paths and globs, so that everyone sees who edits what.

Nothing stops a process from writing a reserved file; a reservation is a promise made in public.
A lease ends when its holder releases it or when it expires, so that a worker that dies without
releasing holds nothing for long. No SQL here: each public method is one transaction of the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import party_number, party_worker
from mcp_swarm.ledger.patterns import normalise_pattern, overlaps
from mcp_swarm.models import now
from mcp_swarm.store import Store
from mcp_swarm.store.reservations import ReservationRow

MAX_PATTERNS = 100
MAX_REASON_CHARS = 500
MAX_TTL_SECONDS = 86_400
# Conflicts named in one refusal; a caller that hit more learns the rest from `active`.
_MAX_NAMED_CONFLICTS = 10


class Reservation(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    holder: str
    pattern: str
    exclusive: bool
    reason: str | None = None
    created_at: str
    expires_at: str


class Reservations:
    def __init__(self, store: Store, *, clock: Callable[[], str] = now) -> None:
        self.store = store
        self._clock = clock

    async def reserve(
        self,
        holder: str,
        patterns: list[str],
        *,
        exclusive: bool = True,
        ttl_seconds: float = 3600,
        reason: str | None = None,
    ) -> list[Reservation]:
        """Reserve every pattern or none. A pattern the holder already holds is renewed."""
        party_number(holder, "holder")
        wanted = _normalised(patterns)
        if not wanted:
            raise InvalidInput("reserve at least one path or glob")
        if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidInput(f"ttlSeconds must be between 1 and {MAX_TTL_SECONDS}; it is {ttl_seconds}")
        reason = (reason or "").strip() or None
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            raise InvalidInput(f"the reason may have at most {MAX_REASON_CHARS} characters")

        at = self._clock()
        expires_at = _after(at, ttl_seconds)
        async with self.store.write() as tx:
            await party_worker(tx, holder, "holder")
            held = await tx.reservations.open(at)
            clashes = [
                (pattern, other)
                for pattern in wanted
                for other in held
                if other.holder != holder
                and (exclusive or other.exclusive)
                and overlaps(pattern, other.pattern)
            ]
            if clashes:
                raise InvalidInput(_refusal(clashes))
            mine = {row.pattern: row for row in held if row.holder == holder}
            rows: list[ReservationRow] = []
            for pattern in wanted:
                if pattern in mine:
                    old = mine[pattern]
                    kept_reason = old.reason if reason is None else reason
                    rows.append(
                        await tx.reservations.renew(
                            old.id, exclusive=exclusive, reason=kept_reason, expires_at=expires_at
                        )
                    )
                else:
                    rows.append(
                        await tx.reservations.insert(
                            holder=holder,
                            pattern=pattern,
                            exclusive=exclusive,
                            reason=reason,
                            now=at,
                            expires_at=expires_at,
                        )
                    )
        return [_reservation(row) for row in rows]

    async def release(self, holder: str, patterns: list[str] | None = None) -> int:
        """Release the holder's open reservations, all of them or those of these patterns; how many."""
        party_number(holder, "holder")
        wanted = None if patterns is None else _normalised(patterns)
        at = self._clock()
        async with self.store.write() as tx:
            await party_worker(tx, holder, "holder")
            return await tx.reservations.release(holder, at, patterns=wanted)

    async def active(self, *, holder: str | None = None) -> list[Reservation]:
        """The open reservations (of one holder, or of all), oldest first."""
        if holder is not None:
            party_number(holder, "holder")
        at = self._clock()
        async with self.store.read(snapshot=False) as tx:
            rows = await tx.reservations.open(at, holder=holder)
        return [_reservation(row) for row in rows]

    async def conflicts(self, holder: str, patterns: list[str]) -> list[Reservation]:
        """The open reservations of others that `holder` taking these patterns exclusively would
        conflict with, oldest first. Reads only: the Mayor asks this before forming a wave."""
        party_number(holder, "holder")
        wanted = _normalised(patterns)
        at = self._clock()
        async with self.store.read() as tx:
            await party_worker(tx, holder, "holder")
            held = await tx.reservations.open(at)
        return [
            _reservation(row)
            for row in held
            if row.holder != holder and any(overlaps(pattern, row.pattern) for pattern in wanted)
        ]


def _normalised(patterns: list[str]) -> list[str]:
    """Each pattern in canonical form, in the order given and without repeats."""
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} patterns per call; this one has {len(patterns)}")
    return list(dict.fromkeys(normalise_pattern(pattern) for pattern in patterns))


def _after(at: str, seconds: float) -> str:
    """The clock's time `seconds` later, in the clock's own format (see `models.now`)."""
    later = datetime.fromisoformat(at).astimezone(UTC) + timedelta(seconds=seconds)
    return later.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reservation(row: ReservationRow) -> Reservation:
    return Reservation(
        id=row.id,
        holder=row.holder,
        pattern=row.pattern,
        exclusive=row.exclusive,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _refusal(clashes: Iterable[tuple[str, ReservationRow]]) -> str:
    lines: list[str] = []
    shared_only = True
    for pattern, other in clashes:
        shared_only = shared_only and not other.exclusive
        how = "exclusively" if other.exclusive else "(shared)"
        held = f"reserved {how} by {other.holder} until {other.expires_at}"
        lines.append(
            f"{pattern} is {held}"
            if pattern == other.pattern
            else f"{pattern} overlaps {other.pattern}, {held}"
        )
    if len(lines) > _MAX_NAMED_CONFLICTS:
        lines[_MAX_NAMED_CONFLICTS:] = [f"and {len(lines) - _MAX_NAMED_CONFLICTS} more"]
    remedy = "wait for it or choose other files" if len(lines) == 1 else "wait for them or choose other files"
    if shared_only:
        remedy += ", or reserve shared (exclusive=false)"
    return "; ".join(lines) + f"; {remedy}; nothing was reserved"


__all__ = ["Reservation", "Reservations"]
