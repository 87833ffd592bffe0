"""`mcp-swarm serve --worker worker-N`: what one worker may do, in memory and over real stdio.

The database is set up the way the Mayor's side leaves it after spawn: tasks created by the
ledger, a worker row for some of them, each such task in_progress and owned by its worker.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from mcp import Client

from mcp_swarm.config import load_settings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import MAYOR, Mailbox, MessageType
from mcp_swarm.ledger.reservations import Reservations
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, TaskStatus, now, worker_name
from mcp_swarm.server import answers
from mcp_swarm.server.worker import WORKER_TOOLS, build_worker_server, split_text
from mcp_swarm.store import Store
from tests.support.mcp_client import TRANSPORTS, Transport, call, installed_command, refuse, stdio_parameters

pytestmark = pytest.mark.anyio

VALIDATION = {"files_exist": ["api.py"], "commands": ["python -m pytest -q"]}


async def make_swarm(db: Path) -> dict[str, str]:
    """Three tasks; tasks 1 and 2 run by workers, task 3 waits for task 1. {worker id: task id}."""
    async with await Store.open(db) as store:
        created = await Ledger(store).create_plan(
            [
                PlanTask(key="model", subject="Write the model", description="models.py"),
                PlanTask(
                    key="api",
                    subject="Write the API",
                    description="api.py, with tests",
                    metadata={"validation": VALIDATION},
                ),
                PlanTask(key="docs", subject="Document it", blocked_by=["model"]),
            ]
        )
        task_ids = [int(task_id) for task_id in created.ids[:2]]
        at = now()
        async with store.write() as tx:
            numbers = await tx.workers.insert_many(
                task_ids, runtime="command", cwd="/", now=at, supervisor="1:1"
            )
            await tx.tasks.assign({task: worker_name(number) for task, number in numbers.items()}, at)
    return {worker_name(number): str(task) for task, number in numbers.items()}


@pytest.fixture
async def swarm(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    db = tmp_path / "swarm.db"
    workers = await make_swarm(db)
    assert workers == {"worker-1": "1", "worker-2": "2"}
    return db, workers


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param


@asynccontextmanager
async def worker(transport: Transport, db: Path, worker_id: str) -> AsyncGenerator[Client]:
    if transport == "memory":
        server = build_worker_server(load_settings(cwd=db.parent, db=db), worker_id)
        async with Client(server) as client:
            yield client
    else:
        # legacy: the initialize handshake, as Claude Code and Codex connect.
        params = stdio_parameters(db, "--worker", worker_id, cwd=db.parent)
        async with Client(params, mode="legacy") as client:
            yield client


async def mayor_inbox(db: Path) -> list[dict[str, Any]]:
    async with await Store.open(db) as store:
        return [answers.message(message) for message in await Mailbox(store).fetch_inbox(MAYOR, limit=500)]


async def test_the_tools_are_exactly_the_worker_tools_with_strict_schemas(
    swarm: tuple[Path, dict[str, str]], transport: Transport
) -> None:
    db, _ = swarm
    async with worker(transport, db, "worker-2") as client:
        tools = (await client.list_tools()).tools
        instructions = client.instructions
    assert sorted(tool.name for tool in tools) == sorted(WORKER_TOOLS)
    for tool in tools:
        assert tool.input_schema.get("additionalProperties") is False, tool.name
        assert "taskId" not in tool.input_schema.get("properties", {}), tool.name
        assert "workerId" not in tool.input_schema.get("properties", {}), tool.name
        assert tool.description, tool.name
    assert instructions is not None
    assert "worker-2" in instructions
    for name in ("my_task", "report_progress", "ask_for_help", "report_result"):
        assert name in instructions


async def test_my_task_is_the_workers_own_as_the_mayor_sees_it(
    swarm: tuple[Path, dict[str, str]], transport: Transport
) -> None:
    db, _ = swarm
    async with worker(transport, db, "worker-2") as client:
        task = await call(client, "my_task")
    async with await Store.open(db) as store:
        expected = (await Ledger(store).get("2")).model_dump(
            mode="json", by_alias=True, exclude_defaults=True
        )
    assert task == expected
    assert (task["id"], task["subject"], task["status"], task["owner"]) == (
        "2",
        "Write the API",
        "in_progress",
        "worker-2",
    )
    assert task["metadata"] == {"validation": VALIDATION}


async def test_reports_reach_the_mayors_inbox_about_the_workers_own_task(
    swarm: tuple[Path, dict[str, str]], transport: Transport
) -> None:
    db, _ = swarm
    async with worker(transport, db, "worker-2") as client:
        progress = await call(client, "report_progress", message="Models read\nnext: the endpoints")
        help_request = await call(
            client, "ask_for_help", subject="Which auth scheme?", body="JWT or sessions?"
        )
        result = await call(client, "report_result", status="blocked", summary="Needs the schema")
        info = await call(client, "send_message", subject="FYI", body="tests take 2 min")
        typed = await call(client, "send_message", subject="half done", type="progress")
    assert progress == {
        "id": progress["id"],
        "to": MAYOR,
        "taskId": "2",
        "type": "progress",
        "subject": "Models read",
    }
    assert [m["type"] for m in (help_request, result, info, typed)] == [
        "help_request",
        "blocked",
        "info",
        "progress",
    ]

    inbox = await mayor_inbox(db)
    assert [(m["from"], m["to"], m["taskId"], m["type"], m["subject"]) for m in inbox] == [
        ("worker-2", MAYOR, "2", "progress", "Models read"),
        ("worker-2", MAYOR, "2", "help_request", "Which auth scheme?"),
        ("worker-2", MAYOR, "2", "blocked", "Needs the schema"),
        ("worker-2", MAYOR, "2", "info", "FYI"),
        ("worker-2", MAYOR, "2", "progress", "half done"),
    ]
    assert inbox[0]["body"] == "Models read\nnext: the endpoints"
    assert inbox[1]["body"] == "JWT or sessions?"
    assert "body" not in inbox[2]  # the summary was its subject
    async with await Store.open(db) as store:
        # The Mayor's wait wakes for help requests.
        assert [m.subject for m in await Mailbox(store).help_requests()] == []  # read just now
        # A report is evidence, not a verdict: the task is still the worker's, in progress.
        task = await Ledger(store).get("2")
    assert (task.status, task.owner) == (TaskStatus.IN_PROGRESS, "worker-2")


async def test_a_help_request_is_seen_by_the_mayor_as_unread(swarm: tuple[Path, dict[str, str]]) -> None:
    db, _ = swarm
    async with worker("memory", db, "worker-1") as client:
        await call(client, "ask_for_help", subject="Stuck on the migration")
    async with await Store.open(db) as store:
        [request] = await Mailbox(store).help_requests()
    assert (request.sender, request.task_id, request.type) == ("worker-1", "1", MessageType.HELP_REQUEST)


async def test_a_worker_can_name_neither_another_task_nor_another_worker(
    swarm: tuple[Path, dict[str, str]], transport: Transport
) -> None:
    db, _ = swarm
    async with worker(transport, db, "worker-2") as client:
        refusals = [
            await refuse(client, "send_message", subject="about task 1", taskId="1"),
            await refuse(client, "send_message", subject="hello", recipient="worker-1"),
            await refuse(client, "send_message", subject="hello", to="worker-1"),
            await refuse(client, "send_message", subject="as the Mayor", sender=MAYOR),
            await refuse(client, "report_progress", message="as worker-1", workerId="worker-1"),
            await refuse(client, "report_result", status="done", summary="x", taskId="1"),
            await refuse(client, "my_task", taskId="1"),
            await refuse(client, "fetch_inbox", recipient="worker-1"),
            await refuse(client, "reserve_files", patterns=["a.py"], holder="worker-1"),
            await refuse(client, "release_files", holder="worker-1"),
        ]
        # The Mayor's own word is not a worker's to send.
        refusals.append(await refuse(client, "send_message", subject="do it", type="instruction"))
        sent = await call(client, "send_message", subject="about my own task")
    for message in refusals[:-1]:
        assert "is not a parameter of" in message, message
    assert "type" in refusals[-1], refusals[-1]
    assert sent["taskId"] == "2"
    inbox = await mayor_inbox(db)
    assert [(m["from"], m["taskId"], m["subject"]) for m in inbox] == [("worker-2", "2", "about my own task")]
    async with await Store.open(db) as store:
        assert await Mailbox(store).fetch_inbox("worker-1") == []
        assert await Reservations(store).active() == []


async def test_the_inbox_is_the_workers_own(swarm: tuple[Path, dict[str, str]], transport: Transport) -> None:
    db, _ = swarm
    async with await Store.open(db) as store:
        mailbox = Mailbox(store)
        first = await mailbox.send(MAYOR, "worker-2", "Use JWT", "HS256", type=MessageType.INSTRUCTION)
        await mailbox.send(MAYOR, "worker-1", "Not for worker-2", type=MessageType.INSTRUCTION)
        second = await mailbox.send(MAYOR, "worker-2", "Also add tests", task_id="2")
    async with worker(transport, db, "worker-2") as client:
        fetched = await call(client, "fetch_inbox")
        again = await call(client, "fetch_inbox", unreadOnly=True)
        later = await call(client, "fetch_inbox", sinceId=first.id, limit=5)
    assert [(m["from"], m["to"], m["subject"], m["read"]) for m in fetched["messages"]] == [
        (MAYOR, "worker-2", "Use JWT", False),
        (MAYOR, "worker-2", "Also add tests", False),
    ]
    assert fetched["messages"][0]["body"] == "HS256"
    assert again == {"messages": []}
    assert [(m["id"], m["read"]) for m in later["messages"]] == [(second.id, True)]


async def test_reservations_conflict_across_two_workers_naming_the_holder(
    swarm: tuple[Path, dict[str, str]], transport: Transport
) -> None:
    db, _ = swarm
    async with worker(transport, db, "worker-1") as one, worker(transport, db, "worker-2") as two:
        held = await call(one, "reserve_files", patterns=["src/models/*.py"], reason="the model")
        [reservation] = held["reservations"]
        assert (reservation["holder"], reservation["pattern"], reservation["exclusive"]) == (
            "worker-1",
            "src/models/*.py",
            True,
        )
        refusal = await refuse(two, "reserve_files", patterns=["src/api.py", "src/models/user.py"])
        assert "src/models/user.py overlaps src/models/*.py" in refusal
        assert "worker-1" in refusal
        listed = await call(two, "list_reservations")
        assert [(r["holder"], r["pattern"], r.get("reason")) for r in listed["reservations"]] == [
            ("worker-1", "src/models/*.py", "the model")
        ]
        # All or nothing: src/api.py was not reserved either; and worker-2 cannot free worker-1's.
        assert await call(two, "release_files") == {"released": 0}
        assert len((await call(one, "list_reservations"))["reservations"]) == 1

        assert await call(one, "release_files", patterns=["src/models/*.py"]) == {"released": 1}
        taken = await call(
            two, "reserve_files", patterns=["src/models/user.py"], exclusive=False, ttlSeconds=60
        )
        assert [(r["holder"], r["exclusive"]) for r in taken["reservations"]] == [("worker-2", False)]
        # Shared with shared is fine; exclusive over it is refused, naming worker-2.
        await call(one, "reserve_files", patterns=["src/models"], exclusive=False)
        assert "worker-2" in await refuse(one, "reserve_files", patterns=["src/models/user.py"])


async def test_the_worker_server_refuses_an_unknown_worker_at_start_in_memory(
    swarm: tuple[Path, dict[str, str]],
) -> None:
    db, _ = swarm
    server = build_worker_server(load_settings(cwd=db.parent, db=db), "worker-9")
    with pytest.raises(BaseException) as raised:  # noqa: PT011 - the SDK wraps it in a group
        async with Client(server):
            pass
    assert "worker-9 is no worker of the swarm" in repr(raised.value)


def test_the_worker_server_refuses_bad_ids_and_missing_databases(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, db=tmp_path / "swarm.db")
    with pytest.raises(InvalidInput, match="no swarm database at"):
        build_worker_server(settings, "worker-1")
    with pytest.raises(InvalidInput, match="worker id such as 'worker-3'"):
        build_worker_server(settings, "mayor")
    with pytest.raises(InvalidInput, match="worker id such as 'worker-3'"):
        build_worker_server(settings, "worker-01")
    assert not (tmp_path / "swarm.db").exists()


@pytest.mark.parametrize(
    ("worker_id", "db_name", "message"),
    [
        ("worker-9", "swarm.db", "mcp-swarm: worker-9 is no worker of the swarm in "),
        ("worker-1", "missing.db", "mcp-swarm: no swarm database at "),
        ("bob", "swarm.db", "mcp-swarm: --worker takes a worker id such as 'worker-3', not 'bob'"),
    ],
)
async def test_serve_worker_fails_at_start_with_a_clear_message(
    swarm: tuple[Path, dict[str, str]], worker_id: str, db_name: str, message: str
) -> None:
    db, _ = swarm
    argv = [installed_command(), "serve", "--worker", worker_id, "--db", str(db.parent / db_name)]
    # stdin stays open, as an MCP client's does: the server must end on its own.
    async with await anyio.open_process(argv, cwd=db.parent, stdin=PIPE, stdout=PIPE, stderr=PIPE) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(60):
            stdout, stderr = await read_all(process.stdout), await read_all(process.stderr)
            returncode = await process.wait()
    assert returncode == 2, stderr
    assert stdout == ""
    assert stderr.startswith(message), stderr
    assert "Traceback" not in stderr, stderr


async def read_all(stream: ByteReceiveStream) -> str:
    data = b""
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return data.decode()


def test_split_text_makes_a_subject_from_the_first_line() -> None:
    assert split_text("  one line  ") == ("one line", "")
    assert split_text("first\nsecond") == ("first", "first\nsecond")
    subject, body = split_text("x" * 300)
    assert (len(subject), subject[-1], body) == (200, "…", "x" * 300)
