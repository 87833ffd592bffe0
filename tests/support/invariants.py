"""What must hold of a swarm database whatever was done to it through the tools.

`ledger_problems(db)` reads the SQLite file directly (read only, in one snapshot, so it may run
while servers write) and lists every broken invariant; `assert_ledger_sound(db)` fails a test
with that list. They know nothing of how the database was driven, so any test may call them: the
fuzzer after each run, a load test after its servers stop.

The invariants:

- the file: `PRAGMA integrity_check` says ok and `PRAGMA foreign_key_check` finds nothing;
- dependencies: no cycle among the tasks that are not deleted. A deleted task no longer blocks
  and can no longer be changed, so an edge through it holds nothing up and is left out;
- workers: no task has more than one live worker (state starting or running); a worker is live
  exactly when it has no end time; with `quiescent=True` (every server on the file has stopped),
  no worker of local mode is live and no process recorded for one still runs;
- mail: every message runs between the Mayor and an existing worker, one each side; every file
  reservation is held by the Mayor or an existing worker;
- every event accounted for. `task_events` is an append-only history whose ids are AUTOINCREMENT
  (strictly increasing by construction), one row per changed field. Replayed in id order, it must
  rebuild the task table:
  - each task's history begins with exactly one `created` event (new: {subject, blockedBy?}),
    and a task has no event after the one that deleted it;
  - `status` (from pending), `owner` (from none) and `subject` (from the created event) each
    form a chain, every event's `old` the value the previous one left, and the last value is the
    task's current one;
  - the dependencies named by the created events and the `blockedBy` events are exactly the rows
    of `task_dependencies`, each named once;
  - `description`, `activeForm` and `metadata.<key>` are not part of the created event, so their
    first value is unknown: from the first event on they chain, and the last one is current;
  - no event has a field outside these.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

LIVE_STATES = ("starting", "running")
STATUSES = frozenset({"pending", "in_progress", "completed", "failed", "deleted"})
# Fields whose first value the created event does not hold: (event field, tasks column).
_UNSEEDED = {"description": "description", "activeForm": "active_form"}
_MAYOR = "mayor"
# Problems listed per kind before the rest are summarised: a broken run can break thousands.
_MAX_PER_CHECK = 20


def assert_ledger_sound(db_path: Path, *, quiescent: bool = False) -> None:
    problems = ledger_problems(db_path, quiescent=quiescent)
    assert not problems, f"the swarm database {db_path} breaks its invariants:\n" + "\n".join(problems)


def ledger_problems(db_path: Path, *, quiescent: bool = False) -> list[str]:
    """Every broken invariant of the database at `db_path` (see the module's docstring); [] if none."""
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        # One read transaction: every query below sees the same snapshot, even while others write.
        conn.execute("BEGIN")
        try:
            problems = _file_problems(conn)
            tasks = {int(row["id"]): row for row in conn.execute("SELECT * FROM tasks")}
            edges = [(int(row[0]), int(row[1])) for row in conn.execute("SELECT * FROM task_dependencies")]
            problems += _cycle_problems(tasks, edges)
            problems += _worker_problems(conn, quiescent=quiescent)
            problems += _mail_problems(conn)
            events = list(conn.execute("SELECT * FROM task_events ORDER BY id"))
            problems += _event_problems(tasks, edges, events)
        finally:
            conn.execute("ROLLBACK")
    return problems


def _limited(kind: str, problems: list[str]) -> list[str]:
    if len(problems) <= _MAX_PER_CHECK:
        return problems
    return [*problems[:_MAX_PER_CHECK], f"{kind}: and {len(problems) - _MAX_PER_CHECK} more"]


def _file_problems(conn: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        problems.append(f"PRAGMA integrity_check: {integrity[:_MAX_PER_CHECK]}")
    dangling = [tuple(row) for row in conn.execute("PRAGMA foreign_key_check")]
    if dangling:
        problems.append(f"PRAGMA foreign_key_check: {dangling[:_MAX_PER_CHECK]} (table, rowid, parent, fk)")
    return problems


def _cycle_problems(tasks: dict[int, sqlite3.Row], edges: list[tuple[int, int]]) -> list[str]:
    live = {number for number, row in tasks.items() if row["status"] != "deleted"}
    blockers: dict[int, list[int]] = defaultdict(list)
    for waiter, blocker in edges:
        if waiter in live and blocker in live:
            blockers[waiter].append(blocker)
    # Iterative depth-first search: a plan may be one chain thousands of tasks long.
    done: set[int] = set()
    for start in sorted(blockers):
        if start in done:
            continue
        path, on_path = [start], {start}
        pending = [iter(blockers[start])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif nxt in on_path:
                cycle = [*path[path.index(nxt) :], nxt]
                return [f"dependency cycle among live tasks: {' -> '.join(map(str, cycle))}"]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(blockers[nxt]))
    return []


def _worker_problems(conn: sqlite3.Connection, *, quiescent: bool) -> list[str]:
    problems: list[str] = []
    live_by_task: dict[int, list[str]] = defaultdict(list)
    for row in conn.execute("SELECT * FROM workers ORDER BY id"):
        name = f"worker-{row['id']}"
        live = row["state"] in LIVE_STATES
        if live:
            live_by_task[int(row["task_id"])].append(name)
        if row["attempt"] < 1:
            problems.append(f"{name}: attempt {row['attempt']}")
        if live != (row["ended_at"] is None):
            problems.append(f"{name}: state {row['state']} but ended_at {row['ended_at']!r}")
        if quiescent and live and row["mode"] == "local":
            problems.append(f"{name} (local) is still {row['state']} after every server stopped")
        if quiescent and row["mode"] == "local" and _still_running(row["pid"], row["pid_start_time"]):
            problems.append(f"{name}'s process {row['pid']} outlived the server that started it")
    for task, names in sorted(live_by_task.items()):
        if len(names) > 1:
            problems.append(f"task {task} has {len(names)} live workers: {', '.join(names)}")
    return _limited("workers", problems)


def _still_running(pid: int | None, start_time: int | None) -> bool:
    """Whether the process `pid` that started at `start_time` (clock ticks after boot) still runs."""
    if pid is None or start_time is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name, in parentheses, may hold spaces; the fields after it are plain numbers.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, started = fields[0], int(fields[19])
    return started == start_time and state not in ("Z", "X")


def _mail_problems(conn: sqlite3.Connection) -> list[str]:
    workers = {f"worker-{row[0]}" for row in conn.execute("SELECT id FROM workers")}
    problems: list[str] = []
    for row in conn.execute("SELECT id, sender, recipient FROM messages ORDER BY id"):
        parties = [row["sender"], row["recipient"]]
        others = [party for party in parties if party != _MAYOR]
        if len(others) != 1 or others[0] not in workers:
            problems.append(f"message {row['id']} runs from {parties[0]!r} to {parties[1]!r}")
    for row in conn.execute("SELECT id, holder FROM reservations ORDER BY id"):
        if row["holder"] != _MAYOR and row["holder"] not in workers:
            problems.append(f"reservation {row['id']} is held by {row['holder']!r}, no party of the swarm")
    return _limited("mail", problems)


@dataclass
class _Replay:
    """One task as its history rebuilds it."""

    created: int = 0
    status: str = "pending"
    owner: str | None = None
    subject: str | None = None
    edges: set[int] = field(default_factory=set[int])
    # Fields whose first value is unknown: the value the last event left.
    unseeded: dict[str, Any] = field(default_factory=dict[str, Any])
    deleted_by: int | None = None


def _event_problems(
    tasks: dict[int, sqlite3.Row], edges: list[tuple[int, int]], events: list[sqlite3.Row]
) -> list[str]:
    problems: list[str] = []
    replays: dict[int, _Replay] = defaultdict(_Replay)
    for row in events:
        problems += _apply(replays[int(row["task_id"])], row)
    for number, row in sorted(tasks.items()):
        replay = replays.get(number, _Replay())
        problems += _compare(number, row, replay)
    recorded = {(task, blocker) for task, replay in replays.items() for blocker in replay.edges}
    stored = set(edges)
    for waiter, blocker in sorted(stored - recorded):
        problems.append(f"task {waiter} depends on {blocker}, which no event records")
    for waiter, blocker in sorted(recorded - stored):
        problems.append(f"events record task {waiter} depending on {blocker}, which task_dependencies lacks")
    for number in sorted(set(replays) - set(tasks)):
        problems.append(f"events name task {number}, which does not exist")
    return _limited("events", problems)


def _apply(replay: _Replay, row: sqlite3.Row) -> list[str]:
    """Replay one event onto its task; what in it does not follow from the history before it."""
    event, task = f"event {row['id']} ({row['field']})", row["task_id"]
    fieldname = str(row["field"])
    old, new = _json(row["old"]), _json(row["new"])
    problems: list[str] = []
    if replay.deleted_by is not None:
        problems.append(f"{event} changes task {task} after event {replay.deleted_by} deleted it")
    if not row["actor"]:
        problems.append(f"{event} of task {task} names no actor")
    if fieldname == "created":
        replay.created += 1
        if replay.created > 1:
            return [*problems, f"{event}: task {task} is created a second time"]
        if not isinstance(new, dict) or not isinstance(cast(dict[str, Any], new).get("subject"), str):
            return [*problems, f"{event}: task {task}'s creation holds no subject: {new!r}"]
        created = cast(dict[str, Any], new)
        replay.subject = cast(str, created["subject"])
        replay.edges.update(int(blocker) for blocker in created.get("blockedBy", []))
        return problems
    if replay.created == 0:
        problems.append(f"{event}: task {task}'s history does not begin with its creation")
    if fieldname == "status":
        if old != replay.status or new not in STATUSES:
            problems.append(
                f"{event}: task {task} goes {old!r} -> {new!r}, but its status was {replay.status}"
            )
        replay.status = str(new)
        if new == "deleted":
            replay.deleted_by = int(row["id"])
    elif fieldname == "owner":
        if old != replay.owner:
            problems.append(f"{event}: task {task}'s owner was {replay.owner!r}, not {old!r}")
        replay.owner = None if new is None else str(new)
    elif fieldname == "subject":
        if old != replay.subject:
            problems.append(f"{event}: task {task}'s subject was {replay.subject!r}, not {old!r}")
        replay.subject = str(new)
    elif fieldname == "blockedBy":
        blocker = int(str(new))
        if blocker in replay.edges:
            problems.append(f"{event}: task {task} already depended on {blocker}")
        replay.edges.add(blocker)
    elif fieldname in _UNSEEDED or fieldname.startswith("metadata."):
        if fieldname in replay.unseeded and _canonical(old) != _canonical(replay.unseeded[fieldname]):
            problems.append(
                f"{event}: task {task}'s {fieldname} was {replay.unseeded[fieldname]!r}, not {old!r}"
            )
        replay.unseeded[fieldname] = new
    else:
        problems.append(f"{event}: task {task} has an event of an unknown field")
    return problems


def _compare(number: int, row: sqlite3.Row, replay: _Replay) -> list[str]:
    """Where the task's row differs from what its history rebuilds."""
    if replay.created != 1:
        return [f"task {number} has {replay.created} created events"]
    problems: list[str] = []
    for name, rebuilt, current in (
        ("status", replay.status, row["status"]),
        ("owner", replay.owner, row["owner"]),
        ("subject", replay.subject, row["subject"]),
    ):
        if rebuilt != current:
            problems.append(f"task {number}: its {name} is {current!r}, its history says {rebuilt!r}")
    metadata = cast(dict[str, Any], json.loads(row["metadata"]))
    for fieldname, last in replay.unseeded.items():
        if fieldname.startswith("metadata."):
            current = metadata.get(fieldname.removeprefix("metadata."))
        else:
            current = row[_UNSEEDED[fieldname]]
        if _canonical(current) != _canonical(last):
            problems.append(f"task {number}: its {fieldname} is {current!r}, its history says {last!r}")
    return problems


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
