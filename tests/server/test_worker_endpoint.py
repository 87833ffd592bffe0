"""The worker endpoint: what one worker may do, with its attempt's token, over real HTTP.

The database is set up the way the Mayor's side leaves it after spawn: tasks created by the
ledger, a worker row for some of them, each such task in_progress and owned by its worker, with
the token of its attempt. The endpoint runs in the test's process or in a real `mcp-swarm serve`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest
from anyio.abc import ByteReceiveStream
from mcp import Client

from mcp_swarm.config import load_settings
from mcp_swarm.ledger.mail import MAYOR, Mailbox, MessageType
from mcp_swarm.ledger.reservations import Reservations
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, TaskStatus, now, worker_name
from mcp_swarm.placement.processes import this_process
from mcp_swarm.server import answers
from mcp_swarm.server.asgi_serving import HEAD_SECONDS
from mcp_swarm.server.worker import WORKER_TOOLS, split_text
from mcp_swarm.server.worker_endpoint import MAX_BODY_BYTES, PORT_FILE, worker_endpoint
from mcp_swarm.store import Store
from tests.support.http_server import dump
from tests.support.mcp_client import INITIALIZE, call, installed_command, refuse
from tests.support.worker_endpoints import (
    FORGED_REPORT,
    HOSTS,
    Host,
    endpoint_url,
    mint_tokens,
    worker_session,
)

pytestmark = pytest.mark.anyio

ME = this_process()
SUPERVISOR = f"{ME.pid}:{ME.start_time}"
VALIDATION = {"files_exist": ["api.py"], "commands": ["python -m pytest -q"]}


async def make_swarm(db: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Three tasks; tasks 1 and 2 run by workers, task 3 waits for task 1. {worker id: task id},
    and {worker id: its attempt's token}."""
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
            # Supervised by this test's process, which lives: a real server adopts nothing.
            numbers = await tx.workers.insert_many(
                task_ids, runtime="command", cwd="/", now=at, supervisor=SUPERVISOR
            )
            await tx.tasks.assign({task: worker_name(number) for task, number in numbers.items()}, at)
        tokens = await mint_tokens(store, list(numbers.values()))
    return {worker_name(number): str(task) for task, number in numbers.items()}, tokens


class Swarm:
    """The test's swarm: its database, its workers' tasks and tokens, and where its endpoint is."""

    def __init__(self, db: Path, workers: dict[str, str], tokens: dict[str, str]) -> None:
        self.db, self.workers, self.tokens = db, workers, tokens
        self.url = ""


@pytest.fixture(params=HOSTS)
def host(request: pytest.FixtureRequest) -> Host:
    return request.param


@pytest.fixture
async def swarm(tmp_path: Path, host: Host) -> AsyncGenerator[Swarm]:
    db = tmp_path / "swarm.db"
    workers, tokens = await make_swarm(db)
    assert workers == {"worker-1": "1", "worker-2": "2"}
    made = Swarm(db, workers, tokens)
    async with endpoint_url(host, db) as made.url:
        yield made


@asynccontextmanager
async def worker(swarm: Swarm, worker_id: str) -> AsyncGenerator[Client]:
    """A session of `worker_id`: the endpoint knows it by its token alone."""
    async with worker_session(swarm.url, swarm.tokens[worker_id]) as client:
        yield client


async def mayor_inbox(db: Path) -> list[dict[str, Any]]:
    async with await Store.open(db) as store:
        return [answers.message(message) for message in await Mailbox(store).fetch_inbox(MAYOR, limit=500)]


async def test_the_tools_are_exactly_the_worker_tools_with_strict_schemas(swarm: Swarm) -> None:
    async with worker(swarm, "worker-2") as client:
        tools = (await client.list_tools()).tools
        instructions = client.instructions
    assert sorted(tool.name for tool in tools) == sorted(WORKER_TOOLS)
    for tool in tools:
        assert tool.input_schema.get("additionalProperties") is False, tool.name
        assert "taskId" not in tool.input_schema.get("properties", {}), tool.name
        assert "workerId" not in tool.input_schema.get("properties", {}), tool.name
        assert tool.description, tool.name
    assert instructions is not None
    for name in ("my_task", "report_progress", "ask_for_help", "report_result"):
        assert name in instructions


