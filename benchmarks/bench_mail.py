"""The cost of a message round trip, Mayor to worker and back, through Agent Mail.

Run: `./dev bench mail`, or `python -m benchmarks.bench_mail` (`--trips N`; `--quick`: 50). A real
server, as in a swarm: the Mayor's `mcp-swarm serve`, driven by the SDK's client over stdio, and
its worker endpoint, driven by the SDK's streamable HTTP client with a worker's token. One round trip:
the Mayor's `send_message` to the worker, the worker's `fetch_inbox` until the message is there,
its `send_message` back, and the Mayor's `fetch_inbox` until the reply is there. Messages are read
by asking, as agents do, so the round trip is four tool calls when nothing has to be asked twice.
The baseline, in the same run, is four MCP `ping`s, two on each connection: the transport's own
cost for as many round trips.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from benchmarks._mayor import call
from benchmarks._report import Check, load, quantile, report_targets
from mcp_swarm.engine.tokens import mint_token
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, now, worker_name
from mcp_swarm.placement.processes import this_process
from mcp_swarm.server.worker_endpoint import PORT_FILE
from mcp_swarm.store import Store

# A round trip should cost no more than a handful of the transport's own round trips.
RATIO_TARGET = 3.0


async def _swarm(db: Path) -> tuple[str, str]:
    """One task run by one worker, as spawn leaves them (supervised by this process, which lives:
    the server adopts nothing); the worker's id and its attempt's token."""
    me = this_process()
    token, hashed = mint_token()
    async with await Store.open(db) as store:
        created = await Ledger(store).create_plan([PlanTask(subject="Answer the Mayor")])
        at = now()
        async with store.write() as tx:
            numbers = await tx.workers.insert_many(
                [int(created.ids[0])], runtime="command", cwd=str(db.parent), now=at,
                supervisor=f"{me.pid}:{me.start_time}",
            )  # fmt: skip
            number = next(iter(numbers.values()))
            await tx.workers.set_logs({number: str(db.parent / "worker.log")}, {number: hashed})
            await tx.tasks.assign({task: worker_name(n) for task, n in numbers.items()}, at)
    return worker_name(number), token


def _server(db: Path) -> Client:
    args = ["-m", "mcp_swarm", "serve", "--db", str(db)]
    return Client(StdioServerParameters(command=sys.executable, args=args, cwd=db.parent), mode="legacy")


def _worker(db: Path, token: str) -> tuple[httpx2.AsyncClient, Client]:
    """The worker's session with the server's endpoint (its port is recorded beside the database)."""
    port = json.loads((db.parent / PORT_FILE).read_text())["port"]
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    url = f"http://127.0.0.1:{port}/mcp"
    return http, Client(streamable_http_client(url, http_client=http), mode="legacy")


async def _until_message(client: Client, since: int) -> tuple[dict[str, Any], int]:
    """Ask for the inbox until a message after `since` is there; it, and how many asks it took."""
    asks = 0
    while True:
        asks += 1
        messages = (await call(client, "fetch_inbox", {"sinceId": since}))["messages"]
        if messages:
            return messages[-1], asks


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="50 round trips")
    parser.add_argument("--trips", type=int, help="timed round trips (default: 200; 50 with --quick)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed ones first (default: 10)")
    args = parser.parse_args(argv)
    if args.trips is None:
        args.trips = 50 if args.quick else 200
    if args.trips < 1:
        parser.error("--trips must be at least 1")
    return args


async def _trips(
    mayor: Client,
    worker: Client,
    worker_id: str,
    args: argparse.Namespace,
    trips: list[float],
    pings: list[float],
) -> int:
    """The round trips, timed into `trips` and `pings`; how many inbox asks came back empty."""
    extra_asks = 0
    mayor_seen = worker_seen = 0
    for n in range(args.warmup + args.trips):
        started = time.perf_counter()
        await call(mayor, "send_message", {"to": worker_id, "subject": f"question {n}"})
        question, asks = await _until_message(worker, worker_seen)
        worker_seen = question["id"]
        await call(worker, "send_message", {"subject": f"answer {n}", "type": "info"})
        answer, more = await _until_message(mayor, mayor_seen)
        mayor_seen = answer["id"]
        took = time.perf_counter() - started
        if answer["subject"] != f"answer {n}" or question["subject"] != f"question {n}":
            raise RuntimeError(f"round trip {n} mixed up its messages: {question} / {answer}")
        started = time.perf_counter()
        # The session's ping, as in bench_ledger: the one request that crosses the whole stack
        # and no tool (Client.send_ping only adds a deprecation warning to it).
        await mayor.session.send_ping()
        await worker.session.send_ping()
        await worker.session.send_ping()
        await mayor.session.send_ping()
        baseline = time.perf_counter() - started
        if n >= args.warmup:
            trips.append(took * 1000)
            pings.append(baseline * 1000)
            extra_asks += asks + more - 2
    return extra_asks


async def _run(args: argparse.Namespace) -> int:
    transports = "the Mayor over stdio, the worker over HTTP"
    print(f"Agent Mail round trip ({transports}), {args.trips} trips; Python {sys.version.split()[0]}")
    print(f"load average before: {load()}")
    begun = time.perf_counter()
    trips: list[float] = []
    pings: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-mail-") as scratch:
        db = Path(scratch) / "swarm.db"
        worker_id, token = await _swarm(db)
        async with _server(db) as mayor:
            http, worker_session = _worker(db, token)
            async with http, worker_session as worker:
                extra_asks = await _trips(mayor, worker, worker_id, args, trips, pings)
    trip, ping = statistics.median(trips), statistics.median(pings)
    print("\n== Mayor -> worker -> Mayor ==")
    print(f"  round trip: p50 {trip:.2f} ms, p95 {quantile(trips, 95):.2f} ms, max {max(trips):.2f} ms")
    print(f"  four pings (baseline): p50 {ping:.2f} ms, p95 {quantile(pings, 95):.2f} ms")
    print(f"  ratio {trip / ping:.2f}x; inbox asks that came back empty: {extra_asks} in {args.trips} trips")
    checks = [
        Check(
            trip / ping <= RATIO_TARGET,
            f"round trip {trip / ping:.2f}x four pings (target <= {RATIO_TARGET:g}x)",
        ),
        Check(None, f"round trip p50 {trip:.2f} ms"),
    ]
    return report_targets(checks, begun)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with these command-line arguments; the exit status."""
    return anyio.run(_run, _parse_args(argv), backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
