"""The Mayor's Agent Mail and reservation tools over real stdio, with a worker on the other side.

The worker's half is played by this test process through the engine on the same file (another
process than the server, as a worker's own `serve --worker` is), so every message crosses
processes through SQLite.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_swarm.ledger.mail import Mailbox, MessageType
from mcp_swarm.ledger.reservations import Reservations
from mcp_swarm.store import Store
from tests.support.mcp_client import call, refuse, stdio_parameters

pytestmark = pytest.mark.anyio

# Runs until the test creates its go file.
GATED = "import pathlib, sys, time\nwhile not pathlib.Path(sys.argv[1]).exists():\n    time.sleep(0.01)\n"


def mayor(tmp_path: Path) -> Client:
    (tmp_path / "gated.py").write_text(GATED)
    argv = [sys.executable, str(tmp_path / "gated.py"), str(tmp_path / "go")]
    (tmp_path / "mcp-swarm.toml").write_text(
        f'default_runtime = "gated"\n\n[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    params = stdio_parameters(tmp_path / "unused.db", cwd=tmp_path)
    params.args = ["serve"]
    return Client(params, mode="legacy")


def db(tmp_path: Path) -> Path:
    return tmp_path / ".mcp-swarm" / "swarm.db"


async def test_a_help_request_wakes_wait_and_is_returned_once(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(client, "TaskCreate", subject="Parse the config", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        answers: list[dict[str, object]] = []
        sent_at = time.monotonic()
        async with await Store.open(db(tmp_path)) as store, anyio.create_task_group() as group:

            async def waiting() -> None:
                answers.append(await call(client, "wait", timeoutSeconds=60))

            group.start_soon(waiting)
            sent_at = time.monotonic()
            await Mailbox(store).send(
                worker["workerId"], "mayor", "Which format?", "TOML or YAML?", type=MessageType.HELP_REQUEST
            )
        woke_after = time.monotonic() - sent_at
        [result] = answers
        assert result["running"] == [worker["workerId"]]
        assert "timedOut" not in result
        [request] = result["helpRequests"]  # type: ignore[misc]
        assert request["from"] == worker["workerId"]
        assert request["taskId"] == "1"
        assert (request["subject"], request["body"], request["type"]) == (
            "Which format?",
            "TOML or YAML?",
            "help_request",
        )
        assert woke_after < 10  # far below the 60 s it would otherwise have waited
        # Handed over once: the next wait does not return it again.
        again = await call(client, "wait", timeoutSeconds=0)
        assert "helpRequests" not in again
        # The Mayor answers; the worker reads it in its own inbox.
        sent = await call(client, "send_message", to=worker["workerId"], subject="TOML", body="Use TOML.")
        assert sent["from"] == "mayor"
        async with await Store.open(db(tmp_path)) as store:
            [reply] = await Mailbox(store).fetch_inbox(worker["workerId"])
        assert (reply.subject, reply.body, reply.type) == ("TOML", "Use TOML.", MessageType.INSTRUCTION)
        (tmp_path / "go").write_text("")
        done = await call(client, "wait", timeoutSeconds=30)
        assert [d["taskStatus"] for d in done["done"]] == ["completed"]


async def test_the_mayors_inbox_and_the_refusals(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(client, "TaskCreate", subject="Write docs", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        async with await Store.open(db(tmp_path)) as store:
            await Mailbox(store).send(worker["workerId"], "mayor", "Half done", type=MessageType.PROGRESS)
        first = await call(client, "fetch_inbox")
        [message] = first["messages"]
        assert (message["from"], message["subject"], message["type"]) == (
            worker["workerId"],
            "Half done",
            "progress",
        )
        assert message["read"] is False
        assert (await call(client, "fetch_inbox", unreadOnly=True))["messages"] == []
        assert "no worker" in await refuse(client, "send_message", to="worker-9", subject="hello")
        assert "itself" in await refuse(client, "send_message", to="mayor", subject="hello")
        assert await refuse(client, "send_message", to=worker["workerId"], subject="")
        assert await refuse(client, "fetch_inbox", limit=0)
        assert await refuse(client, "send_message", to=worker["workerId"], subject="x", sender="worker-1")
        # Nothing refused was written: the worker's inbox is empty.
        async with await Store.open(db(tmp_path)) as store:
            assert await Mailbox(store).fetch_inbox(worker["workerId"]) == []
        (tmp_path / "go").write_text("")


async def test_reservations_seen_and_respected_by_the_mayor(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(client, "TaskCreate", subject="Refactor auth", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        async with await Store.open(db(tmp_path)) as store:
            await Reservations(store).reserve(worker["workerId"], ["src/auth/*.py"], reason="refactor")
        [held] = (await call(client, "list_reservations"))["reservations"]
        assert (held["holder"], held["pattern"], held["exclusive"]) == (
            worker["workerId"],
            "src/auth/*.py",
            True,
        )
        refusal = await refuse(client, "reserve_files", patterns=["src/auth/login.py"])
        assert worker["workerId"] in refusal
        assert "src/auth/*.py" in refusal
        mine = await call(client, "reserve_files", patterns=["docs/"], exclusive=False)
        assert [r["pattern"] for r in mine["reservations"]] == ["docs"]
        assert (await call(client, "release_files"))["released"] == 1
        assert [r["holder"] for r in (await call(client, "list_reservations"))["reservations"]] == [
            worker["workerId"]
        ]
        (tmp_path / "go").write_text("")
