"""The bearer token that Mayors show to `serve --http`: where it comes from, and its file kept private.

In order: `--token-file PATH`, then MCP_SWARM_TOKEN, then `token_file` in mcp-swarm.toml, then
`.mcp-swarm/token` of the project, made with a random token on the first start and reused after.
A file that anyone but its owner may read or write is refused rather than used: whoever could read
it would be a Mayor. The token itself is never printed, logged or put in an error; only the file
it is in is named.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_swarm.config import Settings, ignore_state_dir
from mcp_swarm.errors import InvalidInput

TOKEN_ENV = "MCP_SWARM_TOKEN"  # noqa: S105 - the name of the variable, not a token
DEFAULT_TOKEN_FILE_NAME = "token"  # noqa: S105 - a file name
# A guessed token must be out of reach: shorter ones are refused (a made one has 43 characters).
MIN_TOKEN_CHARS = 16
# A token file is one line; anything much longer is not one.
_MAX_TOKEN_FILE_BYTES = 4096


@dataclass(frozen=True)
class Token:
    value: str
    # Where it came from, for the server's note on stderr: a file's path or the variable's name.
    source: str
    # Whether this start made the file.
    created: bool = False

    def __repr__(self) -> str:  # never the value, wherever the object ends up
        return f"Token(source={self.source!r}, created={self.created})"


def mayor_token(settings: Settings, *, token_file: Path | None = None, environ: Mapping[str, str]) -> Token:
    """The token this server asks of every request (see the module's note for the order)."""
    if token_file is not None:
        return _read_token_file(token_file)
    given = environ.get(TOKEN_ENV)
    if given is not None:
        return Token(_checked(given, TOKEN_ENV), TOKEN_ENV)
    if settings.token_file is not None:
        return _read_token_file(settings.token_file)
    default = settings.state_dir / DEFAULT_TOKEN_FILE_NAME
    made = _make_token_file(default)
    return made if made is not None else _read_token_file(default)


def _checked(value: str, source: str) -> str:
    value = value.strip()
    if len(value) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidInput(
            f"the token in {source} must be at least {MIN_TOKEN_CHARS} printable characters with no "
            'spaces; make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return value


def _read_token_file(path: Path) -> Token:
    try:
        # Not through a symbolic link: what is checked is the file that is read.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput(f"the token file {path} is a symbolic link; name the file itself") from None
        raise InvalidInput(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"the token file {path} is not a regular file")
        _refuse_if_shared(path, info)
        data = os.read(fd, _MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_TOKEN_FILE_BYTES:
        raise InvalidInput(f"the token file {path} is too long to hold one token")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the token file {path} is not text") from None
    return Token(_checked(text, f"the token file {path}"), str(path))


def _refuse_if_shared(path: Path, info: os.stat_result) -> None:
    if info.st_uid != os.geteuid():
        raise InvalidInput(
            f"the token file {path} belongs to another user; use a file of your own, readable only by you"
        )
    if info.st_mode & 0o077:
        raise InvalidInput(
            f"the token file {path} may be read or written by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); make it private with: chmod 600 {path}"
        )


def _make_token_file(path: Path) -> Token | None:
    """A new random token in `path`, made readable by its owner only from its first moment;
    None if the file exists already (made by an earlier start, or by another server just now)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore_state_dir(path.parent)
    value = secrets.token_urlsafe(32)
    try:
        # O_EXCL: never an existing file, nor a link planted in its place; 0600 from the start.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise InvalidInput(f"cannot write the token file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask left, nothing more than the owner's
        os.write(fd, (value + "\n").encode("ascii"))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise InvalidInput(f"cannot write the token file {path}: {exc.strerror}") from None
    os.close(fd)
    return Token(value, str(path), created=True)
