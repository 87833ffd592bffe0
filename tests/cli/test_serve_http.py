"""`mcp-swarm serve --http`: one real server process, Mayors through the SDK's own streamable HTTP
client (and plain HTTP where the wire itself is the point), a bearer token on every request."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path

import anyio
import httpx2
import pytest

from mcp_swarm.placement.processes import group_members
from tests.support import helpers
from tests.support.gated_workers import gated_project, go, rows, started_identity
from tests.support.helpers import STOP_SIGNAL_SEQUENCES
from tests.support.http_server import dump, http_server, http_session, new_token, start_server
from tests.support.mcp_client import call
from tests.support.proc import alive, same_process_lives

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 30.0
EXIT_WITHIN = 5.0

socket = helpers.tmux_socket
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "raw", "version": "1"}},
}  # fmt: skip
CREATE = {
    "jsonrpc": "2.0", "id": 2, "method": "tools/call",
    "params": {"name": "TaskCreate", "arguments": {"subject": "forged", "description": "by no one"}},
}  # fmt: skip


async def test_requests_without_the_right_token_get_401_and_change_nothing(tmp_path: Path) -> None:
    token = new_token()
    with http_server(tmp_path, "--log-level", "DEBUG", token=token) as server:
        async with http_session(server.url, token) as mayor:
            await call(mayor, "TaskCreate", subject="real", description="by the Mayor")
        before = dump(tmp_path / ".mcp-swarm" / "swarm.db")
        wrong = [
            {},
            {"Authorization": f"Bearer {new_token()}"},
            {"Authorization": f"Bearer {token[:-1]}"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
            {"Authorization": "Bearer"},
        ]
        async with httpx2.AsyncClient(timeout=DEADLINE) as http:
            for headers in wrong:
                for message in (INITIALIZE, CREATE):
                    answer = await http.post(server.url, json=message, headers={**ACCEPT, **headers})
                    assert answer.status_code == 401, (headers, answer.status_code, answer.text)
                    # A bare challenge: no resource_metadata, nothing that sends a client to OAuth.
                    assert answer.headers["www-authenticate"] == "Bearer"
                    assert "unauthorized" in answer.json()["error"]["message"]
            # Two Authorization headers, one of them right, are not a credential either.
            twice = [("Authorization", "Bearer nope-nope-nope-nope"), ("Authorization", f"Bearer {token}")]
            answer = await http.post(server.url, json=CREATE, headers=[*ACCEPT.items(), *twice])
            assert answer.status_code == 401
            # No OAuth discovery, even with the token: Claude Code would then drop the static header.
            shown = {"Authorization": f"Bearer {token}"}
            for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server",
                         "/.well-known/oauth-protected-resource/mcp", "/register", "/authorize"):  # fmt: skip
                found = await http.get(server.url.replace("/mcp", path), headers=shown)
                assert found.status_code == 404, (path, found.status_code)
        # The SDK's own client, with no token and with a wrong one, gets nowhere.
        for shown in (None, new_token()):
            with pytest.raises(Exception) as refused:  # noqa: PT011 - the SDK's error type is its own business
                async with http_session(server.url, shown) as intruder:
                    await intruder.call_tool("TaskCreate", {"subject": "x", "description": "y"})
            assert "401" in repr(refused.value) or "nauthorized" in repr(refused.value), repr(refused.value)
        assert dump(tmp_path / ".mcp-swarm" / "swarm.db") == before
        assert rows(tmp_path, "SELECT subject FROM tasks") == [("real",)]
        server.stop()
    # The token is in no line the server wrote, even at DEBUG.
    assert token not in server.stderr
    assert "Traceback" not in server.stderr


async def test_the_right_token_lists_the_tools_and_runs_them(tmp_path: Path) -> None:
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        assert server.url.startswith("http://127.0.0.1:")
        async with http_session(server.url, token) as mayor:
            tools = {tool.name for tool in (await mayor.list_tools()).tools}
            assert {"TaskCreate", "TaskList", "TaskGet", "spawn", "wait"} <= tools
            created = await call(mayor, "TaskCreate", subject="Add login", description="an endpoint")
            assert created == {"id": "1", "subject": "Add login", "status": "pending"}
            listed = await call(mayor, "TaskList")
            assert [task["subject"] for task in listed["tasks"]] == ["Add login"]
    assert rows(tmp_path, "SELECT subject, status FROM tasks") == [("Add login", "pending")]


async def test_a_mayor_that_disconnects_leaves_its_workers_running(tmp_path: Path) -> None:
    gates = gated_project(tmp_path, max_workers=2)
    token = new_token()
    with http_server(tmp_path, "--log-level", "INFO", token=token) as server:
        async with http_session(server.url, token) as mayor:
            await call(mayor, "TaskCreate", subject="long", description="")
            [worker] = (await call(mayor, "spawn"))["workers"]
        pid, start_time = started_identity(gates, worker["workerId"])
        # The session is closed (DELETE sent); another Mayor connects after it.
        async with http_session(server.url, token) as mayor:
            assert same_process_lives(pid, start_time), "the worker stopped when its Mayor left"
            task = await call(mayor, "TaskGet", taskId="1")
            assert (task["status"], task["owner"]) == ("in_progress", "worker-1")
            running = await call(mayor, "wait", timeoutSeconds=0)
            assert running["running"] == ["worker-1"]
            go(gates, "worker-1")
            result = await call(mayor, "wait", workerIds=["worker-1"], timeoutSeconds=DEADLINE)
            [done] = result["done"]
            assert (done["state"], done["taskStatus"]) == ("succeeded", "completed")
        assert server.process.poll() is None, "the server ended with its clients"
    # One engine for the server's whole life: its lifespan was entered once, whatever the sessions.
    assert server.stderr.count("mcp_swarm.server.mayor: mcp-swarm") == 1, server.stderr


@pytest.mark.parametrize("signals", STOP_SIGNAL_SEQUENCES)
async def test_a_stop_signal_stops_local_workers_and_returns_their_tasks(
    tmp_path: Path, signals: tuple[signal.Signals, ...]
) -> None:
    gates = gated_project(tmp_path, max_workers=2)
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        processes: dict[str, tuple[int, str]] = {}
        status, took = None, 0.0
        with contextlib.suppress(Exception):  # the client's own exit fails once the server is gone
            async with http_session(server.url, token) as mayor:
                await call(mayor, "TaskCreatePlan", tasks=[{"subject": "one"}, {"subject": "two"}])
                spawned = (await call(mayor, "spawn"))["workers"]
                processes = {w["workerId"]: started_identity(gates, w["workerId"]) for w in spawned}
                # A Mayor is still connected, its GET stream open: only the signal ends the server.
                sent = time.monotonic()
                for signum in signals:
                    server.process.send_signal(signum)
                status = await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=DEADLINE))
                took = time.monotonic() - sent
        assert len(processes) == 2
        try:
            for worker_id, (pid, start_time) in processes.items():
                assert not same_process_lives(pid, start_time), f"{worker_id} outlived the server"
                assert not group_members(pid), f"a process of {worker_id}'s group outlived the server"
        finally:
            for pid, start_time in processes.values():
                if same_process_lives(pid, start_time):
                    os.killpg(pid, signal.SIGKILL)
    # Two signals at once: the status names the one the server took first.
    assert status in {128 + each for each in signals}, server.stderr
    assert took < EXIT_WITHIN, f"serve --http took {took:.1f} s to exit"
    assert "Traceback" not in server.stderr
    assert rows(tmp_path, "SELECT id, status, owner FROM tasks ORDER BY id") == [
        (1, "pending", None),
        (2, "pending", None),
    ]
    assert rows(tmp_path, "SELECT state, error FROM workers ORDER BY id") == [
        ("cancelled", "the server stopped"),
        ("cancelled", "the server stopped"),
    ]


async def test_with_no_token_given_one_is_made_private_and_reused(tmp_path: Path) -> None:
    token_file = tmp_path / ".mcp-swarm" / "token"
    # A umask that would leave a new file readable by all: the token file is private regardless.
    with http_server(tmp_path, token=None, umask=0) as server:
        mode = stat.S_IMODE(token_file.stat().st_mode)
        token = token_file.read_text().strip()
        assert mode == 0o600, oct(mode)
        assert len(token) >= 32
        assert str(token_file) in server.stderr
        async with http_session(server.url, token) as mayor:
            await call(mayor, "TaskCreate", subject="first", description="")
        assert server.stop() == 128 + signal.SIGTERM
    assert token not in server.stderr
    # The next start reuses it: a client holding it keeps working.
    with http_server(tmp_path, token=None) as server:
        assert token_file.read_text().strip() == token
        async with http_session(server.url, token) as mayor:
            assert [t["subject"] for t in (await call(mayor, "TaskList"))["tasks"]] == ["first"]
        server.stop()
    assert token not in server.stderr


def test_a_server_that_cannot_start_makes_no_token_file(tmp_path: Path) -> None:
    from tests.support.cli import mcp_swarm

    token_file = tmp_path / ".mcp-swarm" / "token"
    # A state file that is no database: refused with its reason, and no token made for nothing.
    token_file.parent.mkdir()
    (tmp_path / ".mcp-swarm" / "swarm.db").write_text("not a database, not at all, not one bit")
    result = mcp_swarm(tmp_path, "serve", "--http", "0")
    assert result.returncode == 2, result.stderr
    assert "is not an mcp-swarm database" in result.stderr
    assert not token_file.exists(), result.stderr
    (tmp_path / ".mcp-swarm" / "swarm.db").unlink()
    # A port another server holds: the same.
    with http_server(tmp_path, token=new_token()) as server:
        taken = server.url.split(":")[2].split("/")[0]
        result = mcp_swarm(tmp_path, "serve", "--http", taken)
        assert result.returncode == 2, result.stderr
        assert f"cannot listen on 127.0.0.1:{taken}" in result.stderr
        assert not token_file.exists(), result.stderr
        server.stop()


@pytest.mark.parametrize("where", ["default", "flag", "config"])
def test_a_token_file_others_can_read_is_refused(tmp_path: Path, where: str) -> None:
    secret = tmp_path / "secret-token"
    args: list[str] = []
    if where == "default":
        secret = tmp_path / ".mcp-swarm" / "token"
        secret.parent.mkdir()
    elif where == "flag":
        args = ["--token-file", str(secret)]
    else:
        (tmp_path / "mcp-swarm.toml").write_text('token_file = "secret-token"\n')
    token = new_token()
    secret.write_text(token + "\n")
    secret.chmod(0o644)
    process = start_server(tmp_path, *args, token=None)
    status = process.wait(timeout=DEADLINE)
    stderr = (tmp_path / "serve.err").read_text()
    assert status == 2, stderr
    assert f"the token file {secret} may be read or written by others" in stderr
    assert "chmod 600" in stderr
    assert token not in stderr
    assert "serving" not in stderr
    # Made private, the same file serves.
    secret.chmod(0o600)
    with http_server(tmp_path, *args, token=None) as server:
        assert str(secret) in server.stderr
        server.stop()


async def test_a_loopback_server_answers_only_loopback_host_names(tmp_path: Path) -> None:
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        port = server.url.split(":")[2].split("/")[0]
        shown = {**ACCEPT, "Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(timeout=DEADLINE) as http:
            for host in ("evil.example", f"evil.example:{port}", f"192.168.1.9:{port}"):
                answer = await http.post(server.url, json=INITIALIZE, headers={**shown, "Host": host})
                assert answer.status_code in (403, 421), (host, answer.status_code)
            answer = await http.post(
                server.url, json=INITIALIZE, headers={**shown, "Origin": "http://evil.example"}
            )
            assert answer.status_code == 403
            for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
                answer = await http.post(server.url, json=INITIALIZE, headers={**shown, "Host": host})
                assert answer.status_code == 200, (host, answer.text)
    assert rows(tmp_path, "SELECT count(*) FROM tasks") == [(0,)]


def test_bad_http_options_are_refused_with_a_message(tmp_path: Path) -> None:
    from tests.support.cli import mcp_swarm

    for args, expected in [
        (["--http", "nonsense"], "is not [HOST:]PORT"),
        (["--http", "70000"], "is not [HOST:]PORT"),
        (["--http", "::1:80"], "is not [HOST:]PORT"),
        (["--token-file", "x"], "--token-file goes with --http"),
        # --worker is gone altogether (a worker's server is its server's worker endpoint).
        (["--http", "0", "--worker", "worker-1"], "serve --worker is gone"),
    ]:
        result = mcp_swarm(tmp_path, "serve", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = mcp_swarm(tmp_path, "serve", "--http", "0", MCP_SWARM_TOKEN="short")  # noqa: S106 - refused for it
    assert result.returncode == 2
    assert "at least 16 printable characters" in result.stderr
    assert "short" not in result.stderr.replace("shorter", "")
    with http_server(tmp_path, token=new_token()) as server:
        taken = server.url.split(":")[2].split("/")[0]
        result = mcp_swarm(tmp_path, "serve", "--http", taken, MCP_SWARM_TOKEN=new_token())
        assert result.returncode == 2
        assert f"cannot listen on 127.0.0.1:{taken}" in result.stderr
        assert alive(server.process.pid)


@pytest.mark.tmux
async def test_sigterm_leaves_tmux_workers_running_for_the_next_server(tmp_path: Path, socket: str) -> None:
    config = f'mode = "distributed"\ntmux_socket = "{socket}"\n'
    gates = gated_project(tmp_path, max_workers=2, config=config)
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        async with http_session(server.url, token) as mayor:
            await call(mayor, "TaskCreate", subject="long", description="")
            await call(mayor, "spawn")
            pid, start_time = started_identity(gates, "worker-1")
        assert server.stop() == 128 + signal.SIGTERM, server.stderr
    try:
        assert same_process_lives(pid, start_time), "the tmux worker died with the server"
        assert rows(tmp_path, "SELECT status, owner FROM tasks") == [("in_progress", "worker-1")]
        # The next server adopts it and judges it when it ends.
        with http_server(tmp_path, token=token) as server:
            async with http_session(server.url, token) as mayor:
                assert (await call(mayor, "wait", timeoutSeconds=0))["running"] == ["worker-1"]
                go(gates, "worker-1")
                [done] = (await call(mayor, "wait", timeoutSeconds=DEADLINE))["done"]
                assert (done["state"], done["taskStatus"]) == ("succeeded", "completed")
    finally:
        if same_process_lives(pid, start_time):
            os.kill(pid, signal.SIGKILL)
