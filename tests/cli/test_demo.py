"""`mcp-swarm demo`, run as a person runs it: the installed script, from a directory of no interest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_swarm.cli.demo import demo_tasks
from mcp_swarm.config import load_settings
from mcp_swarm.ledger.plan_file import load_plan
from tests.support import REPOSITORY
from tests.support.cli import cli_environment
from tests.support.helpers import git
from tests.support.mcp_client import installed_command

EXAMPLES = REPOSITORY / "examples"


def _environment(home: Path) -> dict[str, str]:
    env = cli_environment(HOME=str(home), TMPDIR=str(home))
    env.pop("COLUMNS", None)
    return env


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    somewhere = tmp_path / "somewhere"
    somewhere.mkdir(exist_ok=True)
    done = subprocess.run(
        [installed_command(), "demo", "--pace", "0", *args],
        cwd=somewhere,
        env=_environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Nothing is left where it was started.
    assert list(somewhere.iterdir()) == []
    return done


def test_demo_runs_the_five_tasks_in_four_waves_and_leaves_nothing(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    out = done.stdout
    # Not a terminal: plain lines, no control sequences, whatever rich could do.
    assert "\x1b[" not in out
    for subject in ("Create User model", "Add password hashing", "Create login endpoint", "Add JWT tokens",
                    "Write tests"):  # fmt: skip
        assert re.search(rf"task \d '{subject}': completed by worker-\d", out), out
    waves = {int(w) for w in re.findall(r"^wave (\d)  task", out, re.MULTILINE)}
    assert waves == {1, 2, 3, 4}
    assert "5 of 5 tasks completed in 4 waves" in out
    assert "validation: 15 of 15 checks passed" in out
    assert "the Mayor committed the workers' 7 files" in out
    assert re.search(r"wall time: [\d.]+ s", out)
    project = re.search(r"^project: (\S+)", out, re.MULTILINE)
    assert project is not None
    assert "removed with the project" in out
    assert not Path(project.group(1)).exists()
    # The temporary directory was the only thing made, and it is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["somewhere"]


@pytest.mark.slow
def test_demo_keep_leaves_a_repository_and_state_that_status_and_logs_read(tmp_path: Path) -> None:
    out = _demo(tmp_path, "--keep").stdout
    match = re.search(r"mcp-swarm status --db (\S+)", out)
    assert match is not None, out
    db = Path(match.group(1))
    project = db.parent.parent
    assert (project / "app" / "tokens.py").is_file()
    log = git(project, "log", "--format=%s").splitlines()
    assert log == ["Build the user auth system (5 tasks by the swarm)", "Start the auth project"]

    env = _environment(tmp_path)
    status = subprocess.run(
        [installed_command(), "status", "--db", str(db)], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    rows = re.findall(r"│\s+(\d)\s+│\s+(\d)\s+│ ([^│]+?)\s+│ (\w+)\s+│ (worker-\d)", status.stdout)
    assert [(wave, task, status_, owner) for wave, task, _, status_, owner in rows] == [
        ("1", "1", "completed", "worker-1"),
        ("2", "2", "completed", "worker-2"),
        ("2", "3", "completed", "worker-3"),
        ("3", "4", "completed", "worker-4"),
        ("4", "5", "completed", "worker-5"),
    ]
    assert re.search(r"worker-5 .* demo .* succeeded .* 1 .* [\d.]+ s", status.stdout)
    assert "5 completed" in status.stdout

    logs = subprocess.run(
        [installed_command(), "logs", "worker-4", "--db", str(db)], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert logs.returncode == 0, logs.stderr
    # Each line stamped with when the server first saw it (HH:MM:SS, blank where none did).
    assert re.fullmatch(r"(\d\d:\d\d:\d\d|        ) task 4: Add JWT tokens", logs.stdout.splitlines()[0])
    assert "wrote app/tokens.py" in logs.stdout


def test_the_example_plan_file_is_the_demo_plan() -> None:
    plan = load_plan(EXAMPLES / "auth-plan.toml")
    builtin = demo_tasks(sys.executable)
    assert [t.key for t in plan.tasks] == [t["key"] for t in builtin]
    assert [t.subject for t in plan.tasks] == [t["subject"] for t in builtin]
    assert [t.blocked_by for t in plan.tasks] == [t.get("blocked_by", []) for t in builtin]
    for task, expected in zip(plan.tasks, builtin, strict=True):
        validation = dict(task.metadata["validation"])
        wanted = dict(expected["metadata"]["validation"])
        # Only the interpreter differs: the file cannot know which python runs mcp-swarm.
        validation.pop("tests", None)
        wanted.pop("tests", None)
        assert validation == wanted
    assert plan.waves() == {"model": 1, "hash": 2, "login": 2, "jwt": 3, "tests": 4}


def test_the_json_example_and_the_configuration_example_load() -> None:
    assert load_plan(EXAMPLES / "release-plan.json").waves()["notes"] == 2
    # Loaded as mcp-swarm loads a configuration: an unknown key would be refused.
    settings = load_settings(cwd=EXAMPLES, config=EXAMPLES / "mcp-swarm.toml", environ={})
    assert {spec.type for spec in settings.runtimes.values()} == {"claude", "codex", "command"}


def test_the_skill_has_front_matter_and_names_the_tools() -> None:
    text = (EXAMPLES / "SKILL.md").read_text()
    front = text.split("---")[1]
    assert re.search(r"^name: swarm$", front, re.MULTILINE)
    assert re.search(r"^description: .{40,}", front, re.MULTILINE)
    for tool in ("TaskCreatePlan", "TaskList(ready=true)", "spawn", "wait", "send_input", "close_agent",
                 "fetch_inbox", "helpRequests", "distributed"):  # fmt: skip
        assert tool in text
