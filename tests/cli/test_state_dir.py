"""The state directory keeps itself out of git: after `run`, `serve` and `demo` in a real
repository, `git status` shows nothing of `.mcp-swarm/`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio
import pytest

from tests.support.cli import mcp_swarm
from tests.support.helpers import git
from tests.support.mcp_client import call, project_session

CONFIG = f"""
[runtimes.noop]
type = "command"
argv = [{str(sys.executable)!r}, "-c", "print('nothing to do')"]
"""

PLAN = """
runtime = "noop"

[[tasks]]
key = "one"
subject = "Do nothing"

[[tasks]]
key = "two"
subject = "Do nothing again"
blocked_by = ["one"]
"""


def _git_status(project: Path) -> str:
    return git(project, "status", "--porcelain", "--untracked-files=all", "--ignored=no")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with the plan and configuration committed, as a person's project is."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mcp-swarm.toml").write_text(CONFIG)
    (project / "plan.toml").write_text(PLAN)
    git(project, "init", "-q")
    git(project, "add", "mcp-swarm.toml", "plan.toml")
    git(project, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "start")
    assert _git_status(project) == ""
    return project


def test_run_leaves_git_status_clean(project: Path, tmp_path: Path) -> None:
    done = mcp_swarm(project, "run", "plan.toml", HOME=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    state = project / ".mcp-swarm"
    assert (state / "swarm.db").is_file()
    assert any((state / "logs").iterdir())
    assert _git_status(project) == ""
    # Ignored, not hidden some other way: git names the directory as ignored.
    assert "!! .mcp-swarm/" in git(project, "status", "--porcelain", "--ignored")
    assert (state / ".gitignore").read_text().splitlines()[-1] == "*"


def test_serve_leaves_git_status_clean(project: Path) -> None:
    async def session() -> None:
        async with project_session(project) as client:
            created = await call(client, "TaskCreate", subject="Write the notes", description="notes.md")
            assert created["id"] == "1"

    anyio.run(session)
    assert (project / ".mcp-swarm" / "swarm.db").is_file()
    assert _git_status(project) == ""


@pytest.mark.slow
def test_demo_keep_leaves_a_repository_whose_git_status_is_clean(tmp_path: Path) -> None:
    done = mcp_swarm(tmp_path, "demo", "--pace", "0", "--keep", HOME=str(tmp_path), TMPDIR=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"mcp-swarm status --db (\S+)", done.stdout)
    assert found is not None, done.stdout
    kept = Path(found.group(1)).parent.parent
    assert (kept / ".mcp-swarm" / "swarm.db").is_file()
    # The demo's own .gitignore names no state directory: the state directory ignores itself.
    assert ".mcp-swarm" not in (kept / ".gitignore").read_text()
    assert _git_status(kept) == ""
