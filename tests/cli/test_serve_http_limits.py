"""The limits that protect `serve --http` from its clients: request size, open sessions, idle
sessions, and clients that stall or are slow, none of which may hold up another Mayor."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2
import pytest

from mcp_swarm.server.asgi_serving import HEAD_SECONDS
from mcp_swarm.server.stdio_limit import MAX_MESSAGE_BYTES
from tests.support.gated_workers import rows
from tests.support.http_server import http_server, http_session, new_token
from tests.support.mcp_client import call

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DEADLINE = 30.0
# What "promptly" means for a cheap tool call while others stall: far above its usual few ms.
PROMPTLY = 2.0
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def initialize(id_: int = 1, name: str = "raw") -> dict[str, object]:
    return {
        "jsonrpc": "2.0", "id": id_, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": name, "version": "1"}},
    }  # fmt: skip


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    where = urlsplit(url)
    assert where.hostname is not None
    assert where.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Set before connecting, so the window the server may fill stays this small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(DEADLINE)
    sock.connect((where.hostname, where.port))
    return sock


def head(url: str, token: str, length: int, session: str | None = None) -> bytes:
    where = urlsplit(url)
    lines = [
        f"POST {where.path} HTTP/1.1", f"Host: {where.netloc}", f"Authorization: Bearer {token}",
        "Accept: application/json, text/event-stream", "Content-Type: application/json",
        f"Content-Length: {length}",
    ]  # fmt: skip
    if session is not None:
        lines += [f"Mcp-Session-Id: {session}", "Mcp-Protocol-Version: 2025-06-18"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_request_over_the_size_limit_is_refused_413(tmp_path: Path) -> None:
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        # Declared too long: refused before the body is sent.
        sock = connect(server.url)
        sock.sendall(head(server.url, token, MAX_MESSAGE_BYTES + 1))
        answer = sock.recv(4096)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # Sent in chunks with no length declared: refused once it passes the limit.
        big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"pad": "x" * (MAX_MESSAGE_BYTES + 1)}}).encode()  # fmt: skip

        async def chunks() -> object:
            for start in range(0, len(big), 1 << 20):
                yield big[start : start + (1 << 20)]

        shown = {**ACCEPT, "Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(timeout=DEADLINE) as http:
            answer = await http.post(server.url, content=chunks(), headers=shown)  # type: ignore[arg-type]
            assert answer.status_code == 413
            # A message within the limit is served.
            answer = await http.post(server.url, json=initialize(), headers=shown)
            assert answer.status_code == 200
        async with http_session(server.url, token) as mayor:
            await call(mayor, "TaskCreate", subject="after", description="")
    assert rows(tmp_path, "SELECT subject FROM tasks") == [("after",)]


async def test_sessions_past_the_limit_are_refused_and_idle_ones_closed(tmp_path: Path) -> None:
    (tmp_path / "mcp-swarm.toml").write_text("http_max_sessions = 3\nhttp_session_idle_seconds = 2\n")
    token = new_token()
    shown = {**ACCEPT, "Authorization": f"Bearer {token}"}
    with http_server(tmp_path, token=token) as server:
        async with httpx2.AsyncClient(timeout=DEADLINE) as http:
            sessions: list[str] = []
            for n in range(3):
                answer = await http.post(server.url, json=initialize(n), headers=shown)
                assert answer.status_code == 200
                sessions.append(answer.headers["mcp-session-id"])
            refused = await http.post(server.url, json=initialize(9), headers=shown)
            assert refused.status_code == 503
            assert "Too many open sessions" in refused.text
            # The open ones still answer.
            ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
            opened = {**shown, "Mcp-Session-Id": sessions[0], "Mcp-Protocol-Version": "2025-06-18"}
            assert (await http.post(server.url, json=ping, headers=opened)).status_code == 200
            # Left idle, they are closed (a refused opening touches none of them), and then new
            # ones may open.
            deadline = time.monotonic() + DEADLINE
            while (await http.post(server.url, json=initialize(10), headers=shown)).status_code != 200:
                assert time.monotonic() < deadline, "idle sessions were never closed"
                await anyio.sleep(0.2)
            for closed in sessions:
                again = {**opened, "Mcp-Session-Id": closed}
                assert (await http.post(server.url, json=ping, headers=again)).status_code == 404
    assert "Traceback" not in server.stderr


async def test_stalled_and_slow_clients_hold_up_no_other_mayor(tmp_path: Path) -> None:
    token = new_token()
    with http_server(tmp_path, token=token) as server:
        async with http_session(server.url, token) as mayor:
            # A plan whose TaskList answer is large, for a client that will not read it.
            tasks = [{"subject": f"task {n} " + "s" * 400} for n in range(1000)]
            await call(mayor, "TaskCreatePlan", tasks=tasks)
            async with httpx2.AsyncClient(timeout=DEADLINE) as http:
                opened = await http.post(
                    server.url, json=initialize(), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
                )
                session = opened.headers["mcp-session-id"]
            stalled: list[socket.socket] = []
            # Half a request's head, then nothing.
            half_head = connect(server.url)
            half_head.sendall(head(server.url, token, 100)[:60])
            stalled.append(half_head)
            # A whole head and a tenth of the body it announced, then nothing: a new session...
            half_body = connect(server.url)
            half_body.sendall(head(server.url, token, 1000) + b'{"jsonrpc": "2.0", ')
            stalled.append(half_body)
            # ...and in an open one.
            half_body_in_session = connect(server.url)
            half_body_in_session.sendall(head(server.url, token, 1000, session) + b'{"jsonrpc"')
            stalled.append(half_body_in_session)
            # Asks for the large answer, over and over, on a tiny window, and never reads.
            call_list = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                    "params": {"name": "TaskList", "arguments": {}}}).encode()  # fmt: skip
            for _ in range(4):
                unread = connect(server.url, receive_buffer=4096)
                unread.sendall(head(server.url, token, len(call_list), session) + call_list)
                stalled.append(unread)
            # Meanwhile the Mayor's calls answer promptly, and a new Mayor can connect.
            for n in range(20):
                started = time.monotonic()
                await call(mayor, "TaskGet", taskId=str(n + 1))
                took = time.monotonic() - started
                assert took < PROMPTLY, f"TaskGet took {took:.2f} s while other clients stalled"
            started = time.monotonic()
            async with http_session(server.url, token) as other:
                listed = await call(other, "TaskList", status="pending")
                assert len(listed["tasks"]) == 1000
            assert time.monotonic() - started < PROMPTLY * 3
            # The half-sent head is cut off after its deadline; nothing else was cut.
            half_head.settimeout(HEAD_SECONDS + DEADLINE)
            cut_at = time.monotonic()
            assert half_head.recv(4096) == b""
            assert time.monotonic() - cut_at < HEAD_SECONDS + 5
            for sock in stalled:
                sock.close()
            await call(mayor, "TaskGet", taskId="1")
    assert "Traceback" not in server.stderr
