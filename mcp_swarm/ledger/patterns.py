"""Paths and globs inside the project, as reservations and write scopes name them.

Both ask the same two questions of a pattern: what is its canonical form (and is it inside the
project at all), and may two patterns name a common file.
"""

from __future__ import annotations

import posixpath
from fnmatch import fnmatchcase

from mcp_swarm.errors import InvalidInput

MAX_PATTERN_CHARS = 1_000


def normalise_pattern(pattern: str) -> str:
    """The canonical form of a path or glob inside the project; anything outside it is refused."""
    if not pattern.strip():
        raise InvalidInput("a reservation pattern must not be empty; give a path or glob such as 'src/*.py'")
    if "\0" in pattern:
        raise InvalidInput(f"reservation pattern {pattern!r} contains a NUL character")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidInput(f"a reservation pattern may have at most {MAX_PATTERN_CHARS} characters")
    if pattern.startswith("/"):
        raise InvalidInput(f"{pattern} is absolute; give it relative to the project, such as 'src/a.py'")
    normal = posixpath.normpath(pattern)
    if normal == ".." or normal.startswith("../"):
        raise InvalidInput(f"{pattern} leads outside the project; reserve only files inside it")
    if normal == ".":
        raise InvalidInput(
            f"{pattern} names the whole project; reserve the files or directories you will edit"
        )
    return normal


def overlaps(a: str, b: str) -> bool:
    """Whether two normalised patterns may name a common file.

    They do if one, or a directory above it, equals the other or matches it as a glob: `src` holds
    `src/a.py`, `src/*.py` matches it, and so does `src/[ab]` through its directory `src/a`.
    """
    return _covers(a, b) or _covers(b, a)


def _covers(pattern: str, path: str) -> bool:
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        # Equality first: a literal name with brackets, such as `a[1].py`, does not match itself.
        if prefix == pattern or fnmatchcase(prefix, pattern):
            return True
    return False
