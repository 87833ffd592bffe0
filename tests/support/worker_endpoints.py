"""Reaching the worker endpoint as a worker does: the SDK's streamable HTTP client on 127.0.0.1,
with an attempt's token as the bearer token.

The endpoint runs either in the test's own process (`worker_endpoint` on the test's store, real
HTTP all the same) or inside a real `mcp-swarm serve` process, found through the port it records
in the state directory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_swarm.config import load_settings
from mcp_swarm.engine.tokens import mint_token
from mcp_swarm.models import worker_name
from mcp_swarm.server.worker_endpoint import PORT_FILE, worker_endpoint
from mcp_swarm.store import Store
from tests.support.mcp_client import stdio_parameters

# Where the endpoint runs: in the test's process, or in a real `mcp-swarm serve` (slow: a process).
Host = Literal["in-process", "serve"]
HOSTS = ["in-process", pytest.param("serve", marks=pytest.mark.slow)]

# A raw JSON-RPC call that would mark the caller's task done, for the tests that forge one.
FORGED_REPORT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "report_result", "arguments": {"status": "done", "summary": "forged"}},
}


async def mint_tokens(store: Store, numbers: list[int]) -> dict[str, str]:
    """A token for the current attempt of each of these workers, as spawn mints them:
    {worker id: token}, the hashes stored."""
    tokens = {number: mint_token() for number in numbers}
    async with store.write() as tx:
        logs = {worker.number: worker.log for worker in await tx.workers.many(numbers)}
        await tx.workers.set_logs(logs, {number: hashed for number, (_, hashed) in tokens.items()})
    return {worker_name(number): token for number, (token, _) in tokens.items()}


@asynccontextmanager
async def endpoint_url(host: Host, db: Path) -> AsyncGenerator[str]:
    """The URL of a worker endpoint serving the swarm in `db`, for the block."""
    settings = load_settings(cwd=db.parent, db=db)
    if host == "in-process":
        async with await Store.open(db) as store, worker_endpoint(store, settings) as endpoint:
            yield endpoint.url
        return
    port_file = settings.state_dir / PORT_FILE
    port_file.unlink(missing_ok=True)
    # The Mayor's server, over stdio as an agent client runs it: its endpoint serves while it runs.
    async with Client(stdio_parameters(db, cwd=db.parent), mode="legacy"):
        # Written once the endpoint serves, before the server answers its first request.
        assert port_file.is_file(), f"the server recorded no worker endpoint in {port_file}"
        yield f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}/mcp"


@asynccontextmanager
async def worker_session(url: str, token: str | None) -> AsyncGenerator[Client]:
    """A worker's MCP session with the endpoint, with this bearer token (None: no header)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        yield client


@asynccontextmanager
async def as_worker(db: Path, number: int) -> AsyncGenerator[Client]:
    """A session of that (live) worker with an endpoint in the test's process, with a token
    minted for its attempt."""
    async with await Store.open(db) as store:
        [token] = (await mint_tokens(store, [number])).values()
        async with (
            worker_endpoint(store, load_settings(cwd=db.parent, db=db)) as endpoint,
            worker_session(endpoint.url, token) as client,
        ):
            yield client


# A worker that hands the test its endpoint and token (in a file of the test's own, as no real
# worker would), then runs until `go` (all of them) or `<worker id>.go` appears in its directory.
GATED = """\
import json, os, pathlib, sys, time
here, me = pathlib.Path(sys.argv[1]), os.environ["SWARM_WORKER_ID"]
endpoint = {"url": os.environ["SWARM_URL"], "token": os.environ["SWARM_TOKEN"]}
(here / (me + ".tmp")).write_text(json.dumps(endpoint))
os.replace(here / (me + ".tmp"), here / (me + ".json"))
while not (here / "go").exists() and not (here / (me + ".go")).exists():
    time.sleep(0.01)
"""


def configure_gated(project: Path, *, tmux_socket: str | None = None) -> Path:
    """mcp-swarm.toml in `project` whose default runtime is the gated worker, in tmux sessions on
    `tmux_socket` if given; the gates' directory."""
    gates = project / "gates"
    gates.mkdir()
    (gates / "gated.py").write_text(GATED)
    argv = [sys.executable, str(gates / "gated.py"), str(gates)]
    distributed = (
        "" if tmux_socket is None else f'mode = "distributed"\ntmux_socket = {json.dumps(tmux_socket)}\n'
    )
    (project / "mcp-swarm.toml").write_text(
        f'default_runtime = "gated"\n{distributed}\n'
        f'[runtimes.gated]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    return gates


async def handed_endpoint(gates: Path, worker_id: str) -> tuple[str, str]:
    """The (url, token) a running gated worker was given."""
    handed = gates / f"{worker_id}.json"
    with anyio.fail_after(30):
        while not handed.exists():  # noqa: ASYNC110 - another process writes it
            await anyio.sleep(0.01)
    endpoint = json.loads(handed.read_text())
    return endpoint["url"], endpoint["token"]
