"""The process a worker runs under: it runs the worker, records how it ended, and leaves nothing behind.

    worker_wrapper --log LOG --status STATUS --env-file ENV [--cwd DIR] -- ARGV...
    worker_wrapper --direct --status STATUS [--cwd DIR] -- ARGV...

The first form runs in a worker's tmux pane; the second (`--direct`) runs a local worker, a child
of the server: its stdout and stderr are already the worker's log, which the worker inherits, and
its environment is the worker's, exactly as the server gave it (read back from
/proc/self/environ, as Python itself adds LC_CTYPE to os.environ in a C locale).

Either way the wrapper makes itself a child subreaper: whatever the worker starts and leaves
behind, even in a session of its own (a double fork, a daemon), becomes the wrapper's child when
its parent exits. When the worker has exited, every process still descended from the wrapper gets
SIGTERM, then SIGKILL after a short grace, and is reaped; only then is STATUS written.

tmux makes this process the leader of the pane's session and process group, and the worker is
its child in that same group, so signalling the group of this pid stops everything. The worker's
output is copied, as it comes, to the pane (so `tmux attach` shows it live) and to LOG. When the
worker exits, STATUS is written, and only then does this process exit: the server that started
the worker may be long gone, and STATUS is how whoever comes next learns the outcome.

LOG is kept under the limit that MCP_SWARM_MAX_LOG_BYTES in the environment file gives (taken out
of the worker's environment): past it, LOG becomes LOG.1 and a new LOG is begun. This process is
the log's only writer, so that is exact and loses nothing, and it goes on while no server runs.

SIGTERM, SIGHUP and SIGINT are passed on to the worker, and the wrapper waits for it as before.
kill-session reaches the worker that way: tmux's hang-up signals the wrapper alone. A signal sent
to the whole group reaches the worker twice, directly and passed on. SIGKILL leaves no STATUS: a
wrapper gone without one was killed.

It starts once per worker, so it uses little of the standard library and nothing else: importing
the rest of mcp_swarm (or mcp, pydantic, anyio) here would cost every worker that time. It is
imported by itself with -I -S (no site, no user paths; see wrapped.py for the command line), and
even json, select and signal's enums are left out where they can be.
"""

from __future__ import annotations

import os
import sys
import time

# Not `from typing import TYPE_CHECKING`: typing costs 8 ms of the wrapper's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:
    # The C module under `signal`: the same functions, and the signal numbers as plain ints;
    # `signal` itself imports enum for its Signals, 3 ms of every wrapper's start.
    import _signal as signal

# What a shell reports for a command it cannot run; the status file then also holds "error".
START_FAILED = 127
USAGE = 2
# Read and written in chunks of this size: a worker that floods or never ends a line costs no more.
CHUNK = 64 * 1024
# Chunks copied before looking again whether the worker has exited: a grandchild that inherited
# its output and floods it must not keep us from seeing the worker's end. 1 MiB is also as much as
# a pipe can hold, so all the worker wrote before it exited is copied.
_CHUNKS_AT_ONCE = 16
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# Python ignores these itself, and an ignored signal stays ignored across exec: the worker gets
# them back at their default, as subprocess would give them.
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)
# Without a pidfd (Linux before 5.3, some sandboxes) nothing wakes us when the worker exits while
# its output pipe stays open; it is then looked for this often, in milliseconds.
_EXIT_LOOK_MS = 50
_SKIPPED = b"\r\n[mcp-swarm: output skipped here, the pane could not keep up; the log has all of it]\r\n"
_FLAGS = ("--log", "--status", "--env-file", "--cwd")
_DIRECT = "--direct"
# prctl(2): descendants orphaned below us are re-parented to us, not to init.
_PR_SET_CHILD_SUBREAPER = 36
# How long what the worker left running has between SIGTERM and SIGKILL, once the worker has
# exited; and how often, meanwhile, we look whether it is gone.
LEFTOVER_GRACE = 1.0
_LEFTOVER_LOOK = 0.01
MAX_LOG_BYTES_VARIABLE = "MCP_SWARM_MAX_LOG_BYTES"


class UsageError(Exception):
    """The command line is wrong: a bug in whoever built it, as the engine always passes every flag."""


class CannotStart(Exception):
    """The worker could not be started; the message says why, for the log and the status."""


class Options:
    def __init__(
        self, log: str | None, status: str, env_file: str | None, cwd: str | None, argv: list[str]
    ) -> None:
        # Both None in direct mode: the output is ours, the environment the one we were given.
        self.log = log
        self.status = status
        self.env_file = env_file
        self.cwd = cwd
        self.argv = argv


