"""Every SQL statement about workers.

A worker's end is written at most once: `finish` only changes a worker that is still live, so a
late report from a run that was already closed or timed out can never overwrite the verdict.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import aiosqlite

from mcp_swarm.models import LIVE_WORKER_STATES, TaskStatus, Worker, WorkerState, worker_name

_LIVE = "('starting', 'running')"
# Checked at import, against the source: _LIVE must name the states models calls live.
assert {state.value for state in LIVE_WORKER_STATES} == {"starting", "running"}  # noqa: S101


def _worker(row: sqlite3.Row) -> Worker:
    return Worker(
        id=worker_name(row["id"]),
        task_id=str(row["task_id"]),
        runtime=row["runtime"],
        attempt=row["attempt"],
        state=WorkerState(row["state"]),
        pid=row["pid"],
        pid_start_time=row["pid_start_time"],
        cwd=row["cwd"],
        log=row["log"],
        session_id=row["session_id"],
        exit_code=row["exit_code"],
        summary=row["summary"],
        error=row["error"],
        cost_usd=row["cost_usd"],
        num_turns=row["num_turns"],
        validation=None if row["validation"] is None else json.loads(row["validation"]),
        task_status=None if row["task_status"] is None else TaskStatus(row["task_status"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        mode=row["mode"],
        tmux_session=row["tmux_session"],
        supervisor=row["supervisor"],
        isolation=row["isolation"],
        worktree=None if row["worktree"] is None else json.loads(row["worktree"]),
        changes=None if row["changes"] is None else json.loads(row["changes"]),
        integrated_commit=row["integrated_commit"],
        mayor=row["mayor"],
    )


def _compact_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class Ending(Protocol):
    """How one attempt of a worker ended, as `finish_many` records it (the engine's Verdict).
    `attempt` None: whichever attempt is live now (closing a worker)."""

    @property
    def number(self) -> int: ...
    @property
    def attempt(self) -> int | None: ...
    @property
    def state(self) -> WorkerState: ...
    @property
    def task_status(self) -> TaskStatus: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def summary(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def num_turns(self) -> int | None: ...
    @property
    def validation(self) -> dict[str, Any] | None: ...
    @property
    def changes(self) -> list[dict[str, Any]] | None: ...


class WorkerQueries:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))  # type: ignore[arg-type]

    async def get(self, number: int) -> Worker | None:
        rows = await self._rows("SELECT * FROM workers WHERE id = ?", (number,))
        return _worker(rows[0]) if rows else None

    async def many(self, numbers: Iterable[int]) -> list[Worker]:
        rows = await self._rows(
            "SELECT * FROM workers WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(sorted(set(numbers))),),
        )
        return [_worker(row) for row in rows]

    async def live(self) -> list[Worker]:
        rows = await self._rows(f"SELECT * FROM workers WHERE state IN {_LIVE} ORDER BY id")
        return [_worker(row) for row in rows]

    async def ended(self) -> list[Worker]:
        rows = await self._rows(f"SELECT * FROM workers WHERE state NOT IN {_LIVE} ORDER BY id")
        return [_worker(row) for row in rows]

    async def live_count(self) -> int:
        rows = await self._rows(f"SELECT count(*) FROM workers WHERE state IN {_LIVE}")
        return int(rows[0][0])

    async def live_by_supervisor(self) -> dict[str | None, int]:
        """How many live workers each supervising server has (None: a row that names none)."""
        rows = await self._rows(
            f"SELECT supervisor, count(*) AS n FROM workers WHERE state IN {_LIVE} GROUP BY supervisor"
        )
        return {row["supervisor"]: int(row["n"]) for row in rows}

    async def want_slots(self, supervisor: str, at: float, *, forget_before: float) -> None:
        """Record that `supervisor` wants slots it did not get; demands older than `forget_before`
        are dropped on the way (their servers stopped asking)."""
        await self._conn.execute("DELETE FROM slot_demand WHERE wanted_at < ?", (forget_before,))
        await self._conn.execute(
            "INSERT INTO slot_demand (supervisor, wanted_at) VALUES (?, ?) "
            "ON CONFLICT (supervisor) DO UPDATE SET wanted_at = excluded.wanted_at",
            (supervisor, at),
        )

    async def slots_granted(self, supervisor: str) -> None:
        """`supervisor` got every slot it asked for: it no longer holds the others to a share."""
        await self._conn.execute("DELETE FROM slot_demand WHERE supervisor = ?", (supervisor,))

    async def wanting_slots(self, since: float) -> list[str]:
        """The servers that wanted slots they did not get at `since` or later."""
        rows = await self._rows("SELECT supervisor FROM slot_demand WHERE wanted_at >= ?", (since,))
        return [row["supervisor"] for row in rows]

    async def live_for_tasks(self, task_ids: Iterable[int]) -> dict[int, str]:
        """Which of these tasks a live worker is running, and which worker."""
        rows = await self._rows(
            f"SELECT task_id, id FROM workers WHERE state IN {_LIVE} "
            "AND task_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(set(task_ids))),),
        )
        return {int(row[0]): worker_name(row[1]) for row in rows}

    async def for_task(self, task_id: int) -> list[Worker]:
        rows = await self._rows("SELECT * FROM workers WHERE task_id = ? ORDER BY id", (task_id,))
        return [_worker(row) for row in rows]

    async def attempts(self, task_id: int) -> int:
        rows = await self._rows("SELECT count(*) FROM workers WHERE task_id = ?", (task_id,))
        return int(rows[0][0])

    async def unreported_and_live(self, mayor: str | None) -> tuple[list[Worker], list[Worker]]:
        """`mayor`'s workers that ended and whose result it has not been given yet, and its live
        ones: one statement, so one consistent look and one round trip. None is a Mayor too (a
        stdio server's, the command line's): it gets the workers spawned with no name."""
        rows = await self._rows(
            f"SELECT * FROM workers WHERE mayor IS ? AND (state IN {_LIVE} OR reported_at IS NULL) "
            "ORDER BY id",
            (mayor,),
        )
        workers = [_worker(row) for row in rows]
        live = [worker for worker in workers if worker.state in LIVE_WORKER_STATES]
        return [worker for worker in workers if worker.state not in LIVE_WORKER_STATES], live

    async def insert_many(
        self,
        task_ids: Sequence[int],
        *,
        runtime: str,
        cwd: str,
        now: str,
        supervisor: str,
        mode: str = "local",
        mayor: str | None = None,
    ) -> dict[int, int]:
        """A new worker, attempt 1, for each of these tasks, in one statement: {task id: worker number}.
        `mayor`: whose plain `wait` gets their results (kept by every later attempt and adoption).

        Each row's log is set by `set_logs` once its number is known.
        """
        rows = await self._rows(
            "INSERT INTO workers (task_id, runtime, attempt, state, cwd, log, started_at, supervisor, "
            "mode, mayor) SELECT value, ?, 1, 'starting', ?, '', ?, ?, ?, ? FROM json_each(?) "
            "RETURNING task_id, id",
            (runtime, cwd, now, supervisor, mode, mayor, json.dumps(list(task_ids))),
        )
        return {int(row[0]): int(row[1]) for row in rows}

    async def set_logs(self, logs: Mapping[int, str], token_hashes: Mapping[int, str] | None = None) -> None:
        """Each new worker's log and, if given, the hash of its first attempt's token."""
        hashes = token_hashes or {}
        await self._conn.executemany(
            "UPDATE workers SET log = ?, token_hash = ? WHERE id = ?",
            [(log, hashes.get(number), number) for number, log in logs.items()],
        )

    async def by_token_hash(self, token_hash: str) -> Worker | None:
        """The live worker whose current attempt holds the token of this hash, if any. An ended
        attempt's hash is cleared with its verdict, so it finds nothing; the state is checked too."""
        rows = await self._rows(
            f"SELECT * FROM workers WHERE token_hash = ? AND state IN {_LIVE}", (token_hash,)
        )
        return _worker(rows[0]) if rows else None

    async def started(self, processes: Iterable[tuple[int, int, int]]) -> None:
        """Record (worker number, pid, pid start time) of processes just started.

        A worker whose verdict is already in (it ended, or was closed, first) keeps it.
        """
        await self._rows(
            "UPDATE workers SET state = 'running', pid = json_extract(p.value, '$[1]'), "
            "pid_start_time = json_extract(p.value, '$[2]') FROM json_each(?) AS p "
            "WHERE workers.id = json_extract(p.value, '$[0]') AND workers.state = 'starting'",
            (json.dumps(list(processes)),),
        )

    async def restart(
        self, number: int, *, attempt: int, now: str, supervisor: str, token_hash: str | None = None
    ) -> bool:
        """Begin attempt `attempt + 1` of an ended worker, with the hash of its new token; False if
        it is live or has moved on."""
        rows = await self._rows(
            f"""UPDATE workers SET attempt = attempt + 1, state = 'starting', pid = NULL,
                pid_start_time = NULL, exit_code = NULL, summary = NULL, error = NULL, cost_usd = NULL,
                num_turns = NULL, validation = NULL, task_status = NULL, ended_at = NULL,
                reported_at = NULL, started_at = ?, supervisor = ?, token_hash = ?
            WHERE id = ? AND attempt = ? AND state NOT IN {_LIVE} RETURNING 1""",
            (now, supervisor, token_hash, number, attempt),
        )
        return bool(rows)

    async def finish_many(self, endings: Sequence[Ending], now: str) -> dict[int, int]:
        """Record the end of live workers' attempts, in two statements: {worker number: task id}
        for those recorded. An attempt that had already ended or been superseded is left as it is
        (the first verdict stands, and an old attempt's report is ignored). Each worker appears at
        most once: of two endings of one worker, the rows alone could not say which came first.

        Which are recorded is read first, then they are updated, inside the caller's write
        transaction: the values are bound as parameters (text through JSON would lose whatever
        follows a NUL)."""
        if not endings:
            return {}
        numbers = [ending.number for ending in endings]
        if len(set(numbers)) != len(numbers):
            raise ValueError("finish_many takes each worker at most once")
        live = {
            int(row[0]): (int(row[1]), int(row[2]))
            for row in await self._rows(
                f"SELECT id, task_id, attempt FROM workers WHERE state IN {_LIVE} "
                "AND id IN (SELECT value FROM json_each(?))",
                (json.dumps(numbers),),
            )
        }
        recorded = [e for e in endings if e.number in live and e.attempt in (None, live[e.number][1])]
        await self._conn.executemany(
            f"""UPDATE workers SET state = :state, exit_code = :exit_code, summary = :summary,
                error = :error, session_id = coalesce(:session_id, session_id), cost_usd = :cost_usd,
                num_turns = :num_turns, validation = :validation, task_status = :task_status,
                changes = coalesce(:changes, changes), ended_at = :now, token_hash = NULL
            WHERE id = :id AND state IN {_LIVE}""",
            [
                {
                    "id": e.number,
                    "state": e.state.value,
                    "exit_code": e.exit_code,
                    "summary": e.summary,
                    "error": e.error,
                    "session_id": e.session_id,
                    "cost_usd": e.cost_usd,
                    "num_turns": e.num_turns,
                    "validation": _compact_json(e.validation),
                    "task_status": e.task_status.value,
                    "changes": _compact_json(e.changes),
                    "now": now,
                }
                for e in recorded
            ],
        )
        return {e.number: live[e.number][0] for e in recorded}

    async def set_worktree(self, number: int, worktree: dict[str, str], cwd: str) -> None:
        await self._rows(
            "UPDATE workers SET isolation = 'worktree', worktree = ?, cwd = ? WHERE id = ?",
            (_compact_json(worktree), cwd, number),
        )

    async def integrable(self) -> list[Worker]:
        """Workers whose task they completed in a worktree not yet integrated, oldest first."""
        rows = await self._rows(
            "SELECT w.* FROM workers w JOIN tasks t ON t.id = w.task_id "
            "WHERE w.worktree IS NOT NULL AND w.integrated_at IS NULL AND w.state = 'succeeded' "
            "AND w.task_status = 'completed' AND t.status = 'completed' AND t.owner = 'worker-' || w.id "
            "ORDER BY w.id"
        )
        return [_worker(row) for row in rows]

    async def mark_integrated(self, numbers: Iterable[int], commit: str, now: str) -> None:
        await self._rows(
            "UPDATE workers SET integrated_commit = ?, integrated_at = ? "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (commit, now, json.dumps(sorted(set(numbers)))),
        )

    async def set_tmux_session(self, number: int, session: str) -> None:
        await self._rows("UPDATE workers SET tmux_session = ? WHERE id = ?", (session, number))

    async def claim(self, number: int, *, attempt: int, previous: str | None, supervisor: str) -> bool:
        """Become the supervisor of a live worker, if its supervisor is still `previous`.

        A compare-and-set: of two servers recovering at once, one adopts each worker.
        """
        rows = await self._rows(
            f"UPDATE workers SET supervisor = ? WHERE id = ? AND attempt = ? AND supervisor IS ? "
            f"AND state IN {_LIVE} RETURNING 1",
            (supervisor, number, attempt, previous),
        )
        return bool(rows)

    async def mark_reported(self, numbers: Iterable[int], now: str) -> set[int]:
        """Mark these workers' results as given to the Mayor; return those this call marked.

        Two `wait`s (one server or two) may read the same unreported workers: only the one whose
        update marks a worker may hand it over, so every result is given once.
        """
        rows = await self._rows(
            "UPDATE workers SET reported_at = ? WHERE id IN (SELECT value FROM json_each(?)) "
            "AND reported_at IS NULL RETURNING id",
            (now, json.dumps(sorted(set(numbers)))),
        )
        return {int(row[0]) for row in rows}
