"""Workers in tmux sessions (distributed mode): each outlives the server that started it.

Each worker runs in a detached tmux session of its own, under the worker wrapper, which copies
the worker's output to the pane and to its log and writes a status file when it ends. A
user can attach to the session and watch the worker live; the server can die and a later one
adopt the worker through its wrapper's `ProcessIdentity`.

The tmux server is the swarm's own (socket `mcp-swarm` unless told otherwise), never the user's
default one, and it reads no configuration file: a user's `destroy-unattached`, hooks or
`default-command` would change what happens to a worker. The tmux client is run with argument
lists, never through a shell, and with a small environment of its own.

What tmux 3.3a does with the arguments given to it, checked by the tests:

- A command of more than one argument is executed as it is (execvp), not handed to `sh -c`; the
  wrapper's command line always has more than one.
- Arguments are not format-expanded, but one that ends in ';' ends a tmux command (the `\\;` of
  shell scripts), an option's value as well: `_literal_argument` escapes that ';'.
- `-c DIRECTORY` is format-expanded (`#{...}`, `#(...)` runs a command), so '#' is doubled; and a
  missing directory is replaced by the home directory without a word, so the wrapper enters the
  worker's directory itself and fails if it is missing.
- Session targets match prefixes and patterns when there is no exact match: `swarm-worker-1`
  would find `swarm-worker-12`. Targets here are always exact (`=name`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from mcp_swarm.config import DEFAULT_TMUX_SOCKET
from mcp_swarm.errors import SwarmError
from mcp_swarm.placement.processes import (
    ProcessIdentity,
    ProcessStartError,
    read_start_time,
    ticks_since_boot,
)
from mcp_swarm.placement.wrapped import read_status, wrapper_argv

SESSION_PREFIX = "swarm-"
# Sessions are started detached, so they have no client to take a size from. Wide enough that
# most lines of a worker's output are not wrapped for someone who attaches.
WIDTH, HEIGHT = 200, 50
# tmux answers in milliseconds; one that does not answer at all must not hang the engine.
TIMEOUT = 10.0
# tmux gives '.' and ':' meanings in targets, and '=' and the rest are not worth the doubt.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Variables the tmux client is given; the server, when this client starts it, inherits them, and
# so do the wrappers it runs (which give the workers exactly their own environment instead).
_CLIENT_ENVIRONMENT = ("PATH", "HOME", "TMUX_TMPDIR", "LANG", "LC_ALL", "LC_CTYPE")
# What tmux says when the server or the session asked about is not there, which is no error to a
# caller asking whether it is there or wanting it gone. A socket in a directory that does not
# exist gives "error connecting to ... (No such file or directory)"; other connection errors,
# such as a socket we may not use, are errors.
# "server exited unexpectedly": the server ended as we asked, which it does when its last
# session ends; seen by a has-session racing the end of the last worker's session.
_ABSENT = ("no server running on ", "can't find session", "server exited unexpectedly")
_NO_SOCKET = ("error connecting to ", "(No such file or directory)")


class TmuxError(SwarmError):
    """tmux could not be run, or refused what it was asked; the message includes what it said."""


@dataclass(frozen=True, slots=True)
class TmuxWorker:
    """A worker started in a tmux session.

    `identity` is the wrapper's, the pane's process, which leads the process group the worker and
    everything it spawns are in: `processes.stop_group(identity, identity.pid, grace)` stops them.
    """

    session: str
    pane_pid: int
    identity: ProcessIdentity


def socket_args(socket: str) -> list[str]:
    """The tmux flags that select `socket`: a path if it contains '/', else a name in tmux's directory."""
    if not socket:
        raise ValueError("a tmux socket needs a name or a path")
    return ["-S", socket] if "/" in socket else ["-L", socket]


def session_name(worker_id: str) -> str:
    """The session of a worker: `swarm-worker-3` for `worker-3`."""
    if not _SAFE_ID.fullmatch(worker_id):
        raise ValueError(
            f"worker id {worker_id!r} cannot name a tmux session: it must be 1 to 64 of A-Z a-z 0-9 _ -"
        )
    return SESSION_PREFIX + worker_id


def _checked(session: str) -> str:
    if not _SAFE_ID.fullmatch(session):
        raise ValueError(f"{session!r} is not a session name this module makes; see session_name")
    return session


