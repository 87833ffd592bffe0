"""A real `mcp-swarm serve --http 127.0.0.1:0` process, and the SDK's own streamable HTTP client
connected to it with a bearer token."""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncGenerator, Generator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.support.cli import cli_environment
from tests.support.mcp_client import installed_command

STARTED_WITHIN = 30.0
_LISTENING = re.compile(r"serving the Mayor's tools at (http://\S+)")


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class HttpServer:
    process: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, signum: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `signum` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)


def start_server(
    project: Path, *args: str, token: str | None, log: str = "serve.err", umask: int = -1, **env: str
) -> subprocess.Popen[bytes]:
    """`mcp-swarm serve --http 127.0.0.1:0 ARGS` in `project`, stderr to `project/log`;
    MCP_SWARM_TOKEN is `token` if one is given; `umask` the process's, if given."""
    extra = dict(env)
    if token is not None:
        extra["MCP_SWARM_TOKEN"] = token
    with (project / log).open("wb") as err:
        return subprocess.Popen(
            [installed_command(), "serve", "--http", "127.0.0.1:0", *args],
            cwd=project, env=cli_environment(**extra), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, umask=umask,
        )  # fmt: skip


def listening_url(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    """The URL the server says it serves at, once it says so; fails if it exits first."""
    deadline = time.monotonic() + STARTED_WITHIN
    # Another process's doing, with no event to wait on: looked at until it is so.
    while True:
        found = _LISTENING.search(stderr_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        status = process.poll()
        assert status is None, f"the server exited with {status}: {stderr_path.read_text()}"
        assert time.monotonic() < deadline, f"the server did not listen: {stderr_path.read_text()}"
        time.sleep(0.02)


@contextmanager
def http_server(
    project: Path, *args: str, token: str | None, umask: int = -1, **env: str
) -> Generator[HttpServer]:
    """A running `serve --http` in `project`; killed at the end if the test left it running."""
    process = start_server(project, *args, token=token, umask=umask, **env)
    try:
        yield HttpServer(process, listening_url(process, project / "serve.err"), project / "serve.err")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@asynccontextmanager
async def http_session(url: str, token: str | None) -> AsyncGenerator[Client]:
    """A Mayor's session through the SDK's streamable HTTP client, showing `token` (None: no header)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    http = create_mcp_http_client(headers=headers)
    # legacy: the initialize handshake, as Claude Code and Codex connect.
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        yield client


def dump(database: Path) -> list[str]:
    """Every row of the database as SQL, read-only: what "nothing changed" is checked against."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())
