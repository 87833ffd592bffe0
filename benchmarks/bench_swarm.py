"""Throughput of a Mayor's spawn/wait loop over real stdio, against `xargs -P` running the same work.

Run: `./dev bench swarm`, or `python -m benchmarks.bench_swarm` (`--quick` for a short run). A plan
of 200 tasks in 4 waves of 50 is created with TaskCreatePlan; by default each task waits for every
task of the wave before, so waves are barriers for the swarm as they are for the baseline
(`--blockers 2` makes a sparse plan, where a task may start before its wave is due). A Mayor loop
over real stdio runs it to the end: `spawn()` fills the free slots up to 16 live workers,
`wait(mode="any")` returns as soon as one has ended, and again, until every task is completed. Each
worker is a `command` runtime running `date +%s%N`: a process that does next to nothing and says
when it ran, so what is measured is the engine's own cost per task (assignment, process start,
supervision, verdict, the JSON-RPC round trips). The baseline runs the same argv as many times, in
the same waves with the same parallelism: one `xargs -P 16` per wave, each started when the one
before has ended. A third contender is the floor under both: the same loop over stdio against
benchmarks/bare_server.py, a server that starts the same processes with a log each and keeps no
state. Rounds rotate which of the three goes first, and the medians are compared.

The wake-up latency of `wait` is measured apart, one worker at a time: a program that sleeps long
enough for `wait` to be blocked, then writes `time.time_ns()` to its log and exits at once. The
latency runs from that timestamp to the `wait` call returning to this client, on the same clock.
Exit status is 1 when a target fails, so the benchmark can gate a change.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from benchmarks._mayor import call, plan, toml_list
from benchmarks._report import Check, load, quantile, report_targets, spread
from mcp_swarm import __version__

# Targets. The whole run may take at most 1.5 times the plain `xargs -P` baseline, and `wait` must
# hand a worker's end to the Mayor within 20 ms at the median.
RATIO_TARGET = 1.5
WAKE_P50_MS = 20.0

TRIVIAL_RUNTIME = "trivial"
PROBE_RUNTIME = "probe"
# The probe worker: sleep (so that `wait` is already blocked when it ends), then write the time as
# the very last thing before exiting. os._exit skips the interpreter's shutdown, so no
# milliseconds of cleanup fall between the timestamp and the exit.
PROBE_SOURCE = (
    "import os, sys, time; time.sleep(float(sys.argv[1])); "
    "os.write(1, b'%d\\n' % time.time_ns()); os._exit(0)"
)
REPOSITORY = Path(__file__).resolve().parent.parent
# How spawn's reason for a task left behind at a limit begins: the spawn's maxWorkers, the
# configured ceiling, or this server's share of it.
SKIPPED_FOR_LIMIT = ("maxWorkers", "the configured ceiling", "this server's fair share")


def _trivial_argv(work_ms: float = 0.0) -> list[str]:
    """The worker of the throughput run: about as little as a process can do, and it says when.

    date prints the time in ns to its stdout (the worker's log; the command runtime reports its
    last line as the summary) and exits: one small C program, no shell, the same argv every time.
    With `work_ms`, the worker is `sleep` for that long instead (and says nothing): to see how the
    engine's fixed cost per task weighs against workers that take some time.
    """
    program = "sleep" if work_ms else "date"
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} is not on PATH")
    return [path, f"{work_ms / 1000:g}"] if work_ms else [path, "+%s%N"]


def _probe_argv(sleep_seconds: float) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", PROBE_SOURCE, f"{sleep_seconds:g}"]


def _project(workdir: Path, args: argparse.Namespace) -> Path:
    """A scratch project whose mcp-swarm.toml configures the two command runtimes."""
    project = Path(tempfile.mkdtemp(prefix="project-", dir=workdir))
    (project / "mcp-swarm.toml").write_text(
        f'default_runtime = "{TRIVIAL_RUNTIME}"\n'
        f"max_workers = {args.workers}\n\n"
        f'[runtimes.{TRIVIAL_RUNTIME}]\ntype = "command"\n'
        f"argv = {toml_list(_trivial_argv(args.work_ms))}\n\n"
        f'[runtimes.{PROBE_RUNTIME}]\ntype = "command"\n'
        f"argv = {toml_list(_probe_argv(args.probe_sleep))}\n",
        encoding="utf-8",
    )
    return project


def _client(project: Path) -> Client:
    # The installed package, started in the project as Claude Code starts it, so it reads the
    # project's mcp-swarm.toml and keeps its state in the project's .mcp-swarm/.
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_swarm", "serve"], cwd=project)
    return Client(params, mode="legacy")


def _exit_ns(done: dict[str, Any]) -> int:
    """When a worker's program ended, by its own clock reading: its last line of output."""
    summary = done.get("summary")
    if not isinstance(summary, str):
        summary = Path(cast(str, done["log"])).read_text(encoding="utf-8").strip().splitlines()[-1]
    return int(summary.strip())


