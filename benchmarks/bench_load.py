"""A load test: many tasks and workers through two `mcp-swarm serve` processes sharing one database.

Run: `./dev bench load`, or `python -m benchmarks.bench_load` (`--quick` for a small run;
`--tasks`, `--workers`, `--work-ms`, `--waves` scale it; `--keep` keeps the scratch directory).
Two servers are started over real stdio with the SDK's client, each in a directory of its own and
both on one SQLite file, as two Mayor sessions sharing a swarm. One Mayor creates the plan (1,000
tasks in 4 waves, each task blocked by 2 tasks of the wave before) with TaskCreatePlan; then both
run the Mayor's loop at the same time, `spawn()` then `wait(mode="any")` and again, competing for
the same ready tasks, until every task is completed. spawn counts maxWorkers against the live
workers of the whole database, whichever server started them, so both servers are configured with
the same `max_workers` (100): together they never run more than that, and each takes whatever
slots it finds free.

Each worker is a `command` runtime: `sh` appends "task worker" to a witness file, then becomes
`sleep`. The sleep (1 s by default) is what keeps the slots full. On a 2-core machine the two
servers together start and judge about 170 workers a second at most (measured with 500 ms
workers, when the engine and not the sleep is the limit, and the slots were full only half the
time), so refilling 100 slots takes about 0.6 s: a worker must outlive that for 100 to be alive
at once. At 1 s about 96 of the 100 slots are taken on average, at 2 s a little more for twice
the run time. The wall time has a floor of tasks x sleep / slots to compare it with. The witness
is evidence from the workers' side, independent of what the servers recorded: a task started
twice shows there even if the ledger were wrong.

Printed: wall time, throughput (total and per server), the tasks each server ran, the peak memory
of each server process (VmHWM), spawn and wait latency, the live workers over time (sampled from
the database), and whether anything was lost or run twice: the ledger (every task completed by
exactly one worker, no other attempt, history and owners agreeing, no live worker left,
`PRAGMA integrity_check`), the witness file, and the Mayors' view (each worker started by one
spawn answer and handed over by exactly one wait). Exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from benchmarks._mayor import Mayor, call, mayor_loop, memory_kib, plan, server_pid, toml_list
from benchmarks._report import Check, load, quantile, report_targets, spread
from mcp_swarm import __version__

RUNTIME = "load"
SERVERS = ("a", "b")
# TaskCreatePlan takes at most this many tasks in one call, and the plan is made in one.
MAX_TASKS = 1000
SAMPLE_SECONDS = 0.05
LIVE_STATES = ("starting", "running")
# Workers' verdicts are recorded as `"completed"`: the history keeps values as JSON.
COMPLETED_JSON = '"completed"'
IN_PROGRESS_JSON = '"in_progress"'
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class LoadConfig:
    tasks: int = 1000
    workers: int = 100
    work_ms: float = 1000.0
    waves: int = 4
    blockers: int = 2
    run_timeout: float = 300.0
    # The first Mayor fills the slots before the second one starts: a Mayor joining a busy swarm.
    head_start: bool = False

    @property
    def per_wave(self) -> int:
        return self.tasks // self.waves


@dataclass
class LoadRun:
    config: LoadConfig
    db: Path
    mayors: list[Mayor]
    plan_seconds: float = 0.0
    wall: float = 0.0
    live: list[int] = field(default_factory=list[int])  # live workers in the database, sampled
    ran_by: dict[str, int] = field(default_factory=dict[str, int])  # Mayor name -> tasks its server ran
    ledger: list[str] = field(default_factory=list[str])  # problems found in the database
    witness: list[str] = field(default_factory=list[str])  # problems found in the workers' witness file
    delivery: list[str] = field(default_factory=list[str])  # problems in what spawn and wait answered
    # Problems tests/support/invariants.py finds, which hold of any swarm database; None: not checked.
    invariants: list[str] | None = None


# -- set-up -------------------------------------------------------------------------------------


def _worker_argv(work_ms: float, witness: Path) -> list[str]:
    """sh writes the witness line, then execs sleep: one live process per worker while it works.

    The task and worker ids are passed as arguments, never spliced into the script, and a single
    short O_APPEND write per worker keeps concurrent lines whole.
    """
    sh, sleep = shutil.which("sh"), shutil.which("sleep")
    if sh is None or sleep is None:
        raise RuntimeError("sh and sleep must be on PATH")
    script = 'echo "$1 $2" >> "$3" && exec "$4" "$5"'
    seconds = f"{work_ms / 1000:g}"
    return [sh, "-c", script, "load-worker", "{task_id}", "{worker_id}", str(witness), sleep, seconds]


def _write_config(path: Path, config: LoadConfig, witness: Path) -> None:
    path.write_text(
        f'default_runtime = "{RUNTIME}"\n'
        f"max_workers = {config.workers}\n\n"
        f'[runtimes.{RUNTIME}]\ntype = "command"\n'
        f"argv = {toml_list(_worker_argv(config.work_ms, witness))}\n",
        encoding="utf-8",
    )


def _server(project: Path, db: Path, config_file: Path) -> Client:
    # Each server in its own directory, so that its process can be told apart from the other's in
    # /proc; both on one database and one configuration.
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_swarm", "serve", "--db", str(db), "--config", str(config_file)],
        cwd=project,
    )
    return Client(params, mode="legacy")


def _read(db: Path) -> sqlite3.Connection:
    """A read-only connection: nothing this client does can change what the servers recorded."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


