"""The engine alone, with no MCP: the same swarm as bench_swarm, driven by calling Swarm directly.

Run: `./dev bench engine`, or `python -m benchmarks.bench_engine` (`--rounds N`, default 5;
`--quick`: 1). 200 tasks in 4 waves of 50, each task blocked by the whole wave before, run by
`spawn(maxWorkers=16)` and `wait(mode="any")` calls on a Swarm in this process, each worker a
`command` runtime running `date +%s%N`; against the same program in the same waves through
`xargs -P 16`, alternating, medians compared.

Next to bench_swarm it splits the cost: what is left here is the engine's own (launching,
supervising, recording, the database), and the difference to bench_swarm is what MCP and stdio
add. It also prints the CPU time of this process's main thread (the event loop) and of the whole
process (the launcher thread and the database threads too): the event loop idle while the wall
time is long means the time goes to the serial start of processes, not to the loop.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from benchmarks._report import Check, load, report_targets
from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import PlanTask
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes import CommandProfile, CommandRuntime
from mcp_swarm.store import Store

WAVES, PER_WAVE, WORKERS = 4, 50, 16
RATIO_TARGET = 1.5  # the same target as bench_swarm's, which includes MCP


def _date() -> list[str]:
    path = shutil.which("date")
    if path is None:
        raise RuntimeError("date is not on PATH")
    return [path, "+%s%N"]


def _plan() -> list[PlanTask]:
    return [
        PlanTask(
            key=f"w{wave}t{j}",
            subject=f"Step {j + 1} of wave {wave + 1}",
            description="",
            blocked_by=[f"w{wave - 1}t{i}" for i in range(PER_WAVE)] if wave else [],
        )
        for wave in range(WAVES)
        for j in range(PER_WAVE)
    ]


@dataclass
class EngineRun:
    wall: float
    main_cpu: float  # the event loop's thread
    process_cpu: float  # every thread of this process (not the workers)
    rounds: int


async def _run_engine(workdir: Path) -> EngineRun:
    project = Path(tempfile.mkdtemp(prefix="project-", dir=workdir))
    state = project / ".mcp-swarm"
    runtime = CommandRuntime(CommandProfile(_date()), name="trivial")
    async with await Store.open(state / "swarm.db") as store:
        engine = Swarm(
            store, {"trivial": runtime}, default_runtime="trivial", state_dir=state, project_dir=project,
            limits=WorkerLimits(max_workers=WORKERS), placements=placements(),
        )  # fmt: skip
        await Ledger(store).create_plan(_plan())
        measured: EngineRun | None = None
        async with anyio.create_task_group() as group:
            await group.start(engine.run)
            started, main, process = time.perf_counter(), time.thread_time(), time.process_time()
            done = rounds = 0
            while done < WAVES * PER_WAVE:
                await engine.spawn(max_workers=WORKERS)
                result = await engine.wait(mode="any", timeout=30)
                done += len(result.done)
                rounds += 1
            wall = time.perf_counter() - started
            measured = EngineRun(wall, time.thread_time() - main, time.process_time() - process, rounds)
            group.cancel_scope.cancel()
    if measured is None:
        raise RuntimeError("the engine stopped before the plan was done")
    return measured


def _run_baseline(workdir: Path) -> float:
    command = ["xargs", "-P", str(WORKERS), "-I", "{}", *_date()]
    lines = "".join(f"{j}\n" for j in range(PER_WAVE)).encode()
    with (workdir / "baseline.log").open("ab") as log:
        started = time.perf_counter()
        for _ in range(WAVES):
            subprocess.run(command, input=lines, stdout=log, stderr=log, check=True)
        return time.perf_counter() - started


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 round")
    parser.add_argument(
        "--rounds", type=int, help="engine and baseline runs, alternating (default: 5; 1 with --quick)"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


async def _run(args: argparse.Namespace) -> int:
    print(f"engine benchmark: {WAVES * PER_WAVE} tasks in {WAVES} waves, {WORKERS} workers; load {load()}")
    begun = time.perf_counter()
    runs: list[EngineRun] = []
    baselines: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-bench-") as scratch:
        for n in range(args.rounds):
            if n % 2 == 0:
                baselines.append(_run_baseline(Path(scratch)))
                runs.append(await _run_engine(Path(scratch)))
            else:
                runs.append(await _run_engine(Path(scratch)))
                baselines.append(_run_baseline(Path(scratch)))
            run = runs[-1]
            print(
                f"round {n + 1}: engine {run.wall:.3f} s (event loop CPU {run.main_cpu:.3f} s, process CPU "
                f"{run.process_cpu:.3f} s, {run.rounds} spawn/wait rounds), xargs {baselines[-1]:.3f} s"
            )
    wall = statistics.median(run.wall for run in runs)
    base = statistics.median(baselines)
    main_cpu = statistics.median(run.main_cpu for run in runs)
    print(f"\nmedian: engine {wall:.3f} s, xargs -P {WORKERS} {base:.3f} s, ratio {wall / base:.2f}x")
    print(f"event loop busy {main_cpu / wall:.0%} of the engine's wall time")
    checks = [
        Check(wall / base <= RATIO_TARGET, f"engine / xargs {wall / base:.2f}x (target <= {RATIO_TARGET}x)"),
        Check(None, f"engine cost per task beyond xargs: {(wall - base) / (WAVES * PER_WAVE) * 1000:.2f} ms"),
    ]
    return report_targets(checks, begun)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with these command-line arguments; the exit status."""
    return anyio.run(_run, _parse_args(argv), backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