def _check_succeeded(done: dict[str, Any]) -> None:
    if done.get("state") != "succeeded" or done.get("taskStatus") != "completed":
        raise RuntimeError(f"worker did not complete its task: {json.dumps(done)}")


# -- the Mayor's loop ---------------------------------------------------------------------------


@dataclass
class SwarmRun:
    wall: float
    plan_seconds: float
    spawn_ms: list[float] = field(default_factory=list[float])
    wait_ms: list[float] = field(default_factory=list[float])
    started_per_spawn: list[int] = field(default_factory=list[int])
    # Spawns that left a ready task behind yet started fewer workers than the last wait showed free
    # slots (maxWorkers minus its `running`): the loop would then not keep every slot busy.
    refill_misses: int = 0
    # Workers the server counts against maxWorkers (assigned, verdict not yet recorded), weighted
    # by time over the run, from the workers' started_at and ended_at.
    mean_live: float = 0.0
    full_share: float = 0.0  # share of the run with every slot taken
    exit_to_result_ms: list[float] = field(default_factory=list[float])
    server_seconds: list[float] = field(default_factory=list[float])
    # Time during which workers of two waves were live at once, summed over the wave boundaries: a
    # task starts as soon as its own blockers are done, while xargs waits for the whole wave.
    overlap_seconds: float = 0.0


