"""What the fuzzer found, kept as plain tests; and the invariants of a swarm database, each shown
to catch its kind of breakage.

The Mayor's server is reached in memory as in test_fuzz_tools.py, every call judged the same way.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

from tests.support.fuzz_servers import ErrorLog, Served, describe, running_mayor, running_worker, text_of
from tests.support.invariants import ledger_problems

pytestmark = pytest.mark.tmux


@pytest.fixture
def mayor(tmp_path: Path, stand_ins: None, error_log: ErrorLog) -> Iterator[Served]:
    with (
        start_blocking_portal("asyncio") as portal,
        running_mayor(portal, tmp_path / "p", error_log) as served,
    ):
        yield served


def refused(served: Served, tool: str, **arguments: Any) -> str:
    result = served.call(tool, arguments)
    assert result.is_error, f"{tool}({describe(arguments)}) was accepted: {text_of(result)}"
    return text_of(result)


def test_worker_ids_beyond_sqlites_integers_are_refused(mayor: Served) -> None:
    # Found: close_agent and send_input crashed with OverflowError on "worker-" and 19 digits, and
    # str.isdigit let through "²", which int() refuses.
    for worker in ("worker-" + "9" * 19, "worker-" + "9" * 33, "worker-\u00b2"):
        assert "no worker" in refused(mayor, "close_agent", workerId=worker)
        assert "no worker" in refused(mayor, "send_input", workerId=worker, message="go on")
    assert "no worker 'worker-" in refused(mayor, "close_agent", workerId="worker-" + "9" * 18)


def test_message_ids_beyond_sqlites_integers_are_refused(mayor: Served) -> None:
    # Found: fetch_inbox(sinceId=2**63) crashed with OverflowError, in both servers.
    assert "less than or equal to 9223372036854775807" in refused(mayor, "fetch_inbox", sinceId=2**63)
    assert mayor.ok("fetch_inbox", sinceId=2**63 - 1) == {"messages": []}
    mayor.ok("TaskCreate", subject="Write the parser", description="")
    [worker] = mayor.ok("spawn", runtime="lasting")["workers"]
    with running_worker(mayor, worker["workerId"]) as me:
        assert me is not None
        assert "less than or equal to 9223372036854775807" in refused(me, "fetch_inbox", sinceId=2**63)
        assert me.ok("fetch_inbox", sinceId=2**63 - 1) == {"messages": []}


def test_import_wave_refuses_at_once_what_is_not_a_file(mayor: Served) -> None:
    # Found: a named pipe hung the call (and the server's shutdown) waiting for a writer; a path
    # with NUL crashed with ValueError; /dev/zero would be read until memory ran out.
    for path in ("pipe.json", "/dev/null"):
        assert "is not a regular file" in refused(mayor, "import_wave", path=path)
    assert "NUL" in refused(mayor, "import_wave", path="a\0b")
    assert "is a directory" in refused(mayor, "import_wave", path="directory")
    assert "bytes; a hero hunt file may be at most" in refused(mayor, "import_wave", path="sparse.json")
    assert mayor.ok("import_wave", path="wave.json")["created"]


def test_a_refusal_names_at_most_ten_of_its_problems(mayor: Served) -> None:
    # Found: ten thousand wrong items made a message of two megabytes, one line pair per item.
    message = refused(mayor, "TaskCreatePlan", tasks=["1"] * 10_001)
    assert "and 9991 more errors (10001 in all)" in message
    assert message.count("must be an object") == 10
    assert len(message) < 3000
    few = refused(mayor, "TaskCreate", subject=5, description=6)
    assert few.count("must be a string, got") == 2
    assert "more errors" not in few


# -- the invariants themselves --------------------------------------------------------------------


def broken_copy(db: Path, copy: Path, *statements: str) -> Path:
    """A copy of the database (taken through SQLite, so a server may have it open), then changed."""
    with (
        contextlib.closing(sqlite3.connect(db)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
        target.execute("PRAGMA foreign_keys = OFF")
        for statement in statements:
            target.execute(statement)
        target.commit()
    return copy


def test_the_invariants_name_each_kind_of_breakage(mayor: Served, tmp_path: Path) -> None:
    plan = [{"key": "a", "subject": "A"}, {"key": "b", "subject": "B", "blockedBy": ["a"]}, {"subject": "C"}]
    mayor.ok("TaskCreatePlan", tasks=plan)
    [worker] = mayor.ok("spawn", runtime="quick", taskIds=["1"])["workers"]
    mayor.ok("wait", workerIds=[worker["workerId"]], timeoutSeconds=5)
    mayor.ok("send_message", to=worker["workerId"], subject="Thanks")
    mayor.ok("TaskUpdate", taskId="3", metadata={"note": "x"}, description="later")
    assert ledger_problems(mayor.db, quiescent=True) == []
    event = "INSERT INTO task_events (task_id, at, actor, field, old, new) VALUES"
    worker_row = "INSERT INTO workers (task_id, runtime, attempt, state, cwd, log, started_at) VALUES"
    breakages = {
        "dependency cycle among live tasks: 1 -> 2 -> 1": [
            "INSERT INTO task_dependencies VALUES (1, 2)",
            f"{event} (1, 'x', 'mayor', 'blockedBy', NULL, '\"2\"')",
        ],
        "task 3: its status is 'failed', its history says 'pending'": [
            "UPDATE tasks SET status = 'failed' WHERE id = 3"
        ],
        "task 3 goes 'in_progress' -> 'failed', but its status was pending": [
            f"{event} (3, 'x', 'mayor', 'status', '\"in_progress\"', '\"failed\"')"
        ],
        "task 2 depends on 3, which no event records": ["INSERT INTO task_dependencies VALUES (2, 3)"],
        "task 3 is created a second time": [
            f"{event} (3, 'x', 'mayor', 'created', NULL, '{{\"subject\": \"C\"}}')"
        ],
        "events name task 99": [f"{event} (99, 'x', 'mayor', 'status', '\"pending\"', '\"failed\"')"],
        "PRAGMA foreign_key_check": [f"{event} (99, 'x', 'mayor', 'subject', NULL, '\"x\"')"],
        "task 3 has an event of an unknown field": [f"{event} (3, 'x', 'mayor', 'colour', NULL, '\"red\"')"],
        "its metadata.note is 'x', its history says 'y'": [
            f"{event} (3, 'x', 'mayor', 'metadata.note', '\"x\"', '\"y\"')"
        ],
        "task 2 has 2 live workers": [
            f"{worker_row} (2, 'quick', 1, 'running', '/', 'a.log', 'x')",
            f"{worker_row} (2, 'quick', 1, 'starting', '/', 'b.log', 'x')",
        ],
        "state succeeded but ended_at None": ["UPDATE workers SET ended_at = NULL"],
        "runs from 'worker-1' to 'worker-1'": ["UPDATE messages SET sender = 'worker-1'"],
        "is held by 'worker-7', no party of the swarm": [
            "INSERT INTO reservations (holder, pattern, exclusive, created_at, expires_at) "
            "VALUES ('worker-7', 'a', 1, 'x', 'y')"
        ],
    }
    for number, (problem, statements) in enumerate(breakages.items()):
        copy = broken_copy(mayor.db, tmp_path / f"broken-{number}.db", *statements)
        found = ledger_problems(copy)
        assert any(problem in line for line in found), f"{statements}: {found}"
    # Only once every server has stopped must no local worker be live.
    running = broken_copy(
        mayor.db, tmp_path / "running.db", f"{worker_row} (2, 'quick', 1, 'running', '/', 'c.log', 'x')"
    )
    assert ledger_problems(running) == []
    assert "worker-2 (local) is still running after every server stopped" in ledger_problems(
        running, quiescent=True
    )


def test_deleting_an_ol_task_while_its_worker_runs_leaves_the_server_working(mayor: Served) -> None:
    # Found: the worker succeeded, its OL ratchet hook then wrote to the deleted task, and the
    # TaskNotFound it raised took down the engine's task group with every supervisor in it.
    [first, *_] = mayor.ok("import_wave", path="wave.json")["created"]
    [worker] = mayor.ok("spawn", taskIds=[first["taskId"]], runtime="slow")["workers"]
    mayor.ok("TaskUpdate", taskId=first["taskId"], status="deleted")
    [done] = mayor.ok("wait", workerIds=[worker["workerId"]], timeoutSeconds=5)["done"]
    assert done["state"] == "succeeded", done
    assert "ratchet" not in json.dumps(done), "a deleted task's bead was reported done to OL"
    # The engine still supervises: the next worker runs and is judged.
    [second] = mayor.ok("spawn", taskIds=["2"], runtime="quick")["workers"]
    [judged] = mayor.ok("wait", workerIds=[second["workerId"]], timeoutSeconds=5)["done"]
    assert judged["taskStatus"] == "completed", judged
