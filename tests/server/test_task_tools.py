"""The task tools through the SDK's client, in memory and over real stdio to `mcp-swarm serve`."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import MAX_METADATA_BYTES, MAX_SUBJECT_CHARS
from mcp_swarm.store import Store
from tests.support.mcp_client import TRANSPORTS, Transport, call, connect, refuse

pytestmark = pytest.mark.anyio


@pytest.fixture(params=TRANSPORTS)
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncGenerator[Client]:
    transport: Transport = request.param
    async with connect(transport, tmp_path / "swarm.db") as connected:
        yield connected


async def snapshot(client: Client) -> Any:
    """Everything a caller can see of the ledger, to prove a refused call changed nothing."""
    listing = await call(client, "TaskList")
    deleted = await call(client, "TaskList", status="deleted")
    tasks = [await call(client, "TaskGet", taskId=t["id"]) for t in listing["tasks"]]
    return listing, deleted, tasks


async def seed_example_plan(client: Client) -> None:
    """The seed's example: 1; 2 and 3 after 1; 4 after 3; 5 after 2, 3 and 4."""
    for subject in ["Create User model", "Add password hashing", "Create login endpoint", "Add JWT tokens"]:
        await call(client, "TaskCreate", subject=subject, description=subject.lower())
    await call(client, "TaskCreate", subject="Write tests", description="", blockedBy=["2", "3", "4"])
    await call(client, "TaskUpdate", taskId="2", addBlockedBy=["1"])
    await call(client, "TaskUpdate", taskId="1", addBlocks=["3"])
    await call(client, "TaskUpdate", taskId="4", addBlockedBy=["3"])


