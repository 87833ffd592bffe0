"""What went wrong with the state file, in a sentence a person can act on.

SQLite reports trouble as codes (`SQLITE_BUSY`, `SQLITE_FULL`, `SQLITE_NOTADB` ...) and the
operating system as errno values. The server and the command line only print what reaches them,
so the translation into plain words, naming the file and what to do, happens here, once, for
every statement the store runs.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from mcp_swarm.errors import StoreUnavailable

# The messages the verdict path and the tools promise; tests look for these words.
LOCKED = "the database is locked by another process; try again"
DISK_FULL = "the disk is full"


def explain(exc: BaseException, path: Path) -> StoreUnavailable | None:
    """The plain-words error behind `exc`, a failure of the database at `path`; None if `exc`
    is not about the file (a bug, a cancellation), which must then keep its own traceback."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, sqlite3.Error):
        return _from_sqlite(exc, path)
    if isinstance(exc, OSError):
        return _from_os(exc, path)
    return None


def unwritable(path: Path) -> StoreUnavailable | None:
    """Why the database at `path` cannot be written, if the file system says so; else None.

    SQLite in WAL mode writes the file and creates `-wal` and `-shm` files beside it, so both the
    file and (while those do not exist) its directory must be writable.
    """
    if path.exists() and not os.access(path, os.W_OK):
        return StoreUnavailable(
            path, f"{path} is read-only: make it writable by this user, or point --db elsewhere"
        )
    wal = path.with_name(path.name + "-wal")
    directory = path.parent
    if directory.is_dir() and not wal.exists() and not os.access(directory, os.W_OK):
        return StoreUnavailable(
            path,
            f"the directory {directory} is read-only, and SQLite must create {path.name}-wal and "
            f"{path.name}-shm there: make it writable by this user, or point --db elsewhere",
        )
    return None


def _from_sqlite(exc: sqlite3.Error, path: Path) -> StoreUnavailable | None:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    text = str(exc)
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in text:
        return StoreUnavailable(path, f"{LOCKED} ({path} is busy)", transient=True)
    if (
        primary == sqlite3.SQLITE_FULL
        or "disk is full" in text
        or (primary == sqlite3.SQLITE_IOERR and _no_space(path))
    ):
        # A full disk may also show as an I/O error: the -shm file that cannot grow, say.
        return StoreUnavailable(
            path, f"{DISK_FULL}: {path} cannot grow; free space on its disk and try again", transient=True
        )
    if primary == sqlite3.SQLITE_READONLY or "readonly database" in text:
        return StoreUnavailable(
            path,
            f"{path} is read-only ({text}): make the file and its directory writable by this user, "
            "or point --db elsewhere",
            transient=True,
        )
    if primary == sqlite3.SQLITE_CANTOPEN:
        return StoreUnavailable(
            path,
            f"{path} cannot be opened ({text}): check that its directory exists and is writable by "
            "this user, or point --db elsewhere",
        )
    if primary == sqlite3.SQLITE_NOTADB or "file is not a database" in text:
        return StoreUnavailable(
            path, f"{path} is not an mcp-swarm database ({text}): move it aside or point --db elsewhere"
        )
    if primary == sqlite3.SQLITE_CORRUPT or "malformed" in text:
        return StoreUnavailable(
            path,
            f"{path} is damaged ({text}): move it aside (keep it to look into) and start with a fresh "
            "one, or point --db elsewhere",
        )
    if primary == sqlite3.SQLITE_IOERR:
        return StoreUnavailable(
            path, f"{path} could not be read or written ({text}): check its disk", transient=True
        )
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        # Anything else the file itself caused: still said plainly, with SQLite's own words.
        return StoreUnavailable(path, f"{path} cannot be used ({text})")
    return None


def _no_space(path: Path) -> bool:
    """Whether the file system holding `path` has no block left for this user."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def _from_os(exc: OSError, path: Path) -> StoreUnavailable:
    where = exc.filename or path
    if exc.errno == errno.ENOSPC:
        message = f"{DISK_FULL}: {where} cannot grow; free space and try again"
        return StoreUnavailable(path, message, transient=True)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreUnavailable(
            path,
            f"{where} cannot be created or written ({exc.strerror}): make it writable by this user, "
            "or point --db elsewhere",
        )
    return StoreUnavailable(path, f"{where} cannot be used ({exc.strerror or exc})")
