"""`mcp-swarm retry`, `stop`, `clean`, `status --json`, `run --json`, `--version`, completion and
the failure tails, as a person uses them: real `mcp-swarm` processes in a fresh git repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_swarm import __version__
from mcp_swarm.models import Worker
from mcp_swarm.placement.processes import ProcessIdentity, is_running
from tests.support.cli import cli_environment, mcp_swarm
from tests.support.helpers import git
from tests.support.mcp_client import installed_command

# `flaky` fails with a telling last line until the file `fixed` exists; each of its runs is
# counted in `runs.txt`. `gated` waits for the file `release`. `sleeper` never ends by itself.
FLAKY = (
    "import pathlib, sys; pathlib.Path('runs.txt').open('a').write('run\\n'); "
    "print('checking the build'); print('error: config.yaml has no port', flush=True); "
    "sys.exit(0 if pathlib.Path('fixed').exists() else 3)"
)
GATED = (
    "import pathlib, time\ndeadline = time.monotonic() + 60\n"
    "while not pathlib.Path('release').exists() and time.monotonic() < deadline:\n    time.sleep(0.02)\n"
)
CONFIG = f"""
[runtimes.flaky]
type = "command"
argv = [{sys.executable!r}, "-c", {FLAKY!r}]

[runtimes.gated]
type = "command"
argv = [{sys.executable!r}, "-c", {GATED!r}]

