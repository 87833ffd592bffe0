"""A worker speaks only for itself: the attacks of a worker on the swarm, each refused, nothing changed.

A worker once had the database's path and could serve itself any worker's tools (`serve --worker
<another id>`), or the Mayor's (`serve --db $SWARM_DB`): read another task, send forged `done`
and `help_request` messages that woke the Mayor's `wait`, mark another worker's task completed,
rewrite its own task's `metadata.validation.command`, which the server then ran. Now a worker
holds only the token of its own attempt, for the server's worker endpoint. Each attack here is
made with a real worker's real token against a real `mcp-swarm serve`, and the database is the
same, row for row, before and after.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from mcp_swarm.config import load_settings
from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.engine.tokens import token_hash
from mcp_swarm.ledger.mail import MAYOR
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskStatus
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes import Outcome, OutputReader, Runtime, WorkerRequest
from mcp_swarm.server.worker_endpoint import worker_endpoint
from mcp_swarm.store import Store
from tests.support.http_server import dump
from tests.support.mcp_client import INITIALIZE, call, refuse, stdio_parameters
from tests.support.worker_endpoints import FORGED_REPORT, configure_gated, handed_endpoint, worker_session

pytestmark = pytest.mark.anyio


class TwoWorkers:
    """A real `mcp-swarm serve` as the Mayor, two gated workers running tasks 1 and 2."""

    def __init__(self, project: Path, mayor: Client) -> None:
        self.project, self.mayor = project, mayor
        self.gates = project / "gates"
        self.db = project / ".mcp-swarm" / "swarm.db"

    async def endpoint_of(self, worker_id: str) -> tuple[str, str]:
        return await handed_endpoint(self.gates, worker_id)

    def token_hash_of(self, worker_id: str) -> str | None:
        number = int(worker_id.removeprefix("worker-"))
        connection = sqlite3.connect(self.db)
        try:
            row = connection.execute("SELECT token_hash FROM workers WHERE id = ?", (number,)).fetchone()
        finally:
            connection.close()
        return None if row is None else row[0]


@asynccontextmanager
async def two_workers(tmp_path: Path) -> AsyncGenerator[TwoWorkers]:
    configure_gated(tmp_path)
    params = stdio_parameters(tmp_path / "unused.db", cwd=tmp_path)
    params.args = ["serve"]
    async with Client(params, mode="legacy") as mayor:
        validation = {"validation": {"command": ["true"]}}
        await call(mayor, "TaskCreate", subject="Mine", description="worker-1's", metadata=validation)
        await call(mayor, "TaskCreate", subject="Theirs", description="secret instructions for worker-2")
        spawned = await call(mayor, "spawn")
        assert [(w["workerId"], w["taskId"]) for w in spawned["workers"]] == [
            ("worker-1", "1"),
            ("worker-2", "2"),
        ]
        swarm = TwoWorkers(tmp_path, mayor)
        try:
            yield swarm
        finally:
            (swarm.gates / "go").write_text("")


async def test_with_its_own_token_a_worker_reads_no_other_task_and_speaks_for_no_one_else(
    tmp_path: Path,
) -> None:
    async with two_workers(tmp_path) as swarm:
        url, token = await swarm.endpoint_of("worker-1")
        async with worker_session(url, token) as worker:
            own = await call(worker, "my_task")
            assert (own["id"], own["owner"], own["description"]) == ("1", "worker-1", "worker-1's")
            before = dump(swarm.db)
            refusals = [
                await refuse(worker, "my_task", taskId="2"),
                await refuse(worker, "my_task", workerId="worker-2"),
                await refuse(worker, "send_message", subject="done", type="done", sender="worker-2"),
                await refuse(worker, "send_message", subject="done", type="done", taskId="2"),
                await refuse(worker, "send_message", subject="hi", to="worker-2"),
                await refuse(worker, "ask_for_help", subject="help", workerId="worker-2"),
                await refuse(worker, "report_result", status="done", summary="all done", taskId="2"),
                await refuse(worker, "report_result", status="done", summary="all done", workerId="worker-2"),
                await refuse(worker, "fetch_inbox", recipient="worker-2"),
                await refuse(worker, "release_files", holder="worker-2"),
                # The Mayor's word is not a worker's to send.
                await refuse(worker, "send_message", subject="stop", type="instruction"),
            ]
            assert dump(swarm.db) == before, refusals
            for refusal in refusals[:-1]:
                assert "is not a parameter of" in refusal, refusal
            # What it may send is about its own task, from itself, to the Mayor.
            sent = await call(worker, "report_result", status="done", summary="mine is done")
        assert (sent["to"], sent["taskId"]) == (MAYOR, "1")
        inbox = (await call(swarm.mayor, "fetch_inbox"))["messages"]
        assert [(m["from"], m["taskId"], m["type"]) for m in inbox] == [("worker-1", "1", "done")]
        # A report is no verdict: both tasks are still in progress, each its own worker's.
        tasks = {t["id"]: (t["status"], t["owner"]) for t in (await call(swarm.mayor, "TaskList"))["tasks"]}
        assert tasks == {"1": ("in_progress", "worker-1"), "2": ("in_progress", "worker-2")}


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("TaskUpdate", {"taskId": "2", "status": "completed"}),
        ("TaskUpdate", {"taskId": "1", "metadata": {"validation": {"command": ["touch", "/tmp/pwned"]}}}),
        ("TaskGet", {"taskId": "2"}),
        ("TaskList", {}),
        ("close_agent", {"workerId": "worker-2"}),
        ("send_input", {"workerId": "worker-2", "message": "do something else"}),
        ("spawn", {}),
        ("wait", {}),
    ],
)
async def test_a_worker_has_none_of_the_mayors_tools(
    tmp_path: Path, tool: str, arguments: dict[str, Any]
) -> None:
    """No task's status, metadata or validation is a worker's to change, nor another worker's
    attempt to end or continue: the endpoint has no such tool."""
    async with two_workers(tmp_path) as swarm:
        url, token = await swarm.endpoint_of("worker-1")
        before = dump(swarm.db)
        async with worker_session(url, token) as worker:
            assert tool not in {listed.name for listed in (await worker.list_tools()).tools}
            refusal = await refuse(worker, tool, **arguments)
        assert tool in refusal, refusal
        assert dump(swarm.db) == before


async def raw_call(url: str, token: str | None) -> httpx2.Response:
    """A forged `done` report, sent with this token (None: none at all)."""
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        await http.post(url, json=INITIALIZE, headers=headers)
        return await http.post(url, json=FORGED_REPORT, headers=headers)


async def test_a_token_stops_working_when_its_attempt_ends(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as swarm:
        url, first = await swarm.endpoint_of("worker-1")
        _, second = await swarm.endpoint_of("worker-2")
        assert first != second
        # Only the hash is stored.
        assert swarm.token_hash_of("worker-1") == token_hash(first)
        assert first not in "\n".join(dump(swarm.db))
        # worker-1 ends on its own; worker-2 is closed by the Mayor.
        (swarm.gates / "worker-1.go").write_text("")
        done = await call(swarm.mayor, "wait", workerIds=["worker-1"], timeoutSeconds=30)
        assert [d["taskStatus"] for d in done["done"]] == ["completed"], done
        await call(swarm.mayor, "close_agent", workerId="worker-2")
        assert swarm.token_hash_of("worker-1") is None
        assert swarm.token_hash_of("worker-2") is None
        before = dump(swarm.db)
        for token in (first, second, None, "x" * 43, first + "x"):
            response = await raw_call(url, token)
            assert response.status_code == 401, response.text
        assert dump(swarm.db) == before


# -- a continued attempt (send_input) gets a token of its own ------------------------------------

RESUMABLE = """\
import json, os, pathlib, sys, time
attempt = "2" if sys.argv[1:2] == ["--resume"] else "1"
pathlib.Path("token-" + attempt).write_text(os.environ["SWARM_TOKEN"])
if attempt == "2":
    while not pathlib.Path("go").exists():
        time.sleep(0.01)
