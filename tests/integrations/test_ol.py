"""OL waves: importing a hero hunt file, ratcheting beads back, the summary.

A stand-in `ol` (tests/support/stand_ins/ol) is put on PATH; it records every call in OL_STANDIN_LOG.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from mcp_swarm.errors import DependencyCycle, InvalidInput
from mcp_swarm.integrations.ol import OL_MISSING, import_wave, parse_hero_hunt, quest_of
from mcp_swarm.integrations.ol_ratchet import ratchet, ratchet_task, summarize, wave_summary
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskChanges, TaskStatus
from mcp_swarm.placement.programs import STDERR_KEEP_BYTES
from mcp_swarm.server.import_tools import wave_import_answer, wave_summary_answer
from mcp_swarm.store import Store
from tests.support import STAND_INS

pytestmark = pytest.mark.anyio

SEED_MESSAGE = "Error: ol CLI required for --from-wave. Install ol or use swarm without wave integration."

# The seed's example, with its wave out of priority order and more blocked beads: one waiting on
# a completed bead and a wave bead, one on another blocked bead, one on a bead nobody knows.
HUNT: dict[str, Any] = {
    "wave": [
        {
            "id": "ol-527.2",
            "title": "Fix rate limiting",
            "spec_path": "quests/ol-527/specs/ol-527.2.md",
            "priority": 2,
        },
        {
            "id": "ol-527.1",
            "title": "Add auth middleware",
            "spec_path": "quests/ol-527/specs/ol-527.1.md",
            "priority": 1,
            "estimate": "2h",
        },
    ],
    "blocked": [
        {"id": "ol-527.3", "title": "Integration tests", "blocked_by": ["ol-527.1", "ol-527.2"]},
        {"id": "ol-527.4", "title": "Docs", "blocked_by": ["ol-527.0", "ol-527.3"], "priority": 5},
        {"id": "ol-527.5", "title": "Release", "blocked_by": ["ol-527.2", "ol-999.1"]},
    ],
    "completed": [{"id": "ol-527.0", "title": "Project setup"}],
}


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncGenerator[Ledger]:
    async with await Store.open(tmp_path / "swarm.db") as store:
        yield Ledger(store)


@pytest.fixture
def ol_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in `ol` on PATH (and python3 for its shebang); the file its calls are logged in."""
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(STAND_INS), str(Path(sys.executable).parent), os.environ["PATH"]])
    )
    log = tmp_path / "ol-calls.log"
    monkeypatch.setenv("OL_STANDIN_LOG", str(log))
    monkeypatch.delenv("OL_STANDIN_FAIL", raising=False)
    return log