async def _run_swarm(project: Path, args: argparse.Namespace) -> SwarmRun:
    total = args.waves * args.per_wave
    async with _client(project) as client:
        started = time.perf_counter()
        created = await call(
            client, "TaskCreatePlan", {"tasks": plan(args.waves, args.per_wave, args.blockers)}
        )
        plan_seconds = time.perf_counter() - started
        wave_of = {task_id: n // args.per_wave for n, task_id in enumerate(cast(list[str], created["ids"]))}
        in_flight: set[str] = set()
        completed = 0
        running = 0  # live workers as the last wait saw them

        started = time.perf_counter()
        run = SwarmRun(wall=0.0, plan_seconds=plan_seconds)
        with anyio.fail_after(args.run_timeout):
            while completed < total:
                before = time.perf_counter_ns()
                spawned = await call(client, "spawn", {"maxWorkers": args.workers})
                after = time.perf_counter_ns()
                run.spawn_ms.append((after - before) / 1e6)
                workers = cast(list[dict[str, Any]], spawned.get("workers", []))
                skipped = cast(list[dict[str, str]], spawned.get("skipped", []))
                in_flight.update(worker["workerId"] for worker in workers)
                run.started_per_spawn.append(len(workers))
                left_behind = any(s["reason"].startswith(SKIPPED_FOR_LIMIT) for s in skipped)
                if left_behind and len(workers) < args.workers - running:
                    run.refill_misses += 1
                if not in_flight:
                    raise RuntimeError(f"nothing runs and nothing was spawned with {completed}/{total} done")

                before = time.perf_counter_ns()
                result = await call(client, "wait", {"mode": "any", "timeoutSeconds": 30})
                returned_ns = time.time_ns()
                run.wait_ms.append((time.perf_counter_ns() - before) / 1e6)
                running = len(cast(list[str], result.get("running", [])))
                for done in cast(list[dict[str, Any]], result.get("done", [])):
                    _check_succeeded(done)
                    in_flight.discard(done["workerId"])
                    if not args.work_ms:
                        run.exit_to_result_ms.append((returned_ns - _exit_ns(done)) / 1e6)
                    run.server_seconds.append(float(done.get("durationSeconds", 0.0)))
                    completed += 1
        run.wall = time.perf_counter() - started

    _server_view(run, project / ".mcp-swarm" / "swarm.db", args.workers, wave_of)
    return run


def _server_view(run: SwarmRun, db: Path, slots: int, wave_of: dict[str, int]) -> None:
    """How many workers were live over the run, and how long waves overlapped, from the server's file.

    Read once the server has stopped (read-only): a worker is live from its assignment
    (started_at) to its recorded verdict (ended_at), which is what maxWorkers counts.
    """
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = cast(
            list[tuple[int, str, str]],
            conn.execute("SELECT task_id, started_at, ended_at FROM workers").fetchall(),
        )
    intervals = [
        (
            wave_of[str(task)],
            datetime.fromisoformat(started).timestamp(),
            datetime.fromisoformat(ended).timestamp(),
        )
        for task, started, ended in rows
    ]
    changes = sorted([(start, 1) for _, start, _ in intervals] + [(end, -1) for _, _, end in intervals])
    # Sorted by time, and at one instant ends before starts: a slot freed and taken again in the
    # same millisecond is not counted as one more live worker.
    live = 0
    weighted = full = 0.0
    for (at, delta), (following, _) in itertools.pairwise(changes):
        live += delta
        weighted += live * (following - at)
        full += (following - at) if live >= slots else 0.0
    span = changes[-1][0] - changes[0][0]
    if span > 0:
        run.mean_live, run.full_share = weighted / span, full / span
    waves = max(wave for wave, _, _ in intervals) + 1
    for wave in range(waves - 1):
        last_end = max(end for w, _, end in intervals if w == wave)
        first_start = min(start for w, start, _ in intervals if w == wave + 1)
        run.overlap_seconds += max(0.0, last_end - first_start)


# -- the baseline -------------------------------------------------------------------------------


async def _run_baseline(workdir: Path, args: argparse.Namespace) -> float:
    """The same program, as many times, in the same waves, `args.workers` at a time: xargs -P."""
    xargs = shutil.which("xargs")
    if xargs is None:
        raise RuntimeError("xargs is not on PATH")
    # -I: one run per input line, and as no argument holds the {} the line itself is not passed on,
    # so every run has exactly the workers' argv.
    command = [xargs, "-P", str(args.workers), "-I", "{}", *_trivial_argv(args.work_ms)]
    lines = "".join(f"{j}\n" for j in range(args.per_wave)).encode()
    # Each program's output goes to a file, as each worker's goes to its log.
    handle, name = tempfile.mkstemp(prefix="baseline-", suffix=".log", dir=workdir)
    os.close(handle)  # opened again for appending, as a worker's log is
    output = anyio.Path(name)
    async with await anyio.open_file(output, "ab") as log:
        started = time.perf_counter()
        for _ in range(args.waves):
            await anyio.run_process(command, input=lines, stdout=log.wrapped, stderr=log.wrapped, check=True)
        wall = time.perf_counter() - started
    runs = len((await output.read_text(encoding="utf-8")).split())
    if not args.work_ms and runs != args.waves * args.per_wave:
        raise RuntimeError(f"the baseline ran {runs} programs, not {args.waves * args.per_wave}")
    return wall


# -- the floor: the same loop against a server with no state ------------------------------------


async def _run_bare(workdir: Path, args: argparse.Namespace) -> float:
    """The Mayor's loop against benchmarks/bare_server.py: per wave, queue it, then spawn and wait
    until all of it has ended. Timed from the first spawn to the last wait, as mcp-swarm's run is."""
    logs = Path(tempfile.mkdtemp(prefix="bare-", dir=workdir))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "benchmarks.bare_server", str(logs), *_trivial_argv(args.work_ms)],
        cwd=REPOSITORY,  # where `-m benchmarks.bare_server` is found
    )
    async with Client(params, mode="legacy") as client:
        started = time.perf_counter()
        with anyio.fail_after(args.run_timeout):
            for _ in range(args.waves):
                await call(client, "queue", {"count": args.per_wave})
                ended = 0
                while ended < args.per_wave:
                    await call(client, "spawn", {"maxWorkers": args.workers})
                    result = await call(client, "wait", {})
                    if result["failed"]:
                        raise RuntimeError(f"{result['failed']} worker(s) failed on the bare server")
                    ended += result["ended"]
        return time.perf_counter() - started


# -- the wake-up probe --------------------------------------------------------------------------


@dataclass
class Probe:
    latency_ms: list[float] = field(default_factory=list[float])
    # Probes whose worker ended before `wait` was even sent: not a wake-up, so left out.
    not_blocked: int = 0


