"""`integrate` killed at any moment: the next one finishes or undoes it by itself.

Real git repositories, real worker processes (the command runtime, each task in a worktree of its
own), and `integrate` run in a child process over the same database file, as a second server
would run it, killed with a real SIGKILL. After each kill the next integration must complete, and
the history, the main tree and the database must agree: the wave's changes once, in one commit,
nothing staged or left over, every worker recorded integrated by that commit.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskStatus
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes import CommandProfile, CommandRuntime
from mcp_swarm.store import Store
from mcp_swarm.workspace.worktrees import WorktreeError
from tests.support.helpers import DEADLINE, git

pytestmark = pytest.mark.anyio

# Every task writes out-<task>.txt; every third one also adds a line to README.md, and the one
# after it deletes the tracked file doomed-<task>.txt: new, changed and deleted files, all undone
# or committed together.
WORKER = r"""
import json, os, pathlib
task = int(os.environ["SWARM_TASK_ID"])
pathlib.Path(f"out-{task}.txt").write_text(f"written by task {task}\n")
if task % 3 == 1:
    with open("README.md", "a") as readme:
        readme.write(f"task {task} was here\n")
if task % 3 == 2:
    pathlib.Path(f"doomed-{task}.txt").unlink()
json.dump({"status": "done", "summary": f"task {task}"}, open(os.environ["SWARM_RESULT_FILE"], "w"))
"""

# integrate as a server runs it, over the database and project its arguments name.
INTEGRATOR = r"""
import sys
from pathlib import Path
import anyio
from mcp_swarm.engine.integration import integrate_completed
from mcp_swarm.store import Store
from mcp_swarm.workspace.worktrees import WorktreeError

async def main() -> None:
    async with await Store.open(Path(sys.argv[1])) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # the test's go
        print("integrating", flush=True)
        done = await integrate_completed(store, Path(sys.argv[2]), anyio.Lock())
        print("integrated", done.commit, " ".join(worker.worker_id for worker in done.integrated), flush=True)

anyio.run(main)
"""

# A git hook that kills the integration running git, and git with it, as a SIGKILL of its whole
# process group would: the moment the hook runs is the moment the test means.
KILLER_HOOK = """#!{python}
import os, signal
git = os.getppid()
with open(f"/proc/{{git}}/stat") as stat:
    integrator = int(stat.read().rsplit(")", 1)[1].split()[1])
os.kill(integrator, signal.SIGKILL)
os.kill(git, signal.SIGKILL)
"""

# A pre-commit hook that holds the commit until the test creates the file it names.
HOLDING_HOOK = """#!{python}
import pathlib, time
pathlib.Path({entered!r}).write_text("in the hook")
while not pathlib.Path({release!r}).exists():
    time.sleep(0.02)