async def test_tools_are_listed_with_contract_names_and_hints(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {
        *("TaskCreate", "TaskCreatePlan", "TaskUpdate", "TaskGet", "TaskList"),
        *("spawn", "wait", "send_input", "close_agent"),
        *("send_message", "fetch_inbox", "list_reservations", "reserve_files", "release_files"),
        *("integrate", "import_wave", "wave_summary", "import_beads"),
    }
    for name, tool in tools.items():
        assert tool.annotations is not None
        read_only = {"TaskGet", "TaskList", "list_reservations", "wave_summary"}
        assert tool.annotations.read_only_hint is (name in read_only), name
        assert tool.input_schema.get("additionalProperties") is False, name
        assert tool.description
    update = tools["TaskUpdate"].input_schema["properties"]
    assert {"taskId", "status", "activeForm", "owner", "metadata", "addBlocks", "addBlockedBy"} <= set(update)
    assert tools["TaskCreate"].input_schema["required"] == ["subject", "description"]


async def test_instructions_teach_the_mayor_loop(client: Client) -> None:
    assert client.instructions is not None
    for word in ["TaskCreate", "TaskList(ready=true)", "blockedBy"]:
        assert word in client.instructions


async def test_create_get_and_list_are_compact_camel_case(client: Client) -> None:
    created = await call(
        client,
        "TaskCreate",
        subject="Create User model",
        description="Add the User table",
        activeForm="Creating User model",
        metadata={"files": ["models.py"], "empty": ""},
    )
    assert created == {"id": "1", "subject": "Create User model", "status": "pending"}

    task = await call(client, "TaskGet", taskId="1")
    assert task["activeForm"] == "Creating User model"
    assert task["ready"] is True
    # The user's metadata comes back exactly, empty values included.
    assert task["metadata"] == {"files": ["models.py"], "empty": ""}
    assert "owner" not in task
    assert "blockedBy" not in task
    assert "blocks" not in task

    listing = await call(client, "TaskList")
    assert listing == {
        "tasks": [{"id": "1", "subject": "Create User model", "status": "pending", "ready": True}],
        "counts": {"pending": 1, "ready": 1},
    }


async def test_example_plan_runs_in_waves(client: Client) -> None:
    await seed_example_plan(client)
    waves: list[list[str]] = []
    while True:
        ready = await call(client, "TaskList", ready=True)
        wave = [task["id"] for task in ready["tasks"]]
        if not wave:
            break
        waves.append(wave)
        for task_id in wave:
            await call(client, "TaskUpdate", taskId=task_id, status="in_progress", owner=f"worker-{task_id}")
        for task_id in wave:
            await call(client, "TaskUpdate", taskId=task_id, status="completed")
    assert waves == [["1"], ["2", "3"], ["4"], ["5"]]
    listing = await call(client, "TaskList")
    assert listing["counts"] == {"completed": 5, "ready": 0}


async def test_blocked_by_shows_open_blockers_only_and_blocks_the_dependents(client: Client) -> None:
    await seed_example_plan(client)
    five = await call(client, "TaskGet", taskId="5")
    assert five["blockedBy"] == ["2", "3", "4"]
    one = await call(client, "TaskGet", taskId="1")
    assert one["blocks"] == ["2", "3"]

    await call(client, "TaskUpdate", taskId="1", status="completed")
    three = await call(client, "TaskUpdate", taskId="3", status="failed")
    assert three["status"] == "failed"
    # A failed blocker keeps blocking; a deleted one stops blocking.
    assert (await call(client, "TaskGet", taskId="4"))["blockedBy"] == ["3"]
    await call(client, "TaskUpdate", taskId="3", status="deleted")
    four = await call(client, "TaskGet", taskId="4")
    assert "blockedBy" not in four
    assert four["ready"] is True
    listing = await call(client, "TaskList")
    assert [t["id"] for t in listing["tasks"]] == ["1", "2", "4", "5"]
    assert [t["id"] for t in (await call(client, "TaskList", status="deleted"))["tasks"]] == ["3"]


async def test_list_filters(client: Client) -> None:
    await seed_example_plan(client)
    await call(client, "TaskUpdate", taskId="1", owner="worker-1", status="in_progress")
    assert [t["id"] for t in (await call(client, "TaskList", owner="worker-1"))["tasks"]] == ["1"]
    assert [t["id"] for t in (await call(client, "TaskList", status="pending"))["tasks"]] == [
        "2",
        "3",
        "4",
        "5",
    ]
    assert (await call(client, "TaskList", ready=True))["tasks"] == []
    not_ready = await call(client, "TaskList", ready=False)
    assert [t["id"] for t in not_ready["tasks"]] == ["1", "2", "3", "4", "5"]


async def test_metadata_is_merged_and_null_removes_a_key(client: Client) -> None:
    await call(client, "TaskCreate", subject="A", description="", metadata={"keep": 1, "drop": 2})
    task = await call(client, "TaskUpdate", taskId="1", metadata={"drop": None, "new": {"x": [1]}})
    assert task["metadata"] == {"keep": 1, "new": {"x": [1]}}


async def test_owner_and_active_form_can_be_cleared(client: Client) -> None:
    await call(client, "TaskCreate", subject="A", description="", activeForm="Doing A")
    await call(client, "TaskUpdate", taskId="1", owner="worker-1")
    task = await call(client, "TaskUpdate", taskId="1", owner="", activeForm="")
    assert "owner" not in task
    assert "activeForm" not in task


async def test_cycle_is_refused_naming_it_and_nothing_changes(client: Client) -> None:
    await seed_example_plan(client)
    before = await snapshot(client)
    message = await refuse(client, "TaskUpdate", taskId="1", addBlockedBy=["4"], subject="changed")
    assert "1 -> 4 -> 3 -> 1" in message
    # Via addBlocks too, and several edges at once where only the last closes the cycle.
    message = await refuse(client, "TaskUpdate", taskId="5", addBlocks=["2", "1"])
    assert "cycle" in message
    assert "5" in message
    assert await snapshot(client) == before


async def test_self_dependency_and_blocked_start_are_refused(client: Client) -> None:
    await seed_example_plan(client)
    before = await snapshot(client)
    assert "itself" in await refuse(client, "TaskUpdate", taskId="2", addBlockedBy=["2"])
    assert "itself" in await refuse(client, "TaskUpdate", taskId="2", addBlocks=["2"])
    message = await refuse(client, "TaskUpdate", taskId="2", status="in_progress", owner="worker-9")
    assert "blocked by 1" in message
    assert "blocked by 2, 3, 4" in await refuse(client, "TaskUpdate", taskId="5", status="completed")
    assert await snapshot(client) == before


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("TaskGet", {"taskId": "99"}, "no task with id '99'"),
        ("TaskGet", {"taskId": "abc"}, "no task with id 'abc'"),
        ("TaskGet", {"taskId": "01"}, "no task with id '01'"),
        ("TaskGet", {}, "taskId"),
        ("TaskUpdate", {"taskId": "99", "status": "completed"}, "no task with id '99'"),
        ("TaskUpdate", {"taskId": "1", "status": "done"}, "status"),
        ("TaskUpdate", {"taskId": "1", "addBlockedBy": ["42"]}, "no task with id '42'"),
        ("TaskUpdate", {"taskId": "1", "subject": "   "}, "subject"),
        ("TaskUpdate", {"taskId": 1}, "taskId"),
        ("TaskCreate", {"subject": "", "description": "x"}, "subject"),
        ("TaskCreate", {"subject": "x" * (MAX_SUBJECT_CHARS + 1), "description": "x"}, "subject"),
        ("TaskCreate", {"subject": 5, "description": "x"}, "subject"),
        ("TaskCreate", {"subject": "x"}, "description"),
        ("TaskCreate", {"subject": "x", "description": "x", "blockedBy": "1"}, "blockedBy"),
        ("TaskCreate", {"subject": "x", "description": "x", "blockedBy": ["7"]}, "no task with id '7'"),
        ("TaskCreate", {"subject": "x", "description": "x", "priority": 1}, "priority"),
        ("TaskCreate", {"subject": "x", "description": "x", "metadata": ["a"]}, "metadata"),
        (
            "TaskCreate",
            {"subject": "x", "description": "x", "metadata": {"blob": "y" * MAX_METADATA_BYTES}},
            "metadata",
        ),
        ("TaskList", {"status": "blocked"}, "status"),
        ("TaskList", {"ready": "maybe"}, "ready"),
        ("TaskCreatePlan", {"tasks": []}, "tasks"),
    ],
)
async def test_bad_input_is_a_clear_tool_error_and_changes_nothing(
    client: Client, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    await call(client, "TaskCreate", subject="A", description="a")
    before = await snapshot(client)
    assert expected in await refuse(client, tool, **arguments)
    assert await snapshot(client) == before


async def test_metadata_merge_over_the_limit_is_refused(client: Client) -> None:
    half = "y" * (MAX_METADATA_BYTES // 2)
    await call(client, "TaskCreate", subject="A", description="", metadata={"a": half})
    before = await snapshot(client)
    assert "after the merge" in await refuse(client, "TaskUpdate", taskId="1", metadata={"b": half})
    assert await snapshot(client) == before


async def test_deleted_task_cannot_be_read_or_changed(client: Client) -> None:
    await call(client, "TaskCreate", subject="A", description="")
    await call(client, "TaskCreate", subject="B", description="")
    deleted = await call(client, "TaskUpdate", taskId="1", status="deleted")
    assert deleted["status"] == "deleted"
    assert "was deleted" in await refuse(client, "TaskGet", taskId="1")
    assert "was deleted" in await refuse(client, "TaskUpdate", taskId="1", status="pending")
    assert "was deleted" in await refuse(client, "TaskUpdate", taskId="2", addBlockedBy=["1"])
    assert "was deleted" in await refuse(client, "TaskCreate", subject="C", description="", blockedBy=["1"])


async def test_a_plan_keeps_every_character_of_its_text(client: Client) -> None:
    texts = [("a\x00b", "line one\x00line two", "Doing \x00 it"), ("\u202e\U0010ffff", "", "x")]
    plan = [{"subject": s, "description": d, "activeForm": a} for s, d, a in texts]
    created = await call(client, "TaskCreatePlan", tasks=plan)
    for task_id, (subject, description, active_form) in zip(created["ids"], texts, strict=True):
        task = await call(client, "TaskGet", taskId=task_id)
        got = (task["subject"], task.get("description", ""), task["activeForm"])
        assert got == (subject, description, active_form)


async def test_task_create_and_update_answer_the_task_as_stored(client: Client) -> None:
    first = {"subject": "Before", "description": "d", "activeForm": "Go", "metadata": {"a": 1, "b": None}}
    for number, arguments in [
        ("1", first),
        ("2", {"subject": "Blocked", "description": "", "blockedBy": ["1"]}),
    ]:
        created = await call(client, "TaskCreate", **arguments)
        stored = await call(client, "TaskGet", taskId=number)
        assert created == {key: stored[key] for key in created}
    for changes in [
        {"subject": "After", "activeForm": "", "owner": "me", "metadata": {"a": None, "b": [1.5, "\x00"]}},
        {"status": "in_progress", "description": "longer"},
        {"owner": "", "status": "completed"},
        {},
    ]:
        answered = await call(client, "TaskUpdate", taskId="1", **changes)
        assert answered == await call(client, "TaskGet", taskId="1"), changes


async def test_plan_is_created_in_one_call(client: Client) -> None:
    await call(client, "TaskCreate", subject="Existing", description="")
    created = await call(
        client,
        "TaskCreatePlan",
        tasks=[
            {"key": "tests", "subject": "Write tests", "blockedBy": ["hash", "login", "jwt"]},
            {"key": "model", "subject": "Create User model", "description": "d", "blockedBy": ["1"]},
            {"key": "hash", "subject": "Add password hashing", "blockedBy": ["model"]},
            {
                "key": "login",
                "subject": "Create login endpoint",
                "blockedBy": ["model"],
                "activeForm": "Adding",
            },
            {"key": "jwt", "subject": "Add JWT tokens", "blockedBy": ["login"], "metadata": {"p": 1}},
            {"subject": "Unkeyed"},
        ],
    )
    assert created == {
        "ids": ["2", "3", "4", "5", "6", "7"],
        "keys": {"tests": "2", "model": "3", "hash": "4", "login": "5", "jwt": "6"},
    }
    assert (await call(client, "TaskGet", taskId="2"))["blockedBy"] == ["4", "5", "6"]
    jwt = await call(client, "TaskGet", taskId="6")
    assert jwt["blockedBy"] == ["5"]
    assert jwt["metadata"] == {"p": 1}
    assert (await call(client, "TaskGet", taskId="3"))["blockedBy"] == ["1"]


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (
            [
                {"key": "a", "subject": "A", "blockedBy": ["b"]},
                {"key": "b", "subject": "B", "blockedBy": ["a"]},
            ],
            "a -> b -> a",
        ),
        ([{"key": "a", "subject": "A", "blockedBy": ["a"]}], "itself"),
        ([{"key": "a", "subject": "A", "blockedBy": ["nope"]}], "'nope' is neither a key"),
        ([{"key": "a", "subject": "A", "blockedBy": ["77"]}], "no task with id '77'"),
        ([{"key": "a", "subject": "A"}, {"key": "a", "subject": "B"}], "used twice"),
        ([{"key": "12", "subject": "A"}], "looks like a task id"),
        ([{"key": "a", "subject": "A"}, {"subject": ""}], "subject"),
        ([{"key": "a", "subject": "A", "owner": "x"}], "owner"),
    ],
)
async def test_bad_plan_is_refused_as_a_whole(
    client: Client, tasks: list[dict[str, Any]], expected: str
) -> None:
    await call(client, "TaskCreate", subject="Existing", description="")
    before = await snapshot(client)
    assert expected in await refuse(client, "TaskCreatePlan", tasks=tasks)
    assert await snapshot(client) == before
    # The ids the refused plan would have taken are still the next ones handed out.
    assert (await call(client, "TaskCreate", subject="Next", description=""))["id"] == "2"


