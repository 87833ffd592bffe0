"""The Mayor's tools over streamable HTTP (`serve --http`): the SDK's transport at /mcp, behind a
bearer token, under uvicorn.

One process serves every Mayor that connects: the server's lifespan (the engine, its supervision
of the workers) is entered once, when the server starts, and left once, when it stops; clients
come and go in between without stopping anything. A stop signal takes the way out that stdio's
end of input takes (server/stdio_wire.py): local workers stopped, their tasks pending again.

What protects the server from its clients:
- every request shows `Authorization: Bearer <token>` or is answered 401 before anything reads
  it (BearerGate); no OAuth metadata is offered, since a client then ignores a static header;
- bound to loopback, only loopback Host headers are served (DNS rebinding);
- a request body is at most MAX_MESSAGE_BYTES, as a message on stdio is; at most
  `http_max_sessions` sessions are open, and one idle for `http_session_idle_seconds` is closed
  (config.py; mcp-swarm.toml sets them);
- the server is one event loop: a client that is slow to send or to read holds only its own
  connection. One that opens connections and sends nothing whole is cut off after
  HEAD_SECONDS (server/asgi_serving.py), and past MAX_CONNECTIONS connections new requests
  are answered 503.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from anyio import CancelScope
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_swarm.config import Settings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.server.asgi_serving import (
    EmbeddedUvicorn,
    HeadTimedProtocol,
    authorization,
    bearer_credential,
    listening_socket,
    quiet_client_hang_ups,
    respond,
    respond_json,
)
from mcp_swarm.server.stdio_limit import MAX_MESSAGE_BYTES
from mcp_swarm.server.stdio_wire import STOP_SIGNALS, BoundedStdioServer

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
# Connections served at once; past it a new request is answered 503 (a full server, not a hang).
MAX_CONNECTIONS = 200
# On the way out, requests in flight are ended (InFlight); uvicorn's own cut is the last resort.
GRACE_SECONDS = 3


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT`; the host is 127.0.0.1 unless one is given."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text.strip()
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets, or its port is not told from it
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidInput(
            f"--http {text!r} is not [HOST:]PORT; for example 8765 (127.0.0.1 only), "
            "0.0.0.0:8765 (every interface) or [::1]:8765; port 0 picks a free one"
        )
    return Address(host, int(port_text))


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{MCP_PATH}"


class BearerGate:
    """Lets a request through only with `Authorization: Bearer <token>`; any other gets 401 and
    reaches nothing behind it. The comparison takes the same time wherever the tokens differ."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        if scope["type"] == "http" and self._shows_token(scope):
            await self._app(scope, receive, send)
            return
        if scope["type"] == "http":
            await _unauthorized(send)
        # Nothing else (a websocket) is served: uvicorn runs with none, so none arrives.

    def _shows_token(self, scope: Scope) -> bool:
        credential = bearer_credential(authorization(scope))
        # Back to the header's own bytes (latin-1 is one byte a character) for the comparison.
        return credential is not None and hmac.compare_digest(credential.encode("latin-1"), self._expected)


_UNAUTHORIZED = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {
        "code": -32001,
        "message": "unauthorized: send the header 'Authorization: Bearer <token>' with the token "
        "the server was started with (MCP_SWARM_TOKEN, or its token file)",
    },
}


async def _unauthorized(send: Send) -> None:
    # A bare `Bearer` challenge: no resource_metadata, so a client does not go looking for OAuth.
    await respond_json(send, 401, _UNAUTHORIZED, {"www-authenticate": "Bearer"})


def mayor_app(server: MCPServer[Any], address: Address, token: str, settings: Settings) -> ASGIApp:
    """The ASGI app: the SDK's streamable HTTP transport of `server` at /mcp, behind the token."""
    if address.loopback:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    else:
        # Bound to other interfaces, the names clients use are not known here: the token guards.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=MAX_MESSAGE_BYTES,
        max_sessions=settings.http_max_sessions,
        session_idle_timeout=settings.http_session_idle_seconds,
        transport_security=security,
        host=address.host,
    )
    return BearerGate(app, token)


class InFlight:
    """Every request in flight, so that a stopping server ends each one cleanly rather than leave
    uvicorn to cut them after its grace: a Mayor's open event stream, a long `wait`. A request
    cut here ends its answer (an event stream just ends); one that had not answered, and any
    that arrives while stopping, gets 503. The tools' own work is stopped by the lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._scopes: set[CancelScope] = set()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        for scope in list(self._scopes):
            scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._stopping:
            await _stopping(send)
            return
        started = completed = False

        async def tracked(message: Message) -> None:
            nonlocal started, completed
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        with CancelScope() as cut:
            self._scopes.add(cut)
            try:
                await self._app(scope, receive, tracked)
            finally:
                self._scopes.discard(cut)
        if not cut.cancelled_caught:
            return
        if not started:
            await _stopping(send)
        elif not completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stopping(send: Send) -> None:
    await respond(send, 503, b"the server is stopping", "text/plain; charset=utf-8", {"connection": "close"})


def listen(address: Address) -> socket.socket:
    """A socket listening on `address` (port 0: a free one), or a clear error."""
    try:
        return listening_socket(address.host, address.port)
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot listen on {address.host}:{address.port}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {address.host}:{address.port}: {exc.strerror or exc}; choose another "
            "port (0 picks a free one)"
        ) from None


async def serve_http(
    app: ASGIApp, sock: socket.socket, *, log_level: str, listening: Callable[[str], None]
) -> signal.Signals | None:
    """Serve `app` on `sock` until a stop signal; `listening(url)` once requests are answered.

    Returns the signal that stopped the server. The signals stay caught until the server is out,
    so a second one cannot cut the way out short.
    """
    host, port = sock.getsockname()[:2]
    requests = InFlight(app)
    config = uvicorn.Config(
        requests,
        lifespan="on",
        http=HeadTimedProtocol,
        ws="none",
        log_config=None,  # the command line's logging, to stderr, as configured there
        log_level=log_level.lower(),
        access_log=False,
        server_header=False,
        proxy_headers=False,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = EmbeddedUvicorn(config)
    stopped_by: list[signal.Signals] = []

    async def stop_on_signal(signals: AsyncIterator[signal.Signals]) -> None:
        async for signum in signals:
            if not stopped_by:
                logger.info("%s received: stopping", signum.name)
                stopped_by.append(signum)
                requests.stop()
                server.should_exit = True

    async def announce() -> None:
        await server.ready.wait()
        if server.started:
            listening(url_of(host, port))

    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as group:
            group.start_soon(stop_on_signal, signals)
            group.start_soon(announce)
            await server.serve(sockets=[sock])
            group.cancel_scope.cancel()
    return stopped_by[0] if stopped_by else None


def run_http(
    server: BoundedStdioServer[Any],
    address: Address,
    token: Callable[[], str],
    settings: Settings,
    say: Callable[[str], None],
) -> signal.Signals | None:
    """`serve --http`: check the state file, listen, find the token (`token()`, which may make
    one), serve until a stop signal; the signal.

    A domain error (a state file that cannot serve, a port taken, a token file that is not
    private) ends it before anything is served; the token is found last, so that a server that
    cannot start leaves no token file behind.
    """

    quiet_client_hang_ups()

    async def main() -> signal.Signals | None:
        await server.preflight()
        sock = listen(address)
        try:
            app = mayor_app(server, address, token(), settings)
        except BaseException:
            sock.close()
            raise
        return await serve_http(
            app,
            sock,
            log_level=settings.log_level,
            listening=lambda url: say(f"serving the Mayor's tools at {url}"),
        )

    return anyio.run(main)