print(json.dumps({"session": "session-7"}))
"""


class _Reader(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self.session: str | None = None

    def feed(self, line: str) -> None:
        if line.startswith("{"):
            self.session = json.loads(line)["session"]
            self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        return Outcome(succeeded=exit_code == 0, session_id=self.session)


class _Resumable(Runtime):
    name = "resumable"

    def __init__(self, script: Path) -> None:
        self.script = script

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script)]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [sys.executable, str(self.script), "--resume"]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return _Reader()


async def test_a_continued_attempt_gets_a_new_token_and_the_last_one_stops_working(tmp_path: Path) -> None:
    script, project = tmp_path / "resumable.py", tmp_path / "project"
    script.write_text(RESUMABLE)
    project.mkdir()
    state = project / ".mcp-swarm"
    async with await Store.open(state / "swarm.db") as store:
        swarm = Swarm(
            store, {"resumable": _Resumable(script)}, default_runtime="resumable", state_dir=state,
            project_dir=project, limits=WorkerLimits(stop_grace_seconds=1.0),
            placements=placements(max_log_bytes=WorkerLimits().max_log_bytes),
        )  # fmt: skip
        settings = load_settings(cwd=project, db=state / "swarm.db")
        async with worker_endpoint(store, settings) as endpoint, anyio.create_task_group() as group:
            swarm.worker_url = endpoint.url
            await group.start(swarm.run)
            await Ledger(store).create(NewTask(subject="twice"))
            [spawned] = (await swarm.spawn()).workers
            [first] = (await swarm.wait(timeout=30)).done
            assert first.task_status is TaskStatus.COMPLETED
            await swarm.send_input(spawned.worker_id, "once more")
            with anyio.fail_after(30):
                while not (project / "token-2").exists():  # noqa: ASYNC110 - the worker writes it
                    await anyio.sleep(0.01)
            old, new = (project / "token-1").read_text(), (project / "token-2").read_text()
            assert old != new
            before = dump(state / "swarm.db")
            assert (await raw_call(endpoint.url, old)).status_code == 401
            assert dump(state / "swarm.db") == before
            async with worker_session(endpoint.url, new) as worker:
                assert (await call(worker, "my_task"))["owner"] == spawned.worker_id
            (project / "go").write_text("")
            [second] = (await swarm.wait(timeout=30)).done
            assert second.attempt == 2
            assert (await raw_call(endpoint.url, new)).status_code == 401
            group.cancel_scope.cancel()