async def test_answers_are_one_line_of_json(client: Client) -> None:
    await seed_example_plan(client)
    result = await client.call_tool("TaskList", {})
    text = result.content[0].model_dump()["text"]
    assert "\n" not in text
    assert ": " not in text
    assert json.loads(text) == result.structured_content


async def test_a_task_set_back_to_pending_loses_its_owner(client: Client, tmp_path: Path) -> None:
    await call(client, "TaskCreate", subject="Parse the config", description="")
    await call(client, "TaskUpdate", taskId="1", status="in_progress", owner="worker-3")
    await call(client, "TaskUpdate", taskId="1", status="failed")
    assert (await call(client, "TaskGet", taskId="1"))["owner"] == "worker-3"  # failed keeps who failed it

    retried = await call(client, "TaskUpdate", taskId="1", status="pending")
    assert "owner" not in retried
    assert "owner" not in await call(client, "TaskGet", taskId="1")
    assert (await call(client, "TaskList", owner="worker-3"))["tasks"] == []
    async with await Store.open(tmp_path / "swarm.db") as store:
        history = await Ledger(store).history("1")
    assert [(e.field, e.old, e.new) for e in history if e.field == "owner"][-1] == ("owner", "worker-3", None)

    # An owner named in the same call is the caller's choice, and kept.
    await call(client, "TaskUpdate", taskId="1", status="in_progress", owner="mayor")
    kept = await call(client, "TaskUpdate", taskId="1", status="pending", owner="mayor")
    assert kept["owner"] == "mayor"