def parse(args: list[str]) -> Options:
    if "--" not in args:
        raise UsageError("missing '--' before the worker's command")
    split = args.index("--")
    flags, argv = args[:split], args[split + 1 :]
    if not argv:
        raise UsageError("no worker command after '--'")
    direct = bool(flags) and flags[0] == _DIRECT
    if direct:
        flags = flags[1:]
    values: dict[str, str] = {}
    if len(flags) % 2:
        raise UsageError(f"every flag takes a value: {flags}")
    for name, value in zip(flags[::2], flags[1::2], strict=True):
        if name not in _FLAGS or name in values:
            raise UsageError(f"unknown or repeated flag {name!r}")
        values[name] = value
    needed = ("--status",) if direct else _FLAGS[:3]
    missing = [name for name in needed if name not in values]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    if direct and ("--log" in values or "--env-file" in values):
        raise UsageError(f"{_DIRECT} takes neither --log nor --env-file: the output and environment are ours")
    # Absolute now: the worker's directory is entered before the status is written.
    log = values.get("--log")
    return Options(
        log=None if log is None else os.path.abspath(log),
        status=os.path.abspath(values["--status"]),
        env_file=values.get("--env-file"),
        cwd=values.get("--cwd"),
        argv=argv,
    )


class Forwarder:
    """Passes the signals that stop a worker on to it, so that it can end cleanly.

    A signal that arrives before the worker runs is held and passed on once it does. Once the worker
    has exited, nothing is passed on: its pid may be reused as soon as it is reaped.
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._child: int | None = None
        self._done = False
        for signum in _FORWARDED:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._done:
            return
        if self._child is None:
            self._pending.append(signum)
        else:
            _kill(self._child, signum)

    def started(self, pid: int) -> None:
        self._child = pid
        pending, self._pending = self._pending, []
        for signum in pending:
            _kill(pid, signum)

    def exited(self) -> None:
        """Called while the worker is a zombie: its pid cannot have been reused yet."""
        self._done = True


def _kill(pid: int, signum: int) -> None:
    # try/except rather than contextlib.suppress here and below: one import less at every start.
    try:  # noqa: SIM105
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Pane:
    """Our stdout, the tmux pane: a live view of the worker that must never hold the worker up.

    A terminal's buffer is small and tmux empties it only as fast as it draws, so a worker that
    floods would be slowed to that pace, or stopped by a tmux server that hangs. On a terminal,
    writes therefore never block: what the pane cannot take is skipped (the log has everything).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # Only a terminal's open file is ours alone to make non-blocking; a pipe or file we were
        # given (the wrapper run by hand) may be shared with whoever gave it.
        self._lossy = os.isatty(fd)
        if self._lossy:
            os.set_blocking(fd, False)
        self._skipped = False
        self._gone = False

    def write(self, data: bytes) -> None:
        if self._gone:
            return
        try:
            if not self._lossy:
                _write_all(self._fd, data)
                return
            if self._skipped:
                if os.write(self._fd, _SKIPPED) < len(_SKIPPED):
                    return
                self._skipped = False
            self._skipped = os.write(self._fd, data) < len(data)
        except BlockingIOError:
            self._skipped = True
        except OSError:
            # EIO: tmux closed the pane (kill-session, kill-server). The log carries on.
            self._gone = True


class Log:
    """The worker's log, rotated past `max_bytes`: renamed to LOG.1 (replacing an older one)."""

    def __init__(self, path: str, fd: int, pane: Pane, max_bytes: int | None) -> None:
        self._path = path
        self._fd = fd
        self._pane = pane
        self._max_bytes = max_bytes
        self._size = os.fstat(fd).st_size
        self._failed = False

    def write(self, data: bytes) -> None:
        if self._failed:
            return
        try:
            if self._max_bytes is not None and self._size and self._size + len(data) > self._max_bytes:
                # Cut after the chunk's last line end, if it has one, so that each file holds whole
                # lines: the old one may pass the limit by less than a chunk.
                end = data.rfind(b"\n") + 1
                self._append(data[:end])
                self._rotate()
                data = data[end:]
            self._append(data)
        except OSError as exc:
            # A full disk must not stop the worker, nor leave it blocked on a pipe we stopped reading.
            self._failed = True
            self._pane.write(f"\nmcp-swarm: cannot write the log any more: {exc.strerror}\n".encode())

    def _append(self, data: bytes) -> None:
        _write_all(self._fd, data)
        self._size += len(data)

    def _rotate(self) -> None:
        os.replace(self._path, self._path + ".1")
        # O_EXCL and O_NOFOLLOW: the name was just freed, and a link the worker planted there
        # meanwhile must not take its output anywhere else.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path, flags, 0o600)
        os.close(self._fd)
        self._fd, self._size = fd, 0


