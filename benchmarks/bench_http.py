"""Tool latency over streamable HTTP against stdio, on the same machine, with 1 and 8 Mayors at once.

Run: `./dev bench http`, or `python -m benchmarks.bench_http` (`--quick` for a short run). One
project holds a plan of 50 tasks. Over stdio, each Mayor's session has its own `mcp-swarm serve`
process, as each agent client starts one; over HTTP, one `mcp-swarm serve --http 127.0.0.1:0`
process serves every session, each with the bearer token. Each session, all of them at once,
alternates a ping (the transport's own round trip: JSON-RPC in and out, no tool) and a cheap tool
call (`TaskGet` of a task, read from SQLite), and the time of each is taken in this client. What is
reported per transport and number of sessions: p50 and p95 of each, the tool call's p50 over the
ping's (what the tool costs on top of its transport), and HTTP's tool call over stdio's.

The sessions' clients share this one process and its event loop, over either transport, so that
both are measured from the same side. The SDK's HTTP client stops reading each answer's event
stream once it has the answer and closes that connection (`ss` shows the client's side in
TIME-WAIT), so every request over HTTP here also opens a TCP connection: a cost of this client,
which a client that reads the stream to its end does not pay (measured apart: a ping on a kept
connection costs the server about 2 ms). Rounds alternate which transport goes first. Exit
status is 1 when a target fails.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from benchmarks._mayor import call
from benchmarks._report import Check, load, quantile, report_targets
from mcp_swarm import __version__

# Targets, on the tool call over HTTP: with one Mayor, fast enough to go unnoticed in an agent's
# turn; with eight at once on one server, no call held up for long. How HTTP compares with stdio
# is printed for context: over stdio each Mayor has a server process (and a core) of its own,
# over HTTP they share one, so the ratio grows with the sessions by design.
ONE_SESSION_P50_MS = 10.0
MANY_SESSIONS_P95_MS = 250.0
TASKS = 50
STARTED_WITHIN = 30.0
_LISTENING = re.compile(r"serving the Mayor's tools at (http://\S+)")


@dataclass
class Sample:
    ping_ms: list[float] = field(default_factory=list[float])
    tool_ms: list[float] = field(default_factory=list[float])


async def _session_loop(client: Client, calls: int, warmup: int, sample: Sample) -> None:
    for n in range(warmup + calls):
        began = time.perf_counter()
        # The session's ping: Client.send_ping forwards to it, adding only a deprecation warning.
        await client.session.send_ping()
        ping = time.perf_counter() - began
        began = time.perf_counter()
        await call(client, "TaskGet", {"taskId": str(n % TASKS + 1)})
        tool = time.perf_counter() - began
        if n >= warmup:
            sample.ping_ms.append(ping * 1000)
            sample.tool_ms.append(tool * 1000)


def _stdio_client(project: Path) -> Client:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_swarm", "serve"], cwd=project)
    return Client(params, mode="legacy")


@asynccontextmanager
async def _http_server(project: Path, token: str) -> AsyncGenerator[str]:
    """`serve --http 127.0.0.1:0` in `project`; its URL once it listens."""
    log = project / "serve-http.err"
    env = {**os.environ, "MCP_SWARM_TOKEN": token}
    with log.open("wb") as err:
        # Popen returns once the process is forked: nothing here blocks the loop for long.
        process = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "mcp_swarm", "serve", "--http", "127.0.0.1:0"],
            cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTED_WITHIN
        while not (found := _LISTENING.search(log.read_text(errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve --http did not start: {log.read_text(errors='replace')}")
            await anyio.sleep(0.02)
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _measure(transport: str, project: Path, sessions: int, args: argparse.Namespace) -> Sample:
    """`sessions` Mayors at once over `transport`; every sample of all of them."""
    samples = [Sample() for _ in range(sessions)]
    async with AsyncExitStack() as stack:
        if transport == "http":
            token = secrets.token_urlsafe(32)
            url = await stack.enter_async_context(_http_server(project, token))
            clients: list[Client] = []
            for _ in range(sessions):
                http = await stack.enter_async_context(
                    create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
                )
                transport_streams = streamable_http_client(url, http_client=http)
                clients.append(await stack.enter_async_context(Client(transport_streams, mode="legacy")))
        else:
            clients = [await stack.enter_async_context(_stdio_client(project)) for _ in range(sessions)]
        async with anyio.create_task_group() as group:
            for client, sample in zip(clients, samples, strict=True):
                group.start_soon(_session_loop, client, args.calls, args.warmup, sample)
    merged = Sample()
    for sample in samples:
        merged.ping_ms += sample.ping_ms
        merged.tool_ms += sample.tool_ms
    return merged


async def _prepare(workdir: Path) -> Path:
    project = workdir / "project"
    project.mkdir()
    async with _stdio_client(project) as client:
        tasks = [{"subject": f"Task {n}", "description": "x" * 200} for n in range(1, TASKS + 1)]
        await call(client, "TaskCreatePlan", {"tasks": tasks})
    return project


def _line(transport: str, sample: Sample) -> str:
    def p(data: list[float], percent: int) -> str:
        value = statistics.median(data) if percent == 50 else quantile(data, percent)
        return f"{value:6.2f}"

    ratio = statistics.median(sample.tool_ms) / statistics.median(sample.ping_ms)
    return (
        f"  {transport:5}  ping p50 {p(sample.ping_ms, 50)} ms  p95 {p(sample.ping_ms, 95)} ms   "
        f"TaskGet p50 {p(sample.tool_ms, 50)} ms  p95 {p(sample.tool_ms, 95)} ms   "
        f"TaskGet/ping {ratio:4.2f}x  (n={len(sample.tool_ms)})"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100 calls per session, 1 round")
    parser.add_argument("--calls", type=int, help="timed pings and tool calls per session (default: 400)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls first (default: 20)")
    parser.add_argument("--rounds", type=int, help="rounds, alternating the order (default: 2)")
    parser.add_argument(
        "--sessions", type=int, nargs="+", default=[1, 8], help="Mayors at once, each count in turn"
    )
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = 100 if args.quick else 400
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    for name in ("calls", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(count < 1 for count in args.sessions):
        parser.error("--sessions must be at least 1")
    return args


async def _run(args: argparse.Namespace) -> int:
    print(
        f"mcp-swarm {__version__} HTTP against stdio: Python {platform.python_version()}, mcp "
        f"{version('mcp')}, uvicorn {version('uvicorn')}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.calls} pings and TaskGet calls per session, sessions {args.sessions}, {args.rounds} round(s)"
    )
    print(f"load average before: {load()}")
    gc.collect()
    gc.freeze()
    begun = time.perf_counter()
    results: dict[tuple[str, int], Sample] = {}
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-bench-") as scratch:
        project = await _prepare(Path(scratch))
        for n in range(args.rounds):
            for sessions in args.sessions:
                order = ("stdio", "http") if n % 2 == 0 else ("http", "stdio")
                for transport in order:
                    sample = await _measure(transport, project, sessions, args)
                    kept = results.setdefault((transport, sessions), Sample())
                    kept.ping_ms += sample.ping_ms
                    kept.tool_ms += sample.tool_ms
            print(f"round {n + 1} done; load {load()}")
    checks: list[Check] = []
    for sessions in args.sessions:
        stdio, http = results[("stdio", sessions)], results[("http", sessions)]
        print(f"\n== {sessions} Mayor session(s) at once ==")
        print(_line("stdio", stdio))
        print(_line("http", http))
        over = statistics.median(http.tool_ms) / statistics.median(stdio.tool_ms)
        ping_over = statistics.median(http.ping_ms) / statistics.median(stdio.ping_ms)
        print(f"  http / stdio: TaskGet p50 {over:.2f}x, ping p50 {ping_over:.2f}x")
        checks.append(Check(None, f"{sessions} session(s): HTTP TaskGet p50 {over:.2f}x stdio's"))
        if sessions == 1:
            p50 = statistics.median(http.tool_ms)
            checks.append(
                Check(
                    p50 < ONE_SESSION_P50_MS,
                    f"1 session: HTTP TaskGet p50 {p50:.2f} ms (target < {ONE_SESSION_P50_MS:g} ms)",
                )
            )
        else:
            p95 = quantile(http.tool_ms, 95)
            checks.append(
                Check(
                    p95 < MANY_SESSIONS_P95_MS,
                    f"{sessions} sessions: HTTP TaskGet p95 {p95:.2f} ms "
                    f"(target < {MANY_SESSIONS_P95_MS:g} ms)",
                )
            )
    return report_targets(checks, begun)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with these command-line arguments; the exit status."""
    return anyio.run(_run, _parse_args(argv), backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