@pytest.fixture
def no_ol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def write_hunt(tmp_path: Path, hunt: object, name: str = "wave.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(hunt))
    return path


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_import_creates_the_wave_in_priority_order_with_metadata_and_dependencies(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    result = await import_wave(ledger, write_hunt(tmp_path, HUNT))

    listing = await ledger.list()
    assert [(t.id, t.subject) for t in listing.tasks] == [
        ("1", "[ol-527.1] Add auth middleware"),
        ("2", "[ol-527.2] Fix rate limiting"),
        ("3", "[ol-527.3] Integration tests"),
        ("4", "[ol-527.4] Docs"),
    ]
    first = await ledger.get("1")
    assert first.description == (
        "OL bead ol-527.1\nSpec: quests/ol-527/specs/ol-527.1.md\nPriority: 1\n\n"
        "Read the spec file at quests/ol-527/specs/ol-527.1.md for full requirements."
    )
    assert first.metadata == {
        "ol_bead_id": "ol-527.1",
        "ol_spec_path": "quests/ol-527/specs/ol-527.1.md",
        "ol_priority": 1,
        "ol_quest": "ol-527",
    }
    assert first.ready
    assert (await ledger.get("2")).ready
    # ol-527.3 waits for both wave beads; ol-527.4 for ol-527.3 only, its other blocker being done.
    integration = await ledger.get("3")
    assert integration.blocked_by == ["1", "2"]
    assert integration.metadata == {"ol_bead_id": "ol-527.3", "ol_quest": "ol-527"}
    assert "Blocked in OL by: ol-527.1, ol-527.2" in integration.description
    docs = await ledger.get("4")
    assert docs.blocked_by == ["3"]
    assert docs.metadata["ol_priority"] == 5

    assert wave_import_answer(result) == {
        "created": [
            {"beadId": "ol-527.1", "taskId": "1"},
            {"beadId": "ol-527.2", "taskId": "2"},
            {"beadId": "ol-527.3", "taskId": "3", "blockedBy": ["1", "2"]},
            {"beadId": "ol-527.4", "taskId": "4", "blockedBy": ["3"]},
        ],
        "blocked": [
            {"beadId": "ol-527.3", "blockedBy": ["ol-527.1", "ol-527.2"], "taskId": "3"},
            {"beadId": "ol-527.4", "blockedBy": ["ol-527.0", "ol-527.3"], "taskId": "4"},
            # Waits on a bead nobody knows: as a task it would look ready, so it is not one.
            {"beadId": "ol-527.5", "blockedBy": ["ol-527.2", "ol-999.1"], "waitingOn": ["ol-999.1"]},
        ],
        "completed": [{"beadId": "ol-527.0", "title": "Project setup"}],
    }
    assert calls(ol_log) == []  # importing asks nothing of ol


async def test_dependencies_between_beads_of_the_wave_are_kept(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    hunt = {
        "wave": [
            {"id": "q-1.1", "title": "A", "spec_path": "a.md", "priority": 1},
            {
                "id": "q-1.2",
                "title": "B",
                "spec_path": "b.md",
                "priority": 2,
                "blocked_by": ["q-1.1", "q-0.9"],
            },
        ]
    }
    await import_wave(ledger, write_hunt(tmp_path, hunt))
    # q-0.9 is no bead of the wave: OL put q-1.2 in the wave, so it does not wait for it.
    assert (await ledger.get("2")).blocked_by == ["1"]


async def test_import_refuses_with_the_seeds_message_when_ol_is_not_on_path(
    ledger: Ledger, tmp_path: Path, no_ol: None
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await import_wave(ledger, write_hunt(tmp_path, HUNT))
    assert str(refused.value) == SEED_MESSAGE == OL_MISSING
    assert (await ledger.list()).tasks == []


async def test_ol_is_looked_for_first_and_on_the_path_given(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    # Even a file that does not exist is not looked at: the missing ol is what the Mayor must fix.
    with pytest.raises(InvalidInput, match="ol CLI required"):
        await import_wave(ledger, tmp_path / "nowhere.json", path_env=str(tmp_path))
    assert (await ledger.list()).tasks == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[1, 2]", 'must hold a JSON object with a "wave" list'),
        ("{}", "wave: Field required"),
        (
            json.dumps({"wave": [{"id": "ol-1.1", "title": "A", "spec_path": "a.md", "priority": "1"}]}),
            "wave[0].priority: Input should be a valid integer",
        ),
        (
            json.dumps({"wave": [{"id": "ol-1.1", "title": "A", "spec_path": "a.md", "priority": True}]}),
            "wave[0].priority: Input should be a valid integer",
        ),
        (
            json.dumps({"wave": [{"id": "ol-1.1", "title": " ", "spec_path": "a.md", "priority": 1}]}),
            "wave[0].title: must not be empty",
        ),
        (
            json.dumps({"wave": [{"id": "--force", "title": "A", "spec_path": "a.md", "priority": 1}]}),
            "wave[0].id: '--force' is not an id",
        ),
        (json.dumps({"wave": [{"id": "ol-1.1", "title": "A"}]}), "wave[0].spec_path: Field required"),
        (
            json.dumps({"wave": [], "blocked": [{"id": "ol-1.2", "title": "B", "blocked_by": []}]}),
            "blocked[0].blocked_by: List should have at least 1 item",
        ),
        (
            json.dumps(
                {
                    "wave": [{"id": "ol-1.1", "title": "A", "spec_path": "a.md", "priority": 1}],
                    "completed": [{"id": "ol-1.1"}],
                }
            ),
            "bead ol-1.1 appears twice (in wave and in completed)",
        ),
        (
            json.dumps({"wave": [], "blocked": [{"id": "ol-1.2", "title": "B", "blocked_by": ["ol-1.2"]}]}),
            "bead ol-1.2 is blocked by itself",
        ),
    ],
)
async def test_a_malformed_file_is_refused_clearly_and_nothing_is_created(
    ledger: Ledger, tmp_path: Path, ol_log: Path, content: str, message: str
) -> None:
    path = tmp_path / "wave.json"
    path.write_text(content)
    with pytest.raises(InvalidInput) as refused:
        await import_wave(ledger, path)
    assert message in str(refused.value)
    assert str(path) in str(refused.value)
    assert (await ledger.list()).tasks == []


async def test_a_missing_or_unreadable_file_is_refused(ledger: Ledger, tmp_path: Path, ol_log: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        await import_wave(ledger, tmp_path / "nowhere.json")
    (tmp_path / "latin1.json").write_bytes(b'{"wave": [], "x": "\xe9"}')
    with pytest.raises(InvalidInput, match="is not UTF-8"):
        await import_wave(ledger, tmp_path / "latin1.json")
    with pytest.raises(InvalidInput, match="is a directory"):
        await import_wave(ledger, tmp_path)


def test_empty_lists_may_be_null_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    hunt = parse_hero_hunt(write_hunt(tmp_path, {"wave": None, "blocked": None, "quest": "ol-1", "v": 2}))
    assert (hunt.wave, hunt.blocked, hunt.completed) == ([], [], [])


async def test_blocked_beads_in_a_cycle_refuse_the_whole_import(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    hunt = {
        "wave": [{"id": "q-1.1", "title": "A", "spec_path": "a.md", "priority": 1}],
        "blocked": [
            {"id": "q-1.2", "title": "B", "blocked_by": ["q-1.3"]},
            {"id": "q-1.3", "title": "C", "blocked_by": ["q-1.2"]},
        ],
    }
    with pytest.raises(DependencyCycle, match=r"bead q-1\.2"):
        await import_wave(ledger, write_hunt(tmp_path, hunt))
    assert (await ledger.list()).tasks == []


async def test_importing_again_adds_nothing_and_says_what_was_skipped(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    path = write_hunt(tmp_path, HUNT)
    await import_wave(ledger, path)
    before = await ledger.list()

    again = await import_wave(ledger, path)

    assert (await ledger.list()).tasks == before.tasks
    assert again.created == []
    assert [(s.bead_id, s.task_id, s.status) for s in again.skipped] == [
        ("ol-527.2", "2", TaskStatus.PENDING),
        ("ol-527.1", "1", TaskStatus.PENDING),
        ("ol-527.3", "3", TaskStatus.PENDING),
        ("ol-527.4", "4", TaskStatus.PENDING),
    ]
    assert wave_import_answer(again)["created"] == []


async def test_a_later_hunt_builds_on_the_tasks_of_an_earlier_one(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    first = {"wave": [{"id": "q-1.1", "title": "A", "spec_path": "a.md", "priority": 1}]}
    await import_wave(ledger, write_hunt(tmp_path, first, "first.json"))
    await ledger.update("1", TaskChanges(status=TaskStatus.DELETED))
    await ledger.create(NewTask(subject="unrelated", metadata={"ol_bead_id": 7}))
    # q-1.1 again (its task was deleted, so it gets a new one), q-1.2 now, q-1.3 after q-1.2.
    second = {
        "wave": [
            {"id": "q-1.2", "title": "B", "spec_path": "b.md", "priority": 1},
            {"id": "q-1.1", "title": "A", "spec_path": "a.md", "priority": 1},
        ],
        "blocked": [{"id": "q-1.3", "title": "C", "blocked_by": ["q-1.2"]}],
    }
    await import_wave(ledger, write_hunt(tmp_path, second, "second.json"))
    third = {
        "wave": [{"id": "q-1.4", "title": "D", "spec_path": "d.md", "priority": 1}],
        "blocked": [{"id": "q-1.5", "title": "E", "blocked_by": ["q-1.3", "q-1.4"]}],
    }
    result = await import_wave(ledger, write_hunt(tmp_path, third, "third.json"))

    tasks = {
        t.metadata.get("ol_bead_id"): t for t in [await ledger.get(t.id) for t in (await ledger.list()).tasks]
    }
    # Equal priorities keep the file's order.
    assert [tasks["q-1.2"].id, tasks["q-1.1"].id, tasks["q-1.3"].id] == ["3", "4", "5"]
    # q-1.5 waits for the task an earlier import made for q-1.3, and for this import's q-1.4.
    assert sorted(tasks["q-1.5"].blocked_by, key=int) == ["5", tasks["q-1.4"].id]
    created = wave_import_answer(result)["created"]
    assert created[-1] == {"beadId": "q-1.5", "taskId": "7", "blockedBy": ["5", "6"]}


def test_the_quest_is_the_bead_id_without_its_last_part() -> None:
    assert quest_of("ol-527.1") == "ol-527"
    assert quest_of("ol-527.1.2") == "ol-527.1"
    assert quest_of("ol-527") == "ol-527"


# -- the ratchet --------------------------------------------------------------------------------


async def test_ratchet_exit_0_is_ok_and_ol_gets_exactly_the_seeds_arguments(
    tmp_path: Path, ol_log: Path
) -> None:
    result = await ratchet("ol-527.1", "ol-527", cwd=tmp_path)
    assert (result.ok, result.exit_code, result.stderr, result.error, result.reason) == (
        True,
        0,
        "",
        None,
        None,
    )
    assert calls(ol_log) == [["hero", "ratchet", "ol-527.1", "--quest", "ol-527"]]


async def test_ratchet_exit_1_is_a_failure_with_ols_stderr(
    tmp_path: Path, ol_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OL_STANDIN_FAIL", "ol-527.2")
    result = await ratchet("ol-527.2", "ol-527", cwd=tmp_path)
    assert (result.ok, result.exit_code) == (False, 1)
    assert result.stderr == "ratchet validation failed for ol-527.2: acceptance criteria not met"
    assert result.reason == f"OL ratchet failed (exit status 1): {result.stderr}"
    assert calls(ol_log) == [["hero", "ratchet", "ol-527.2", "--quest", "ol-527"]]


async def test_ratchet_keeps_only_the_end_of_a_long_stderr(
    tmp_path: Path, ol_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OL_STANDIN_FAIL", "ol-527.2")
    monkeypatch.setenv("OL_STANDIN_NOISE", str(2_000_000))
    result = await ratchet("ol-527.2", "ol-527", cwd=tmp_path)
    assert result.exit_code == 1
    assert len(result.stderr) <= STDERR_KEEP_BYTES + 1
    assert result.stderr.startswith("…x")
    assert result.stderr.endswith("acceptance criteria not met")


async def test_a_ratchet_that_does_not_finish_in_time_is_stopped_and_reported(
    tmp_path: Path, ol_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OL_STANDIN_SLEEP", "60")
    started = time.monotonic()
    result = await ratchet("ol-527.1", "ol-527", cwd=tmp_path, timeout=0.5)
    assert time.monotonic() - started < 10
    assert (result.ok, result.exit_code) == (False, None)
    assert result.error == "ol hero ratchet ol-527.1 --quest ol-527 did not finish within 0.5 s"


async def test_a_ratchet_without_ol_fails_with_the_seeds_message(tmp_path: Path, no_ol: None) -> None:
    result = await ratchet("ol-527.1", "ol-527", cwd=tmp_path)
    assert (result.ok, result.exit_code, result.reason) == (False, None, SEED_MESSAGE)


async def test_ids_that_would_read_as_options_never_reach_ol(tmp_path: Path, ol_log: Path) -> None:
    with pytest.raises(InvalidInput, match="bead id: '--help' is not an id"):
        await ratchet("--help", "ol-527", cwd=tmp_path)
    with pytest.raises(InvalidInput, match="quest: '-q' is not an id"):
        await ratchet("ol-527.1", "-q", cwd=tmp_path)
    assert calls(ol_log) == []


async def test_completed_tasks_are_ratcheted_and_a_failed_ratchet_fails_the_task(
    ledger: Ledger, tmp_path: Path, ol_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OL_STANDIN_FAIL", "ol-527.2")
    await import_wave(ledger, write_hunt(tmp_path, HUNT))
    other = await ledger.create(NewTask(subject="not from OL"))
    for task_id in ("1", "2", other.id):
        await ledger.update(task_id, TaskChanges(status=TaskStatus.COMPLETED))

    passed = await ratchet_task(ledger, "1", cwd=tmp_path)
    failed = await ratchet_task(ledger, "2", cwd=tmp_path)

    assert passed is not None
    assert passed.ok
    assert failed is not None
    assert not failed.ok
    assert (await ledger.get("1")).status is TaskStatus.COMPLETED
    task = await ledger.get("2")
    assert task.status is TaskStatus.FAILED
    assert task.metadata["ol_ratchet"] == {
        "ok": False,
        "exitCode": 1,
        "stderr": "ratchet validation failed for ol-527.2: acceptance criteria not met",
    }
    # The integration tests wait for a bead OL did not accept: they stay blocked.
    assert (await ledger.get("3")).blocked_by == ["2"]
    # Not OL's, not completed, or already ratcheted: nothing is run.
    assert await ratchet_task(ledger, other.id, cwd=tmp_path) is None
    assert await ratchet_task(ledger, "3", cwd=tmp_path) is None
    assert await ratchet_task(ledger, "1", cwd=tmp_path) is None
    assert calls(ol_log) == [
        ["hero", "ratchet", "ol-527.1", "--quest", "ol-527"],
        ["hero", "ratchet", "ol-527.2", "--quest", "ol-527"],
    ]

    assert wave_summary_answer(await wave_summary(ledger)) == [
        {"beadId": "ol-527.1", "taskId": "1", "swarm": "completed", "ratchet": "passed", "exitCode": 0},
        {
            "beadId": "ol-527.2",
            "taskId": "2",
            "swarm": "failed",
            "ratchet": "failed",
            "exitCode": 1,
            "reason": "OL ratchet failed (exit status 1): "
            "ratchet validation failed for ol-527.2: acceptance criteria not met",
        },
        {"beadId": "ol-527.3", "taskId": "3", "swarm": "pending", "ratchet": "notRun"},
        {"beadId": "ol-527.4", "taskId": "4", "swarm": "pending", "ratchet": "notRun"},
    ]


async def test_summary_takes_ratchet_results_given_to_it(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    await import_wave(ledger, write_hunt(tmp_path, HUNT))
    await ledger.update("1", TaskChanges(status=TaskStatus.COMPLETED))
    result = await ratchet("ol-527.1", "ol-527", cwd=tmp_path)
    tasks = [await ledger.get(task_id) for task_id in ("2", "1")]
    outcomes = summarize([*tasks, await ledger.create(NewTask(subject="not from OL"))], {"ol-527.1": result})
    assert wave_summary_answer(outcomes) == [
        {"beadId": "ol-527.1", "taskId": "1", "swarm": "completed", "ratchet": "passed", "exitCode": 0},
        {"beadId": "ol-527.2", "taskId": "2", "swarm": "pending", "ratchet": "notRun"},
    ]


async def test_blocked_beads_come_after_the_beads_they_wait_for(
    ledger: Ledger, tmp_path: Path, ol_log: Path
) -> None:
    hunt = {
        "wave": [{"id": "q-1.1", "title": "A", "spec_path": "a.md", "priority": 3}],
        "blocked": [
            {"id": "q-1.4", "title": "D", "blocked_by": ["q-1.3"], "priority": 1},
            {"id": "q-1.3", "title": "C", "blocked_by": ["q-1.2"], "priority": 2},
            {"id": "q-1.2", "title": "B", "blocked_by": ["q-1.1"], "priority": 9},
            {"id": "q-1.5", "title": "E", "blocked_by": ["q-1.1"], "priority": 4},
        ],
    }
    result = await import_wave(ledger, write_hunt(tmp_path, hunt))
    assert [(bead.bead_id, bead.task_id, bead.blocked_by) for bead in result.created] == [
        ("q-1.1", "1", []),
        ("q-1.5", "2", ["1"]),
        ("q-1.2", "3", ["1"]),
        ("q-1.3", "4", ["3"]),
        ("q-1.4", "5", ["4"]),
    ]