def _literal_argument(argument: str) -> str:
    """`argument` escaped so that tmux's command line passes it on unchanged.

    tmux takes a trailing ';' as the end of a command, and a trailing '\\;' as a literal ';'; it
    changes nothing else.
    """
    return argument[:-1] + "\\;" if argument.endswith(";") else argument


def _literal_format(text: str) -> str:
    """`text` escaped for an argument tmux format-expands: '##' is how a format writes '#'."""
    return text.replace("#", "##")


def _write_env_file(status: Path, env: Mapping[str, str]) -> Path:
    """The worker's environment, in a file only we can read, for the wrapper to read and delete.

    Secrets in the environment must not appear on tmux's command line (where `ps` shows them), nor
    in tmux's own environment, which every later session would inherit.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{status.name}.", suffix=".env", dir=status.parent)  # mode 0600
    except OSError as exc:
        raise ProcessStartError(
            f"cannot start a worker: cannot write its environment file in {status.parent}: {exc.strerror}"
        ) from exc
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(dict(env), file)
    return Path(name)


def _new_session_command(
    session: str, argv: Sequence[str], *, cwd: Path, log: Path, status: Path, env_file: Path
) -> list[str]:
    """The tmux command that starts the wrapper running argv in a new detached session."""
    if not sys.executable:
        raise TmuxError("cannot find the Python interpreter to run the worker wrapper with")
    # The wrapper run as a script, isolated and without site: see wrapped.py.
    wrapper = wrapper_argv(argv, status=status, log=log, env_file=env_file, cwd=cwd)
    return [
        "new-session", "-d", "-s", session, "-c", _literal_argument(_literal_format(str(cwd.absolute()))),
        "-x", str(WIDTH), "-y", str(HEIGHT), "-P", "-F", "#{pane_pid}",
        "--", *map(_literal_argument, wrapper),
    ]  # fmt: skip


def _is_absent(stderr: str) -> bool:
    return any(message in stderr for message in _ABSENT) or all(part in stderr for part in _NO_SOCKET)


class Tmux:
    """The swarm's tmux server, as seen through its socket."""

    def __init__(
        self, socket: str = DEFAULT_TMUX_SOCKET, *, executable: str = "tmux", timeout: float = TIMEOUT
    ):
        self.socket = socket
        self.executable = executable
        self.timeout = timeout
        # -f /dev/null: the configuration is read when the server starts, and the user's is not ours.
        self._prefix = [executable, *socket_args(socket), "-f", "/dev/null"]
        # Without TMUX: a client run from inside the user's own tmux would otherwise refuse some
        # commands, or act on that server.
        self._env = {name: os.environ[name] for name in _CLIENT_ENVIRONMENT if name in os.environ}

    def __repr__(self) -> str:
        return f"Tmux({self.socket!r})"

    async def _call(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            with anyio.fail_after(self.timeout):
                return await anyio.run_process(
                    [*self._prefix, *args],
                    # Our stdin may be the MCP stream itself: tmux must not read a byte of it.
                    stdin=subprocess.DEVNULL,
                    check=False,
                    env=self._env,
                )
        except FileNotFoundError as exc:
            raise TmuxError(f"tmux is not installed: no {self.executable!r} on the PATH") from exc
        except PermissionError as exc:
            raise TmuxError(f"cannot run tmux {self.executable!r}: permission denied") from exc
        except TimeoutError as exc:
            raise TmuxError(
                f"the tmux server on {self.socket!r} did not answer {args[0]} within {self.timeout:g} s"
            ) from exc

    async def _run(self, *args: str) -> str:
        done = await self._call(*args)
        if done.returncode != 0:
            raise self._error(args, done)
        return done.stdout.decode(errors="replace")

    def _error(self, args: Sequence[str], done: subprocess.CompletedProcess[bytes]) -> TmuxError:
        said = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        return TmuxError(f"tmux {args[0]} on socket {self.socket!r} failed: {said}")

    async def start(
        self,
        session: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        status: Path,
        keep: bool,
    ) -> TmuxWorker:
        """Start `argv` in a new detached session `session`, under the worker wrapper.

        As `processes.start_process`: argv runs as given, never through a shell, with `env` as its
        whole environment, `cwd` as its directory and stdin from /dev/null; stdout and stderr are
        appended to `log` (and shown in the pane). When it exits, `status` receives its exit code
        (see `read_status`). A program that cannot be started raises nothing here: it gives exit
        code 127 and an "error" in `status`, as the wrapper is what starts it. TmuxError if tmux
        refuses (a session of that name exists, say); ProcessStartError if the environment file
        cannot be written next to `status`.

        With `keep`, the session stays when the worker has ended (its pane dead, its output on
        screen) until `kill_session`; otherwise tmux removes it then.
        """
        if isinstance(argv, str):
            raise TypeError(
                "argv must be a list of arguments, not one string: nothing is run through a shell"
            )
        if not argv:
            raise ValueError("cannot start a worker from an empty argv")
        _checked(session)
        env_file = _write_env_file(status, env)
        try:
            command = _new_session_command(session, argv, cwd=cwd, log=log, status=status, env_file=env_file)
            if keep:
                # In the same tmux invocation: the server runs both commands before it next looks
                # at its panes, so even a worker that ends at once finds the option set.
                command += [";", "set-option", "-w", "-t", f"={session}:", "remain-on-exit", "on"]
            started_after = ticks_since_boot()
            output = await self._run(*command)
        except BaseException:
            # No wrapper will read it, and it may hold secrets.
            os.unlink(env_file)
            raise
        try:
            pane_pid = int(output.split()[0])
        except (IndexError, ValueError):
            raise TmuxError(f"tmux new-session printed {output!r}, not the pid of the pane") from None
        start_time = read_start_time(pane_pid)
        if start_time is None:
            # The wrapper has already exited and tmux reaped it. As in `processes.start_process`, a
            # moment before the start stands in: no live process matches it, and it is no later
            # than anything the wrapper's group holds.
            start_time = started_after
        return TmuxWorker(session, pane_pid, ProcessIdentity(pane_pid, start_time))

    async def has_session(self, name: str) -> bool:
        done = await self._call("has-session", "-t", f"={_checked(name)}")
        if done.returncode == 0:
            return True
        if _is_absent(done.stderr.decode(errors="replace")):
            return False
        raise self._error(["has-session"], done)

    async def kill_session(self, name: str) -> None:
        """End the session; its pane's process gets SIGHUP. A session that is gone already is fine."""
        done = await self._call("kill-session", "-t", f"={_checked(name)}")
        if done.returncode != 0 and not _is_absent(done.stderr.decode(errors="replace")):
            raise self._error(["kill-session"], done)

    async def list_sessions(self) -> list[str]:
        """Every session on the socket, swarm or not; none if the server is not running."""
        done = await self._call("list-sessions", "-F", "#{session_name}")
        if done.returncode != 0:
            if _is_absent(done.stderr.decode(errors="replace")):
                return []
            raise self._error(["list-sessions"], done)
        return done.stdout.decode(errors="replace").splitlines()

    async def pane_dead(self, name: str) -> bool | None:
        """Whether the session's pane has ended (kept by `keep`); None if there is no such session."""
        # list-panes, not display-message: that prints an empty answer for a missing target.
        done = await self._call("list-panes", "-t", f"={_checked(name)}:", "-F", "#{pane_dead}")
        if done.returncode != 0:
            if _is_absent(done.stderr.decode(errors="replace")):
                return None
            raise self._error(["list-panes"], done)
        # The worker's pane is the first; a user who attached may have split the window since.
        return done.stdout.split(b"\n", 1)[0] == b"1"

    async def capture(self, name: str) -> str:
        """What the session's pane shows, its scrollback included, with wrapped lines joined."""
        done = await self._call("capture-pane", "-p", "-J", "-S", "-", "-t", f"={_checked(name)}:")
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()
            if _is_absent(said):
                raise TmuxError(f"no session {name!r} on tmux socket {self.socket!r} to capture: {said}")
            raise self._error(["capture-pane"], done)
        output = done.stdout.decode(errors="replace")
        return output.rstrip("\n") + "\n" if output.strip() else ""

    def attach_command(self, session: str) -> str:
        """The command a user types in a terminal to watch the session live (and C-b d to leave).

        From inside their own tmux, tmux refuses to nest unless TMUX is unset (`TMUX= tmux ...`).
        """
        return shlex.join(
            [self.executable, *socket_args(self.socket), "attach", "-t", f"={_checked(session)}"]
        )

    @staticmethod
    def read_status(status: Path) -> dict[str, object] | None:
        """What the wrapper wrote when the worker ended (see `wrapped.read_status`); None while there
        is none."""
        return read_status(status)
