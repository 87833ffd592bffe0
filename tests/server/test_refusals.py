"""Arguments that fail a tool's schema are refused in plain sentences, and change nothing.

A wrong type, a missing field, an unknown parameter or a value outside an enum is answered with
a sentence that names the parameter as the caller spelled it (nested ones too) and what it may
be, never with pydantic's dump and its URL; the database is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_swarm.store import Store
from tests.support.helpers import assigned_workers
from tests.support.mcp_client import TRANSPORTS, Transport, call, connect, refuse
from tests.support.worker_endpoints import as_worker

pytestmark = pytest.mark.anyio

# What pydantic's own report is made of; none of it may reach a caller.
DUMP_MARKS = ("pydantic", "http", "validation error", "Input should", "Field required", "[type=", "input_")
# A value no parameter of any tool accepts: not a string, number, boolean, object, nor a list of those.
WRONG: list[list[list[str]]] = [[[]]]


def database(db: Path) -> list[str]:
    """Every row of every table, to prove a refused call wrote nothing."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return list(connection.iterdump())


def plain(message: str) -> str:
    for mark in DUMP_MARKS:
        assert mark not in message, message
    return message


@pytest.fixture(params=TRANSPORTS)
async def mayor(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncGenerator[tuple[Client, Path]]:
    transport: Transport = request.param
    db = tmp_path / "swarm.db"
    async with connect(transport, db) as client:
        await call(client, "TaskCreate", subject="Existing", description="kept as it is")
        yield client, db


@asynccontextmanager
async def worker_session(db: Path) -> AsyncGenerator[Client]:
    """A worker's session with the worker endpoint, for a task in progress as spawn leaves it."""
    async with await Store.open(db) as store:
        [number] = await assigned_workers(store, 1)
    async with as_worker(db, number) as client:
        yield client


MAYOR_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "TaskUpdate",
        {"taskId": "1", "status": "done"},
        'status must be one of pending, in_progress, completed, failed, deleted; got "done".',
    ),
    ("TaskUpdate", {"status": "completed"}, "taskId is required."),
    ("TaskUpdate", {"taskId": 1}, "taskId must be a string, got 1."),
    ("TaskGet", {}, "taskId is required."),
    ("spawn", {"maxWorkers": "three"}, 'maxWorkers must be a whole number, got "three".'),
    ("spawn", {"maxWorkers": 2.5}, "maxWorkers must be a whole number, got 2.5."),
    ("spawn", {"maxWorkers": 0}, "maxWorkers must be greater than or equal to 1, got 0."),
    ("spawn", {"isolation": "none"}, 'isolation must be one of shared, worktree; got "none".'),
    ("spawn", {"taskIds": "1"}, 'taskIds must be a list, got "1".'),
    (
        "spawn",
        {"workers": 3},
        "workers is not a parameter of spawn; the known ones are instructions, isolation, maxWorkers, "
        "mode, model, runtime, taskIds, timeoutSeconds.",
    ),
    (
        "TaskCreatePlan",
        {"tasks": [{"subject": "A"}, {"subject": "B"}, {"subject": 3}]},
        "tasks[2].subject must be a string, got 3.",
    ),
    ("TaskCreatePlan", {"tasks": [{"subject": "A"}, {"key": "b"}]}, "tasks[1].subject is required."),
    (
        "TaskCreatePlan",
        {"tasks": [{"subject": "A", "blockedBy": [1]}]},
        "tasks[0].blockedBy[0] must be a string, got 1.",
    ),
    (
        "TaskCreatePlan",
        {"tasks": [{"subject": "A", "owner": "me"}]},
        "tasks[0].owner is not a parameter; the known ones are activeForm, blockedBy, description, key, "
        "metadata, subject.",
    ),
    ("TaskCreatePlan", {"tasks": []}, "tasks must have at least 1 item, got 0."),
    ("TaskCreate", {"subject": 5}, "subject must be a string, got 5. description is required."),
    ("TaskCreate", {"subject": "  ", "description": ""}, "subject must not be empty or only whitespace."),
    ("TaskCreate", {"subject": "", "description": ""}, "subject must not be empty."),
    (
        "TaskCreate",
        {"subject": "A", "description": "", "metadata": ["a"]},
        'metadata must be an object, got ["a"].',
    ),
    ("TaskList", {"ready": "maybe"}, 'ready must be true or false, got "maybe".'),
    (
        "TaskList",
        {"status": "blocked"},
        'status must be one of pending, in_progress, completed, failed, deleted; got "blocked".',
    ),
    ("wait", {"mode": "some"}, 'mode must be one of all, any; got "some".'),
    ("wait", {"timeoutSeconds": 700}, "timeoutSeconds must be less than or equal to 600, got 700."),
    (
        "close_agent",
        {"workerId": "worker-1", "taskStatus": "completed"},
        'taskStatus must be one of pending, failed; got "completed".',
    ),
    ("fetch_inbox", {"limit": 0}, "limit must be greater than or equal to 1, got 0."),
    ("send_message", {"to": "worker-1"}, "subject is required."),
    ("import_wave", {}, "path is required."),
]


