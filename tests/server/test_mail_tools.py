"""The Mayor's Agent Mail and reservation tools over real stdio, with a worker on the other side.

The worker's half is played by this test process through the server's worker endpoint, with the
token the server gave its (real, gated) worker process: every message crosses processes as a
real worker's does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client

from mcp_swarm.ledger.mail import Mailbox
from mcp_swarm.store import Store
from tests.support.mcp_client import call, refuse, stdio_parameters
from tests.support.worker_endpoints import configure_gated, handed_endpoint, worker_session

pytestmark = pytest.mark.anyio


def mayor(tmp_path: Path) -> Client:
    configure_gated(tmp_path)
    params = stdio_parameters(tmp_path / "unused.db", cwd=tmp_path)
    params.args = ["serve"]
    return Client(params, mode="legacy")


def db(tmp_path: Path) -> Path:
    return tmp_path / ".mcp-swarm" / "swarm.db"


@asynccontextmanager
async def as_the_worker(tmp_path: Path, worker_id: str) -> AsyncGenerator[Client]:
    """The running worker's session with the server's worker endpoint, with its own token."""
    url, token = await handed_endpoint(tmp_path / "gates", worker_id)
    async with worker_session(url, token) as worker:
        yield worker


async def test_a_help_request_wakes_wait_and_is_returned_once(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(client, "TaskCreate", subject="Parse the config", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        answers: list[dict[str, object]] = []
        sent_at = time.monotonic()
        async with as_the_worker(tmp_path, worker["workerId"]) as own, anyio.create_task_group() as group:

            async def waiting() -> None:
                answers.append(await call(client, "wait", timeoutSeconds=60))

            group.start_soon(waiting)
            sent_at = time.monotonic()
            await call(own, "ask_for_help", subject="Which format?", body="TOML or YAML?")
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
        async with as_the_worker(tmp_path, worker["workerId"]) as own:
            [reply] = (await call(own, "fetch_inbox"))["messages"]
        assert (reply["subject"], reply["body"], reply["type"]) == ("TOML", "Use TOML.", "instruction")
        (tmp_path / "gates" / "go").write_text("")
        done = await call(client, "wait", timeoutSeconds=30)
        assert [d["taskStatus"] for d in done["done"]] == ["completed"]


async def test_the_mayors_inbox_and_the_refusals(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(client, "TaskCreate", subject="Write docs", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        async with as_the_worker(tmp_path, worker["workerId"]) as own:
            await call(own, "report_progress", message="Half done")
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
        (tmp_path / "gates" / "go").write_text("")


async def test_reservations_seen_and_respected_by_the_mayor(tmp_path: Path) -> None:
    async with mayor(tmp_path) as client:
        await call(client, "TaskCreate", subject="Refactor auth", description="")
        [worker] = (await call(client, "spawn"))["workers"]
        async with as_the_worker(tmp_path, worker["workerId"]) as own:
            await call(own, "reserve_files", patterns=["src/auth/*.py"], reason="refactor")
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
        (tmp_path / "gates" / "go").write_text("")
