"""Git worktrees for workers, and what each worker changed in its own (integration: workspace/merge.py).

A worker with `isolation="worktree"` works in a worktree of its own, on its own branch, made from
the main tree's HEAD under `<project>/.mcp-swarm/worktrees/<worker id>`. Workers never commit;
the lead (the Mayor) brings their changes into the main tree wave by wave and commits once per
wave.

Four rules keep the user's repository safe:

- Nothing here reads or writes a worker's own index or the main index until it knows the result.
  What a worker changed is found by staging its whole tree into a temporary copy of its index,
  and a worker's patch is first applied to a temporary copy of the main index, with a three-way
  merge; only a change that merged cleanly there touches the main tree, through one atomic
  `git apply --index`. A conflict therefore leaves both trees exactly as they were.
- Integration never overwrites work of the user's: it refuses a main tree with staged changes
  (the wave's commit would take them in), and an item any of whose files has uncommitted changes.
- git runs with an argument list, stdin at /dev/null and an environment cleared of inherited
  GIT_* variables, so a GIT_DIR or GIT_INDEX_FILE left in the server's environment (a server
  started from a git hook, say) cannot point us at another repository or index. The rest of its
  environment is an allow-list too: git runs the repository's hooks and configured programs,
  which a worker of the shared tree can write, and they must not get the server's secrets.
- Worktrees live under the project's own `.mcp-swarm/worktrees`, reached through no symbolic
  link: a link there would have us make, and delete, directories outside the project.
- The wave's commit is the user's act in the user's repository, so it carries the identity git
  would use for the user. Only where git has none, and would refuse to commit, is the Mayor's
  identity given, on the command line, never written into any configuration.

Git 2.36 or later is needed (`worktree list -z`, `apply --cached --3way`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncGenerator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread

from mcp_swarm.config import allowed_environment, ignore_state_dir
from mcp_swarm.errors import InvalidInput, SwarmError
from mcp_swarm.workspace.paths import without_links

logger = logging.getLogger(__name__)

STATE_DIR = ".mcp-swarm"
WORKTREES_DIR = "worktrees"
BRANCH_PREFIX = "swarm/"
MAYOR_NAME = "mcp-swarm Mayor"
MAYOR_EMAIL = "mayor@mcp-swarm.invalid"

# The GIT_* variables we keep: they only say who the user is. Every other one (GIT_DIR,
# GIT_WORK_TREE, GIT_INDEX_FILE, GIT_OBJECT_DIRECTORY, GIT_CONFIG_PARAMETERS, ...) could send
# us to another repository, index or configuration than the project's.
_KEPT_GIT_VARIABLES = frozenset(
    {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"}
)
# What git and the programs it runs (hooks, filters) get of the server's environment: enough to
# find the user's configuration and identity and to sign a commit with gpg, and no credentials.
_GIT_ENV_ALLOW = (
    "PATH", "HOME", "USER", "LOGNAME", "EMAIL", "LANG", "LC_*", "TZ", "TMPDIR", "XDG_CONFIG_HOME",
    "GNUPGHOME",
)  # fmt: skip
# Worker ids become directory and branch names.
_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Options that make `git diff` print the same thing whatever the user's configuration says:
# no external diff program, no textconv filter, no colour, paths from the top, and the a/ b/
# prefixes `git apply` expects.
PLAIN_DIFF = [
    "--no-ext-diff",
    "--no-textconv",
    "--no-color",
    "--no-relative",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=short",
]
# A temporary index is a plain file of our own: it should not be split, nor trusted to a
# file-system monitor whose answers belong to the real index.
_TEMPORARY_INDEX_CONFIG = ["-c", "core.splitIndex=false", "-c", "core.fsmonitor=false"]
# git status passes this many paths per call, far below any limit on a command line.
PATHS_PER_CALL = 500

ChangeStatus = Literal["added", "modified", "deleted", "renamed"]
_STATUS_LETTERS: dict[str, ChangeStatus] = {
    "A": "added",
    "M": "modified",
    "T": "modified",  # the type changed, a file became a symlink or the reverse
    "D": "deleted",
    "R": "renamed",
}


class WorktreeError(SwarmError):
    """A worktree could not be made, read, integrated or removed; the message says why."""


@dataclass(frozen=True, slots=True)
class Worktree:
    """A worker's own checkout of the repository."""

    # The worktree's top directory.
    path: Path
    branch: str
    # The commit it was made from: what the worker changed is measured against it.
    base_commit: str
    # Where the project lies inside the repository ("" at its top, else like "services/api").
    subdirectory: str = ""

    @property
    def workdir(self) -> Path:
        """The project's directory inside the worktree: where the worker should run."""
        return self.path / self.subdirectory if self.subdirectory else self.path


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file a worker changed. Paths are relative to the top of the repository."""

    path: str
    added: int
    removed: int
    status: ChangeStatus
    # Binary files count no lines.
    binary: bool = False
    # Where a renamed file came from.
    old_path: str | None = None


@dataclass(frozen=True, slots=True)
class IntegrationItem:
    """A completed worker whose changes should go into the main tree."""

    task_id: str
    subject: str
    worker_id: str
    worktree: Worktree


@dataclass(frozen=True, slots=True)
class IntegratedItem:
    item: IntegrationItem
    files: list[FileChange]


@dataclass(frozen=True, slots=True)
class IntegrationConflict:
    """An item that was not integrated; neither tree was changed for it."""

    item: IntegrationItem
    # uncommitted_changes: the user has uncommitted work in files the worker changed.
    # does_not_apply: the worker's changes clash with what the main tree holds now.
    reason: Literal["uncommitted_changes", "does_not_apply"]
    # The files in the way: those with the user's changes, or those that conflicted.
    files: list[str]
    message: str


@dataclass(frozen=True, slots=True)
class IntegrationReport:
    # The wave's commit, or None if nothing was integrated that changed a file.
    commit: str | None
    integrated: list[IntegratedItem] = field(default_factory=lambda: list[IntegratedItem]())
    conflicts: list[IntegrationConflict] = field(default_factory=lambda: list[IntegrationConflict]())
    # Items after a conflict, left for a later integration.
    not_attempted: list[IntegrationItem] = field(default_factory=lambda: list[IntegrationItem]())
    # The commit message used, if there was a commit.
    message: str | None = None


# --- running git -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GitOutput:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        """stdout as one line of text, as rev-parse and friends print it."""
        return os.fsdecode(self.stdout).rstrip("\n")


def _environment(index: Path | None) -> dict[str, str]:
    env = allowed_environment(os.environ, (*_GIT_ENV_ALLOW, *_KEPT_GIT_VARIABLES), {})
    # Never ask for a password on a terminal we do not have.
    env["GIT_TERMINAL_PROMPT"] = "0"
    # Read-only commands (status, diff) then leave the index alone rather than refresh it.
    env["GIT_OPTIONAL_LOCKS"] = "0"
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return env


async def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    index: Path | None = None,
    check: bool = True,
    input: bytes | None = None,
) -> GitOutput:
    """Run git with `args` in `cwd`, `input` on its stdin (else /dev/null); with `check`, a failure
    is a WorktreeError quoting git."""
    argv = ["git", *(_TEMPORARY_INDEX_CONFIG if index is not None else []), *args]
    try:
        done = await anyio.run_process(
            argv,
            cwd=cwd,
            env=_environment(index),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        if exc.filename is not None and Path(os.fsdecode(exc.filename)) == cwd:
            raise WorktreeError(f"the directory {cwd} does not exist") from exc
        raise WorktreeError("git is not installed: no program 'git' on PATH") from exc
    except OSError as exc:
        raise WorktreeError(f"cannot run git in {cwd}: {exc.strerror or exc}") from exc
    result = GitOutput(done.returncode, done.stdout, os.fsdecode(done.stderr).strip())
    if check and result.returncode != 0:
        raise WorktreeError(
            f"git {_subcommand(args)} failed in {cwd}: {result.stderr or f'exit status {result.returncode}'}"
        )
    return result


def _subcommand(args: Sequence[str]) -> str:
    """The git command `args` runs, past options such as `-c name=value`."""
    position = 0
    while position < len(args) and args[position].startswith("-"):
        position += 2 if args[position] == "-c" else 1
    return args[position] if position < len(args) else "git"


@dataclass(frozen=True, slots=True)
class Repository:
    top: Path
    # The project's place in it, "" or like "services/api".
    prefix: str
    head: str


async def repository_of(project: Path) -> Repository:
    """The repository `project` lies in, which must have a commit."""
    if not await anyio.Path(project).is_dir():
        raise WorktreeError(f"the project directory {project} does not exist")
    found = await run_git(["rev-parse", "--show-toplevel", "--show-prefix"], project, check=False)
    if found.returncode != 0:
        raise WorktreeError(
            f"{project} is not inside a git repository (or not in a working tree of one): worktree "
            "isolation needs git; run `git init` and make a first commit, or use isolation 'shared'. "
            f"git said: {found.stderr}"
        )
    top, _, prefix = found.text.partition("\n")
    head = await run_git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], project, check=False)
    if head.returncode != 0:
        raise WorktreeError(
            f"the repository at {top} has no commits yet: worktrees are made from HEAD, so make a "
            "first commit before using worktree isolation"
        )
    return Repository(Path(top), prefix.rstrip("/"), head.text)


def _worktrees_root(project: Path) -> Path:
    return project / STATE_DIR / WORKTREES_DIR


def _confined_root(project: Path) -> Path:
    """The worktrees' directory, refused (WorktreeError) if a symbolic link leads there."""
    root = _worktrees_root(project)
    if not without_links(root, project):
        raise WorktreeError(
            f"{root} is reached through a symbolic link, which could lead outside the project; "
            "worktrees are made only inside it: remove the link"
        )
    return root