@pytest.mark.parametrize(("tool", "arguments", "expected"), MAYOR_REFUSALS)
async def test_the_mayors_tools_refuse_bad_arguments_in_plain_sentences(
    mayor: tuple[Client, Path], tool: str, arguments: dict[str, Any], expected: str
) -> None:
    client, db = mayor
    before = database(db)
    assert plain(await refuse(client, tool, **arguments)) == expected
    assert database(db) == before


async def test_a_long_bad_value_is_quoted_short_and_many_problems_are_counted(
    mayor: tuple[Client, Path],
) -> None:
    client, db = mayor
    before = database(db)
    message = plain(await refuse(client, "TaskUpdate", taskId="1", status="x" * 1000))
    assert message.endswith('got "' + "x" * 38 + "….")
    message = plain(await refuse(client, "TaskCreatePlan", tasks=["a"] * 25))
    assert message.count("must be an object") == 10
    assert message.endswith("These are the first 10, and 15 more errors (25 in all) are not shown.")
    assert database(db) == before


WORKER_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (
        "report_result",
        {"status": "finished", "summary": "x"},
        'status must be one of done, blocked, failed; got "finished".',
    ),
    ("report_result", {"summary": "x"}, "status is required."),
    (
        "send_message",
        {"subject": "hi", "type": "shout"},
        'type must be one of progress, help_request, done, failed, blocked, info; got "shout".',
    ),
    (
        "my_task",
        {"taskId": "1"},
        "taskId is not a parameter of my_task; it takes none.",
    ),
    (
        "reserve_files",
        {"patterns": ["a.py"], "ttlSeconds": "long"},
        'ttlSeconds must be a number, got "long".',
    ),
    ("fetch_inbox", {"unreadOnly": "maybe"}, 'unreadOnly must be true or false, got "maybe".'),
]


@pytest.mark.parametrize(("tool", "arguments", "expected"), WORKER_REFUSALS)
async def test_the_workers_tools_refuse_bad_arguments_in_plain_sentences(
    tmp_path: Path, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    db = tmp_path / "swarm.db"
    async with worker_session(db) as client:
        before = database(db)
        assert plain(await refuse(client, tool, **arguments)) == expected
        assert database(db) == before


async def _every_tool_refuses_plainly(client: Client, db: Path) -> None:
    """Each tool, given a wrong value for every parameter, names every one of them, and each tool
    with required parameters, given none, names those."""
    before = database(db)
    for tool in (await client.list_tools()).tools:
        properties: dict[str, Any] = tool.input_schema.get("properties", {})
        required: list[str] = tool.input_schema.get("required", [])
        if properties:
            message = plain(await refuse(client, tool.name, **dict.fromkeys(properties, WRONG)))
            sentences = message.split(". ")
            for name in properties:
                assert any(sentence.startswith(name) for sentence in sentences), (tool.name, name, message)
        if required:
            message = plain(await refuse(client, tool.name))
            assert message == " ".join(f"{name} is required." for name in required), (tool.name, message)
    assert database(db) == before


async def test_every_tool_of_the_mayor_refuses_plainly(mayor: tuple[Client, Path]) -> None:
    await _every_tool_refuses_plainly(*mayor)


async def test_every_tool_of_a_worker_refuses_plainly(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    async with worker_session(db) as client:
        await _every_tool_refuses_plainly(client, db)