async def _run_probe(project: Path, args: argparse.Namespace) -> Probe:
    probe = Probe()
    async with _client(project) as client:
        plan = [{"subject": f"Probe {n + 1}"} for n in range(args.probes + args.probe_warmup)]
        ids = cast(list[str], (await call(client, "TaskCreatePlan", {"tasks": plan}))["ids"])
        with anyio.fail_after(args.run_timeout):
            for n, task_id in enumerate(ids):
                spawned = await call(client, "spawn", {"taskIds": [task_id], "runtime": PROBE_RUNTIME})
                if len(spawned.get("workers", [])) != 1:
                    raise RuntimeError(f"probe {task_id} did not start: {json.dumps(spawned)}")
                sent_ns = time.time_ns()
                result = await call(client, "wait", {"mode": "any", "timeoutSeconds": 30})
                returned_ns = time.time_ns()
                [done] = cast(list[dict[str, Any]], result["done"])
                _check_succeeded(done)
                exit_ns = _exit_ns(done)
                if n < args.probe_warmup:
                    continue
                if exit_ns < sent_ns:
                    probe.not_blocked += 1
                    continue
                probe.latency_ms.append((returned_ns - exit_ns) / 1e6)
    return probe


# -- report -------------------------------------------------------------------------------------


def _print_swarm(runs: list[SwarmRun], args: argparse.Namespace) -> None:
    total = args.waves * args.per_wave
    spawn_ms = [ms for run in runs for ms in run.spawn_ms]
    wait_ms = [ms for run in runs for ms in run.wait_ms]
    exit_ms = [ms for run in runs for ms in run.exit_to_result_ms]
    server_ms = [s * 1000 for run in runs for s in run.server_seconds]
    spawns = [len(run.spawn_ms) for run in runs]
    print(f"\n== the Mayor's loop, all {len(runs)} round(s) together ==")
    print(
        f"  TaskCreatePlan of {total} tasks: {statistics.median(r.plan_seconds for r in runs) * 1000:.0f} ms"
    )
    print(
        f"  spawn/wait round trips per run: {statistics.median(spawns):g} "
        f"(min {min(spawns)}, max {max(spawns)})"
    )
    print(f"  workers started per spawn: mean {total * len(runs) / sum(spawns):.2f}")
    mean_live = ", ".join(f"{run.mean_live:.1f}" for run in runs)
    full = ", ".join(f"{run.full_share:.0%}" for run in runs)
    print(
        f"  live workers (assigned, verdict not yet recorded), time-weighted mean per run: {mean_live} "
        f"of {args.workers}; all {args.workers} slots taken {full} of the time"
    )
    print(f"  spawn call: {spread(spawn_ms, 'ms')}")
    print(f"  wait call:  {spread(wait_ms, 'ms')}")
    print(
        f"  worker lifetime on the server (started_at to ended_at, ms resolution): {spread(server_ms, 'ms')}"
    )
    if exit_ms:
        print(
            "  worker exit to its result back at the Mayor (includes time spent in spawn): "
            f"{spread(exit_ms, 'ms')}"
        )
    overlap = ", ".join(f"{run.overlap_seconds * 1000:.0f}" for run in runs)
    print(
        f"  waves overlapped (a task starts once its own blockers are done): {overlap} ms per run, summed "
        "over the wave boundaries; xargs waves never overlap"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="4 waves of 20 tasks, 1 round, 20 probes")
    parser.add_argument("--waves", type=int, default=4, help="dependent waves (default: 4)")
    parser.add_argument("--per-wave", type=int, help="tasks per wave (default: 50; 20 with --quick)")
    parser.add_argument("--workers", type=int, default=16, help="maxWorkers and xargs -P (default: 16)")
    parser.add_argument(
        "--blockers",
        type=int,
        help="tasks of the wave before that each task waits for (default: all of them, so that waves are "
        "barriers as they are for xargs; fewer lets the swarm start a task before its wave is due)",
    )
    parser.add_argument(
        "--rounds", type=int, help="swarm and baseline runs, alternating (default: 5; 1 with --quick)"
    )
    parser.add_argument("--probes", type=int, help="timed wake-ups of wait (default: 50; 20 with --quick)")
    parser.add_argument("--probe-warmup", type=int, default=3, help="untimed probes first (default: 3)")
    parser.add_argument(
        "--probe-sleep", type=float, default=0.05, help="seconds a probe worker sleeps (default: 0.05)"
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=0.0,
        help="make each worker `sleep` this long instead of running `date` (default: 0, date)",
    )
    parser.add_argument(
        "--run-timeout", type=float, default=120.0, help="seconds one run may take at most (default: 120)"
    )
    args = parser.parse_args(argv)
    if args.per_wave is None:
        args.per_wave = 20 if args.quick else 50
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.blockers is None:
        args.blockers = args.per_wave
    if args.probes is None:
        args.probes = 20 if args.quick else 50
    for name in ("waves", "per_wave", "workers", "blockers", "rounds", "probes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.blockers > args.per_wave:
        parser.error("--blockers cannot exceed --per-wave")
    return args


async def _run(args: argparse.Namespace) -> int:
    total = args.waves * args.per_wave
    print(
        f"mcp-swarm {__version__} swarm benchmark over stdio: Python {platform.python_version()}, "
        f"mcp {version('mcp')}, {platform.machine()}, {os.cpu_count()} CPUs; {total} tasks in "
        f"{args.waves} waves of {args.per_wave} ({args.blockers} blocker(s) each), {args.workers} workers, "
        f"{args.rounds} round(s)"
    )
    print(f"worker: {' '.join(_trivial_argv(args.work_ms))}")
    # Server, client and workers share the machine's cores; anything else running skews every number.
    print(f"load average before: {load()}")
    # This client's own full collections would land on whichever call is running (see bench_ledger).
    gc.collect()
    gc.freeze()
    begun = time.perf_counter()
    swarm_runs: list[SwarmRun] = []
    baselines: list[float] = []
    bares: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-bench-") as scratch:
        workdir = Path(scratch)
        for n in range(args.rounds):
            # Rotate which goes first, so a drift in the machine's load favours none of the three.
            for contender in (n + k for k in range(3)):
                if contender % 3 == 0:
                    baselines.append(await _run_baseline(workdir, args))
                elif contender % 3 == 1:
                    swarm_runs.append(await _run_swarm(_project(workdir, args), args))
                else:
                    bares.append(await _run_bare(workdir, args))
            run, base, bare = swarm_runs[-1], baselines[-1], bares[-1]
            print(
                f"round {n + 1}: mcp-swarm {run.wall:.3f} s, xargs -P {args.workers} {base:.3f} s, "
                f"ratio {run.wall / base:.2f}x; bare server {bare:.3f} s ({bare / base:.2f}x); load {load()}"
            )
        probe = await _run_probe(_project(workdir, args), args)

    swarm_wall = statistics.median(run.wall for run in swarm_runs)
    base_wall = statistics.median(baselines)
    ratio = swarm_wall / base_wall
    per_task_ms = (swarm_wall - base_wall) / total * 1000
    bare_wall = statistics.median(bares)
    _print_swarm(swarm_runs, args)
    print(f"\n== wall time, median of {args.rounds} round(s) ==")
    print(f"  mcp-swarm (first spawn to last result): {swarm_wall:.3f} s")
    print(f"  xargs -P {args.workers}, one per wave:         {base_wall:.3f} s")
    print(f"  ratio mcp-swarm / baseline: {ratio:.2f}x")
    print(f"  overhead per task: {per_task_ms:.2f} ms ((mcp-swarm - baseline) / {total})")
    print(f"  bare server (MCP, processes and logs, no state; benchmarks/bare_server.py): {bare_wall:.3f} s")
    print(f"  ratio bare server / baseline: {bare_wall / base_wall:.2f}x: what no engine can win back here")
    print(
        f"  ratio mcp-swarm / bare server: {swarm_wall / bare_wall:.2f}x; the engine's own cost per task: "
        f"{(swarm_wall - bare_wall) / total * 1000:.2f} ms"
    )
    print("\n== wake-up of wait: worker exit to wait returning, one worker at a time ==")
    if probe.latency_ms:
        print(f"  {spread(probe.latency_ms, 'ms', 2)}")
    print(f"  probes left out because the worker ended before wait was sent: {probe.not_blocked}")

    checks = [
        Check(
            all(run.refill_misses == 0 for run in swarm_runs),
            "every spawn filled the free slots while ready tasks were left "
            f"(misses per run: {[run.refill_misses for run in swarm_runs]})",
        ),
        Check(ratio <= RATIO_TARGET, f"wall time ratio {ratio:.2f}x (target <= {RATIO_TARGET}x)"),
    ]
    if probe.latency_ms:
        p50 = statistics.median(probe.latency_ms)
        checks.append(
            Check(p50 < WAKE_P50_MS, f"wait wake-up p50 {p50:.2f} ms (target < {WAKE_P50_MS:g} ms)")
        )
        checks.append(Check(None, f"wait wake-up p95 {quantile(probe.latency_ms, 95):.2f} ms"))
    else:
        checks.append(Check(False, "no wake-up of wait was measured: every probe ended before wait was sent"))
    return report_targets(checks, begun)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with these command-line arguments; the exit status."""
    return anyio.run(_run, _parse_args(argv), backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