def everything_but_state(prefix: str) -> list[str]:
    """A pathspec for the whole tree except the project's .mcp-swarm directory.

    A worker running in its worktree may have a state directory of its own there; it is never
    part of its work.
    """
    state = f"{prefix}/{STATE_DIR}" if prefix else STATE_DIR
    return [":(top)", f":(top,exclude,literal){state}"]


# --- making and removing worktrees -----------------------------------------------------------


async def create(project: Path, worker_id: str) -> Worktree:
    """Make a worktree for `worker_id` on a new branch swarm/<worker_id>, from the main tree's HEAD.

    Uncommitted changes in the main tree stay there; the worker sees the last commit.
    """
    if not _WORKER_ID.fullmatch(worker_id) or ".." in worker_id or worker_id.endswith((".lock", ".")):
        raise InvalidInput(
            f"worker id {worker_id!r} cannot name a worktree: use letters, digits, '.', '_' and '-'"
        )
    repo = await repository_of(project)
    path = _confined_root(project) / worker_id
    branch = BRANCH_PREFIX + worker_id
    if path.exists():
        raise WorktreeError(f"a worktree for worker {worker_id} already exists at {path}; remove it first")
    (project / STATE_DIR).mkdir(exist_ok=True)
    ignore_state_dir(project / STATE_DIR)
    path.parent.mkdir(parents=True, exist_ok=True)
    made = await run_git(
        ["worktree", "add", "--quiet", "-b", branch, str(path), repo.head], repo.top, check=False
    )
    if made.returncode != 0:
        raise WorktreeError(f"cannot make a worktree for worker {worker_id}: {made.stderr}")
    return Worktree(path, branch, repo.head, repo.prefix)


