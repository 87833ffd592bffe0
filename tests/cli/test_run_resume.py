"""`mcp-swarm run` of the same plan again: the run continues, nothing is done twice or duplicated.

Every worker here is a `command = [...]` of the plan file that appends its task's key to
runs.txt, so that how often each task ran is counted from what the workers did.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.store import Store
from tests.support.cli import cli_environment, mcp_swarm
from tests.support.mcp_client import installed_command


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git repository with no mcp-swarm.toml: commands come from the plan alone."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def start(project: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    out = project / f"out-{time.monotonic_ns()}.txt"
    with out.open("w") as handle:
        process = subprocess.Popen(
            [installed_command(), *args], cwd=project, env=cli_environment(), stdin=subprocess.DEVNULL,
            stdout=handle, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    return process, out


def task(key: str, subject: str, script: str, blocked_by: tuple[str, ...] = ()) -> str:
    """A plan task whose command records its run, then runs `script` (its exit status counts)."""
    blockers = ", ".join(f'"{b}"' for b in blocked_by)
    return (
        f'[[tasks]]\nkey = "{key}"\nsubject = "{subject}"\nblocked_by = [{blockers}]\n'
        f'command = ["sh", "-c", \'echo {key} >> runs.txt; {script}\']\n'
    )


def runs(project: Path) -> Counter[str]:
    path = project / "runs.txt"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def until(condition: object, what: str, out: Path | None = None, seconds: float = 30) -> None:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}\n" + (out.read_text() if out else "")
        time.sleep(0.05)


def tasks_by_subject(db: Path) -> dict[str, str]:
    """{subject: status} of every task not deleted; a duplicated subject fails the test."""

    async def read() -> dict[str, str]:
        async with await Store.open(db) as store:
            listing = await Ledger(store).list()
        subjects = [t.subject for t in listing.tasks]
        assert len(subjects) == len(set(subjects)), f"duplicated tasks: {subjects}"
        return {t.subject: t.status.value for t in listing.tasks}

    return anyio.run(read)


def owner_events(db: Path, subject: str) -> list[tuple[object, object]]:
    async def read() -> list[tuple[object, object]]:
        async with await Store.open(db) as store:
            ledger = Ledger(store)
            found = [t for t in (await ledger.list()).tasks if t.subject == subject]
            history = await ledger.history(found[0].id)
        return [(event.old, event.new) for event in history if event.field == "owner"]

    return anyio.run(read)


GATED = "while [ ! -f go ]; do sleep 0.05; done"


def test_a_rerun_runs_only_failed_and_pending_tasks_and_updates_a_changed_one(project: Path) -> None:
    plan = project / "plan.toml"
    body = (
        task("a", "A", "true")
        + task("b", "B", "test -f fixed", blocked_by=("a",))
        + task("c", "C", "true", blocked_by=("b",))
    )
    plan.write_text('name = "resume"\n' + body + task("d", "D", "true"))
    first = mcp_swarm(project, "run", "plan.toml")
    assert first.returncode == 1, first.stdout + first.stderr
    assert runs(project) == Counter({"a": 1, "b": 1, "d": 1})
    db = project / ".mcp-swarm" / "swarm.db"
    assert tasks_by_subject(db) == {"A": "completed", "B": "failed", "C": "pending", "D": "completed"}

    (project / "fixed").touch()
    plan.write_text('name = "resume"\n' + body + task("d", "D renamed", "true"))
    second = mcp_swarm(project, "run", "plan.toml")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (
        "continuing the earlier run: 2 completed before, kept; 1 failed before, to run again" in second.stdout
    )
    assert "4 of 4 tasks completed" in second.stdout
    # The completed ones did not run again; the failed one and its dependent did.
    assert runs(project) == Counter({"a": 1, "b": 2, "c": 1, "d": 1})
    assert tasks_by_subject(db) == {
        "A": "completed",
        "B": "completed",
        "C": "completed",
        "D renamed": "completed",
    }
    # The failed task was set back with its owner cleared before its second worker took it.
    (_, first_owner), cleared, (_, second_owner) = owner_events(db, "B")
    assert cleared == (first_owner, None)
    assert first_owner != second_owner

    status = mcp_swarm(project, "status")
    assert status.returncode == 0, status.stderr
    assert "4 completed" in status.stdout


def test_a_finished_run_is_not_run_again_unless_fresh(project: Path) -> None:
    (project / "plan.toml").write_text(task("a", "A", "true") + task("b", "B", "true", blocked_by=("a",)))
    assert mcp_swarm(project, "run", "plan.toml").returncode == 0
    again = mcp_swarm(project, "run", "plan.toml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 of 2 tasks completed" in again.stdout
    assert runs(project) == Counter({"a": 1, "b": 1})

    fresh = mcp_swarm(project, "run", "plan.toml", "--fresh")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert runs(project) == Counter({"a": 2, "b": 2})
    # The earlier run's tasks are deleted: the listing has the new run's two, not four.
    assert tasks_by_subject(project / ".mcp-swarm" / "swarm.db") == {"A": "completed", "B": "completed"}


def test_a_run_stopped_by_ctrl_c_continues_where_it_stopped(project: Path) -> None:
    (project / "plan.toml").write_text(
        task("a", "A", "true") + task("b", "B", GATED, blocked_by=("a",)) + task("c", "C", "true", ("b",))
    )
    run, out = start(project, "run", "plan.toml")
    try:
        until(lambda: runs(project)["b"] == 1, "task b started", out)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 130, out.read_text()
    finally:
        run.kill()
    assert "Interrupted: 1 of 3 tasks completed" in out.read_text()

    (project / "go").touch()
    again = mcp_swarm(project, "run", "plan.toml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert runs(project) == Counter({"a": 1, "b": 2, "c": 1})
    assert tasks_by_subject(project / ".mcp-swarm" / "swarm.db") == {
        "A": "completed", "B": "completed", "C": "completed",
    }  # fmt: skip


def test_a_second_live_run_of_the_plan_is_refused_naming_the_first(project: Path) -> None:
    (project / "plan.toml").write_text(task("a", "A", GATED))
    first, out = start(project, "run", "plan.toml")
    try:
        until(lambda: runs(project)["a"] == 1, "the first run's worker started", out)
        second = mcp_swarm(project, "run", "plan.toml")
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"already running in process {first.pid} (mcp-swarm run plan.toml)" in second.stderr
        assert second.stdout == ""
        (project / "go").touch()
        assert first.wait(timeout=30) == 0, out.read_text()
    finally:
        first.kill()
    # Its worker ran once: the refused run started nothing.
    assert runs(project) == Counter({"a": 1})
    # Once the first has ended, the plan may run again (nothing left to do).
    assert mcp_swarm(project, "run", "plan.toml").returncode == 0
    assert runs(project) == Counter({"a": 1})


def test_a_command_task_runs_its_argument_list_without_a_shell(project: Path) -> None:
    argument = "two words; touch injected"
    (project / "plan.toml").write_text(
        '[[tasks]]\nkey = "echo"\nsubject = "Echo"\n'
        f'command = ["sh", "-c", \'printf %s "$0" > arg.txt\', "{argument}"]\n'
    )
    done = mcp_swarm(project, "run", "plan.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "arg.txt").read_text() == argument
    assert not (project / "injected").exists()
    assert "(command:echo)" in done.stdout


def test_every_problem_of_a_plan_is_reported_at_once_and_nothing_is_created(project: Path) -> None:
    (project / "plan.toml").write_text(
        '[[tasks]]\nkey = "model"\nsubject = "M"\nruntime = "dmeo"\n'
        '[[tasks]]\nkey = "api"\nsubject = "A"\nruntime = "demo"\nblocked_by = ["modle"]\n'
        '[[tasks]]\nkey = "lint"\nsubject = "L"\ncommand = ["no-such-program-here"]\n'
    )
    done = mcp_swarm(project, "run", "plan.toml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "plan.toml has 3 problems" in done.stderr
    assert "unknown runtime 'dmeo' (did you mean 'demo'?)" in done.stderr
    assert "blocked by 'modle', which is no key of this plan (did you mean 'model'?)" in done.stderr
    assert "the program 'no-such-program-here' is not on PATH" in done.stderr
    assert done.stdout == ""
    assert not (project / ".mcp-swarm").exists()
