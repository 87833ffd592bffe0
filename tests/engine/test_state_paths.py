"""Which paths a worker is kept out of (Launcher.state_paths), for each shape of project and state.

The runtimes close each path whole (Codex's sandbox, Claude Code's deny rules, which win over any
allow): none of them may hold the worker's own directory, and together they must cover what the
swarm reads back from its state directory.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mcp_swarm.engine.launcher import Launcher
from mcp_swarm.engine.swarm import Swarm, WorkerLimits
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask
from mcp_swarm.placement.builtin import placements
from mcp_swarm.runtimes.base import WorkerRequest
from mcp_swarm.runtimes.command import CommandProfile, CommandRuntime
from mcp_swarm.store import Store
from tests.support.helpers import git, running

OWN_ENTRIES = ("logs", "workers", "results", "runs", "token")


def launcher(project: Path, db: Path) -> Launcher:
    return Launcher(state_dir=db.parent, project_dir=project, db_path=db, env_allow=())


def test_a_worker_in_the_project_is_kept_out_of_the_whole_state_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    state = project / ".mcp-swarm"
    assert launcher(project, state / "swarm.db").state_paths(project) == (state,)
    # A database kept outside the project, on purpose.
    elsewhere = tmp_path / "elsewhere" / "swarm.db"
    assert launcher(project, elsewhere).state_paths(project) == (elsewhere.parent,)


def test_a_worker_in_its_worktree_is_kept_out_of_everything_else_in_the_state(tmp_path: Path) -> None:
    project = tmp_path / "project"
    state = project / ".mcp-swarm"
    worktrees = state / "worktrees"
    own, other = worktrees / "worker-2", worktrees / "worker-1"
    own.mkdir(parents=True)
    other.mkdir()
    db = state / "swarm.db"
    paths = launcher(project, db).state_paths(own)
    assert paths == (
        db,
        state / "swarm.db-wal",
        state / "swarm.db-shm",
        state / "swarm.db-journal",
        *(state / name for name in OWN_ENTRIES),
        other,
    )
    assert not any(path == own or path in own.parents for path in paths)


def test_a_database_in_the_project_itself_closes_the_swarms_entries_not_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    db = project / "swarm.db"
    paths = launcher(project, db).state_paths(project)
    assert paths == (
        db,
        project / "swarm.db-wal",
        project / "swarm.db-shm",
        project / "swarm.db-journal",
        *(project / name for name in OWN_ENTRIES),
    )
    # Or above it, in the user's home say: never the directory that holds the project.
    home_db = tmp_path / "swarm.db"
    assert tmp_path not in launcher(project, home_db).state_paths(project)


class Recording(CommandRuntime):
    """`true`, noting the paths each worker's request closes to it."""

    def __init__(self) -> None:
        super().__init__(CommandProfile(["true"]), name="recording")
        self.closed: dict[str, tuple[Path, ...]] = {}

    def argv(self, request: WorkerRequest) -> list[str]:
        self.closed[request.worker_id] = request.state_paths
        return super().argv(request)


@pytest.mark.anyio
async def test_each_worker_of_a_spawn_is_kept_out_of_its_siblings_worktrees(tmp_path: Path) -> None:
    """The worktrees of one spawn are all made before any worker's request: the first worker is
    closed out of the last one's worktree too, not only out of those of earlier spawns."""
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    git(
        project,
        "-c",
        "user.name=Lead",
        "-c",
        "user.email=lead@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    )
    state = project / ".mcp-swarm"
    runtime = Recording()
    async with await Store.open(state / "swarm.db") as store:
        swarm = Swarm(
            store, {"recording": runtime}, default_runtime="recording", state_dir=state, project_dir=project,
            limits=WorkerLimits(max_workers=3), placements=placements(),
        )  # fmt: skip
        ledger = Ledger(store)
        task_ids = [(await ledger.create(NewTask(subject=f"part {n}"))).id for n in range(3)]
        async with running(swarm):
            spawned = await swarm.spawn(task_ids, isolation="worktree")
            assert len(spawned.workers) == 3, spawned
            with anyio.fail_after(30):
                done = 0
                while done < 3:
                    done += len((await swarm.wait(timeout=30)).done)
    worktrees = {worker: state / "worktrees" / worker for worker in runtime.closed}
    assert sorted(worktrees) == ["worker-1", "worker-2", "worker-3"]
    for worker, closed in runtime.closed.items():
        others = {path for name, path in worktrees.items() if name != worker}
        assert others <= set(closed), (worker, closed)
        assert worktrees[worker] not in closed
