"""Integrating what workers changed into the main working tree: one commit per wave.

Each worker's patch is first applied to a temporary copy of the main index with a three-way
merge; only a change that merged cleanly there touches the main tree, through one atomic
`git apply --index`, so a conflict leaves both trees exactly as they were. Integration never
overwrites work of the user's: it refuses a main tree with staged changes, and an item any of
whose files has uncommitted changes. See workspace/worktrees.py for the worktrees themselves.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from mcp_swarm.workspace.journal import (
    Journal,
    JournaledWorker,
    JournalFile,
    Recorder,
    finish_interrupted,
    integrating,
    remove_worktrees,
)
from mcp_swarm.workspace.worktrees import (
    MAYOR_EMAIL,
    MAYOR_NAME,
    PATHS_PER_CALL,
    PLAIN_DIFF,
    IntegratedItem,
    IntegrationConflict,
    IntegrationItem,
    IntegrationReport,
    Repository,
    WorktreeError,
    changes_in,
    everything_but_state,
    repository_of,
    run_git,
    split_z,
    staged_copy,
)

logger = logging.getLogger(__name__)


def wave_message(title: str, items: Sequence[IntegrationItem]) -> str:
    """The commit message of a wave: the title, then one line per task."""
    lines = [f"- #{item.task_id} {item.subject} ({item.worker_id})" for item in items]
    return "\n".join([title.strip(), "", *lines]) if lines else title.strip()


@contextmanager
def _scratch() -> Generator[Path]:
    with tempfile.TemporaryDirectory(prefix="mcp-swarm-integrate-") as directory:
        yield Path(directory)


async def _refuse_unsafe_start(repo: Repository) -> None:
    """Refuse a main tree whose next commit would take in more than the wave."""
    paths = await run_git(
        ["rev-parse", "--path-format=absolute"]
        + [arg for name in _UNFINISHED for arg in ("--git-path", name)],
        repo.top,
    )
    for name, path in zip(_UNFINISHED, paths.text.split("\n"), strict=True):
        if await anyio.Path(path).exists():
            raise WorktreeError(
                f"the main tree at {repo.top} is in the middle of {_UNFINISHED[name]}; finish or "
                "abort it before integrating"
            )
    staged = await run_git(["diff-index", "--cached", "--quiet", "HEAD", "--"], repo.top, check=False)
    if staged.returncode == 1:
        raise WorktreeError(
            f"the main tree at {repo.top} has staged changes, which the wave's commit would take in; "
            "commit them, or unstage them (git restore --staged), before integrating"
        )
    if staged.returncode != 0:
        raise WorktreeError(f"cannot read the index of {repo.top}: {staged.stderr}")


# What a main tree can be in the middle of, by the file in its git directory that says so.
_UNFINISHED = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or git am",
}


async def _common_dir(path: Path) -> Path:
    found = await run_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], path, check=False)
    if found.returncode != 0:
        raise WorktreeError(f"{path} is not a git worktree: {found.stderr}")
    return Path(await anyio.Path(found.text).resolve())


async def _check_items(repo: Repository, items: Sequence[IntegrationItem]) -> None:
    """Every item must be a distinct worktree of this repository."""
    ours = await _common_dir(repo.top)
    seen: set[Path] = set()
    for item in items:
        path = item.worktree.path
        if not path.is_dir():
            raise WorktreeError(f"the worktree of worker {item.worker_id} ({path}) does not exist")
        if await _common_dir(path) != ours:
            raise WorktreeError(f"{path} (worker {item.worker_id}) is not a worktree of {repo.top}")
        if path.resolve() in seen:
            raise WorktreeError(f"the worktree {path} is named by more than one item")
        seen.add(path.resolve())


async def _uncommitted(repo: Repository, paths: Sequence[str]) -> list[str]:
    """Those of `paths` where the main tree differs from its index, or that git does not track.

    Staged changes are ours (the start refuses the user's), so only these are the user's work.
    """
    dirty: list[str] = []
    for start in range(0, len(paths), PATHS_PER_CALL):
        chunk = paths[start : start + PATHS_PER_CALL]
        status = await run_git(
            [
                "--literal-pathspecs",
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--ignored=matching",
                "--no-renames",
                "--",
                *chunk,
            ],
            repo.top,
        )
        for entry in split_z(status.stdout):
            code, path = entry[:2], entry[3:]
            if code[1] != " ":  # the working tree differs, or ?? untracked, or !! ignored
                dirty.append(path)
    return dirty


@dataclass(frozen=True, slots=True)
class _Merge:
    # The change to make to the main tree, as a patch from its index; None if it conflicts.
    patch: bytes | None
    conflicting: list[str]
    stderr: str
    # The main index's tree and the merged one, when the merge was clean.
    before: str = ""
    after: str = ""


async def _merge_into_copy(repo: Repository, patch: Path, scratch: Path) -> _Merge:
    """Three-way apply `patch` to a copy of the main index, leaving the main index alone.

    A clean result comes back as a patch from the main index to the merged tree, which
    `git apply --index` then applies to the main tree in one atomic step.
    """
    own = await run_git(["rev-parse", "--path-format=absolute", "--git-path", "index"], repo.top)
    index = scratch / "index"
    await anyio.Path(index).unlink(missing_ok=True)
    await anyio.to_thread.run_sync(shutil.copyfile, own.text, index)
    before = await run_git(["write-tree"], repo.top, index=index)
    applied = await run_git(
        ["apply", "--cached", "--3way", "--whitespace=nowarn", str(patch)], repo.top, index=index, check=False
    )
    if applied.returncode not in (0, 1):
        # 1 is a patch that does not apply; anything else is git failing (a corrupt patch, an
        # option this git lacks), which no user can resolve by editing files.
        raise WorktreeError(f"git apply failed: {applied.stderr}")
    unmerged = await run_git(["ls-files", "--unmerged", "-z"], repo.top, index=index)
    # Each entry is "<mode> <object> <stage>\t<path>", one per stage.
    conflicting = sorted({entry.split("\t", 1)[1] for entry in split_z(unmerged.stdout)})
    if applied.returncode != 0 or conflicting:
        return _Merge(None, conflicting, applied.stderr)
    after = await run_git(["write-tree"], repo.top, index=index)
    if after.text == before.text:
        return _Merge(b"", [], applied.stderr)
    merged = await run_git(
        ["diff-tree", "-r", "-p", "--binary", "--no-renames", *PLAIN_DIFF, before.text, after.text],
        repo.top,
    )
    return _Merge(merged.stdout, [], applied.stderr, before.text, after.text)


async def _journal_targets(
    repo: Repository, merge: _Merge, journal: Journal, journal_file: JournalFile
) -> None:
    """Write down each file the merge is about to change and the blob it will have (None: deleted)."""
    raw = await run_git(
        ["diff-tree", "-r", "-z", "--raw", "--no-abbrev", "--no-renames", merge.before, merge.after], repo.top
    )
    fields = list(split_z(raw.stdout))
    # Pairs of ":<old mode> <new mode> <old blob> <new blob> <status>" and the path.
    for meta, path in zip(fields[::2], fields[1::2], strict=True):
        blob = meta.split()[3]
        target = None if set(blob) == {"0"} else blob
        journal.files.setdefault(path, [])
        if target not in journal.files[path]:
            journal.files[path].append(target)
    await journal_file.write(journal)


async def _integrate_one(
    repo: Repository, item: IntegrationItem, scratch: Path, journal: Journal, journal_file: JournalFile
) -> tuple[IntegratedItem | IntegrationConflict, bool]:
    """Bring one worker's changes into the main tree and index; whether a file changed."""
    worktree = item.worktree
    async with staged_copy(worktree) as worker_index:
        files = await changes_in(worktree, worker_index)
        patch = await run_git(
            [
                "diff",
                "--cached",
                "--binary",
                "--full-index",
                "--no-renames",
                *PLAIN_DIFF,
                worktree.base_commit,
                "--",
                *everything_but_state(worktree.subdirectory),
            ],
            worktree.path,
            index=worker_index,
        )
    if not patch.stdout:
        return IntegratedItem(item, files), False
    touched = sorted({path for change in files for path in (change.path, change.old_path) if path})
    dirty = await _uncommitted(repo, touched)
    if dirty:
        return IntegrationConflict(
            item,
            "uncommitted_changes",
            dirty,
            f"worker {item.worker_id} (task #{item.task_id}) changed files that have uncommitted "
            f"changes in the main tree: {', '.join(dirty)}. Commit or stash them, then integrate again.",
        ), False
    patch_file = scratch / "worker.patch"
    await anyio.Path(patch_file).write_bytes(patch.stdout)
    merge = await _merge_into_copy(repo, patch_file, scratch)
    if merge.patch is None:
        conflicting = merge.conflicting or touched
        return IntegrationConflict(
            item,
            "does_not_apply",
            conflicting,
            f"the changes of worker {item.worker_id} (task #{item.task_id}) conflict with the main tree "
            f"in {', '.join(conflicting)}; nothing was changed. git said: {merge.stderr}",
        ), False
    if not merge.patch:
        return IntegratedItem(item, files), False
    merged_file = scratch / "merged.patch"
    await anyio.Path(merged_file).write_bytes(merge.patch)
    await _journal_targets(repo, merge, journal, journal_file)
    # apply --index compares files with the index by their stat data: bring it up to date first.
    await run_git(["update-index", "-q", "--refresh"], repo.top, check=False)
    done = await run_git(["apply", "--index", "--whitespace=nowarn", str(merged_file)], repo.top, check=False)
    if done.returncode != 0:
        # git apply checks the whole patch before it writes a file, so nothing was changed.
        return IntegrationConflict(
            item,
            "does_not_apply",
            touched,
            f"the changes of worker {item.worker_id} (task #{item.task_id}) could not be applied to the "
            f"main tree; nothing was changed. git said: {done.stderr}",
        ), False
    return IntegratedItem(item, files), True


async def _identity_options(repo: Repository) -> list[str]:
    """`-c` options naming the Mayor, for a repository where git knows no one to commit as.

    `git var` fails exactly where `git commit` would refuse for want of a name or an email.
    """
    for variable in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        if (await run_git(["var", variable], repo.top, check=False)).returncode != 0:
            return ["-c", f"user.name={MAYOR_NAME}", "-c", f"user.email={MAYOR_EMAIL}"]
    return []


async def integrate(
    project: Path, items: Sequence[IntegrationItem], title: str, *, record: Recorder | None = None
) -> IntegrationReport:
    """Bring the changes of completed workers into the main tree, in the order given, as one commit.

    `items` must come in dependency order. The first item that cannot be integrated (the user
    has uncommitted changes in its files, or its changes conflict) is reported with nothing
    changed for it, and the items after it are not attempted; those before it are committed.
    The commit message is `title` and a line per integrated task that changed a file. `record`
    is called with the commit and the integrated workers once committed; only then are their
    worktrees and branches removed.

    One integration runs at a time in a main tree, across processes; an integration that a killed
    process left is first finished or undone (journal.py).

    Raises WorktreeError, changing nothing, if the main tree has staged changes or is in the
    middle of a merge or rebase, or an item's worktree is missing.
    """
    async with integrating(project) as repo:
        await finish_interrupted(project, record)
        repo = await repository_of(project)
        await _refuse_unsafe_start(repo)
        await _check_items(repo, items)
        journal_file = await JournalFile.of(repo)
        journal = Journal(base=repo.head)
        await journal_file.write(journal)
        report = await _apply_and_commit(repo, items, title, journal, journal_file)
        if report.integrated:
            if record is not None:
                await record(report.commit, [done.item.worker_id for done in report.integrated])
            journal.recorded = True
            await journal_file.write(journal)
        await remove_worktrees(project, journal)
        await journal_file.delete()
        return report


async def _apply_and_commit(
    repo: Repository,
    items: Sequence[IntegrationItem],
    title: str,
    journal: Journal,
    journal_file: JournalFile,
) -> IntegrationReport:
    integrated: list[IntegratedItem] = []
    in_commit: list[IntegrationItem] = []
    conflicts: list[IntegrationConflict] = []
    not_attempted: list[IntegrationItem] = []
    with _scratch() as scratch:
        for position, item in enumerate(items):
            outcome, changed = await _integrate_one(repo, item, scratch, journal, journal_file)
            if isinstance(outcome, IntegrationConflict):
                conflicts.append(outcome)
                not_attempted = list(items[position + 1 :])
                break
            integrated.append(outcome)
            if changed:
                in_commit.append(item)
    journal.workers = [
        JournaledWorker(done.item.worker_id, str(done.item.worktree.path), done.item.worktree.branch)
        for done in integrated
    ]
    commit: str | None = None
    message: str | None = None
    if in_commit:
        message = wave_message(title, in_commit)
        journal.message = message
        await journal_file.write(journal)
        identity = await _identity_options(repo)
        made = await run_git(
            [*identity, "commit", "--quiet", "--cleanup=whitespace", "-m", message], repo.top, check=False
        )
        if made.returncode != 0:
            tasks = ", ".join(f"#{item.task_id}" for item in in_commit)
            raise WorktreeError(
                f"the changes of tasks {tasks} are applied and staged in {repo.top}, but git commit "
                f"failed: {made.stderr}. Their worktrees are kept; the next integration replaces the "
                "staged changes and tries again, or unstage and discard them yourself."
            )
        commit = (await run_git(["rev-parse", "HEAD"], repo.top)).text
        journal.commit = commit
    await journal_file.write(journal)
    return IntegrationReport(commit, integrated, conflicts, not_attempted, message)