def read_environment(path: str) -> dict[str, str]:
    """The worker's whole environment, from a file deleted as soon as it is read: it may hold secrets."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise CannotStart(f"cannot read its environment file {path}: {exc.strerror}") from exc
    finally:
        try:  # noqa: SIM105
            os.unlink(path)
        except OSError:
            pass
    # Imported here and for an error's status only: json (and re, which it imports) is 8 ms of
    # the wrapper's start, and a local worker needs neither.
    import json

    try:
        loaded: dict[str, object] | list[object] | str | float | bool | None = json.loads(raw)
    except ValueError as exc:
        raise CannotStart(f"its environment file {path} is not JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise CannotStart(f"its environment file {path} holds no JSON object")
    env: dict[str, str] = {}
    for name, value in loaded.items():
        if not isinstance(value, str):
            raise CannotStart(f"its environment file {path} gives {name!r} a value that is not a string")
        env[name] = value
    return env


def take_log_limit(env: dict[str, str]) -> int | None:
    """The log's limit, out of the worker's environment; None (no limit) when it gives none."""
    value = env.pop(MAX_LOG_BYTES_VARIABLE, None)
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise CannotStart(f"{MAX_LOG_BYTES_VARIABLE} must be a whole number of bytes, not {value!r}")
    return int(value)


def spawn(argv: list[str], env: dict[str, str], output: int) -> int:
    """Start argv as our child, in our process group, as subprocess would: PATH from `env`, no shell."""
    program = argv[0]
    if "/" in program:
        candidates = [program]
    else:
        candidates = [os.path.join(directory, program) for directory in os.get_exec_path(env)]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, output, 1),
        (os.POSIX_SPAWN_DUP2, output, 2),
    ]
    # posix_spawn rather than subprocess: importing subprocess alone would add a third to our
    # start-up. Each PATH entry is tried in turn as execvp does: one we may not execute is
    # remembered, in case no later one can be run either.
    denied: OSError | None = None
    try:
        for path in candidates:
            try:
                return os.posix_spawn(path, argv, env, file_actions=actions, setsigdef=_RESTORED)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except PermissionError as exc:
                denied = exc
    except OSError as exc:
        raise CannotStart(f"cannot start {program!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte or '=' where the kernel cannot take it
        raise CannotStart(f"cannot start {program!r}: {exc}") from exc
    if denied is not None:
        raise CannotStart(f"cannot start {program!r}: it is not executable (permission denied)")
    if "/" in program:
        raise CannotStart(f"cannot start {program!r}: there is no such file")
    raise CannotStart(f"cannot start {program!r}: no program of that name on the PATH it was given")


def _exited(pid: int) -> bool:
    """Whether the child has exited, leaving it unreaped (WNOWAIT) so its pid stays ours."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _copy_available(source: int, sinks: tuple[Log, Pane]) -> bool:
    """Copy what can be read without waiting, up to a bound; False once every writer has closed the pipe."""
    for _ in range(_CHUNKS_AT_ONCE):
        try:
            chunk = os.read(source, CHUNK)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        for sink in sinks:
            sink.write(chunk)
    return True


def pump(pid: int, source: int, sinks: tuple[Log, Pane], forwarder: Forwarder) -> int:
    """Copy the worker's output until it exits; return its exit code as subprocess reports it."""
    import select  # only a tmux worker's output passes through us

    os.set_blocking(source, False)
    poller = select.poll()
    poller.register(source, select.POLLIN)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    else:
        poller.register(pidfd, select.POLLIN)
    timeout = None if pidfd is not None else _EXIT_LOOK_MS
    reading = True
    # The worker's exit, not the end of its output, is what ends this: a grandchild that inherited
    # the pipe may hold it open for ever. Whatever is already in the pipe then is still copied.
    while not _exited(pid):
        poller.poll(timeout)  # a signal interrupts it; Python runs the handler and polls again
        if reading and not _copy_available(source, sinks):
            reading = False
            poller.unregister(source)
    forwarder.exited()
    if reading:
        _copy_available(source, sinks)
    if pidfd is not None:
        os.close(pidfd)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