"""


@dataclass
class Wave:
    project: Path
    db: Path
    swarm: Swarm
    # HEAD before the wave is integrated.
    base: str
    task_ids: list[str]


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def _until(condition: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(DEADLINE):
        while not condition():  # noqa: ASYNC110 - git and other processes give no event to wait on
            await anyio.sleep(0.02)
    assert condition(), what


async def _idle(process: subprocess.Popen[str]) -> None:
    """Until `process` has run no git (no child at all) for half a second: it waits on a lock."""
    quiet = 0
    with anyio.fail_after(DEADLINE):
        while quiet < 10:
            quiet = 0 if _children_of(process.pid) else quiet + 1
            await anyio.sleep(0.05)


def _integrator(wave: Wave) -> subprocess.Popen[str]:
    script = wave.project.parent / "integrator.py"
    script.write_text(INTEGRATOR)
    return subprocess.Popen(
        [sys.executable, str(script), str(wave.db), str(wave.project)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=wave.project.parent,
    )


async def _line(process: subprocess.Popen[str], expected: str) -> None:
    assert process.stdout is not None
    with anyio.fail_after(DEADLINE):
        line = await anyio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)
    assert line == expected + "\n", (
        f"the integrator did not say {expected}: {line!r} {process.communicate()[1]}"
    )


async def _ready(process: subprocess.Popen[str]) -> None:
    """Until the integrator has opened the database and waits for the go."""
    await _line(process, "ready")


async def _go(process: subprocess.Popen[str]) -> None:
    """Let the integrator integrate; return once it has begun."""
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.close()
    process.stdin = None  # so that communicate() does not flush it
    await _line(process, "integrating")


async def _started(process: subprocess.Popen[str]) -> None:
    await _ready(process)
    await _go(process)


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=DEADLINE)


def _hook(project: Path, name: str, text: str) -> None:
    hook = project / ".git" / "hooks" / name
    hook.write_text(text)
    hook.chmod(0o755)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncGenerator[tuple[Swarm, Path, Path]]:
    """A git project with a first commit, and an engine whose workers write in worktrees."""
    project = tmp_path / "my project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    git(project, "config", "user.name", "Lead")
    git(project, "config", "user.email", "lead@example.com")
    (project / "README.md").write_text("# demo\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "initial")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    runtime = CommandRuntime(CommandProfile([sys.executable, str(script), "{prompt_file}"]), name="writer")
    db = tmp_path / "state" / "swarm.db"
    limits = WorkerLimits(max_workers=5, stop_grace_seconds=1.0, idle_seconds=60)
    async with await Store.open(db) as store:
        swarm = Swarm(
            store, {"writer": runtime}, default_runtime="writer", state_dir=tmp_path / "state",
            project_dir=project, limits=limits, placements=placements(max_log_bytes=limits.max_log_bytes),
        )  # fmt: skip
        async with anyio.create_task_group() as group:
            await group.start(swarm.run)
            yield swarm, project, db
            group.cancel_scope.cancel()


async def _wave(engine: tuple[Swarm, Path, Path], size: int = 3) -> Wave:
    """`size` tasks completed by real workers in their worktrees, not integrated yet."""
    swarm, project, db = engine
    ledger = Ledger(swarm.store)
    task_ids = [(await ledger.create(NewTask(subject=f"write part {n}"))).id for n in range(size)]
    doomed = [project / f"doomed-{task}.txt" for task in task_ids if int(task) % 3 == 2]
    for path in doomed:
        path.write_text("to be deleted\n")
    if doomed:
        git(project, "add", "--", *(path.name for path in doomed))
        git(project, "commit", "-q", "-m", "files the wave deletes")
    spawned = await swarm.spawn(task_ids, isolation="worktree")
    assert len(spawned.workers) == size, spawned
    finished = 0
    with anyio.fail_after(DEADLINE):
        while finished < size:
            finished += len((await swarm.wait(timeout=DEADLINE)).done)
    for task_id in task_ids:
        assert (await ledger.get(task_id)).status == TaskStatus.COMPLETED
    return Wave(project, db, swarm, git(project, "rev-parse", "HEAD").strip(), task_ids)


async def _assert_integrated_once(wave: Wave, seed: object = None) -> None:
    """One commit on the base with exactly the wave's changes; nothing else; all recorded by it."""
    project, why = wave.project, f"(seed {seed})"
    commits = git(project, "rev-list", f"{wave.base}..HEAD").split()
    assert len(commits) == 1, f"{why} commits since the base: {commits}"
    [commit] = commits
    assert git(project, "rev-parse", f"{commit}^").strip() == wave.base, why
    expected: set[str] = set()
    for task in wave.task_ids:
        expected.add(f"A\tout-{task}.txt")
        if int(task) % 3 == 2:
            expected.add(f"D\tdoomed-{task}.txt")
        assert git(project, "show", f"HEAD:out-{task}.txt") == f"written by task {task}\n", why
    if any(int(task) % 3 == 1 for task in wave.task_ids):
        expected.add("M\tREADME.md")
    changed = set(git(project, "diff", "--name-status", "--no-renames", wave.base, commit).splitlines())
    assert changed == expected, why
    readme = git(project, "show", "HEAD:README.md")
    for task in wave.task_ids:
        assert readme.count(f"task {task} was here") == (1 if int(task) % 3 == 1 else 0), why
    assert git(project, "status", "--porcelain=v1", "--untracked-files=all") == "", why
    assert git(project, "branch", "--list", "swarm/*") == "", why
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1, why
    assert not (project / ".git" / "mcp-swarm-integration.json").exists(), why
    for task in wave.task_ids:
        [worker] = await wave.swarm.workers_of(task)
        assert worker.integrated_commit == commit, f"{why} {worker.id} recorded {worker.integrated_commit}"


async def test_killed_after_the_commit_before_the_record_the_next_integrate_finishes(
    engine: tuple[Swarm, Path, Path],
) -> None:
    wave = await _wave(engine)
    # Another process holds the database's write lock: the integration commits, then waits to
    # record it, and is killed there.
    integrator = _integrator(wave)
    await _ready(integrator)
    holder = sqlite3.connect(wave.db, timeout=DEADLINE)
    holder.execute("BEGIN IMMEDIATE")
    try:
        await _go(integrator)
        await _until(lambda: git(wave.project, "rev-parse", "HEAD").strip() != wave.base, "no commit")
        await _idle(integrator)
    finally:
        _kill(integrator)
        holder.rollback()
        holder.close()
    # Committed, and killed (or given up on the lock) before the database recorded it.
    for task in wave.task_ids:
        assert [worker.integrated_commit for worker in await wave.swarm.workers_of(task)] == [None]

    report = await wave.swarm.integrate()

    assert report.conflicts == []
    await _assert_integrated_once(wave)