async def test_my_task_is_the_workers_own_as_the_mayor_sees_it(
    swarm: Swarm,
) -> None:
    db = swarm.db
    async with worker(swarm, "worker-2") as client:
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
    swarm: Swarm,
) -> None:
    db = swarm.db
    async with worker(swarm, "worker-2") as client:
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


async def test_a_help_request_is_seen_by_the_mayor_as_unread(swarm: Swarm) -> None:
    db = swarm.db
    async with worker(swarm, "worker-1") as client:
        await call(client, "ask_for_help", subject="Stuck on the migration")
    async with await Store.open(db) as store:
        [request] = await Mailbox(store).help_requests()
    assert (request.sender, request.task_id, request.type) == ("worker-1", "1", MessageType.HELP_REQUEST)


async def test_a_worker_can_name_neither_another_task_nor_another_worker(
    swarm: Swarm,
) -> None:
    db = swarm.db
    async with worker(swarm, "worker-2") as client:
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


async def test_the_inbox_is_the_workers_own(swarm: Swarm) -> None:
    db = swarm.db
    async with await Store.open(db) as store:
        mailbox = Mailbox(store)
        first = await mailbox.send(MAYOR, "worker-2", "Use JWT", "HS256", type=MessageType.INSTRUCTION)
        await mailbox.send(MAYOR, "worker-1", "Not for worker-2", type=MessageType.INSTRUCTION)
        second = await mailbox.send(MAYOR, "worker-2", "Also add tests", task_id="2")
    async with worker(swarm, "worker-2") as client:
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


async def test_reservations_conflict_across_two_workers_naming_the_holder(swarm: Swarm) -> None:
    async with worker(swarm, "worker-1") as one, worker(swarm, "worker-2") as two:
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


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic d29ya2VyLTE6eA=="])
async def test_a_request_without_a_workers_token_gets_401_and_changes_nothing(
    swarm: Swarm, header: str | None
) -> None:
    before = dump(swarm.db)
    headers = {"Accept": "application/json, text/event-stream"}
    if header is not None:
        headers["Authorization"] = header
    async with httpx2.AsyncClient(timeout=30) as http:
        for body in (INITIALIZE, FORGED_REPORT):
            response = await http.post(swarm.url, json=body, headers=headers)
            assert response.status_code == 401, response.text
            assert "no token of a running worker attempt" in response.json()["error"]
        # Nor is anything else served: no OAuth metadata for a client to go looking for.
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"):
            found = await http.get(swarm.url.removesuffix("/mcp") + path, headers=headers)
            assert found.status_code == 401, found.text
    assert dump(swarm.db) == before


async def test_the_endpoint_serves_a_loopback_host_only(swarm: Swarm) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as the Host."""
    before = dump(swarm.db)
    headers = {
        "Authorization": f"Bearer {swarm.tokens['worker-1']}",
        "Accept": "application/json, text/event-stream",
        "Host": "attacker.example:80",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(swarm.url, json=INITIALIZE, headers=headers)
    assert response.status_code in (400, 403, 421), response.text
    assert dump(swarm.db) == before


async def test_a_body_over_the_limit_is_refused_unread(swarm: Swarm) -> None:
    before = dump(swarm.db)
    headers = {
        "Authorization": f"Bearer {swarm.tokens['worker-1']}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"report_progress",'
    body += b'"arguments":{"message":"' + b"x" * MAX_BODY_BYTES + b'"}}}'
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(swarm.url, content=body, headers=headers)
    assert response.status_code == 413, response.text
    assert dump(swarm.db) == before


@pytest.mark.slow
async def test_a_client_that_sends_no_whole_request_is_cut_off(swarm: Swarm) -> None:
    """Any local process can connect: one that opens connections and sends nothing, or half a
    request's head, holds none of them for long, and the workers are served meanwhile."""
    where = urlsplit(swarm.url)
    assert where.hostname is not None
    assert where.port is not None
    async with (
        await anyio.connect_tcp(where.hostname, where.port) as silent,
        await anyio.connect_tcp(where.hostname, where.port) as half_head,
    ):
        await half_head.send(f"POST {where.path} HTTP/1.1\r\nHost: {where.netloc}\r\n".encode())
        async with worker(swarm, "worker-1") as client:
            assert (await call(client, "my_task"))["id"] == "1"
        with anyio.fail_after(HEAD_SECONDS + 5):
            for stalled in (silent, half_head):
                # Closed without an answer: the first read finds the end of the stream.
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stalled.receive()