# -- the run ------------------------------------------------------------------------------------


async def _sample(run: LoadRun, stop: anyio.Event) -> None:
    """Live workers in the database and each server's RSS, every SAMPLE_SECONDS until `stop`."""
    with contextlib.closing(_read(run.db)) as conn:
        while not stop.is_set():
            (live,) = conn.execute(
                "SELECT count(*) FROM workers WHERE state IN (?, ?)", LIVE_STATES
            ).fetchone()
            run.live.append(int(live))
            for mayor in run.mayors:
                mayor.rss_kib.append(memory_kib(mayor.pid)["VmRSS"])
            with anyio.move_on_after(SAMPLE_SECONDS):
                await stop.wait()


def _prepare(config: LoadConfig, workdir: Path) -> tuple[LoadRun, Path, Path]:
    """The scratch layout: the shared state directory, the configuration, the witness file, and a
    directory per Mayor; the run to fill in, the configuration file and the witness file."""
    workdir = workdir.resolve()  # compared with the servers' cwd as /proc shows it
    (workdir / "state").mkdir()
    witness = workdir / "witness.txt"
    config_file = workdir / "mcp-swarm.toml"
    _write_config(config_file, config, witness)
    mayors = [Mayor(name, workdir / f"mayor-{name}") for name in SERVERS]
    for mayor in mayors:
        mayor.project.mkdir()
    return LoadRun(config, workdir / "state" / "swarm.db", mayors), config_file, witness


async def run_load(config: LoadConfig, workdir: Path) -> LoadRun:
    """The whole scenario in `workdir`: both servers, the plan, both loops, then every check."""
    run, config_file, witness = _prepare(config, workdir)
    mayors = run.mayors
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        for mayor in mayors:
            clients.append(await stack.enter_async_context(_server(mayor.project, run.db, config_file)))
            mayor.pid = server_pid(mayor.project)
            mayor.rss_start_kib = memory_kib(mayor.pid)["VmRSS"]

        began = time.perf_counter()
        tasks = plan(config.waves, config.per_wave, config.blockers)
        created = await call(clients[0], "TaskCreatePlan", {"tasks": tasks})
        run.plan_seconds = time.perf_counter() - began
        if len(cast(list[str], created["ids"])) != config.tasks:
            raise RuntimeError(f"TaskCreatePlan made {len(created['ids'])} tasks, not {config.tasks}")

        stop = anyio.Event()
        async with anyio.create_task_group() as sampler:
            sampler.start_soon(_sample, run, stop)
            began = time.perf_counter()
            if config.head_start:
                first = cast(list[dict[str, Any]], (await call(clients[0], "spawn", {}))["workers"])
                mayors[0].started += [cast(str, worker["workerId"]) for worker in first]
            with anyio.fail_after(config.run_timeout):
                async with anyio.create_task_group() as loops:
                    for client, mayor in zip(clients, mayors, strict=True):
                        loops.start_soon(mayor_loop, client, mayor, config.tasks)
            run.wall = time.perf_counter() - began
            stop.set()
        for mayor in mayors:
            memory = memory_kib(mayor.pid)
            mayor.hwm_kib, mayor.rss_end_kib = memory["VmHWM"], memory["VmRSS"]
    # The servers have exited: the file is read as they left it.
    run.ledger = exactly_once_problems(run.db, tasks=config.tasks)
    run.witness = witness_problems(witness, run.db)
    run.delivery = delivery_problems(mayors, run.db)
    run.invariants = invariant_problems(run.db)
    run.ran_by = _ran_by(mayors, run.db)
    return run