async def test_killed_with_the_changes_staged_before_the_commit_the_next_integrate_redoes_it(
    engine: tuple[Swarm, Path, Path],
) -> None:
    wave = await _wave(engine)
    _hook(wave.project, "pre-commit", KILLER_HOOK.format(python=sys.executable))
    integrator = _integrator(wave)
    await _started(integrator)
    integrator.communicate(timeout=DEADLINE)
    assert integrator.returncode == -signal.SIGKILL
    # Killed with the wave's changes staged and no commit.
    assert git(wave.project, "rev-parse", "HEAD").strip() == wave.base
    assert git(wave.project, "diff", "--cached", "--name-only") != ""
    (wave.project / ".git" / "hooks" / "pre-commit").unlink()

    report = await wave.swarm.integrate()

    assert sorted(done.worker_id for done in report.integrated) == ["worker-1", "worker-2", "worker-3"]
    await _assert_integrated_once(wave)


async def test_the_undo_leaves_a_file_the_user_changed_since_and_says_so(
    engine: tuple[Swarm, Path, Path],
) -> None:
    wave = await _wave(engine, size=1)
    _hook(wave.project, "pre-commit", KILLER_HOOK.format(python=sys.executable))
    integrator = _integrator(wave)
    await _started(integrator)
    integrator.communicate(timeout=DEADLINE)
    (wave.project / ".git" / "hooks" / "pre-commit").unlink()
    # The user edits a file the interrupted integration had changed.
    (wave.project / "README.md").write_text("# demo\nmy own words\n")

    with pytest.raises(WorktreeError, match=r"README\.md") as refused:
        await wave.swarm.integrate()

    assert "interrupted" in str(refused.value)
    assert (wave.project / "README.md").read_text() == "# demo\nmy own words\n"
    assert (wave.project / "out-1.txt").exists()  # nothing was undone
    # The user puts it back as HEAD has it; the next integration undoes the rest and completes.
    git(wave.project, "restore", "--staged", "--worktree", "README.md")
    await wave.swarm.integrate()
    await _assert_integrated_once(wave)


async def test_two_processes_integrating_at_once_take_turns(
    engine: tuple[Swarm, Path, Path], tmp_path: Path
) -> None:
    wave = await _wave(engine)
    entered, release = tmp_path / "entered", tmp_path / "release"
    _hook(
        wave.project,
        "pre-commit",
        HOLDING_HOOK.format(python=sys.executable, entered=str(entered), release=str(release)),
    )
    first = _integrator(wave)
    second = _integrator(wave)
    try:
        await _started(first)
        await _started(second)
        # One of them is committing (held in the hook); the other must be waiting for it, not
        # integrating beside it.
        await _until(entered.exists, "no integration reached its commit")
        waiting = second if _children_of(first.pid) else first
        await _idle(waiting)
        assert waiting.poll() is None, f"it did not wait for the other: {waiting.communicate()}"
        release.write_text("go")
        outputs = [process.communicate(timeout=DEADLINE) for process in (first, second)]
    finally:
        for process in (first, second):
            if process.poll() is None:
                _kill(process)
    for process, (_out, err) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, err
    integrated = sorted(out.split()[2:] for out, _ in outputs)
    assert integrated == [[], ["worker-1", "worker-2", "worker-3"]], outputs
    await _assert_integrated_once(wave)


@pytest.mark.slow
async def test_integrate_killed_at_random_moments_always_completes_next_time(
    engine: tuple[Swarm, Path, Path],
) -> None:
    seed = int(os.environ.get("MCP_SWARM_TEST_SEED", "1414"))
    chooser = random.Random(seed)
    # How long one integration takes here, from its start to its answer.
    measured = await _wave(engine)
    integrator = _integrator(measured)
    await _ready(integrator)
    started = anyio.current_time()
    await _go(integrator)
    assert integrator.stdout is not None
    answer = await anyio.to_thread.run_sync(integrator.stdout.readline)
    duration = anyio.current_time() - started
    assert answer.startswith("integrated "), integrator.communicate()
    integrator.communicate(timeout=DEADLINE)
    await _assert_integrated_once(measured, seed)
    attempts, kills = 16, 0
    for attempt in range(attempts):
        wave = await _wave(engine)
        integrator = _integrator(wave)
        await _started(integrator)
        delay = chooser.uniform(0, duration)
        await anyio.sleep(delay)  # the moment of the kill, drawn across an integration's length
        kills += integrator.poll() is None
        _kill(integrator)
        try:
            await wave.swarm.integrate()
            await _assert_integrated_once(wave, f"{seed}, attempt {attempt}, killed after {delay:.3f} s")
        except Exception as exc:
            raise AssertionError(
                f"seed {seed}, attempt {attempt}, killed after {delay:.3f} s: {exc}"
            ) from exc
    # Most draws fall inside the integration; a machine much slower or faster than at the
    # measurement shifts some out, but not this many.
    assert kills >= attempts // 3, f"seed {seed}: only {kills} of {attempts} integrations were killed"