[runtimes.sleeper]
type = "command"
argv = [{sys.executable!r}, "-c", "import time; print('sleeping', flush=True); time.sleep(120)"]
"""
PLAN = (
    'runtime = "flaky"\n[[tasks]]\nkey = "build"\nsubject = "Build"\n'
    '[[tasks]]\nkey = "ship"\nsubject = "Ship"\nblocked_by = ["build"]\n'
)
DEADLINE = 60.0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    (root / "mcp-swarm.toml").write_text(CONFIG)
    (root / "plan.toml").write_text(PLAN)
    return root


def start_run(project: Path, plan: str = "plan.toml") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [installed_command(), "run", plan], cwd=project, env=cli_environment(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def status_json(cwd: Path) -> dict[str, Any]:
    done = mcp_swarm(cwd, "status", "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def peek(cwd: Path) -> dict[str, Any]:
    """The status, or nothing yet while a run is still creating its database."""
    done = mcp_swarm(cwd, "status", "--json")
    return json.loads(done.stdout) if done.returncode == 0 else {"tasks": [], "workers": []}


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def tasks_by_id(cwd: Path) -> dict[str, dict[str, Any]]:
    return {task["id"]: task for task in status_json(cwd)["tasks"]}


def workers_by_id(cwd: Path) -> dict[str, dict[str, Any]]:
    return {worker["id"]: worker for worker in status_json(cwd)["workers"]}


# -- display ----------------------------------------------------------------------------------


def test_version_option_prints_the_package_version(tmp_path: Path) -> None:
    done = mcp_swarm(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{__version__}\n"
    assert mcp_swarm(tmp_path, "version").stdout == done.stdout


def test_completion_installs_into_home_and_completes_the_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    done = mcp_swarm(tmp_path, "--install-completion", HOME=str(home), SHELL="/bin/bash")
    assert done.returncode == 0, done.stderr
    script = home / ".bash_completions" / "mcp-swarm.sh"
    assert script.is_file(), done.stdout
    assert str(script) in (home / ".bashrc").read_text()
    # The installed script, sourced by bash as a new shell would, completes our commands.
    complete = (
        f"source {script}; COMP_WORDS=(mcp-swarm {{word}}); COMP_CWORD=1; "
        '_mcp_swarm_completion mcp-swarm; echo "${{COMPREPLY[@]}}"'
    )
    path = f"{Path(installed_command()).parent}:{os.environ['PATH']}"
    for word, expected in (("ret", "retry"), ("cl", "clean"), ("sta", "status")):
        shell = subprocess.run(
            ["bash", "--norc", "-c", complete.format(word=word)],
            env=cli_environment(HOME=str(home), PATH=path),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert shell.stdout.split() == [expected], shell.stdout + shell.stderr


def test_a_failure_shows_its_last_lines_in_run_status_and_logs(project: Path) -> None:
    run = mcp_swarm(project, "run", "plan.toml")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "failed by worker-1" in run.stdout
    assert "(`mcp-swarm logs worker-1`)" in run.stdout
    summary = run.stdout.split("Summary", 1)[1]
    assert "| error: config.yaml has no port" in summary, run.stdout
    assert "`mcp-swarm logs worker-1` shows the rest" in summary

    status = mcp_swarm(project, "status")
    assert "task 1 'Build' failed (worker-1):" in status.stdout, status.stdout
    assert "| error: config.yaml has no port" in status.stdout
    assert "`mcp-swarm logs worker-1` shows the rest" in status.stdout

    logs = mcp_swarm(project, "logs", "worker-1")
    lines = logs.stdout.splitlines()
    # Each line after the time the server first saw it (HH:MM:SS, or blank), as --follow shows it.
    unstamped = [re.sub(r"^(\d\d:\d\d:\d\d|        ) ", "", line) for line in lines[:2]]
    assert unstamped == ["checking the build", "error: config.yaml has no port"], logs.stdout
    assert lines[-1].startswith("[mcp-swarm] worker-1 ended ")
    assert "exit status 3, failed; task 1 failed: the command exited with status 3" in lines[-1]


def test_status_json_and_run_json_are_documents_a_script_can_read(project: Path) -> None:
    run = mcp_swarm(project, "run", "plan.toml", "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[0] == {"event": "run", "title": "plan.toml", "tasks": 2, "waves": 2}
    states = [(e["key"], e["state"]) for e in events if e["event"] == "task"]
    assert states == [("build", "running"), ("build", "failed"), ("ship", "blocked")]
    failed = next(e for e in events if e["event"] == "task" and e["state"] == "failed")
    assert failed["tail"][-1] == "error: config.yaml has no port"
    assert failed["log"] == "mcp-swarm logs worker-1"
    assert events[-1]["event"] == "summary"
    assert (events[-1]["exitStatus"], events[-1]["failed"]) == (1, ["1"])

    document = status_json(project)
    assert set(document) == {"tasks", "workers", "counts"}
    build, ship = document["tasks"]
    assert (build["id"], build["subject"], build["status"], build["owner"], build["wave"]) == (
        "1", "Build", "failed", "worker-1", 1,
    )  # fmt: skip
    assert (ship["status"], ship["owner"], ship["wave"], ship["blockers"]) == ("pending", None, 2, ["1"])
    [worker] = document["workers"]
    assert (worker["id"], worker["task"], worker["state"], worker["runtime"]) == (
        "worker-1", "1", "failed", "flaky",
    )  # fmt: skip
    assert worker["exitCode"] == 3
    assert worker["costUsd"] is None
    assert 0 < worker["durationSeconds"] < DEADLINE
    refused = mcp_swarm(project, "status", "--json", "--watch")
    assert refused.returncode == 2
    assert "do not go together" in refused.stderr


def test_every_command_finds_the_swarm_from_a_subdirectory(project: Path) -> None:
    assert mcp_swarm(project, "run", "plan.toml").returncode == 1
    deeper = project / "src" / "deeper"
    deeper.mkdir(parents=True)
    assert tasks_by_id(deeper)["1"]["status"] == "failed"
    assert "error: config.yaml has no port" in mcp_swarm(deeper, "logs", "worker-1").stdout
    assert not (deeper / ".mcp-swarm").exists()
    # --db still wins, relative to where the command runs.
    elsewhere = mcp_swarm(deeper, "status", "--db", "other.db")
    assert elsewhere.returncode == 2
    assert str(deeper / "other.db") in elsewhere.stderr
    # Not above the repository: a project inside it that has no swarm yet finds none.
    inner = project / "vendor" / "lib"
    inner.mkdir(parents=True)
    git(inner, "init", "-q")
    assert "no swarm database" in mcp_swarm(inner, "status").stderr


# -- retry -----------------------------------------------------------------------------------


def test_retry_sets_failed_tasks_pending_and_refuses_anything_else(project: Path) -> None:
    assert mcp_swarm(project, "run", "plan.toml").returncode == 1
    before = tasks_by_id(project)
    for bad in (["2"], ["1", "9"], ["worker-1"], ["1", "x"]):
        refused = mcp_swarm(project, "retry", *bad)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "nothing was changed" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert tasks_by_id(project) == before
    assert "task 2 is pending, not failed" in mcp_swarm(project, "retry", "2").stderr
    assert "no task '9'" in mcp_swarm(project, "retry", "1", "9").stderr

    done = mcp_swarm(project, "retry", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "task 1: pending again\n"
    task = tasks_by_id(project)["1"]
    assert (task["status"], task["owner"], task["ready"]) == ("pending", None, True)


@pytest.mark.slow
def test_retry_inside_a_live_run_is_picked_up_by_it(project: Path) -> None:
    (project / "plan.toml").write_text(
        '[[tasks]]\nkey = "build"\nsubject = "Build"\nruntime = "flaky"\n'
        '[[tasks]]\nkey = "wait"\nsubject = "Wait"\nruntime = "gated"\n'
    )
    run = start_run(project)
    try:
        until(lambda: [t["status"] for t in peek(project)["tasks"]][:1] == ["failed"], "task 1 failed")
        (project / "fixed").touch()
        assert mcp_swarm(project, "retry", "1").returncode == 0
        until(lambda: tasks_by_id(project)["1"]["status"] == "completed", "the run ran task 1 again")
        (project / "release").touch()
        out, _ = run.communicate(timeout=DEADLINE)
    finally:
        run.kill()
    assert run.returncode == 0, out
    assert "2 of 2 tasks completed" in out
    assert (project / "runs.txt").read_text().count("run") == 2
    assert [w["task"] for w in status_json(project)["workers"]] == ["1", "2", "1"]


# -- stop and clean --------------------------------------------------------------------------


@pytest.mark.slow
def test_stop_stops_a_run_s_workers_by_worker_or_task(project: Path) -> None:
    (project / "plan.toml").write_text(
        'runtime = "sleeper"\n[[tasks]]\nkey = "a"\nsubject = "A"\n[[tasks]]\nkey = "b"\nsubject = "B"\n'
    )
    run = start_run(project)
    try:
        until(lambda: [w["state"] for w in peek(project)["workers"]] == ["running"] * 2, "both workers run")
        refused = mcp_swarm(project, "stop", "worker-1", "worker-9", "7")
        assert refused.returncode == 2
        assert "no worker 'worker-9'; no task 7" in refused.stderr
        assert "nothing was stopped" in refused.stderr
        assert workers_by_id(project)["worker-1"]["state"] == "running"
        first = _identity(project, "worker-1")
        assert is_running(first)

        stopped = mcp_swarm(project, "stop", "worker-1")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == "worker-1 stopped (cancelled); task 1 is pending again\n"
        assert not is_running(first)
        assert workers_by_id(project)["worker-1"]["error"] == "stopped with `mcp-swarm stop`"
        # Pending again inside a live run: the run starts it again.
        until(lambda: "worker-3" in workers_by_id(project), "the run restarts task 1")
        again = mcp_swarm(project, "stop", "worker-1")
        assert again.returncode == 2
        assert "worker-1 is not running (it cancelled)" in again.stderr

        busy = mcp_swarm(project, "clean", "--yes")
        assert busy.returncode == 2
        assert "still running" in busy.stderr
        assert (project / ".mcp-swarm" / "logs" / "worker-1.log").is_file()

        until(lambda: workers_by_id(project)["worker-3"]["state"] == "running", "worker-3 runs")
        failed = mcp_swarm(project, "stop", "--fail", "1", "2")
        assert failed.returncode == 0, failed.stderr
        assert sorted(failed.stdout.splitlines()) == [
            "worker-2 stopped (cancelled); task 2 is failed",
            "worker-3 stopped (cancelled); task 1 is failed",
        ]
        out, _ = run.communicate(timeout=DEADLINE)
    finally:
        run.kill()
    assert run.returncode == 1, out
    assert {t["status"] for t in status_json(project)["tasks"]} == {"failed"}
    for worker in ("worker-2", "worker-3"):
        assert not is_running(_identity(project, worker))


def test_stop_stops_a_worker_a_mayor_s_server_supervises(project: Path) -> None:
    import anyio

    from tests.support.mcp_client import call, project_session

    async def session() -> dict[str, Any]:
        async with project_session(project) as client:
            await call(client, "TaskCreate", subject="Sleep", description="")
            [worker] = (await call(client, "spawn", runtime="sleeper"))["workers"]
            log = anyio.Path(worker["log"])
            with anyio.fail_after(DEADLINE):
                # Written by the worker's process: no event to wait on.
                while not await log.exists() or "sleeping" not in await log.read_text():  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            identity = await anyio.to_thread.run_sync(_identity, project, "worker-1")
            stopped = await anyio.run_process(
                [installed_command(), "stop", "--fail", "worker-1"],
                cwd=project,
                env=cli_environment(),
                check=False,
            )
            assert stopped.returncode == 0, stopped.stderr
            assert not is_running(identity)
            # The server hears of it as of any end: the worker is done, its task failed.
            [done] = (await call(client, "wait", timeoutSeconds=30))["done"]
            return done

    done = anyio.run(session)
    assert (done["workerId"], done["state"], done["taskStatus"]) == ("worker-1", "cancelled", "failed")
    assert done["error"] == "stopped with `mcp-swarm stop`"


def _worker(project: Path, worker_id: str) -> Worker:
    """The worker's row, read from the project's database."""
    import anyio

    from mcp_swarm.models import worker_number
    from mcp_swarm.store import Store

    async def read() -> Worker:
        async with await Store.open(project / ".mcp-swarm" / "swarm.db") as store, store.read() as tx:
            worker = await tx.workers.get(worker_number(worker_id))
        assert worker is not None
        return worker

    return anyio.run(read)


def _identity(project: Path, worker_id: str) -> ProcessIdentity:
    worker = _worker(project, worker_id)
    assert worker.pid is not None
    assert worker.pid_start_time is not None
    return ProcessIdentity(worker.pid, worker.pid_start_time)


def test_clean_removes_what_ended_workers_left_after_a_confirmation(project: Path) -> None:
    assert mcp_swarm(project, "run", "plan.toml").returncode == 1
    state = project / ".mcp-swarm"
    log = state / "logs" / "worker-1.log"
    assert log.is_file()
    asked = mcp_swarm(project, "clean")
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert str(log) in asked.stdout
    assert "pass --yes" in asked.stderr
    assert log.is_file()

    declined = answering(project, "n", "clean")
    assert declined.returncode == 0, declined.stderr
    assert "Remove them? [y/N]" in declined.stdout
    assert declined.stdout.endswith("Nothing was removed.\n")
    assert log.is_file()

    done = answering(project, "y", "clean")
    assert done.returncode == 0, done.stderr
    assert str(log) in done.stdout
    assert done.stdout.endswith("Removed.\n")
    assert not log.exists()
    assert not (state / "workers" / "worker-1").exists()
    # The records stay: the task's history, and the run's state.
    assert workers_by_id(project)["worker-1"]["state"] == "failed"
    assert tasks_by_id(project)["1"]["status"] == "failed"
    assert mcp_swarm(project, "clean", "--yes").stdout == "Nothing to clean.\n"


def answering(cwd: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with a terminal for its input, on which a person types `answer`."""
    person, terminal = os.openpty()
    try:
        os.write(person, f"{answer}\n".encode())
        return subprocess.run(
            [installed_command(), *args], cwd=cwd, env=cli_environment(), stdin=terminal,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(person)
        os.close(terminal)


# Writes a file in its worktree; fails if its prompt says "@fail".
WRITER = (
    "import os, pathlib, sys; task = os.environ['SWARM_TASK_ID']; "
    "pathlib.Path(f'out-{task}.txt').write_text('written'); "
    "sys.exit(3 if '@fail' in pathlib.Path(sys.argv[1]).read_text() else 0)"
)


def test_clean_removes_a_failed_worker_s_worktree_and_keeps_unintegrated_work(project: Path) -> None:
    import anyio

    from tests.support.mcp_client import call, project_session

    argv = json.dumps([sys.executable, "-c", WRITER, "{prompt_file}"])
    with (project / "mcp-swarm.toml").open("a") as config:
        config.write(f'\n[runtimes.writer]\ntype = "command"\nargv = {argv}\n')
    git(project, "add", "-A")
    git(project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")

    async def session() -> None:
        async with project_session(project) as client:
            await call(client, "TaskCreate", subject="Fails", description="@fail")
            await call(client, "TaskCreate", subject="Works", description="")
            spawned = await call(client, "spawn", runtime="writer", isolation="worktree")
            assert len(spawned["workers"]) == 2, spawned
            done = (await call(client, "wait", timeoutSeconds=60))["done"]
            assert sorted(entry["taskStatus"] for entry in done) == ["completed", "failed"]

    anyio.run(session)
    assert workers_by_id(project)["worker-1"]["taskStatus"] == "failed"
    failed, completed = (_worktree_path(project, worker_id) for worker_id in ("worker-1", "worker-2"))
    assert failed.is_dir()
    assert completed.is_dir()

    cleaned = mcp_swarm(project, "clean", "--yes")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"{failed} (worktree, branch" in cleaned.stdout
    kept = f"kept the worktree of worker-2 ({completed}): its completed work is not integrated"
    assert kept in cleaned.stdout
    assert not failed.exists()
    assert (completed / "out-2.txt").read_text() == "written"
    branches = git(project, "branch", "--list", "--format=%(refname:short)").split()
    assert len(branches) == 2, branches  # the project's own, and the unintegrated worker's


def _worktree_path(project: Path, worker_id: str) -> Path:
    worktree = _worker(project, worker_id).worktree
    assert worktree is not None
    return Path(worktree["path"])


def test_commands_refuse_a_project_with_no_swarm(project: Path) -> None:
    for args in (["retry", "1"], ["stop", "worker-1"], ["clean", "--yes"]):
        refused = mcp_swarm(project, *args)
        assert refused.returncode == 2, args
        assert "no swarm database" in refused.stderr
    assert not (project / ".mcp-swarm").exists()