# -- nothing lost, nothing run twice ------------------------------------------------------------


def exactly_once_problems(db: Path, *, tasks: int) -> list[str]:
    """What the database says went wrong, if anything, in a run where every task was meant to be
    completed by its first and only worker; [] when the ledger is sound.

    Checked: the file's integrity and foreign keys; exactly `tasks` tasks, all completed; no worker
    still live; per task exactly one worker, succeeded, no other attempt and no two attempts live
    at once; the owner is that worker; the history completes the task exactly once, by that
    worker, and starts it once per attempt; every result was handed to a Mayor.
    """
    problems: list[str] = []
    with contextlib.closing(_read(db)) as conn:
        integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"PRAGMA integrity_check: {integrity[:5]}")
        if dangling := conn.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"PRAGMA foreign_key_check: {len(dangling)} dangling reference(s)")
        by_status = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
        statuses = dict(cast(list[tuple[str, int]], by_status))
        if statuses != {"completed": tasks}:
            problems.append(f"tasks by status {statuses}, expected all {tasks} completed")
        if live := conn.execute("SELECT id FROM workers WHERE state IN (?, ?)", LIVE_STATES).fetchall():
            problems.append(f"{len(live)} worker(s) still live after both servers stopped")
        if unreported := conn.execute(
            "SELECT count(*) FROM workers WHERE state NOT IN (?, ?) AND reported_at IS NULL", LIVE_STATES
        ).fetchone()[0]:
            problems.append(f"{unreported} ended worker(s) never handed to a Mayor by wait")

        runs: dict[int, list[tuple[int, str, str | None, str, str | None]]] = {}
        for number, task, state, task_status, started, ended in cast(
            list[tuple[int, int, str, str | None, str, str | None]],
            conn.execute(
                "SELECT id, task_id, state, task_status, started_at, ended_at FROM workers ORDER BY id"
            ),
        ):
            runs.setdefault(task, []).append((number, state, task_status, started, ended))
        completions: dict[int, list[str]] = {}
        for task, actor in cast(
            list[tuple[int, str]],
            conn.execute(
                "SELECT task_id, actor FROM task_events WHERE field = 'status' AND new = ?", (COMPLETED_JSON,)
            ),
        ):
            completions.setdefault(task, []).append(actor)
        starts = Counter(
            cast(int, row[0])
            for row in conn.execute(
                "SELECT task_id FROM task_events WHERE field = 'status' AND new = ?", (IN_PROGRESS_JSON,)
            )
        )
        owners = cast(list[tuple[int, str | None]], conn.execute("SELECT id, owner FROM tasks").fetchall())

    for task, owner in owners:
        attempts = runs.get(task, [])
        succeeded = [
            f"worker-{n}"
            for n, state, status, _, _ in attempts
            if (state, status) == ("succeeded", "completed")
        ]
        if len(attempts) != 1 or len(succeeded) != 1:
            described = ", ".join(f"worker-{n} {state}" for n, state, _, _, _ in attempts) or "none"
            problems.append(f"task {task}: workers {described}; expected exactly one, succeeded")
        spans = sorted((started, ended or "9999") for _, _, _, started, ended in attempts)
        for (_, first_end), (second_start, _) in itertools.pairwise(spans):
            if second_start < first_end:
                problems.append(f"task {task}: two workers live at once ({first_end} > {second_start})")
        if succeeded and owner != succeeded[0]:
            problems.append(f"task {task}: owner {owner}, but {succeeded[0]} completed it")
        if completions.get(task, []) != succeeded[:1]:
            problems.append(
                f"task {task}: completed in the history by {completions.get(task)}, not {succeeded}"
            )
        if starts[task] != len(attempts):
            problems.append(
                f"task {task}: set in_progress {starts[task]} time(s) for {len(attempts)} worker(s)"
            )
    return problems


