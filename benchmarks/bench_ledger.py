"""Latency of the task tools over real stdio, against ledgers of 100, 1,000 and 10,000 tasks.

Run: `./dev bench ledger`, or `python -m benchmarks.bench_ledger` (`--quick` for a short run,
`--sizes 1000,10000` to choose the ledger sizes). Each size gets its own server process and
database: the installed `mcp-swarm serve`, spawned and spoken to exactly as Claude Code and Codex
do (stdio, initialize handshake), so the numbers include the JSON-RPC framing, the SDK's dispatch
and the pipes.

An MCP `ping` on the same connection is the floor: it pays for everything a tool call pays for
except the tool itself. The targets are stated against it, so that they hold on a slower or busier
machine too, and absolute milliseconds are used only where a person would feel them (TaskList).
Exit status is 1 when a target fails, so the benchmark can gate a change.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult, TextContent

from benchmarks._report import Check, load, quantile, report_targets
from mcp_swarm import __version__

PING = "ping"
CREATE = "TaskCreate"
UPDATE = "TaskUpdate"
GET = "TaskGet"
LIST = "TaskList"
OPS = (PING, CREATE, UPDATE, GET, LIST)

# Targets. Writes may cost a tool call's floor plus 1.5 floors of work; a listing of 1,000 tasks must
# come back faster than a person notices; from one size to the next (10x), per-task work must stay
# flat and the listing may grow at most linearly, each with 50% slack for noise on a 2-core machine.
WRITE_VS_PING = 2.5
LIST_1000_MS = 15.0
GROWTH_SLACK = 1.5

PLAN_CHUNK = 1_000  # the server's MAX_PLAN_TASKS: the largest plan one call may carry
CHAIN = 5  # tasks per dependency chain in the seeded ledger
WORKERS = 8


@dataclass
class SizeResult:
    size: int
    seed_seconds: float
    samples: dict[str, list[int]] = field(default_factory=dict[str, list[int]])
    # The pings taken in the same rounds as each operation: a burst of load from elsewhere on the
    # machine during one phase then moves an operation and its floor together, not its ratio.
    floors: dict[str, list[int]] = field(default_factory=dict[str, list[int]])
    list_tasks: int = 0
    list_text_bytes: int = 0
    list_wire_bytes: int = 0

    def p50(self, op: str) -> float:
        return statistics.median(self.samples[op]) / 1e6

    def p95(self, op: str) -> float:
        return quantile(self.samples[op], 95) / 1e6

    def vs_ping(self, op: str) -> float:
        floor = self.floors.get(op) or self.samples[PING]
        return self.p50(op) / (statistics.median(floor) / 1e6)


def _text(result: CallToolResult, op: str) -> str:
    if result.is_error:
        raise RuntimeError(f"{op} failed: {result.content}")
    first = result.content[0]
    if not isinstance(first, TextContent):
        raise RuntimeError(f"{op} answered {type(first).__name__}, not text")
    return first.text


async def _call(client: Client, op: str, args: dict[str, Any]) -> str:
    return _text(await client.call_tool(op, args), op)


async def _seed(client: Client, size: int, rng: random.Random) -> list[str]:
    """A ledger shaped like a real swarm's: chains of dependent tasks, some done, some under way.

    Plans go in chunks of the largest size the server accepts, so 10,000 tasks take seconds, not
    the minutes that one TaskCreate each would.
    """
    ids: list[str] = []
    for start in range(0, size, PLAN_CHUNK):
        plan: list[dict[str, Any]] = []
        for n in range(start, min(size, start + PLAN_CHUNK)):
            task: dict[str, Any] = {
                "key": f"t{n}",
                "subject": f"Implement step {n % CHAIN + 1} of feature {n // CHAIN}",
                "description": f"Feature {n // CHAIN}, step {n % CHAIN + 1}: " + "details of the work. " * 8,
            }
            # Chains never cross a chunk boundary (PLAN_CHUNK is a multiple of CHAIN), so every
            # blocker is a key of the same plan.
            if n % CHAIN:
                task["blockedBy"] = [f"t{n - 1}"]
            plan.append(task)
        created = json.loads(await _call(client, "TaskCreatePlan", {"tasks": plan}))
        ids.extend(created["ids"])
    # One chain in five has its head completed and its second task claimed by a worker, so listings
    # carry all three common states (completed, in_progress with an owner, pending blocked/ready).
    for head in range(0, size - 1, CHAIN * 5):
        await _call(client, UPDATE, {"taskId": ids[head], "status": "completed"})
        worker = f"worker-{rng.randrange(WORKERS)}"
        await _call(client, UPDATE, {"taskId": ids[head + 1], "status": "in_progress", "owner": worker})
    return ids


def _operations(
    client: Client, ids: list[str], rng: random.Random
) -> dict[str, Callable[[], Awaitable[None]]]:
    """One call of each operation, with fresh random arguments each time."""
    counter = iter(range(1_000_000_000))

    async def ping() -> None:
        # The session's ping is the one `Client.send_ping` forwards to, minus its deprecation
        # warning: ping is gone from the 2026 protocol, but Claude Code and Codex connect with the
        # initialize handshake, where it is the one request that crosses the whole stack and no tool.
        await client.session.send_ping()

    async def create() -> None:
        n = next(counter)
        # Most tasks the Mayor adds wait for something already in the ledger.
        await _call(
            client,
            CREATE,
            {
                "subject": f"Follow-up task {n}",
                "description": "Found while reviewing the previous wave: " + "more work to do. " * 8,
                "metadata": {"source": "bench"},
                "blockedBy": [rng.choice(ids)],
            },
        )

    async def update() -> None:
        # A new metadata value every time, so every call really writes a row and an event.
        n = next(counter)
        await _call(
            client,
            UPDATE,
            {
                "taskId": rng.choice(ids),
                "owner": f"worker-{rng.randrange(WORKERS)}",
                "metadata": {"attempt": n},
            },
        )

    async def get() -> None:
        await _call(client, GET, {"taskId": rng.choice(ids)})

    async def list_all() -> None:
        await _call(client, LIST, {})

    return {PING: ping, CREATE: create, UPDATE: update, GET: get, LIST: list_all}


async def _timed(op: Callable[[], Awaitable[None]]) -> int:
    start = time.perf_counter_ns()
    await op()
    return time.perf_counter_ns() - start


async def _measure_size(size: int, args: argparse.Namespace, workdir: Path) -> SizeResult:
    rng = random.Random(args.seed + size)  # noqa: S311 - which tasks to read, not a secret
    db = workdir / f"ledger-{size}.db"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_swarm", "serve", "--db", str(db)],
        # Started in the scratch directory, so no mcp-swarm.toml of whoever runs this is picked up.
        cwd=workdir,
    )
    async with Client(params, mode="legacy") as client:
        started = time.perf_counter()
        ids = await _seed(client, size, rng)
        result = SizeResult(size=size, seed_seconds=time.perf_counter() - started)
        ops = _operations(client, ids, rng)
        samples: dict[str, list[int]] = {op: [] for op in OPS}
        read_floor: list[int] = []
        create_floor: list[int] = []

        # Warm-up: the first calls pay for imports, the client's one tools/list (it checks results
        # against the listed output schemas) and SQLite's page cache; none of that is steady state.
        for _ in range(args.warmup):
            for op in (PING, UPDATE, GET):
                await ops[op]()
        list_warm = [await _timed(ops[LIST]) for _ in range(max(2, args.warmup // 5))]

        # TaskList at 10,000 tasks is slow; take as many samples as fit its time budget, but no
        # fewer than a p95 needs to mean something.
        list_n = max(
            args.min_list_samples,
            min(args.samples, int(args.list_budget * 1e9 / statistics.median(list_warm))),
        )

        # Reads and updates interleave with pings in a random order each round, so that noise from
        # the rest of the machine lands on all of them alike instead of on whichever ran last.
        for _ in range(args.samples):
            round_ops = [PING, UPDATE, GET]
            rng.shuffle(round_ops)
            for op in round_ops:
                samples[op].append(await _timed(ops[op]))
            read_floor.append(samples[PING][-1])

        # Listings run on their own: after a large answer the server is still freeing it when the
        # next request arrives, which would bill the listing's cost to whatever call came next.
        for _ in range(list_n):
            samples[LIST].append(await _timed(ops[LIST]))

        # Measured after the listings, because every TaskCreate grows the ledger: at 100 tasks, 200
        # creates would have tripled the list being measured.
        text = await _call(client, LIST, {})
        listing = json.loads(text)
        result.list_tasks = len(listing["tasks"])
        result.list_text_bytes = len(text.encode())
        # The answer travels twice, as text and as structured content; the text is a JSON string
        # inside JSON, so its quotes are escaped once more on the wire.
        result.list_wire_bytes = len(
            json.dumps({"content": [{"type": "text", "text": text}], "structuredContent": listing})
        )

        for _ in range(args.warmup):
            await ops[CREATE]()
        for _ in range(args.samples):
            round_ops = [PING, CREATE]
            rng.shuffle(round_ops)
            for op in round_ops:
                samples[op].append(await _timed(ops[op]))
            create_floor.append(samples[PING][-1])
        result.samples = samples
        result.floors = {UPDATE: read_floor, GET: read_floor, CREATE: create_floor}
    return result


def _print_size(result: SizeResult) -> None:
    print(f"\n== {result.size:,} tasks (seeded in {result.seed_seconds:.2f} s) ==")
    # p50/ping: against the pings of the same rounds (all pings for ping itself and TaskList).
    print(f"  {'operation':<11} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p50/ping':>9}")
    for op in OPS:
        p50 = result.p50(op)
        print(
            f"  {op:<11} {len(result.samples[op]):>5} {p50:>8.3f} {result.p95(op):>8.3f} "
            f"{result.vs_ping(op):>8.2f}x"
        )
    per_task = result.list_text_bytes / result.list_tasks
    wire = result.list_wire_bytes / result.list_tasks
    print(
        f"  TaskList answer: {result.list_tasks:,} tasks, {result.list_text_bytes:,} B of JSON text, "
        f"{per_task:.1f} B/task (about {wire:.1f} B/task on the wire, text plus structured content)"
    )


def _checks(results: list[SizeResult]) -> list[Check]:
    checks: list[Check] = []
    for r in results:
        for op in (CREATE, UPDATE):
            ratio = r.vs_ping(op)
            checks.append(
                Check(
                    ratio <= WRITE_VS_PING,
                    f"{op} p50 at {r.size:,} tasks is {ratio:.2f}x ping p50 "
                    f"({r.p50(op):.3f} vs {r.p50(op) / ratio:.3f} ms; target <= {WRITE_VS_PING}x)",
                )
            )
        if r.size == 1_000:
            checks.append(
                Check(
                    r.p50(LIST) <= LIST_1000_MS,
                    f"TaskList p50 at 1,000 tasks is {r.p50(LIST):.3f} ms (target <= {LIST_1000_MS:g} ms)",
                )
            )
    for small, large in itertools.pairwise(results):
        scale = large.size / small.size
        span = f"{small.size:,} -> {large.size:,} tasks"
        for op in (CREATE, UPDATE, GET):
            growth = large.p50(op) / small.p50(op)
            checks.append(
                Check(
                    growth <= GROWTH_SLACK,
                    f"{op} p50 growth {span}: {growth:.2f}x (target <= {GROWTH_SLACK}x, flat)",
                )
            )
        # The floor does not depend on the ledger; if it moved, so did the machine, and every
        # other growth ratio of this span carries that drift too.
        growth = large.p50(PING) / small.p50(PING)
        checks.append(Check(None, f"ping p50 growth {span}: {growth:.2f}x (the floor; should be ~1x)"))
        growth = large.p50(LIST) / small.p50(LIST)
        limit = scale * GROWTH_SLACK
        checks.append(
            Check(
                growth <= limit,
                f"TaskList p50 growth {span}: {growth:.2f}x for {scale:g}x the tasks "
                f"(target <= {limit:g}x, at most linear)",
            )
        )
    return checks


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer samples, and sizes 100 and 1,000 only")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part.replace("_", "")) for part in text.split(",")],
        help="comma-separated ledger sizes (default: 100,1000,10000; 100,1000 with --quick)",
    )
    parser.add_argument(
        "--samples", type=int, help="timed calls per operation (default: 200; 50 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed calls per operation first (default: 30; 10 with --quick)"
    )
    parser.add_argument(
        "--list-budget",
        type=float,
        default=8.0,
        help="seconds of TaskList calls per size at most (default: 8)",
    )
    parser.add_argument(
        "--min-list-samples", type=int, default=30, help="TaskList samples at least (default: 30)"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="random seed for the choice of tasks")
    args = parser.parse_args(argv)
    if args.sizes is not None and min(args.sizes) < 1:
        parser.error("every size must be at least 1 task")
    if args.sizes is None:
        args.sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000]
    if args.samples is None:
        args.samples = 50 if args.quick else 200
    if args.warmup is None:
        args.warmup = 10 if args.quick else 30
    args.min_list_samples = min(args.min_list_samples, args.samples)
    return args


async def _run(args: argparse.Namespace) -> int:
    print(
        f"mcp-swarm {__version__} ledger benchmark over stdio: Python {platform.python_version()}, "
        f"mcp {version('mcp')}, {platform.machine()}, {os.cpu_count()} CPUs, samples {args.samples}, "
        f"warm-up {args.warmup}"
    )
    # Client and server each need a core; anything else running skews every number, so say so.
    print(f"load average before: {load()}")
    # This client's own full collections walk every object its imports made (~90,000), tens of ms
    # each, and land on whichever call is running: the server's tail, not ours, is what we measure.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-bench-") as scratch:
        for size in sorted(args.sizes):
            result = await _measure_size(size, args, Path(scratch))
            _print_size(result)
            results.append(result)

    checks = _checks(results)
    return report_targets(checks, started)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with these command-line arguments; the exit status."""
    return anyio.run(_run, _parse_args(argv), backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