async def test_a_worker_that_hangs_up_mid_request_is_logged_as_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker killed while it sends a call is no error of the server's: one INFO line, no
    traceback in the server's log; and the endpoint serves on."""
    caplog.set_level(logging.INFO, logger="mcp.server.streamable_http")
    db = tmp_path / "swarm.db"
    _, tokens = await make_swarm(db)
    async with (
        await Store.open(db) as store,
        worker_endpoint(store, load_settings(cwd=tmp_path, db=db)) as endpoint,
    ):
        where = urlsplit(endpoint.url)
        assert where.hostname is not None
        assert where.port is not None
        head = (
            f"POST {where.path} HTTP/1.1\r\nHost: {where.netloc}\r\n"
            f"Authorization: Bearer {tokens['worker-1']}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n"
        )
        async with await anyio.connect_tcp(where.hostname, where.port) as hanging_up:
            await hanging_up.send(head.encode() + b'{"jsonrpc": "2.0", "id": 1, "me')
        with anyio.fail_after(10):
            # A log record has no event to wait on: looked for until it comes.
            while not [r for r in caplog.records if r.name == "mcp.server.streamable_http"]:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        async with worker_session(endpoint.url, tokens["worker-1"]) as client:
            assert (await call(client, "my_task"))["id"] == "1"
    logged = [r for r in caplog.records if r.name == "mcp.server.streamable_http"]
    assert logged[0].getMessage() == "a client hung up in the middle of its request"
    assert [(r.levelname, r.getMessage()) for r in logged if r.exc_info or r.levelno > logging.INFO] == []


async def test_the_endpoint_takes_the_port_the_last_server_here_used(tmp_path: Path) -> None:
    """A worker in a tmux session outlives its server: the next server on the state directory
    serves at the address in the worker's environment, if it can have that port."""
    db = tmp_path / "swarm.db"
    settings = load_settings(cwd=tmp_path, db=db)
    async with await Store.open(db) as store:
        [number] = await _assigned(store)
        [token] = (await mint_tokens(store, [number])).values()
        async with worker_endpoint(store, settings) as first:
            recorded = json.loads((settings.state_dir / PORT_FILE).read_text())
            assert recorded == {"port": first.port, "server": SUPERVISOR}
            # While it serves, another server here takes another port, and leaves the record.
            async with worker_endpoint(store, settings) as second:
                assert second.port != first.port
                assert json.loads((settings.state_dir / PORT_FILE).read_text()) == recorded
        async with worker_endpoint(store, settings) as third:
            assert third.url == first.url
            async with worker_session(third.url, token) as client:
                assert (await call(client, "my_task"))["owner"] == worker_name(number)


async def _assigned(store: Store) -> list[int]:
    created = await Ledger(store).create_plan([PlanTask(subject="one")])
    at = now()
    async with store.write() as tx:
        numbers = await tx.workers.insert_many(
            [int(created.ids[0])], runtime="command", cwd="/", now=at, supervisor="1:1"
        )
        await tx.tasks.assign({task: worker_name(number) for task, number in numbers.items()}, at)
    return list(numbers.values())


async def test_serve_worker_is_gone_with_a_clear_message(tmp_path: Path) -> None:
    """`serve --worker ID` served any worker to whoever ran it; it now refuses, and says what
    replaced it."""
    db = tmp_path / "swarm.db"
    await make_swarm(db)
    before = dump(db)
    argv = [installed_command(), "serve", "--worker", "worker-1", "--db", str(db)]
    # stdin stays open, as an MCP client's does: the server must end on its own.
    async with await anyio.open_process(argv, cwd=tmp_path, stdin=PIPE, stdout=PIPE, stderr=PIPE) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(60):
            stdout, stderr = await read_all(process.stdout), await read_all(process.stderr)
            returncode = await process.wait()
    assert returncode == 2, stderr
    assert stdout == ""
    assert stderr.startswith("mcp-swarm: serve --worker is gone: "), stderr
    assert "SWARM_TOKEN" in stderr
    assert "Traceback" not in stderr, stderr
    assert dump(db) == before


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