def invariant_problems(db: Path) -> list[str] | None:
    """What tests/support/invariants.py finds wrong with the database once every server has
    stopped; None where the repository's tests cannot be imported (the benchmarks run without them)."""
    try:
        from tests.support.invariants import ledger_problems as general_problems
    except ModuleNotFoundError:
        return None
    return general_problems(db, quiescent=True)


def _workers_of_tasks(db: Path) -> dict[str, list[str]]:
    """task id -> the ids of the workers that ran it, from the database."""
    with contextlib.closing(_read(db)) as conn:
        rows = cast(list[tuple[int, int]], conn.execute("SELECT task_id, id FROM workers").fetchall())
    workers: dict[str, list[str]] = {}
    for task, number in rows:
        workers.setdefault(str(task), []).append(f"worker-{number}")
    return workers


def witness_problems(witness: Path, db: Path) -> list[str]:
    """The workers' own account: every task started exactly once, by the worker the ledger names."""
    lines = witness.read_text(encoding="utf-8").splitlines() if witness.exists() else []
    seen: dict[str, list[str]] = {}
    for line in lines:
        task, _, worker = line.partition(" ")
        seen.setdefault(task, []).append(worker)
    expected = _workers_of_tasks(db)
    return [
        f"task {task}: started by {seen.get(task, [])} per the witness file, "
        f"by {expected.get(task, [])} per the database"
        for task in sorted(expected.keys() | seen.keys(), key=int)
        if sorted(seen.get(task, [])) != sorted(expected.get(task, []))
    ]


def delivery_problems(mayors: Sequence[Mayor], db: Path) -> list[str]:
    """The Mayors' view: each worker named by exactly one spawn answer and one wait answer, of
    either Mayor, and no worker they were told of that the database does not know."""
    known = {worker for workers in _workers_of_tasks(db).values() for worker in workers}
    problems: list[str] = []
    answers = {
        "spawn": [(w, m.name) for m in mayors for w in m.started],
        "wait": [(w, m.name) for m in mayors for w in m.results],
    }
    for what, named in answers.items():
        counted = Counter(w for w, _ in named)
        if twice := sorted((w for w, n in counted.items() if n > 1), key=lambda w: int(w.partition("-")[2])):
            # Which Mayors were told: one Mayor told twice and two Mayors told once each are two bugs.
            told = {w: [m for x, m in named if x == w] for w in twice[:5]}
            problems.append(f"{len(twice)} worker(s) named by more than one {what} answer (to Mayors {told})")
        if missing := sorted(known - counted.keys()):
            problems.append(f"{len(missing)} worker(s) never named by a {what} answer: {missing[:5]}")
        if unknown := sorted(counted.keys() - known):
            problems.append(
                f"{what} named {len(unknown)} worker(s) the database does not know: {unknown[:5]}"
            )
    return problems


def _ran_by(mayors: Sequence[Mayor], db: Path) -> dict[str, int]:
    """Succeeded workers per server, from the supervisor ("pid:start time") each worker records."""
    with contextlib.closing(_read(db)) as conn:
        rows = cast(
            list[tuple[str | None, int]],
            conn.execute(
                "SELECT supervisor, count(*) FROM workers WHERE state = 'succeeded' GROUP BY supervisor"
            ).fetchall(),
        )
    names = {str(mayor.pid): mayor.name for mayor in mayors}
    ran: dict[str, int] = {mayor.name: 0 for mayor in mayors}
    for supervisor, count in rows:
        name = names.get((supervisor or "").partition(":")[0], f"unknown server {supervisor}")
        ran[name] = ran.get(name, 0) + count
    return ran