def write_status(path: str, record: dict[str, object]) -> None:
    """Write the status file whole or not at all: a reader never sees half of it."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    code = record.get("exit_code")
    if len(record) == 1 and isinstance(code, int):
        # As json.dumps writes it, without importing json (see read_environment).
        text = f'{{"exit_code": {code}}}'
    else:
        import json

        text = json.dumps(record)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, text.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(temporary, path)


def become_subreaper() -> bool:
    """Make orphaned descendants our children (Linux 3.4+); False where the kernel refuses."""
    # ctypes is imported here, not at the top: 3 ms of the wrapper's start, and tests import us.
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap() -> bool:
    """Reap every child that has exited; whether any child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def descendants(ancestor: int) -> list[int]:
    """The live processes below `ancestor` in the process tree, from /proc (zombies left out)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                raw = file.read()
        except OSError:
            continue  # it exited meanwhile
        fields = raw[raw.rfind(b")") + 1 :].split()
        if len(fields) > 1 and fields[0] not in (b"Z", b"X", b"x"):
            children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    frontier = [ancestor]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def stop_leftovers(grace: float = LEFTOVER_GRACE) -> None:
    """Stop and reap whatever the worker left running: SIGTERM, `grace` seconds, then SIGKILL.

    Called once the worker is reaped. As a subreaper we are the parent of every orphan below us, so
    with no child left nothing of the worker's is left either: the common case costs one waitpid.
    Signals go again at every look, to catch a process forked meanwhile.
    """
    if not _reap():
        return
    me = os.getpid()
    signum = signal.SIGTERM
    deadline = time.monotonic() + grace
    while True:
        for pid in descendants(me):
            _kill(pid, signum)
        time.sleep(_LEFTOVER_LOOK)
        if not _reap():
            return
        if time.monotonic() >= deadline:
            signum = signal.SIGKILL


def environment_given() -> dict[str, str]:
    """Our environment as the server gave it, which is the worker's: os.environ may have gained
    LC_CTYPE from Python's locale coercion, /proc/self/environ has not."""
    try:
        with open("/proc/self/environ", "rb") as file:
            raw = file.read()
    except OSError:
        return dict(os.environ)
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals and name:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def _enter(cwd: str | None) -> None:
    if cwd is None:
        return
    # Checked here, not left to tmux: tmux starts a pane whose directory is missing in the home
    # directory instead, and a worker must never run somewhere it was not sent.
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise CannotStart(f"cannot enter its working directory {cwd}: {exc.strerror}") from exc


def run_direct(options: Options, forwarder: Forwarder) -> int:
    """Run a local worker: its output is our stdout and stderr (the log), its environment ours."""
    pane = Pane(1)
    try:
        _enter(options.cwd)
        pid = spawn(options.argv, environment_given(), 1)
    except CannotStart as exc:
        pane.write(f"mcp-swarm: {exc}\n".encode())
        _record(options.status, {"exit_code": START_FAILED, "error": str(exc)}, pane)
        return START_FAILED
    forwarder.started(pid)
    # WNOWAIT: the worker stays a zombie, its pid ours, until the forwarder is told it has exited.
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    forwarder.exited()
    _, wait_status = os.waitpid(pid, 0)
    exit_code = os.waitstatus_to_exitcode(wait_status)
    stop_leftovers()
    _record(options.status, {"exit_code": exit_code}, pane)
    return exit_code if exit_code >= 0 else 128 - exit_code


def run(options: Options, forwarder: Forwarder) -> int:
    if options.log is None or options.env_file is None:
        return run_direct(options, forwarder)
    pane = Pane(1)
    log: Log | None = None
    try:
        env = read_environment(options.env_file)
        max_log_bytes = take_log_limit(env)
        try:
            # O_APPEND: a worker continued later adds to its log. 0o600: a transcript may hold secrets.
            log_fd = os.open(options.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CannotStart(f"cannot open its log {options.log}: {exc.strerror}") from exc
        log = Log(options.log, log_fd, pane, max_log_bytes)
        _enter(options.cwd)
        read_end, write_end = os.pipe()
        try:
            pid = spawn(options.argv, env, write_end)
        finally:
            os.close(write_end)  # the worker has its own copies; ours would keep the pipe from ending
    except CannotStart as exc:
        line = f"mcp-swarm: {exc}\n".encode()
        pane.write(line)
        if log is not None:
            log.write(line)
        _record(options.status, {"exit_code": START_FAILED, "error": str(exc)}, pane)
        return START_FAILED
    forwarder.started(pid)
    exit_code = pump(pid, read_end, (log, pane), forwarder)
    stop_leftovers()
    _record(options.status, {"exit_code": exit_code}, pane)
    # As a shell reports a command killed by a signal.
    return exit_code if exit_code >= 0 else 128 - exit_code


def _record(path: str, record: dict[str, object], pane: Pane) -> None:
    try:
        write_status(path, record)
    except OSError as exc:
        pane.write(f"mcp-swarm: cannot write the status file {path}: {exc.strerror}\n".encode())


def main(args: list[str]) -> int:
    # First of all, so that a stop requested while we start is held for the worker, not lost.
    forwarder = Forwarder()
    try:
        options = parse(args)
    except UsageError as exc:
        flags = " ".join(f"{flag} ..." for flag in _FLAGS)
        print(f"worker_wrapper: {exc}", file=sys.stderr)
        print(f"usage: worker_wrapper.py [{_DIRECT}] {flags} -- ARGV...", file=sys.stderr)
        return USAGE
    # Before the worker starts, so that nothing it forks can slip past.
    become_subreaper()
    return run(options, forwarder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
