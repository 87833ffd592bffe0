"""One live `mcp-swarm run` per plan and database.

A lock file in the state directory, locked with flock(2) for the life of the run: the kernel lets
go of it when the process ends however it ends, so a crashed run never holds a plan forever. The
file says which process holds it, so that a second run can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

from mcp_swarm.errors import InvalidInput
from mcp_swarm.store.failures import explain

LOCK_DIR_NAME = "runs"
# What is read back of a holder's note: a pid and a command line.
NOTE_LIMIT = 64 * 1024


class RunLive(InvalidInput):
    """The plan's run is live in another process."""


def lock_path(state_dir: Path, plan: str) -> Path:
    """The lock file of a plan run: named by a digest, as a plan's name may be any text or a path."""
    digest = hashlib.sha256(plan.encode("utf-8")).hexdigest()[:24]
    return state_dir / LOCK_DIR_NAME / f"{digest}.lock"


@contextlib.contextmanager
def holding_run(state_dir: Path, plan: str) -> Generator[None]:
    """Hold the plan's run for the duration; RunLive names the process that holds it already."""
    path = lock_path(state_dir, plan)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not truncated on open: the holder's note stays readable until this process holds the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        # A read-only or full state directory: said as the store says it, naming the file.
        raise explain(exc, path) or exc from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLive(_refusal(plan, _read_note(fd))) from None
        note = {"pid": os.getpid(), "command": sys.argv, "plan": plan}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(note).encode("utf-8"), 0)
        except OSError as exc:  # a full disk
            raise explain(exc, path) or exc from None
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # lets go of the lock


def _read_note(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, NOTE_LIMIT, 0).decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return cast(dict[str, Any], data) if isinstance(data, dict) else {}


def _refusal(plan: str, note: dict[str, Any]) -> str:
    pid = note.get("pid")
    command = note.get("command")
    words = [str(word) for word in cast(list[Any], command)] if isinstance(command, list) else []
    who = f"process {pid}" if isinstance(pid, int) else "another process"
    if words:
        who += f" ({' '.join([Path(words[0]).name, *words[1:]])})"
    stop = f"`kill -INT {pid}`" if isinstance(pid, int) else "Ctrl-C in its terminal"
    return (
        f"the plan {plan!r} is already running in {who} on this database; wait for it to end, or "
        f"stop it ({stop}) and run again to continue"
    )