# -- report -------------------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _listed(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def _print_run(run: LoadRun, *, number: int) -> None:
    config = run.config
    floor = config.tasks * config.work_ms / 1000 / config.workers
    print(f"\n== run {number} ==")
    print(f"  TaskCreatePlan of {config.tasks} tasks: {run.plan_seconds * 1000:.0f} ms")
    print(f"  wall time (first spawn to the last task completed, both Mayors): {run.wall:.2f} s")
    if floor:
        print(
            f"  floor at {config.workers} slots and {config.work_ms:g} ms of work a task: {floor:.2f} s "
            f"(the wall time is {run.wall / floor:.2f}x that)"
        )
    print(f"  throughput: {config.tasks / run.wall:.1f} tasks/s in all")
    for mayor in run.mayors:
        ran = run.ran_by.get(mayor.name, 0)
        foreign = len(set(mayor.results) - set(mayor.started))
        print(
            f"  server {mayor.name} (pid {mayor.pid}): ran {ran} tasks, {ran / run.wall:.1f} tasks/s; "
            f"{len(mayor.spawn_ms)} spawn/wait rounds; its wait handed over {len(mayor.results)} results, "
            f"{foreign} of them of the other server's workers"
        )
    least = min(run.ran_by.values(), default=0)
    print(
        f"  fair share: the server that ran least ran {least} of {config.tasks} tasks "
        f"({least / config.tasks:.0%}; half is even)"
    )
    if run.live:
        at_limit = sum(live >= config.workers for live in run.live) / len(run.live)
        print(
            f"  live workers in the database, sampled every {SAMPLE_SECONDS * 1000:g} ms: "
            f"peak {max(run.live)}, mean {statistics.fmean(run.live):.1f} of {config.workers}; "
            f"all slots taken in {at_limit:.0%} of the samples"
        )
    for mayor in run.mayors:
        print(f"  server {mayor.name} spawn: {spread(mayor.spawn_ms, 'ms')}")
        print(f"  server {mayor.name} wait:  {spread(mayor.wait_ms, 'ms')} (blocks until a worker ends)")
    for mayor in run.mayors:
        mid = mayor.rss_kib[len(mayor.rss_kib) // 2] if mayor.rss_kib else 0
        print(
            f"  server {mayor.name} memory: RSS {_mib(mayor.rss_start_kib)} connected, {_mib(mid)} half-way, "
            f"{_mib(mayor.rss_end_kib)} at the end; peak (VmHWM) {_mib(mayor.hwm_kib)}"
        )


def _checks(runs: Sequence[LoadRun]) -> list[Check]:
    config = runs[0].config
    checks: list[Check] = []
    for number, run in enumerate(runs, 1):
        peak = max(run.live, default=0)
        families: list[tuple[list[str], str]] = [
            (
                run.ledger,
                "ledger sound: each task completed by exactly one worker and no other attempt, "
                "history and owners agree, integrity_check ok",
            ),
            (run.witness, "the workers' witness file: every task started exactly once"),
            (run.delivery, "every worker named by exactly one spawn answer and one wait answer"),
        ]
        if run.invariants is None:
            checks.append(
                Check(None, f"run {number}: tests/support/invariants.py not importable here, not checked")
            )
        else:
            families.append(
                (run.invariants, "tests/support/invariants.py: the invariants of any swarm database hold")
            )
        for problems, text in families:
            checks.append(
                Check(not problems, f"run {number}: {text}" + (f": {_listed(problems)}" if problems else ""))
            )
        checks.append(
            Check(peak <= config.workers, f"run {number}: peak live {peak} <= maxWorkers {config.workers}")
        )
        checks.append(
            Check(peak == config.workers, f"run {number}: all {config.workers} slots were taken at once")
        )
    walls = [run.wall for run in runs]
    wall = statistics.median(walls)
    checks.append(
        Check(None, f"throughput {config.tasks / wall:.1f} tasks/s (median wall time {wall:.2f} s)")
    )
    hwm = [mayor.hwm_kib for run in runs for mayor in run.mayors]
    checks.append(Check(None, f"peak server RSS (VmHWM) {_mib(max(hwm))}"))
    spawn = [ms for run in runs for mayor in run.mayors for ms in mayor.spawn_ms]
    checks.append(
        Check(None, f"spawn p50 {statistics.median(spawn):.1f} ms, p95 {quantile(spawn, 95):.1f} ms")
    )
    return checks


# A small run, for `./dev bench` running every benchmark in turn: the scale of tests/test_load.py.
QUICK = LoadConfig(tasks=200, workers=20, work_ms=200.0, waves=4, blockers=2, run_timeout=120.0)


def _parse_args(argv: Sequence[str] | None) -> tuple[LoadConfig, int, bool]:
    full = LoadConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a small run: {QUICK.tasks} tasks, {QUICK.workers} workers of {QUICK.work_ms:g} ms each",
    )
    parser.add_argument("--tasks", type=int, help=f"(default: {full.tasks})")
    parser.add_argument(
        "--workers",
        type=int,
        help=f"maxWorkers of both servers, which count the same live workers (default: {full.workers})",
    )
    parser.add_argument(
        "--work-ms", type=float, help=f"how long each worker sleeps (default: {full.work_ms:g})"
    )
    parser.add_argument("--waves", type=int, help=f"(default: {full.waves})")
    parser.add_argument(
        "--blockers",
        type=int,
        help=f"tasks of the wave before that each task waits for (default: {full.blockers})",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs, each on a fresh database (default: 1)")
    parser.add_argument(
        "--run-timeout", type=float, help=f"seconds one run may take (default: {full.run_timeout:g})"
    )
    parser.add_argument(
        "--head-start", action="store_true", help="the first Mayor fills the slots before the second starts"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and print it")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else full
    for name in ("tasks", "workers", "work_ms", "waves", "blockers", "run_timeout"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    for name in ("tasks", "workers", "waves", "blockers", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.tasks > MAX_TASKS:
        parser.error(f"--tasks: one TaskCreatePlan takes at most {MAX_TASKS}")
    if args.tasks % args.waves:
        parser.error("--tasks must be a multiple of --waves")
    if args.blockers > args.tasks // args.waves:
        parser.error("--blockers cannot exceed the tasks of a wave")
    config = LoadConfig(
        args.tasks, args.workers, args.work_ms, args.waves, args.blockers, args.run_timeout, args.head_start
    )
    return config, args.rounds, args.keep


async def _run(config: LoadConfig, rounds: int, keep: bool) -> int:
    print(
        f"mcp-swarm {__version__} load test over stdio: Python {platform.python_version()}, "
        f"mcp {version('mcp')}, {platform.machine()}, {os.cpu_count()} CPUs; {config.tasks} tasks in "
        f"{config.waves} waves of {config.per_wave} ({config.blockers} blocker(s) each), two servers on "
        f"one database, maxWorkers {config.workers} (counted over the database, not per server)"
    )
    print(f"worker: {' '.join(_worker_argv(config.work_ms, Path('WITNESS')))}")
    print(f"load average before: {load()}")
    begun = time.perf_counter()
    runs: list[LoadRun] = []
    scratch = tempfile.mkdtemp(prefix="mcp-swarm-load-")
    try:
        for number in range(1, rounds + 1):
            workdir = Path(scratch) / f"run-{number}"
            workdir.mkdir()
            runs.append(await run_load(config, workdir))
            _print_run(runs[-1], number=number)
            print(f"  load average after: {load()}")
    finally:
        if keep:
            print(f"\nkept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return report_targets(_checks(runs), begun)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load test with these command-line arguments; the exit status."""
    config, rounds, keep = _parse_args(argv)
    return anyio.run(_run, config, rounds, keep, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