async def remove(project: Path, worktree: Worktree) -> None:
    """Remove a worktree, whatever it holds, and its branch. Harmless if they are already gone."""
    if not worktree.branch.startswith(BRANCH_PREFIX):
        # Only branches this module made are ever deleted, whatever a caller passes.
        raise InvalidInput(f"{worktree.branch!r} is not a worker's branch (those start with {BRANCH_PREFIX})")
    repo = await repository_of(project)
    gone = await run_git(
        ["worktree", "remove", "--force", "--force", str(worktree.path)], repo.top, check=False
    )
    if gone.returncode != 0 and worktree.path.exists():
        # git refuses some (those holding submodules, or no longer registered); a directory of
        # ours is then simply deleted, and `worktree prune` forgets it. Ours: directly in the
        # worktrees' directory, with no link on the way that could make it someone else's.
        root = _worktrees_root(project)
        if worktree.path.parent != root or not without_links(worktree.path, project):
            raise WorktreeError(f"cannot remove the worktree {worktree.path}: {gone.stderr}")
        await anyio.to_thread.run_sync(shutil.rmtree, worktree.path)
    await run_git(["worktree", "prune"], repo.top)
    exists = await run_git(
        ["rev-parse", "--verify", "--quiet", f"refs/heads/{worktree.branch}"], repo.top, check=False
    )
    if exists.returncode == 0:
        deleted = await run_git(["branch", "-D", worktree.branch], repo.top, check=False)
        if deleted.returncode != 0:
            raise WorktreeError(f"cannot delete the branch {worktree.branch}: {deleted.stderr}")


