"""Where files lie: a path named under a root, and whether it is reached through no link.

Workers can write in the project and in the state directory, so every path the server reads or
writes there on a worker's behalf is checked with these first.
"""

from __future__ import annotations

import os
from pathlib import Path
from stat import S_ISDIR, S_ISLNK


def inside(root: Path, relative: str) -> Path | None:
    """The path `relative` names under `root`, resolved; None if it leads outside (`..`, an absolute
    path, a symbolic link) or names no file at all (a NUL byte, a name too long)."""
    try:
        top = root.resolve()
        candidate = (top / relative).resolve()
    except (OSError, ValueError):
        return None
    return candidate if candidate == top or top in candidate.parents else None


def without_links(path: Path, root: Path) -> bool:
    """Whether `path`, under `root`, is reached with no symbolic link below `root`, itself included.

    The server writes and reads a worker's files (log, prompt, result, check logs) in the state
    directory, which the worker can write too: a link planted there would have the server append
    to, truncate or read a file anywhere the user can.
    """
    # One lstat per name below `root`, not a realpath of each end. A name not made yet is made by
    # us, as a real one.
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in relative.parts:
        if part in ("..", "."):
            return False
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False
        if S_ISLNK(mode) or (current != path and not S_ISDIR(mode)):
            return False
    return True
