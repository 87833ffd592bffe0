"""`mcp-swarm run`, `status` and `logs` as processes: exit statuses, the database they leave, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest

from mcp_swarm.config import MIN_MAX_LOG_BYTES
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, TaskStatus, Worker
from mcp_swarm.placement.logtail import rotated_path
from mcp_swarm.placement.logtimes import line_times
from mcp_swarm.placement.processes import ProcessIdentity, is_running
from mcp_swarm.store import Store
from tests.support import REPOSITORY
from tests.support.cli import cli_environment, mcp_swarm
from tests.support.mcp_client import installed_command

EXAMPLES = REPOSITORY / "examples"

# The demo's scripted workers without their pauses, and a worker that never finishes on its own.
CONFIG = f"""
[runtimes.quick]
type = "command"
argv = [{str(sys.executable)!r}, "-m", "mcp_swarm.cli.demo_worker", "--pace", "0"]

[runtimes.sleeper]
type = "command"
argv = [{str(sys.executable)!r}, "-c", "import time; print('sleeping', flush=True); time.sleep(120)"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mcp-swarm.toml").write_text(CONFIG)
    return tmp_path


def ledger_state(db: Path) -> tuple[dict[str, str], list[Worker]]:
    """{subject: status} of every task, and every worker of every task."""

    async def read() -> tuple[dict[str, str], list[Worker]]:
        async with await Store.open(db) as store:
            listing = await Ledger(store).list()
            async with store.read() as tx:
                workers = [w for task in listing.tasks for w in await tx.workers.for_task(int(task.id))]
            return {task.subject: task.status.value for task in listing.tasks}, workers

    return anyio.run(read)


@pytest.mark.slow
def test_run_completes_the_example_plan(project: Path) -> None:
    done = mcp_swarm(project, "run", str(EXAMPLES / "auth-plan.toml"), "--runtime", "quick")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 of 5 tasks completed in 4 waves" in done.stdout
    assert "validation: 15 of 15 checks passed" in done.stdout
    assert "\x1b[" not in done.stdout
    statuses, workers = ledger_state(project / ".mcp-swarm" / "swarm.db")
    assert set(statuses.values()) == {TaskStatus.COMPLETED.value}
    assert len(statuses) == 5
    assert [w.state.value for w in workers] == ["succeeded"] * 5
    assert (project / "tests" / "test_auth.py").is_file()


def test_a_failed_task_fails_the_run_and_keeps_its_dependents_blocked(project: Path) -> None:
    (project / "plan.json").write_text(
        """{"runtime": "quick", "tasks": [
          {"key": "ok", "subject": "Write ok.txt", "metadata": {"validation": {"files_exist": ["ok.txt"]}}},
          {"key": "bad", "subject": "Write bad.txt",
           "metadata": {"validation": {"files_exist": ["bad.txt"],
                                       "content_check": [{"file": "bad.txt", "pattern": "never there"}]}}},
          {"key": "after", "subject": "After bad", "blockedBy": ["bad", "ok"]}
        ]}"""
    )
    done = mcp_swarm(project, "run", "plan.json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 of 3 tasks completed in 1 waves" in done.stdout
    assert re.search(r"failed: task 2 'Write bad.txt': validation failed: content_check bad.txt", done.stdout)
    assert "blocked: task 3 'After bad': blocked by bad" in done.stdout
    statuses, _ = ledger_state(project / ".mcp-swarm" / "swarm.db")
    assert statuses == {"Write ok.txt": "completed", "Write bad.txt": "failed", "After bad": "pending"}

    status = mcp_swarm(project, "status")
    assert status.returncode == 0, status.stderr
    assert re.search(r"│\s+2 │\s+3 │ After bad\s+│ pending\s+│\s+│ 2\s+│", status.stdout), status.stdout
    assert re.search(r"worker-2 .* quick .* succeeded, task failed .* validation failed", status.stdout)
    assert "1 completed · 1 failed · 1 pending" in status.stdout


@pytest.mark.parametrize(
    ("plan", "args", "message"),
    [
        ('[[tasks]]\nkey = "a"\nsubject = "A"\nblocked_by = ["b"]\n[[tasks]]\nkey = "b"\nsubject = "B"\n'
         'blocked_by = ["a"]\n', [], "cycle: a -> b -> a"),
        ('[[tasks]]\nkey = "a"\nsubject = "A"\nblocked_by = ["nope"]\n', [], "'nope', which is no key"),
        ('[[tasks]]\nkey = "a"\nsubjet = "A"\n', [], "task 1 ('a'): subject: Field required"),
        ('[[tasks]]\nkey = "a"\nsubject = "A"\n[[tasks]]\nkey = "a"\nsubject = "B"\n', [],
         "also the key of task 1"),
        ("tasks = [\n", [], "not valid TOML"),
        ('[[tasks]]\nkey = "a"\nsubject = "A"\n', ["--runtime", "nonesuch"], "unknown runtime 'nonesuch'"),
        ('[[tasks]]\nkey = "a"\nsubject = "A"\nruntime = "quick"\ncommand = ["true"]\n', [],
         "task 1 ('a'): give either runtime or command, not both"),
        ('[[tasks]]\nkey = "a"\nsubject = "A"\ncommand = []\n', [],
         "command: List should have at least 1 item"),
        ('[[tasks]]\nkey = "a"\nsubject = "A"\ncommand = ["echo", 3]\n', [],
         "command.1: Input should be a valid string"),
    ],
)  # fmt: skip
def test_a_bad_plan_is_refused_and_creates_nothing(
    project: Path, plan: str, args: list[str], message: str
) -> None:
    (project / "plan.toml").write_text(plan)
    done = mcp_swarm(project, "run", "plan.toml", "--runtime", "quick", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert done.stdout == ""
    assert not (project / ".mcp-swarm").exists()


def test_ctrl_c_stops_the_workers_and_frees_their_tasks(project: Path) -> None:
    (project / "plan.toml").write_text(
        'runtime = "sleeper"\n[[tasks]]\nkey = "a"\nsubject = "A"\n[[tasks]]\nkey = "b"\nsubject = "B"\n'
        '[[tasks]]\nkey = "c"\nsubject = "C"\nblocked_by = ["a"]\n'
    )
    out = project / "out.txt"
    with out.open("w") as handle:
        run = subprocess.Popen([installed_command(), "run", "plan.toml"], cwd=project, env=cli_environment(),
                               stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        logs = [project / ".mcp-swarm" / "logs" / f"worker-{n}.log" for n in (1, 2)]
        while not all(log.is_file() and "sleeping" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 130, out.read_text()
    finally:
        run.kill()
    text = out.read_text()
    assert "Interrupted: 0 of 3 tasks completed" in text
    assert "2 workers stopped; their tasks are pending again" in text
    statuses, workers = ledger_state(project / ".mcp-swarm" / "swarm.db")
    assert statuses == {"A": "pending", "B": "pending", "C": "pending"}
    assert [w.state.value for w in workers] == ["cancelled", "cancelled"]
    for worker in workers:
        assert worker.pid is not None
        assert worker.pid_start_time is not None
        assert not is_running(ProcessIdentity(worker.pid, worker.pid_start_time))


@pytest.mark.slow
def test_logs_follow_prints_until_the_worker_ends_and_status_watch_redraws(project: Path) -> None:
    counter = project / "counter.py"
    counter.write_text(
        "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.4)\n"
    )
    slow = f'\n[runtimes.counter]\ntype = "command"\nargv = [{sys.executable!r}, {str(counter)!r}]\n'
    (project / "mcp-swarm.toml").write_text(CONFIG + slow)
    (project / "plan.toml").write_text('runtime = "counter"\n[[tasks]]\nkey = "a"\nsubject = "Count"\n')
    run = subprocess.Popen([installed_command(), "run", "plan.toml"], cwd=project, env=cli_environment(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (project / ".mcp-swarm" / "logs" / "worker-1.log").is_file():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        watch = subprocess.Popen([installed_command(), "status", "--watch"], cwd=project,
                                 env=cli_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 text=True)  # fmt: skip
        follow = mcp_swarm(project, "logs", "worker-1", "--follow")
        assert run.wait(timeout=30) == 0
        time.sleep(1)  # a look at the file after the run's last commit
        watch.send_signal(signal.SIGINT)
        watched, _ = watch.communicate(timeout=30)
    finally:
        run.kill()
    assert follow.returncode == 0, follow.stderr
    # Each line stamped with the time it was read; then how the worker ended.
    *lines, closing = follow.stdout.splitlines()
    assert [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in lines] == [f"line {i}" for i in range(6)]
    assert all(re.match(r"\d\d:\d\d:\d\d line", line) for line in lines), follow.stdout
    assert re.fullmatch(
        r"\[mcp-swarm\] worker-1 ended .*: exit status 0, succeeded; task 1 completed", closing
    )
    # Not a terminal: the status again each time the file changed, from running to completed.
    assert watch.returncode == 0
    assert re.search(r"│ Count\s+│ in_progress\s+│ worker-1", watched)
    assert re.search(r"│ Count\s+│ completed\s+│ worker-1", watched.split("---")[-1])


# Two bursts of lines, the second only once the test opens its gate, spread over about a second.
BURSTS = """
import pathlib, sys, time
gates = pathlib.Path(sys.argv[1])
for i in range(5):
    print('first', i, flush=True)
    time.sleep(0.05)
while not (gates / 'go').exists():
    time.sleep(0.01)
for i in range(5):
    print('second', i, flush=True)
    time.sleep(0.25)
"""
STAMPED = re.compile(r"(\d\d:\d\d:\d\d|        ) (.*)")


def _runtime(project: Path, name: str, script: str, *args: str) -> None:
    (project / f"{name}.py").write_text(script)
    argv = json.dumps([sys.executable, str(project / f"{name}.py"), *args])
    (project / "mcp-swarm.toml").write_text(f'{CONFIG}\n[runtimes.{name}]\ntype = "command"\nargv = {argv}\n')
    (project / "plan.toml").write_text(f'runtime = "{name}"\n[[tasks]]\nkey = "a"\nsubject = "Print"\n')


def _stamps(output: str) -> list[tuple[str, str]]:
    """(stamp, line) of each line `logs` printed before its closing line; a blank stamp is ""."""
    *lines, closing = output.splitlines()
    assert closing.startswith("[mcp-swarm] worker-1 ended "), output
    parsed = [STAMPED.fullmatch(line) for line in lines]
    assert all(parsed), output
    return [(match[1].strip(), match[2]) for match in parsed if match]


def _clock(stamp: str, day: datetime) -> datetime:
    return datetime.combine(day.date(), datetime.strptime(stamp, "%H:%M:%S").time())


@pytest.mark.slow
def test_logs_stamps_each_line_with_when_it_was_written(project: Path) -> None:
    gates = project / "gates"
    gates.mkdir()
    _runtime(project, "bursts", BURSTS, str(gates))
    run = subprocess.Popen([installed_command(), "run", "plan.toml"], cwd=project, env=cli_environment(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        # The gate opens once the server's follower has seen the whole first burst.
        log = project / ".mcp-swarm" / "logs" / "worker-1.log"
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the first burst was never recorded as seen"
            if log.is_file() and (text := log.read_bytes()).endswith(b"first 4\n"):
                stat = log.stat()
                if line_times(log, (stat.st_dev, stat.st_ino)).at(len(text) - 1) is not None:
                    break
            time.sleep(0.02)
        opened = datetime.now().replace(microsecond=0)
        (gates / "go").touch()
        assert run.wait(timeout=60) == 0
    finally:
        run.kill()
    logs = mcp_swarm(project, "logs", "worker-1")
    assert logs.returncode == 0, logs.stderr
    if datetime.now().date() != opened.date():
        pytest.skip("the clock passed midnight: HH:MM:SS stamps cannot be compared")
    stamps = _stamps(logs.stdout)
    assert [line for _, line in stamps] == [f"first {i}" for i in range(5)] + [
        f"second {i}" for i in range(5)
    ]
    assert all(stamp for stamp, _ in stamps), logs.stdout
    times = [_clock(stamp, opened) for stamp, _ in stamps]
    # Seen before the gate opened, or after: the stamp says when it was printed, not when shown.
    assert all(at <= opened for at in times[:5]), logs.stdout
    assert all(at >= opened for at in times[5:]), logs.stdout
    assert times == sorted(times)
    assert times[-1] > opened  # the second burst lasts a second: not all stamped alike


# Lines of about 100 bytes, each with the time it was printed: three times a 64 KiB log limit.
FLOOD_OF_LINES = """
import sys, time
for n in range(2000):
    print(f"{n:05d} {time.time():.3f} {'x' * 80}", flush=True)
    if n % 20 == 0:
        time.sleep(0.01)
"""


@pytest.mark.slow
def test_logs_stamps_stay_in_order_across_rotations(project: Path) -> None:
    _runtime(project, "lines", FLOOD_OF_LINES)
    config = project / "mcp-swarm.toml"
    config.write_text(f"max_log_bytes = {MIN_MAX_LOG_BYTES}\n" + config.read_text())
    done = mcp_swarm(project, "run", "plan.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    log = project / ".mcp-swarm" / "logs" / "worker-1.log"
    assert rotated_path(log).is_file()  # it was rotated
    logs = mcp_swarm(project, "logs", "worker-1")
    assert logs.returncode == 0, logs.stderr
    stamps = _stamps(logs.stdout)
    assert stamps[-1][1].startswith("01999 ")
    assert all(stamp for stamp, _ in stamps), logs.stdout
    # Each whole line no earlier than it was printed (to the second), and not long after.
    for stamp, line in stamps[1:]:  # the first may be the rest of a line a rotation cut in two
        printed = datetime.fromtimestamp(float(line.split(" ")[1]))
        at = _clock(stamp, printed)
        assert printed.replace(microsecond=0) <= at <= printed + timedelta(seconds=10), (stamp, line)
    times = [stamp for stamp, _ in stamps]
    assert times == sorted(times) or times[0] > times[-1]  # in order (but for midnight)


def test_status_and_logs_refuse_what_is_not_there(tmp_path: Path) -> None:
    status = mcp_swarm(tmp_path, "status")
    assert status.returncode == 2
    assert "no swarm database" in status.stderr
    assert not (tmp_path / ".mcp-swarm").exists()

    async def plan_without_workers() -> None:
        async with await Store.open(tmp_path / ".mcp-swarm" / "swarm.db") as store:
            await Ledger(store).create(NewTask(subject="A"))

    anyio.run(plan_without_workers)
    assert "A" in mcp_swarm(tmp_path, "status").stdout
    missing = mcp_swarm(tmp_path, "logs", "worker-9")
    assert missing.returncode == 2
    assert "no worker-9" in missing.stderr
    bad = mcp_swarm(tmp_path, "logs", "nine")
    assert bad.returncode == 2
    assert "workers are named like worker-3" in bad.stderr


# Each worker waits until `count` workers have started, together: it passes only if that many run
# at once (else it gives up after a while, and fails).
BARRIER = """
import os, pathlib, sys, time
gates, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
(gates / os.environ["SWARM_WORKER_ID"]).touch()
deadline = time.monotonic() + 30
while len(os.listdir(gates)) < count:
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.01)
"""


def test_max_workers_flag_sets_the_ceiling_above_the_configured_one(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    (tmp_path / "barrier.py").write_text(BARRIER)
    argv = [sys.executable, str(tmp_path / "barrier.py"), str(gates), "6"]
    (tmp_path / "mcp-swarm.toml").write_text(
        f'max_workers = 2\n\n[runtimes.barrier]\ntype = "command"\nargv = {argv!r}\n'.replace("'", '"')
    )
    (tmp_path / "plan.json").write_text(
        '{"tasks": [' + ", ".join(f'{{"key": "t{n}", "subject": "task {n}"}}' for n in range(6)) + "]}"
    )
    # The flag is the user's own, as --db is: six at once, although the file says two.
    done = mcp_swarm(tmp_path, "run", "plan.json", "--runtime", "barrier", "--max-workers", "6")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(gates)) == [f"worker-{n}" for n in range(1, 7)]
