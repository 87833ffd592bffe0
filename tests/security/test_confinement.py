"""No escape from the project: every path a caller, a task or a worker can name stays inside it.

- A task's validation paths (`files_exist`, `content_check`) resolve inside the worker's
  directory: `..`, absolute paths, links that lead out, and names that are no file names fail
  their check with the reason, and nothing outside is read.
- The state directory (`.mcp-swarm`) is the project's: a link that takes it elsewhere stops the
  server before it writes anything.
- A worker's files in the state directory (log, prompt, result, the logs of its checks) are never
  reached through a symbolic link, which a worker may plant there (it can write in its project):
  the server would otherwise append to, truncate, delete or read a file of the worker's choosing.
- Worktrees are made only under the project's own `.mcp-swarm/worktrees`, and removing leftovers
  never deletes through a link.
- Worker and task ids never become paths unless they are ids (see test_no_injection.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_swarm.workspace import worktrees
from tests.support.helpers import git
from tests.support.mcp_client import call, installed_command, project_session
from tests.support.recorded_runs import configure, run_one

pytestmark = pytest.mark.anyio

SECRET = "the secret outside the project"


def outside_file(tmp_path: Path) -> Path:
    """A file beside the project, which nothing of the project may read or change."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(SECRET + "\n")
    return path


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its content, to show that nothing there changed."""
    return {
        str(path.relative_to(root)): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()
    }


# -- validation paths ------------------------------------------------------------------------------


async def test_validation_paths_outside_the_workers_directory_fail_their_checks(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    secret = outside_file(tmp_path)
    configure(project, tmp_path / "records")
    (project / "inside.txt").write_text("made inside\n")
    (project / "link-out").symlink_to(secret)
    (project / "dir-out").symlink_to(secret.parent, target_is_directory=True)
    outside = ["../outside/secret.txt", str(secret), "link-out", "dir-out/secret.txt", "a\0b"]
    too_long = "x" * 5000
    validation = {
        "files_exist": ["inside.txt", *outside, too_long],
        "content_check": [
            {"file": "inside.txt", "pattern": "made inside"},
            *({"file": name, "pattern": "secret"} for name in [*outside, too_long]),
        ],
    }
    before = tree(secret.parent)
    async with project_session(project) as client:
        task = {"subject": "Check", "description": "", "metadata": {"validation": validation}}
        done = await run_one(client, task)
        # Still serving after checks that could not be done.
        listed = await call(client, "TaskList")
    assert listed["tasks"][0]["status"] == "failed", listed
    details = {check["check"]: check.get("detail") for check in done["validation"]["checks"]}
    assert details.pop("files_exist inside.txt") is None
    assert details.pop("content_check inside.txt") is None
    assert details.pop(f"files_exist {too_long}") == "missing"
    assert details.pop(f"content_check {too_long}") == "cannot read it: File name too long"
    refused = "the path leads outside the worker's directory (or is no file name)"
    assert details == {
        f"{kind} {name}": refused for kind in ("files_exist", "content_check") for name in outside
    }
    assert all(
        not check["passed"] for check in done["validation"]["checks"][1:] if "inside" not in check["check"]
    )
    assert SECRET not in json.dumps(done)
    assert tree(secret.parent) == before


# -- the state directory -----------------------------------------------------------------------------


def test_a_state_directory_linked_out_of_the_project_stops_the_server(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / ".mcp-swarm").symlink_to(elsewhere, target_is_directory=True)
    done = subprocess.run(
        [installed_command(), "serve"],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "leads outside the project" in done.stderr, done.stderr
    assert "--db" in done.stderr, done.stderr
    assert list(elsewhere.iterdir()) == []


# A link planted in the state directory before a worker starts, as an earlier worker could have:
# where, and what it is: a symbolic link to the secret file or to the directory holding it, or a
# hard link to the secret file (another name for it, which writing there would change).
PLANTED = [
    ("logs", "directory"),
    ("logs/worker-1.log", "file"),
    ("logs/worker-1.log", "hard"),
    ("workers", "directory"),
    ("workers/worker-1", "directory"),
    ("workers/worker-1/prompt.md", "file"),
    ("workers/worker-1/prompt.md", "hard"),
    ("results", "directory"),
    ("results/worker-1.json", "file"),
    ("results/worker-1.json", "hard"),
]


@pytest.mark.parametrize(("where", "kind"), PLANTED, ids=[f"{where}-{kind}" for where, kind in PLANTED])
async def test_a_link_in_the_state_directory_keeps_the_worker_from_starting(
    tmp_path: Path, where: str, kind: str
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    secret = outside_file(tmp_path)
    configure(project, tmp_path / "records")
    link = project / ".mcp-swarm" / where
    link.parent.mkdir(parents=True)
    if kind == "hard":
        link.hardlink_to(secret)
    else:
        link.symlink_to(secret if kind == "file" else secret.parent, target_is_directory=kind == "directory")
    before = tree(secret.parent)
    async with project_session(project) as client:
        await call(client, "TaskCreate", subject="Start me", description="")
        spawned = await call(client, "spawn", taskIds=["1"])
        task = await call(client, "TaskGet", taskId="1")
    assert spawned.get("workers", []) == [], spawned
    [skipped] = spawned["skipped"]
    reason = "is not a file of its own" if kind == "hard" else "is reached through a symbolic link"
    assert reason in skipped["reason"], skipped
    assert task["status"] == "pending", task
    assert not (tmp_path / "records" / "worker-1.json").exists()
    assert tree(secret.parent) == before


# The worker plants links where the server writes and reads after it has ended: its result file,
# a link to a JSON file outside that it wants shown; the logs of the task's checks, a symbolic
# and a hard link to files outside that it wants the checks' output appended to.
PLANTING_WORKER = """
import os, pathlib, sys
result, outside_json, outside_file, other_file = (pathlib.Path(arg) for arg in sys.argv[1:5])
os.symlink(outside_json, result)
# The logs of its checks go to the directory of its own files, which it may make before the server.
files = result.parent.parent / "workers" / sys.argv[5]
files.mkdir(parents=True, exist_ok=True)
os.symlink(outside_file, files / "tests.log")
os.link(other_file, files / "command.log")
"""


async def test_links_a_worker_plants_for_its_result_and_check_logs_are_not_followed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    secret = outside_file(tmp_path)
    report, other = secret.parent / "report.json", secret.parent / "other.txt"
    report.write_text(json.dumps({"status": "done", "summary": SECRET}))
    other.write_text("another file of the user's\n")
    argv = [
        sys.executable,
        "-c",
        PLANTING_WORKER,
        "{result_file}",
        str(report),
        str(secret),
        str(other),
        "{worker_id}",
    ]
    (project / "mcp-swarm.toml").write_text(
        f'default_runtime = "planter"\n\n[runtimes.planter]\ntype = "command"\nargv = {json.dumps(argv)}\n'
    )
    check = {"argv": [sys.executable, "-c", "print('appended by the check')"]}
    before = tree(secret.parent)
    async with project_session(project) as client:
        task = {
            "subject": "Plant",
            "description": "",
            "metadata": {"validation": {"tests": check, "command": check}},
        }
        done = await run_one(client, task)
    assert SECRET not in json.dumps(done), done
    tests, command = done["validation"]["checks"]
    assert tests["passed"] is False, tests
    assert "is reached through a symbolic link" in tests["detail"], tests
    # Its log made afresh, the check ran; the file the worker linked to is untouched.
    assert command["passed"] is True, command
    assert tree(secret.parent) == before


# -- worktrees -----------------------------------------------------------------------------------------


def _repository(project: Path) -> None:
    project.mkdir()
    (project / "README.md").write_text("# repo\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")


async def test_worktrees_linked_out_of_the_project_are_refused(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _repository(project)
    configure(project, tmp_path / "records")
    elsewhere.mkdir()
    (project / ".mcp-swarm").mkdir()
    (project / ".mcp-swarm" / "worktrees").symlink_to(elsewhere, target_is_directory=True)
    async with project_session(project) as client:
        await call(client, "TaskCreate", subject="Isolated", description="")
        spawned = await call(client, "spawn", taskIds=["1"], isolation="worktree")
        task = await call(client, "TaskGet", taskId="1")
    [skipped] = spawned["skipped"]
    assert "is reached through a symbolic link" in skipped["reason"], skipped
    assert task["status"] == "pending", task
    assert list(elsewhere.iterdir()) == []
    assert "swarm/worker-1" not in git(project, "branch", "--list")


async def test_removing_leftover_worktrees_never_deletes_through_a_link(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _repository(project)
    victim = elsewhere / "victim"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("mine\n")
    root = project / ".mcp-swarm" / "worktrees"
    root.mkdir(parents=True)
    # A leftover entry that is a link out of the project...
    (root / "worker-7").symlink_to(victim, target_is_directory=True)
    assert await worktrees.prune(project) == []
    assert (victim / "keep.txt").read_text() == "mine\n"
    # ...and the worktrees' directory itself a link out of the project.
    (root / "worker-7").unlink()
    root.rmdir()
    root.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(worktrees.WorktreeError, match="is reached through a symbolic link"):
        await worktrees.prune(project)
    assert (victim / "keep.txt").read_text() == "mine\n"
