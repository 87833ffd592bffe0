"""Which paths a worker is kept out of (Launcher.state_paths), for each shape of project and state.

The runtimes close each path whole (Codex's sandbox, Claude Code's deny rules, which win over any
allow): none of them may hold the worker's own directory, and together they must cover what the
swarm reads back from its state directory.
"""

from __future__ import annotations

from pathlib import Path

from mcp_swarm.engine.launcher import Launcher

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
