"""The worker endpoint: the worker tools over streamable HTTP on 127.0.0.1, for this server's
workers (and any live worker of its database), each known by its attempt's token.

Every server that runs workers (`mcp-swarm serve`, `run`, `demo`) serves one, in its own task
group, for as long as it runs: uvicorn on a socket bound here, the MCP SDK's streamable HTTP
transport at `/mcp` behind a gate that lets through only requests whose
`Authorization: Bearer <token>` is the token of a live worker attempt. Anything else gets 401
before it reaches the SDK, and changes nothing. The tools themselves (server/worker.py) find the
caller from the same header at each call, so no argument can name another worker.

The port is ephemeral, but it is kept in the state directory (`worker-endpoint.json`, with the
server that holds it) and tried first by the next server there: a worker in a tmux session
outlives its server, and the server that adopts it can then serve it at the address in its
environment. What remains: two live servers on one database cannot share a port, so the second
takes another one (and leaves the record to the first, while it lives); a worker adopted from a
dead peer reaches the swarm again only if its server's port could be taken over. Its result and
its exit are judged from its log and status file all the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_swarm import __version__
from mcp_swarm.config import Settings
from mcp_swarm.errors import SwarmError
from mcp_swarm.placement.processes import supervisor_alive, this_process
from mcp_swarm.server.asgi_serving import (
    EmbeddedUvicorn,
    HeadTimedProtocol,
    authorization,
    listening_socket,
    quiet_client_hang_ups,
    respond_json,
)
from mcp_swarm.server.worker import INSTRUCTIONS, NOT_A_WORKER, WorkerAccess, build_worker_tools, worker_token
from mcp_swarm.store import Store

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PATH = "/mcp"
# Where the last server on this state directory served its workers: the next one tries that port.
PORT_FILE = "worker-endpoint.json"
# A larger request body is refused by the SDK (413) before it is parsed. A worker's call needs far
# less (a message is at most 64 KiB), but an argument too long for its tool (a megabyte, say)
# still reaches the tool and gets a tool error that says what is wrong, as on stdio.
MAX_BODY_BYTES = 4 << 20
# How long stopping waits for requests still being answered.
STOP_GRACE_SECONDS = 2


@dataclass(frozen=True)
class WorkerEndpoint:
    url: str
    port: int


@contextlib.asynccontextmanager
async def worker_endpoint(store: Store, settings: Settings) -> AsyncGenerator[WorkerEndpoint]:
    """Serve the worker tools until the block ends. Yields the endpoint, serving."""
    access = WorkerAccess(store)
    mcp = MCPServer(
        "mcp-swarm-worker",
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=build_worker_tools(access),
        log_level=settings.log_level,
    )
    # Host and Origin must be loopback: a web page the user visits cannot reach the endpoint by
    # rebinding a name of its own to 127.0.0.1.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{HOST}:*", "localhost:*"],
        allowed_origins=[f"http://{HOST}:*", "http://localhost:*"],
    )
    quiet_client_hang_ups()
    # Stateless: each request stands alone, known by its token; nothing is kept for a worker
    # that goes away without a goodbye.
    app = mcp.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=security,
        max_request_body_size=MAX_BODY_BYTES,
        host=HOST,
    )
    me = this_process()
    recorded = _recorded(settings.state_dir)
    sock = _bind(None if recorded is None else recorded[0])
    port = int(sock.getsockname()[1])
    # The record is the port of the server that owns it: ours, unless a live server here holds it.
    keep_record = recorded is not None and recorded[0] != port and supervisor_alive(recorded[1])
    config = uvicorn.Config(
        TokenGate(app, access),
        lifespan="off",  # the SDK's session manager is run below, in our task group
        log_config=None,  # our logging stays as the server configured it
        access_log=False,
        # A local client that stalls before sending a whole request is cut off, as on the Mayor's.
        http=HeadTimedProtocol,
        server_header=False,
        timeout_graceful_shutdown=STOP_GRACE_SECONDS,
    )
    server = EmbeddedUvicorn(config)
    endpoint = WorkerEndpoint(f"http://{HOST}:{port}{PATH}", port)
    try:
        async with mcp.session_manager.run(), anyio.create_task_group() as group:
            # Shielded: even when the server is cancelled (Ctrl-C), uvicorn stops in its own way
            # (closes the socket, answers or drops what is in flight), bounded by the deadline.
            stopping = anyio.CancelScope(shield=True)
            group.start_soon(_serve, server, sock, stopping)
            await server.ready.wait()
            if not server.started:
                raise SwarmError(f"the worker endpoint could not start on {HOST}:{port}")
            if not keep_record:
                _record_port(settings.state_dir, port, f"{me.pid}:{me.start_time}")
            logger.info("worker endpoint at %s", endpoint.url)
            try:
                yield endpoint
            finally:
                server.should_exit = True
                stopping.deadline = anyio.current_time() + STOP_GRACE_SECONDS + 1
    finally:
        sock.close()


async def _serve(server: uvicorn.Server, sock: socket.socket, scope: anyio.CancelScope) -> None:
    with scope:
        await server.serve([sock])


class TokenGate:
    """ASGI middleware: a request gets through only with the token of a live worker attempt."""

    def __init__(self, app: ASGIApp, access: WorkerAccess) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets, and uvicorn runs no lifespan here
        token = worker_token(authorization(scope))
        try:
            worker = None if token is None else await self.access.identify(token)
        except SwarmError as exc:  # the database cannot answer now
            await _refuse(send, 503, f"the swarm's database cannot answer now: {exc}; try again")
            return
        if worker is None:
            await _refuse(send, 401, NOT_A_WORKER, {"www-authenticate": 'Bearer realm="mcp-swarm-worker"'})
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    await respond_json(send, status, {"error": message}, headers)


def _bind(recorded: int | None) -> socket.socket:
    """A listening socket on 127.0.0.1: the port the last server here used, if it is free, else
    any free port."""
    if recorded:
        try:
            return listening_socket(HOST, recorded)
        except OSError:
            pass  # taken (by a live server here, most likely): any free port will do
    return listening_socket(HOST, 0)


def _recorded(state_dir: Path) -> tuple[int, str] | None:
    """The port recorded here, and the server ("pid:start time") that recorded it."""
    try:
        data: Any = json.loads((state_dir / PORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = cast(dict[str, Any], data) if isinstance(data, dict) else {}
    port, server = record.get("port"), record.get("server")
    # Only a port a user's server may have bound: whatever else the file says is ignored.
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        return None
    return port, server if isinstance(server, str) else ""


def _record_port(state_dir: Path, port: int, server: str) -> None:
    """Note the port for the next server here, replacing the file (never writing through a link)."""
    target = state_dir / PORT_FILE
    temporary = state_dir / f".{PORT_FILE}.{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps({"port": port, "server": server}) + "\n")
        os.replace(temporary, target)
    except OSError as exc:
        # Only the next server's first try depends on it.
        logger.warning("cannot record the worker endpoint's port in %s: %s", target, exc)
        temporary.unlink(missing_ok=True)
