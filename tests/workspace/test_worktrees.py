"""Worktrees for workers and the integration of their changes, on real git repositories.

Every repository is made in tmp_path, under a directory whose name has a space, and read back
with git itself (`git`, below), which shares no code with the module under test. HOME points to
an empty directory, so the developer's own git configuration plays no part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from mcp_swarm.errors import InvalidInput
from mcp_swarm.workspace import merge as worktree_merge
from mcp_swarm.workspace import worktrees
from mcp_swarm.workspace.worktrees import FileChange, IntegrationItem, Worktree, WorktreeError

pytestmark = pytest.mark.anyio

LEAD = "Lead Developer <lead@example.com>"
NINE_LINES = "".join(f"line {n}\n" for n in range(1, 10))
BINARY = bytes(range(256)) * 4


def _env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    # Reading the trees must not refresh their index, or its bytes could not be compared.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


def git(cwd: Path, *args: str) -> str:
    return gitb(cwd, *args).decode()


def gitb(cwd: Path, *args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=cwd, env=_env(), capture_output=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.decode()}"
    return done.stdout


def write(root: Path, relative: str, content: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def read(path: Path) -> bytes:
    return path.read_bytes()


def delete_tree(path: Path) -> None:
    shutil.rmtree(path)


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def files_of(root: Path) -> dict[str, bytes]:
    """Every file under root but git's own and mcp-swarm's, with its bytes."""
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in (".git", ".mcp-swarm") or not path.is_file():
            continue
        found[relative.as_posix()] = path.read_bytes()
    return found


def state_of(tree: Path) -> dict[str, object]:
    """Everything a conflict must leave as it was: status, both diffs, HEAD, index and files."""
    index = Path(git(tree, "rev-parse", "--path-format=absolute", "--git-path", "index").strip())
    return {
        "status": gitb(tree, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored"),
        "diff": gitb(tree, "diff", "--binary"),
        "cached": gitb(tree, "diff", "--cached", "--binary"),
        "head": git(tree, "rev-parse", "HEAD"),
        "index": index.read_bytes(),
        "files": files_of(tree),
    }


def log_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def item(task_id: str, subject: str, worktree: Worktree) -> IntegrationItem:
    return IntegrationItem(task_id, subject, worktree.path.name, worktree)


@pytest.fixture(autouse=True)
def no_user_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in list(os.environ):
        if name.startswith("GIT_"):
            monkeypatch.delenv(name)


def init(path: Path, *, identity: bool = True) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    if identity:
        git(path, "config", "user.name", "Lead Developer")
        git(path, "config", "user.email", "lead@example.com")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    project = init(tmp_path / "my project")
    write(project, "app.py", NINE_LINES)
    write(project, "README.md", "# demo\n")
    commit_all(project, "initial")
    return project


# --- create ----------------------------------------------------------------------------------


async def test_create_branches_from_head_and_leaves_the_main_tree_clean(repo: Path) -> None:
    write(repo, "app.py", "uncommitted\n")  # the user's work stays in the main tree
    head = git(repo, "rev-parse", "HEAD").strip()

    tree = await worktrees.create(repo, "worker-1")

    assert tree.path == repo / ".mcp-swarm" / "worktrees" / "worker-1"
    assert tree.branch == "swarm/worker-1"
    assert tree.base_commit == head
    assert tree.workdir == tree.path
    assert git(tree.path, "rev-parse", "HEAD").strip() == head
    assert git(tree.path, "symbolic-ref", "HEAD").strip() == "refs/heads/swarm/worker-1"
    assert git(tree.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert (tree.path / "app.py").read_text() == NINE_LINES
    # The main tree shows the user's change and nothing of mcp-swarm's.
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == " M app.py\n"
    assert (repo / "app.py").read_text() == "uncommitted\n"
    assert not (repo / ".gitignore").exists()
    assert ".mcp-swarm" not in (repo / ".git" / "info" / "exclude").read_text()


async def test_state_directory_never_shows_in_the_main_tree(repo: Path) -> None:
    write(repo, ".mcp-swarm/swarm.db", b"\0sqlite")
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "new.txt", "x\n")

    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    git(repo, "add", "-A")  # even adding everything takes nothing of it
    assert git(repo, "diff", "--cached", "--name-only") == ""


async def test_create_refuses_a_repository_without_commits(tmp_path: Path) -> None:
    project = init(tmp_path / "empty repo")
    with pytest.raises(WorktreeError, match="no commits yet"):
        await worktrees.create(project, "worker-1")
    assert not (project / ".mcp-swarm").exists()


async def test_create_refuses_a_directory_outside_git(tmp_path: Path) -> None:
    plain = tmp_path / "not a repo"
    plain.mkdir()
    with pytest.raises(WorktreeError, match="not inside a git repository"):
        await worktrees.create(plain, "worker-1")


async def test_a_missing_git_is_named(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "no such directory"))
    with pytest.raises(WorktreeError, match="git is not installed"):
        await worktrees.create(repo, "worker-1")


async def test_create_refuses_ids_that_cannot_name_a_branch(repo: Path) -> None:
    for bad in ("../escape", "a b", "x.lock", "", "-rf"):
        with pytest.raises(InvalidInput):
            await worktrees.create(repo, bad)


async def test_create_refuses_a_worker_that_has_a_worktree(repo: Path) -> None:
    await worktrees.create(repo, "worker-1")
    with pytest.raises(WorktreeError, match="already exists"):
        await worktrees.create(repo, "worker-1")


async def test_inherited_git_variables_cannot_redirect_us(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = init(tmp_path / "other")
    write(other, "f", "f\n")
    commit_all(other, "other")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "stray-index"))

    tree = await worktrees.create(repo, "worker-1")

    assert tree.base_commit == git(repo, "rev-parse", "HEAD").strip()
    assert (tree.path / "app.py").exists()
    assert git(other, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not (tmp_path / "stray-index").exists()


async def test_a_project_in_a_subdirectory_runs_its_worker_there(tmp_path: Path) -> None:
    top = init(tmp_path / "mono repo")
    write(top, "services/api v2/main.py", "print()\n")
    commit_all(top, "initial")
    project = top / "services" / "api v2"

    tree = await worktrees.create(project, "worker-1")

    assert tree.path == project / ".mcp-swarm" / "worktrees" / "worker-1"
    assert tree.subdirectory == "services/api v2"
    assert (tree.workdir / "main.py").read_text() == "print()\n"
    write(tree.workdir, "added.py", "x = 1\n")
    write(tree.workdir, ".mcp-swarm/worker.log", "not the worker's work\n")
    assert await worktrees.changes(tree) == [FileChange("services/api v2/added.py", 1, 0, "added")]

    report = await worktree_merge.integrate(project, [item("1", "Add a module", tree)], "Wave 1")
    assert report.commit is not None
    assert (project / "added.py").read_text() == "x = 1\n"
    assert git(top, "status", "--porcelain", "--untracked-files=all") == ""


# --- changes ---------------------------------------------------------------------------------


async def test_changes_names_every_kind_of_change_with_its_lines(repo: Path) -> None:
    write(repo, "keep.txt", "a\nb\nc\n")
    write(repo, "gone.txt", "1\n2\n3\n4\n")
    write(repo, "old name.txt", "".join(f"row {n}\n" for n in range(20)))
    write(repo, "image.bin", BINARY)
    commit_all(repo, "more files")
    tree = await worktrees.create(repo, "worker-1")
    index = Path(git(tree.path, "rev-parse", "--path-format=absolute", "--git-path", "index").strip())

    write(tree.path, "keep.txt", "a\nB\nc\nd\n")
    (tree.path / "gone.txt").unlink()
    renamed = "".join(f"row {n}\n" for n in range(20)).replace("row 7\n", "row seven\n")
    (tree.path / "old name.txt").unlink()
    write(tree.path, "new name.txt", renamed)
    write(tree.path, "image.bin", BINARY[::-1])
    write(tree.path, "dossier/été notes.txt", "un\ndeux\ntrois\n")
    write(tree.path, "odd\nname.txt", "tab\there\n")
    write(tree.path, ".mcp-swarm/worker.db", "ours, not the worker's\n")
    before_index = read(index)
    before_status = git(tree.path, "status", "--porcelain", "--untracked-files=all")

    found = await worktrees.changes(tree)

    assert sorted(found, key=lambda change: change.path) == [
        FileChange("dossier/été notes.txt", 3, 0, "added"),
        FileChange("gone.txt", 0, 4, "deleted"),
        FileChange("image.bin", 0, 0, "modified", binary=True),
        FileChange("keep.txt", 2, 1, "modified"),
        FileChange("new name.txt", 1, 1, "renamed", old_path="old name.txt"),
        FileChange("odd\nname.txt", 1, 0, "added"),
    ]
    # The worker's index and what it sees in git status are as they were.
    assert read(index) == before_index
    assert git(tree.path, "status", "--porcelain", "--untracked-files=all") == before_status


async def test_changes_counts_commits_the_worker_made_anyway(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "committed.txt", "one\ntwo\n")
    git(tree.path, "add", "committed.txt")
    git(tree.path, "commit", "-q", "-m", "worker commit")
    write(tree.path, "README.md", "# demo\nmore\n")

    assert await worktrees.changes(tree) == [
        FileChange("README.md", 1, 0, "modified"),
        FileChange("committed.txt", 2, 0, "added"),
    ]


async def test_changes_of_an_untouched_worktree_is_empty(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    assert await worktrees.changes(tree) == []


# --- integrate -------------------------------------------------------------------------------


async def test_two_workers_become_one_commit_listing_both_tasks(repo: Path) -> None:
    write(repo, "logo.bin", BINARY)
    base = commit_all(repo, "logo")
    first = await worktrees.create(repo, "worker-1")
    second = await worktrees.create(repo, "worker-2")
    # Two lines apart, so the second patch's context no longer matches once the first is in:
    # only the three-way merge brings both in.
    write(first.path, "app.py", NINE_LINES.replace("line 2\n", "line two\n"))
    write(first.path, "auth/hashing.py", "def hash(p):\n    return p\n")
    write(second.path, "app.py", NINE_LINES.replace("line 4\n", "line four\n"))
    write(second.path, "logo.bin", BINARY[:100])
    (second.path / "README.md").unlink()

    report = await worktree_merge.integrate(
        repo,
        [item("2", "Add password hashing", first), item("3", "Trim the logo", second)],
        "Wave 1: 2 tasks",
    )

    assert report.conflicts == []
    assert report.not_attempted == []
    assert [done.item.task_id for done in report.integrated] == ["2", "3"]
    assert report.integrated[0].files == [
        FileChange("app.py", 1, 1, "modified"),
        FileChange("auth/hashing.py", 2, 0, "added"),
    ]
    assert report.commit == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "rev-parse", "HEAD~1").strip() == base
    expected = "Wave 1: 2 tasks\n\n- #2 Add password hashing (worker-1)\n- #3 Trim the logo (worker-2)"
    assert report.message == expected
    assert git(repo, "log", "-1", "--format=%B").strip() == expected
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == LEAD
    assert (repo / "app.py").read_text() == NINE_LINES.replace("line 2\n", "line two\n").replace(
        "line 4\n", "line four\n"
    )
    assert (repo / "auth/hashing.py").read_text() == "def hash(p):\n    return p\n"
    assert (repo / "logo.bin").read_bytes() == BINARY[:100]
    assert not (repo / "README.md").exists()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    # Integrated worktrees and their branches are gone.
    assert not first.path.exists()
    assert not second.path.exists()
    assert git(repo, "branch", "--list", "swarm/*") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


async def test_a_conflict_with_the_main_tree_changes_nothing(repo: Path) -> None:
    clashing = await worktrees.create(repo, "worker-1")
    later = await worktrees.create(repo, "worker-2")
    write(clashing.path, "app.py", NINE_LINES.replace("line 5\n", "worker's five\n"))
    write(clashing.path, "extra.txt", "new\n")
    write(later.path, "later.txt", "later\n")
    # Meanwhile the lead commits its own edit of that line, and has work of its own in progress.
    write(repo, "app.py", NINE_LINES.replace("line 5\n", "lead's five\n"))
    commit_all(repo, "lead's edit")
    write(repo, "README.md", "# demo\nwork in progress\n")
    write(repo, "notes.txt", "untracked\n")
    main_before = state_of(repo)
    worker_before = state_of(clashing.path)

    report = await worktree_merge.integrate(
        repo, [item("4", "Rework line five", clashing), item("5", "Later", later)], "Wave 2"
    )

    assert report.commit is None
    assert report.integrated == []
    assert [conflict.item.task_id for conflict in report.conflicts] == ["4"]
    conflict = report.conflicts[0]
    assert conflict.reason == "does_not_apply"
    assert conflict.files == ["app.py"]
    assert "worker-1" in conflict.message
    assert "app.py" in conflict.message
    assert [waiting.task_id for waiting in report.not_attempted] == ["5"]
    assert state_of(repo) == main_before
    assert state_of(clashing.path) == worker_before
    assert clashing.path.exists()
    assert later.path.exists()


async def test_a_conflict_after_an_integrated_item_commits_only_that_item(repo: Path) -> None:
    first = await worktrees.create(repo, "worker-1")
    second = await worktrees.create(repo, "worker-2")
    write(first.path, "app.py", NINE_LINES.replace("line 5\n", "first five\n"))
    write(second.path, "app.py", NINE_LINES.replace("line 5\n", "second five\n"))
    write(repo, "README.md", "# demo\nwork in progress\n")
    worker_before = state_of(second.path)

    report = await worktree_merge.integrate(
        repo, [item("1", "First", first), item("2", "Second", second)], "W"
    )

    assert [done.item.task_id for done in report.integrated] == ["1"]
    assert [conflict.item.task_id for conflict in report.conflicts] == ["2"]
    assert report.conflicts[0].files == ["app.py"]
    assert git(repo, "log", "-1", "--format=%B").strip() == "W\n\n- #1 First (worker-1)"
    assert report.commit == git(repo, "rev-parse", "HEAD").strip()
    # The main tree is the commit plus the lead's own work, with nothing staged.
    assert (repo / "app.py").read_text() == NINE_LINES.replace("line 5\n", "first five\n")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == " M README.md\n"
    assert git(repo, "diff", "--cached") == ""
    assert "<<<<<<<" not in (repo / "app.py").read_text()
    assert not first.path.exists()
    assert state_of(second.path) == worker_before


@pytest.mark.parametrize("in_the_way", ["modified", "untracked", "ignored"])
async def test_uncommitted_work_of_the_lead_is_never_overwritten(repo: Path, in_the_way: str) -> None:
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "app.py", NINE_LINES.replace("line 9\n", "worker's nine\n"))
    write(tree.path, "report.txt", "the worker's report\n")
    if in_the_way == "modified":
        # A different line: the patch itself would apply, and take the lead's edit into the commit.
        write(repo, "app.py", NINE_LINES.replace("line 1\n", "lead's one\n"))
        blocked = ["app.py"]
    else:
        write(repo, "report.txt", "the lead's own report\n")
        if in_the_way == "ignored":
            # Ignored by the main tree alone (.git/info/exclude would hide it from the worker too).
            write(repo, ".gitignore", "report.txt\n")
        blocked = ["report.txt"]
    main_before = state_of(repo)
    worker_before = state_of(tree.path)

    report = await worktree_merge.integrate(repo, [item("7", "Edit", tree)], "Wave")

    assert report.commit is None
    assert len(report.conflicts) == 1
    conflict = report.conflicts[0]
    assert conflict.reason == "uncommitted_changes"
    assert conflict.files == blocked
    assert "uncommitted changes" in conflict.message
    assert state_of(repo) == main_before
    assert state_of(tree.path) == worker_before


async def test_integration_refuses_staged_changes_in_the_main_tree(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "new.txt", "new\n")
    write(repo, "README.md", "# staged\n")
    git(repo, "add", "README.md")
    main_before = state_of(repo)

    with pytest.raises(WorktreeError, match="staged changes"):
        await worktree_merge.integrate(repo, [item("1", "New", tree)], "Wave")

    assert state_of(repo) == main_before
    assert tree.path.exists()


async def test_integration_includes_commits_a_worker_made(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "committed.txt", "committed\n")
    git(tree.path, "add", "committed.txt")
    git(tree.path, "commit", "-q", "-m", "worker commit")
    write(tree.path, "loose.txt", "not committed\n")

    report = await worktree_merge.integrate(repo, [item("1", "Both", tree)], "Wave")

    assert report.commit is not None
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["committed.txt", "loose.txt"]
    assert git(repo, "branch", "--list", "swarm/*") == ""


async def test_a_worker_that_changed_nothing_is_integrated_without_a_commit(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    head = git(repo, "rev-parse", "HEAD")

    report = await worktree_merge.integrate(repo, [item("1", "Nothing", tree)], "Wave")

    assert report.commit is None
    assert [done.files for done in report.integrated] == [[]]
    assert git(repo, "rev-parse", "HEAD") == head
    assert not tree.path.exists()


async def test_without_an_identity_the_mayor_commits(tmp_path: Path) -> None:
    project = init(tmp_path / "anonymous", identity=False)
    git(project, "config", "user.useConfigOnly", "true")  # no guessing from the host name
    write(project, "a.txt", "a\n")
    git(project, "add", "a.txt")
    git(project, "-c", "user.name=Someone", "-c", "user.email=someone@example.com", "commit", "-qm", "first")
    tree = await worktrees.create(project, "worker-1")
    write(tree.path, "a.txt", "b\n")

    report = await worktree_merge.integrate(project, [item("1", "Change a", tree)], "Wave")

    assert report.commit is not None
    assert git(project, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == (
        "mcp-swarm Mayor <mayor@mcp-swarm.invalid>|mcp-swarm Mayor <mayor@mcp-swarm.invalid>"
    )
    assert git(project, "config", "--get-regexp", "^user\\.") == "user.useconfigonly true\n"


async def test_a_refused_commit_keeps_the_work_staged_and_the_worktrees(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    write(repo, ".git/hooks/pre-commit", "#!/bin/sh\necho 'lint failed' >&2\nexit 1\n")
    hook.chmod(0o755)
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "new.txt", "new\n")
    head = git(repo, "rev-parse", "HEAD")

    with pytest.raises(WorktreeError, match=r"(?s)#1 are applied and staged.*lint failed"):
        await worktree_merge.integrate(repo, [item("1", "New", tree)], "Wave")

    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == "A  new.txt\n"
    assert tree.path.exists()


async def test_after_a_refused_commit_the_next_integration_replaces_the_staged_changes(repo: Path) -> None:
    write(repo, ".git/hooks/pre-commit", "#!/bin/sh\necho 'lint failed' >&2\nexit 1\n")
    (repo / ".git" / "hooks" / "pre-commit").chmod(0o755)
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "new.txt", "new\n")
    write(tree.path, "app.py", NINE_LINES + "line 10\n")
    head = git(repo, "rev-parse", "HEAD").strip()
    with pytest.raises(WorktreeError, match="lint failed"):
        await worktree_merge.integrate(repo, [item("1", "New", tree)], "Wave")
    (repo / ".git" / "hooks" / "pre-commit").unlink()
    recorded: list[tuple[str | None, list[str]]] = []

    async def record(commit: str | None, workers: Sequence[str]) -> None:
        recorded.append((commit, list(workers)))

    report = await worktree_merge.integrate(repo, [item("1", "New", tree)], "Wave", record=record)

    assert git(repo, "rev-list", f"{head}..HEAD").split() == [report.commit]
    assert git(repo, "diff", "--name-status", head, "HEAD") == "M\tapp.py\nA\tnew.txt\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert recorded == [(report.commit, ["worker-1"])]
    assert not tree.path.exists()


async def test_integration_refuses_a_missing_worktree(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    await worktrees.remove(repo, tree)
    with pytest.raises(WorktreeError, match="does not exist"):
        await worktree_merge.integrate(repo, [item("1", "Gone", tree)], "Wave")


# --- remove and prune ------------------------------------------------------------------------


async def test_remove_deletes_the_worktree_and_its_branch_and_is_harmless_twice(repo: Path) -> None:
    tree = await worktrees.create(repo, "worker-1")
    write(tree.path, "unsaved.txt", "dirty\n")
    write(tree.path, "app.py", "changed\n")

    await worktrees.remove(repo, tree)

    assert not tree.path.exists()
    assert git(repo, "branch", "--list", "swarm/*") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    await worktrees.remove(repo, tree)
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


async def test_prune_clears_leftovers_but_keeps_live_workers(repo: Path) -> None:
    kept = await worktrees.create(repo, "worker-1")
    dropped = await worktrees.create(repo, "worker-2")
    registered_only = await worktrees.create(repo, "worker-3")
    # A leftover whose git record is gone, and one whose directory is gone.
    delete_tree(repo / ".git" / "worktrees" / "worker-2")
    delete_tree(registered_only.path)

    removed = await worktrees.prune(repo, keep={"worker-1"})

    assert removed == ["worker-2"]
    assert kept.path.exists()
    assert not dropped.path.exists()
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(kept.path) in listed
    assert "worker-3" not in listed
    assert "swarm/worker-2" not in git(repo, "branch", "--list", "swarm/*")
