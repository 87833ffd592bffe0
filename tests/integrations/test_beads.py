"""Beads: importing `bd ready --json` as tasks, and closing a bead when its task completes.

A stand-in `bd` (tests/support/stand_ins/bd) is put on PATH; its issues live in the JSON file
BD_STANDIN_DB, and it records every call in BD_STANDIN_LOG.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_swarm.errors import InvalidInput, SwarmError
from mcp_swarm.integrations.beads import (
    BD_MISSING,
    close_bead,
    close_task_bead,
    import_ready,
    parse_ready,
    ready_beads,
)
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskChanges, TaskStatus
from mcp_swarm.server.import_tools import beads_import_answer
from mcp_swarm.store import Store
from tests.support import STAND_INS

pytestmark = pytest.mark.anyio


ISSUES: list[dict[str, Any]] = [
    {
        "id": "bd-a1",
        "title": "Fix login redirect",
        "description": "After login the user lands on /.",
        "acceptance_criteria": "Lands on the page asked for.",
        "status": "open",
        "priority": 2,
        "issue_type": "bug",
        "labels": ["auth"],
    },
    {"id": "bd-b2", "title": "Outage alerting", "description": None, "status": "open", "priority": 0},
    {"id": "bd-c3", "title": "Nice to have", "status": "open", "priority": 4, "issue_type": "feature"},
    {"id": "bd-d4", "title": "Waits for a1", "status": "open", "priority": 1, "blocked_by": ["bd-a1"]},
    {"id": "bd-e5", "title": "Done already", "status": "closed", "priority": 1},
    {"id": "bd-f6", "title": "Someone is on it", "status": "in_progress", "priority": 1},
]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncGenerator[Ledger]:
    async with await Store.open(tmp_path / "swarm.db") as store:
        yield Ledger(store)


@pytest.fixture
def bd_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in `bd` on PATH (and python3 for its shebang), over a copy of ISSUES."""
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(STAND_INS), str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    db = tmp_path / "issues.json"
    db.write_text(json.dumps(ISSUES))
    monkeypatch.setenv("BD_STANDIN_DB", str(db))
    monkeypatch.setenv("BD_STANDIN_LOG", str(tmp_path / "bd-calls.log"))
    monkeypatch.delenv("BD_STANDIN_STDOUT", raising=False)
    return db


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "bd-calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def statuses(db: Path) -> dict[str, str]:
    return {issue["id"]: issue["status"] for issue in json.loads(db.read_text())}


async def test_ready_beads_become_tasks_most_urgent_first(ledger: Ledger, project: Path, bd_db: Path) -> None:
    result = await import_ready(ledger, cwd=project)

    listing = await ledger.list()
    assert [(t.id, t.subject, t.ready) for t in listing.tasks] == [
        ("1", "[bd-b2] Outage alerting", True),
        ("2", "[bd-a1] Fix login redirect", True),
        ("3", "[bd-c3] Nice to have", True),
    ]
    fix = await ledger.get("2")
    assert fix.description == (
        "After login the user lands on /.\n\n"
        "Acceptance criteria:\nLands on the page asked for.\n\n"
        "Beads issue bd-a1, priority P2. `bd show bd-a1` has all of it."
    )
    assert fix.metadata == {"bead_id": "bd-a1", "bead_priority": 2, "bead_type": "bug"}
    alerting = await ledger.get("1")
    assert alerting.description == "Beads issue bd-b2, priority P0. `bd show bd-b2` has all of it."
    assert alerting.metadata == {"bead_id": "bd-b2", "bead_priority": 0}
    assert beads_import_answer(result) == {
        "created": [
            {"beadId": "bd-b2", "taskId": "1"},
            {"beadId": "bd-a1", "taskId": "2"},
            {"beadId": "bd-c3", "taskId": "3"},
        ]
    }
    assert calls(project.parent) == [["ready", "--json"]]


async def test_importing_again_adds_nothing(ledger: Ledger, project: Path, bd_db: Path) -> None:
    await import_ready(ledger, cwd=project)
    await ledger.update("3", TaskChanges(status=TaskStatus.COMPLETED))
    before = await ledger.list()

    again = await import_ready(ledger, cwd=project)

    assert (await ledger.list()).tasks == before.tasks
    assert beads_import_answer(again) == {
        "created": [],
        "skipped": [
            {"beadId": "bd-a1", "taskId": "2", "status": "pending"},
            {"beadId": "bd-b2", "taskId": "1", "status": "pending"},
            {"beadId": "bd-c3", "taskId": "3", "status": "completed"},
        ],
    }


async def test_a_bead_whose_task_was_deleted_is_imported_again(
    ledger: Ledger, project: Path, bd_db: Path
) -> None:
    await import_ready(ledger, cwd=project)
    await ledger.update("1", TaskChanges(status=TaskStatus.DELETED))
    again = await import_ready(ledger, cwd=project)
    assert [(bead.bead_id, bead.task_id) for bead in again.created] == [("bd-b2", "4")]


async def test_closing_a_bead_runs_bd_update_and_unblocks_what_waited(
    ledger: Ledger, project: Path, bd_db: Path
) -> None:
    result = await close_bead("bd-a1", cwd=project)

    assert (result.ok, result.exit_code, result.reason) == (True, 0, None)
    assert statuses(bd_db)["bd-a1"] == "closed"
    assert calls(project.parent) == [["update", "bd-a1", "--status", "closed"]]
    assert [bead.id for bead in await ready_beads(cwd=project)] == ["bd-b2", "bd-c3", "bd-d4"]


