"""What both HTTP servers of mcp-swarm share: the Mayor's (`serve --http`, server/http_wire.py)
and the workers' endpoint (server/worker_endpoint.py). Each runs uvicorn inside its own event
loop, on a socket bound here, behind a gate that reads a bearer token from the raw ASGI headers
and answers a refused request itself, before the MCP SDK sees it.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
import h11
import uvicorn
from mcp.server import streamable_http
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

# A connection must send a request's head (line and headers) within this long of opening, or of
# its last answer, or it is closed: one that trickles or stalls holds nothing for long.
HEAD_SECONDS = 10.0


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn as a part of a larger server: the stop signals stay with that server (uvicorn's
    own handling would take only SIGINT and SIGTERM, and raise them again once it is out), and
    `ready` is set once startup is over, whether or not it could serve (`started` says which)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextmanager
    def capture_signals(self) -> Generator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class HeadTimedProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, which closes a connection that has not sent a request's whole
    head within HEAD_SECONDS of opening or of its last answer (uvicorn waits for ever)."""

    _head_timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(HEAD_SECONDS, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_timer = None
        # uvicorn's cycle is None (typed otherwise) until the first request's head has come.
        cycle: Any = self.cycle
        waiting_for_head = self.conn.their_state is h11.IDLE and (cycle is None or cycle.response_complete)
        if waiting_for_head and not self.transport.is_closing():
            logger.info("closed a connection that sent no whole request in %s s", HEAD_SECONDS)
            self.transport.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` (port 0: a free one). Raises OSError: a
    `socket.gaierror` for a host that names no address here, another for a port not to be had."""
    family, kind, proto, _, where = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A port the last server left in TIME_WAIT may be taken again; one that listens may not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def authorization(scope: Scope) -> str | None:
    """The request's one `Authorization` header; None if it has none, or more than one (which
    of them would count is not for a gate to guess)."""
    given = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
    return given[0].decode("latin-1") if len(given) == 1 else None


def bearer_credential(value: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, or None for anything
    else (no header, another scheme, nothing after the scheme)."""
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


async def respond(
    send: Send, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
) -> None:
    """A whole answer from raw ASGI, for a request refused before it reaches the app."""
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *((key.encode(), value.encode()) for key, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, payload: object, headers: Mapping[str, str] | None = None
) -> None:
    await respond(send, status, json.dumps(payload).encode(), "application/json", headers)


class _ClientHungUp(logging.Filter):
    """The SDK logs a client that hangs up in the middle of sending its request as an error, with
    a traceback; it is the client's doing, and the server carries on: one line at INFO here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or not isinstance(record.exc_info[1], ClientDisconnect):
            return True
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "a client hung up in the middle of its request", ()
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


_HUNG_UP = _ClientHungUp()


def quiet_client_hang_ups() -> None:
    """Log a client that hangs up mid-request as one INFO line, not an error with a traceback:
    for the Mayor's HTTP server and the worker endpoint alike (the same SDK logger); once."""
    sdk = logging.getLogger(streamable_http.__name__)
    if _HUNG_UP not in sdk.filters:
        sdk.addFilter(_HUNG_UP)