async def prune(project: Path, keep: Collection[str] = ()) -> list[str]:
    """Remove what earlier runs left: every worker worktree (and its branch) not named in `keep`.

    Git forgets worktrees whose directories were deleted. Returns the worker ids removed.
    """
    repo = await repository_of(project)
    await run_git(["worktree", "prune"], repo.top)
    root = _worktrees_root(project)
    removed: list[str] = []
    if not root.is_dir():
        return removed
    root = _confined_root(project)
    for entry in sorted(root.iterdir()):
        if entry.name in keep or entry.is_symlink() or not entry.is_dir():
            continue
        await remove(project, Worktree(entry, BRANCH_PREFIX + entry.name, "", repo.prefix))
        removed.append(entry.name)
    return removed


# --- what a worker changed -------------------------------------------------------------------


@asynccontextmanager
async def staged_copy(worktree: Worktree) -> AsyncGenerator[Path]:
    """A temporary index holding the worker's whole tree: its changes, new files and deletions.

    It starts as a copy of the worker's own index (which then stays as it was), so files the
    repository tracks despite .gitignore stay tracked; ignored new files are left out, as git
    would leave them out of a commit.
    """
    if not worktree.path.is_dir():
        raise WorktreeError(f"the worktree {worktree.path} does not exist")
    own = await run_git(["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree.path)
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-index-") as directory:
        index = Path(directory) / "index"
        if await anyio.Path(own.text).is_file():
            # copy2 keeps the index's mtime: git trusts an entry whose file has the same size and
            # mtime only if the index is newer than the file, so a copy dated now would hide a
            # same-size change made within the clock tick of the checkout.
            await anyio.to_thread.run_sync(shutil.copy2, own.text, index)
        spec = everything_but_state(worktree.subdirectory)
        await run_git(["add", "--all", "--", *spec], worktree.path, index=index)
        yield index


def split_z(data: bytes) -> Iterator[str]:
    """The fields of git's -z output, as str; bytes that are not UTF-8 survive the round trip."""
    fields = data.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    return (os.fsdecode(item) for item in fields)


def _parse_changes(name_status: bytes, numstat: bytes) -> list[FileChange]:
    """FileChanges from `git diff -z --name-status` and `git diff -z --numstat` of the same diff."""
    counts: dict[str, tuple[int, int, bool]] = {}
    fields = split_z(numstat)
    for item in fields:
        added, removed, path = item.split("\t", 2)
        if path == "":  # a rename: the old and new paths follow as fields of their own
            next(fields)
            path = next(fields)
        binary = added == "-"
        counts[path] = (0, 0, True) if binary else (int(added), int(removed), False)
    changes: list[FileChange] = []
    fields = split_z(name_status)
    for letter in fields:
        old_path = next(fields) if letter[0] in "RC" else None
        path = next(fields)
        status = _STATUS_LETTERS.get(letter[0])
        if status is None:
            raise WorktreeError(f"git reported a change of a kind not understood here: {letter!r} {path}")
        added, removed, binary = counts.get(path, (0, 0, False))
        changes.append(FileChange(path, added, removed, status, binary, old_path))
    return changes


async def changes_in(worktree: Worktree, index: Path) -> list[FileChange]:
    spec = ["--", *everything_but_state(worktree.subdirectory)]
    common = ["diff", "--cached", "-z", "--find-renames", *PLAIN_DIFF, worktree.base_commit]
    name_status = await run_git([*common, "--name-status", *spec], worktree.path, index=index)
    numstat = await run_git([*common, "--numstat", *spec], worktree.path, index=index)
    return _parse_changes(name_status.stdout, numstat.stdout)


async def changes(worktree: Worktree) -> list[FileChange]:
    """What the worker changed since its base commit, committed or not, new files included.

    Neither the worker's files nor its index are touched.
    """
    async with staged_copy(worktree) as index:
        return await changes_in(worktree, index)