async def test_closing_an_unknown_bead_reports_bds_complaint(project: Path, bd_db: Path) -> None:
    result = await close_bead("bd-zz", cwd=project)
    assert (result.ok, result.exit_code) == (False, 1)
    assert result.stderr == "Error: no issue found matching 'bd-zz'"
    assert (result.bead_id, result.ok, result.exit_code, result.reason) == (
        "bd-zz",
        False,
        1,
        "bd update bd-zz --status closed failed (exit status 1): Error: no issue found matching 'bd-zz'",
    )


async def test_a_completed_task_closes_its_bead(ledger: Ledger, project: Path, bd_db: Path) -> None:
    await import_ready(ledger, cwd=project)
    other = await ledger.create(NewTask(subject="no bead"))
    await ledger.update("2", TaskChanges(status=TaskStatus.COMPLETED))
    await ledger.update(other.id, TaskChanges(status=TaskStatus.COMPLETED))

    closed = await close_task_bead(ledger, "2", cwd=project)

    assert closed is not None
    assert (closed.ok, closed.bead_id) == (True, "bd-a1")
    assert (await ledger.get("2")).status is TaskStatus.COMPLETED
    # Not completed, or no bead: bd is not asked.
    assert await close_task_bead(ledger, "1", cwd=project) is None
    assert await close_task_bead(ledger, other.id, cwd=project) is None
    assert calls(project.parent)[1:] == [["update", "bd-a1", "--status", "closed"]]
    assert statuses(bd_db) == {**{i["id"]: i["status"] for i in ISSUES}, "bd-a1": "closed"}


async def test_without_bd_the_import_is_refused_and_a_close_fails(
    ledger: Ledger, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InvalidInput) as refused:
        await import_ready(ledger, cwd=project)
    assert str(refused.value) == BD_MISSING
    with pytest.raises(InvalidInput, match="bd \\(beads\\) CLI required"):
        await ready_beads(cwd=project)
    closed = await close_bead("bd-a1", cwd=project)
    assert (closed.ok, closed.exit_code, closed.reason) == (False, None, BD_MISSING)
    assert (await ledger.list()).tasks == []


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        ("Segmentation fault (core dumped)\n", "bd ready --json printed no JSON list of issues"),
        ("", "bd ready --json printed no JSON list of issues"),
        ('{"error": "database locked"}', "bd ready --json printed a JSON dict, not the list of ready issues"),
        ('[{"id": "bd-1", "title": "cut sh', "bd ready --json printed no JSON list of issues"),
    ],
)
async def test_bd_printing_garbage_is_a_clear_error_and_creates_nothing(
    ledger: Ledger, project: Path, bd_db: Path, monkeypatch: pytest.MonkeyPatch, stdout: str, message: str
) -> None:
    monkeypatch.setenv("BD_STANDIN_STDOUT", stdout)
    with pytest.raises(SwarmError) as failed:
        await import_ready(ledger, cwd=project)
    assert message in str(failed.value)
    assert (await ledger.list()).tasks == []


async def test_bd_failing_is_a_clear_error(ledger: Ledger, project: Path, bd_db: Path) -> None:
    await anyio.Path(bd_db).write_text("not json either")  # the stand-in dies reading its database
    with pytest.raises(SwarmError, match=r"(?s)bd ready --json failed with exit status 1: .*JSONDecodeError"):
        await import_ready(ledger, cwd=project)
    assert (await ledger.list()).tasks == []


async def test_odd_entries_are_left_out_and_named(
    ledger: Ledger, project: Path, bd_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = [
        {"id": "bd-1", "title": "fine", "priority": 1},
        {"title": "no id"},
        {"id": "-rf", "title": "an option"},
        {"id": "bd-2", "title": "odd priority", "priority": "high"},
        {"id": "bd-1", "title": "twice"},
        "not an object",
    ]
    monkeypatch.setenv("BD_STANDIN_STDOUT", json.dumps(ready))
    result = await import_ready(ledger, cwd=project)
    assert [bead.bead_id for bead in result.created] == ["bd-1"]
    assert result.rejected == [
        "issue 2: id: Field required",
        "issue 3: id: '-rf' is not an id: it must start with a letter or digit and hold only ASCII "
        "letters, digits, '.', '_', ':' and '-'",
        "issue 4: priority: Input should be a valid integer",
        "issue 5: bd-1 is listed twice",
        "issue 6: entry: Input should be a valid dictionary or instance of Bead",
    ]


def test_parsing_is_lenient_where_bd_versions_differ() -> None:
    assert parse_ready(b"null").beads == []
    assert parse_ready("[]\n").beads == []
    warned = parse_ready('Warning: daemon not running, using direct mode\n[{"id": "bd-1", "title": "T"}]\n')
    assert [(bead.id, bead.title, bead.description, bead.priority) for bead in warned.beads] == [
        ("bd-1", "T", "", None)
    ]


async def test_ids_that_would_read_as_options_never_reach_bd(project: Path, bd_db: Path) -> None:
    with pytest.raises(InvalidInput, match="bead id: '--all' is not an id"):
        await close_bead("--all", cwd=project)
    assert calls(project.parent) == []
