"""`mcp-swarm demo`: the seed's example plan, run for real by scripted workers, in a fresh git repo.

No configuration, no agent CLI and no LLM: the workers are `mcp_swarm.cli.demo_worker` processes
started by the same engine that starts claude or codex workers, so spawning, supervision,
validation (down to running the tests the workers wrote) and the waves are all the real thing.
Everything happens in a temporary directory, removed at the end unless `--keep`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from mcp_swarm.app import demo_runtime, engine_runtimes
from mcp_swarm.cli.run_state import RunState
from mcp_swarm.cli.run_view import make_view, print_summary, summary_lines
from mcp_swarm.cli.runner import RunOptions, run_plan
from mcp_swarm.config import load_settings
from mcp_swarm.ledger.plan_file import PlanFile
from mcp_swarm.runtimes.registry import DEMO_RUNTIME

TITLE = "A user auth system, by a swarm"
_GIT_IDENTITY = [
    "-c", "user.name=mcp-swarm demo", "-c", "user.email=demo@mcp-swarm.invalid",
    "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null",
]  # fmt: skip


def _check(file: str, pattern: str) -> dict[str, str]:
    return {"file": file, "pattern": pattern}


def demo_tasks(python: str) -> list[dict[str, Any]]:
    """The seed's example: five tasks, four waves. `python` runs the tests of the last one."""
    return [
        {
            "key": "model",
            "subject": "Create User model",
            "description": "A User dataclass (email, password hash, active) in app/models.py.",
            "metadata": {"validation": {
                "files_exist": ["app/__init__.py", "app/models.py"],
                "content_check": [_check("app/models.py", r"class User\b")],
            }},
        },
        {
            "key": "hash",
            "subject": "Add password hashing",
            "description": "hash_password and verify_password in app/security.py: PBKDF2, a salt each.",
            "blocked_by": ["model"],
            "metadata": {"validation": {
                "files_exist": ["app/security.py"],
                "content_check": [_check("app/security.py", r"def hash_password\("),
                                  _check("app/security.py", r"def verify_password\(")],
            }},
        },
        {
            "key": "login",
            "subject": "Create login endpoint",
            "description": "login(users, email, password) in app/routes.py; one error for every failure.",
            "blocked_by": ["model"],
            "metadata": {"validation": {
                "files_exist": ["app/routes.py"],
                "content_check": [_check("app/routes.py", r"def login\(")],
            }},
        },
        {
            "key": "jwt",
            "subject": "Add JWT tokens",
            "description": "create_token and verify_token (HS256) in app/tokens.py.",
            "blocked_by": ["login"],
            "metadata": {"validation": {
                "files_exist": ["app/tokens.py"],
                "content_check": [_check("app/tokens.py", r"def create_token\("),
                                  _check("app/tokens.py", r"def verify_token\(")],
            }},
        },
        {
            "key": "tests",
            "subject": "Write tests",
            "description": "Unit tests of hashing, login and tokens in tests/test_auth.py; they must pass.",
            "blocked_by": ["hash", "login", "jwt"],
            "metadata": {"validation": {
                "files_exist": ["tests/__init__.py", "tests/test_auth.py"],
                "content_check": [_check("tests/test_auth.py", r"class AuthTests\b")],
                "tests": {"argv": [python, "-m", "unittest", "-q", "tests.test_auth"], "timeoutSeconds": 120},
            }},
        },
    ]  # fmt: skip


def demo_plan() -> PlanFile:
    return PlanFile.model_validate({"runtime": DEMO_RUNTIME, "tasks": demo_tasks(sys.executable)})


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *_GIT_IDENTITY, *args],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _new_repository(project: Path) -> bool:
    """A git repository with one commit, as a project would be; False if git is not installed."""
    (project / "README.md").write_text("# auth\n\nA user auth system, built by an mcp-swarm demo.\n")
    (project / ".gitignore").write_text("__pycache__/\n")
    if shutil.which("git") is None:
        return False
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "Start the auth project")
    return True


def _commit(project: Path) -> str | None:
    """The Mayor commits the workers' files (workers never do); a line saying so, or None."""
    changed = [line[3:] for line in _git(project, "status", "--porcelain", "-uall").splitlines()]
    if not changed:
        return None
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "Build the user auth system (5 tasks by the swarm)")
    sha = _git(project, "rev-parse", "--short", "HEAD").strip()
    return f"the Mayor committed the workers' {len(changed)} files as {sha}: {', '.join(changed)}"


def run_demo(console: Console, *, keep: bool, pace: float | None) -> int:
    """Run the demo, print its story; the exit status (0 when every task completed)."""
    project = Path(tempfile.mkdtemp(prefix="mcp-swarm-demo-"))
    try:
        has_git = _new_repository(project)
        settings = load_settings(cwd=project, environ={})
        runtimes = engine_runtimes(settings, {DEMO_RUNTIME: demo_runtime(pace)})
        kind = "a new git repository" if has_git else "git is not installed, so a plain directory"
        console.print(f"mcp-swarm demo: the seed's example plan, run by scripted workers (no LLM, "
                      f"no configuration)\nproject: {project} ({kind})", highlight=False)  # fmt: skip
        state = anyio.run(_run, demo_plan(), settings, runtimes, console)
        lines = summary_lines(state)
        if has_git and state.succeeded:
            committed = _commit(project)
            if committed:
                lines.append(committed)
        if keep:
            lines.append(f"state: {settings.db_path} (kept, with the project)")
            lines.append(f"  look again: mcp-swarm status --db {settings.db_path}")
        else:
            lines.append(f"state: {settings.db_path}, removed with the project (--keep keeps both)")
        print_summary(console, lines)
        return state.exit_status
    finally:
        if not keep:
            shutil.rmtree(project, ignore_errors=True)


async def _run(plan: PlanFile, settings: Any, runtimes: Any, console: Console) -> RunState:
    return await run_plan(plan, settings, runtimes, RunOptions(), make_view(console), title=TITLE)
