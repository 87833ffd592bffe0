"""How long a server takes at start-up to recover the live workers a dead server left behind.

Run: `./dev bench recovery`, or `python -m benchmarks.bench_recovery` (`--workers N`, `--rounds R`;
`--quick`: 2 rounds). Each round builds a database whose workers are all recorded live and
supervised by a server that no longer runs: half of them with a process that still runs (`sleep`,
in a session of its own, as a worker is started), half with a process that has exited. The engine
is then started on it, and the time from entering `Swarm.run` to the engine being ready (recovery
done: every running worker adopted and supervised, every dead one recorded as lost and its task
pending again) is measured. The baseline is the same start-up on a database with as many tasks and
no live worker, in the same process. Printed: both times, the difference per recovered worker, and
the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from benchmarks._report import Check, load, quantile, report_targets
from mcp_swarm.engine.swarm import Swarm
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask, now, worker_name
from mcp_swarm.placement.builtin import placements
from mcp_swarm.placement.processes import start_process
from mcp_swarm.runtimes import CommandProfile, CommandRuntime
from mcp_swarm.store import Store

# A server that no longer runs: pid 1 is never a process started one tick after boot.
DEAD_SUPERVISOR = "1:1"
# Start-up with 100 workers to recover should stay well under a second.
TARGET_SECONDS = 1.0


async def _database(path: Path, workers: int, *, live: bool) -> None:
    """`workers` tasks; with `live`, each in_progress under a worker of a dead server, half of
    whose processes still run."""
    sleep = shutil.which("sleep")
    if sleep is None:
        raise RuntimeError("sleep is not on PATH")
    logs = path.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with await Store.open(path) as store:
        created = await Ledger(store).create_plan([PlanTask(subject=f"task {n}") for n in range(workers)])
        if not live:
            return
        at = now()
        async with store.write() as tx:
            numbers = await tx.workers.insert_many(
                [int(task_id) for task_id in created.ids],
                runtime="command",
                cwd=str(path.parent),
                now=at,
                supervisor=DEAD_SUPERVISOR,
            )
            await tx.workers.set_logs({n: str(logs / f"{worker_name(n)}.log") for n in numbers.values()})
            await tx.tasks.assign({task: worker_name(n) for task, n in numbers.items()}, at)
        records: list[tuple[int, int, int]] = []
        for index, number in enumerate(sorted(numbers.values())):
            running = index % 2 == 0
            process = await start_process(
                [sleep, "300" if running else "0"],
                cwd=path.parent,
                env={"SWARM_WORKER_ID": worker_name(number)},
                output=logs / f"{worker_name(number)}.log",
            )
            if not running:
                await process.wait()  # it ended while no server ran
            records.append((number, process.identity.pid, process.identity.start_time))
        async with store.write() as tx:
            await tx.workers.started(records)


async def _start_up(path: Path) -> tuple[float, dict[str, int]]:
    """Seconds from entering Swarm.run to the engine being ready; then the workers by state.

    Leaving stops every worker the engine supervises, the adopted `sleep`s included.
    """
    async with await Store.open(path) as store:
        runtime = CommandRuntime(CommandProfile(["true"]), "command")
        swarm = Swarm(
            store,
            {"command": runtime},
            default_runtime="command",
            state_dir=path.parent,
            project_dir=path.parent,
            placements=placements(),
        )
        seconds, states = 0.0, dict[str, int]()
        async with anyio.create_task_group() as group:
            began = time.perf_counter()
            await group.start(swarm.run)
            seconds = time.perf_counter() - began
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                states = dict(conn.execute("SELECT state, count(*) FROM workers GROUP BY state").fetchall())
            group.cancel_scope.cancel()
    return seconds, states


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--workers", type=int, default=100, help="recorded live workers (default: 100)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 5; 2 with --quick)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    for name in ("workers", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


async def _run(args: argparse.Namespace) -> int:
    print(
        f"recovery at start-up: {args.workers} recorded live workers of a dead server, half still "
        f"running; {args.rounds} round(s); Python {sys.version.split()[0]}"
    )
    print(f"load average before: {load()}")
    begun = time.perf_counter()
    recovering: list[float] = []
    baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-recovery-") as scratch:
        for n in range(args.rounds):
            live, empty = Path(scratch) / f"live-{n}" / "swarm.db", Path(scratch) / f"empty-{n}" / "swarm.db"
            await _database(live, args.workers, live=True)
            await _database(empty, args.workers, live=False)
            base_seconds, _ = await _start_up(empty)
            seconds, states = await _start_up(live)
            baseline.append(base_seconds)
            recovering.append(seconds)
            print(
                f"round {n + 1}: with recovery {seconds * 1000:.1f} ms, "
                f"without {base_seconds * 1000:.1f} ms; workers after start-up: {states}"
            )
            expected = {"running": (args.workers + 1) // 2, "lost": args.workers // 2}
            if states != expected:
                raise RuntimeError(f"recovery left {states}, not {expected}")
    median, base = statistics.median(recovering), statistics.median(baseline)
    per_worker = (median - base) / args.workers * 1000
    print(f"\n== start-up, median of {args.rounds} ==")
    p95 = quantile(recovering, 95)
    print(f"  with {args.workers} workers to recover: {median * 1000:.1f} ms (p95 {p95 * 1000:.1f} ms)")
    print(f"  with none (baseline):             {base * 1000:.1f} ms")
    print(f"  ratio {median / base:.1f}x; recovery costs {per_worker:.2f} ms per worker")
    checks = [
        Check(
            median < TARGET_SECONDS,
            f"start-up with {args.workers} workers to recover {median:.3f} s (target < {TARGET_SECONDS:g} s)",
        ),
        Check(None, f"recovery per worker {per_worker:.2f} ms"),
    ]
    return report_targets(checks, begun)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with these command-line arguments; the exit status."""
    return anyio.run(_run, _parse_args(argv), backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
