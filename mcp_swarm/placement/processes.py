"""Starting and stopping OS processes: the worker agents of the swarm (`claude -p ...` and the like).

This module (with by_environment.py, which finds processes by the worker id they carry) is the
one that creates or signals processes, and it knows nothing of MCP, SQL or tasks: it takes an
argv, a directory, an environment and a file for the output, and hands back a handle. Linux only:
identities and process groups are read from /proc.

Three rules keep it safe:

- Every worker leads a new session, so it and everything it spawns share one process group, and
  stopping signals the group: no grandchild outlives a stopped worker.
- A pid alone never names a process, because pids are reused. A process is its pid and its start
  time (`ProcessIdentity`), checked against /proc before anything is signalled.
- Output goes from the child straight into a file we opened; none of it passes through this
  process, so a worker that writes gigabytes costs us no memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import anyio

from mcp_swarm.errors import SwarmError

logger = logging.getLogger(__name__)

PROC = Path("/proc")
# States of a process that has exited: a zombie waits for its parent to reap it, a dead one is
# being removed. Neither runs, and signalling them does nothing.
EXITED = frozenset({"Z", "X", "x"})
# After SIGKILL a process dies as soon as the kernel schedules it; only one stuck inside the kernel
# (a hung network filesystem, say) takes longer, and waiting longer for it would only stall us.
KILL_TIMEOUT = 5.0
# Processes that are not our children give no event when they exit, so /proc is looked at again
# after these delays (doubling from the first to the last).
FIRST_LOOK = 0.005
LAST_LOOK = 0.05


class ProcessStartError(SwarmError):
    """A program could not be started: it does not exist, is not executable, or cannot run here."""


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """One process for as long as it lives.

    A reused pid comes with a later start time, so the pair never names two processes.
    """

    pid: int
    # Clock ticks after boot at which the process started: field 22 of /proc/<pid>/stat.
    start_time: int


class Stat(NamedTuple):
    state: str
    pgid: int
    sid: int
    start_time: int


def read_stat(pid: int) -> Stat | None:
    """The fields of /proc/<pid>/stat used here, or None if there is no process `pid`."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:  # ENOENT: no such process; ESRCH: it exited while we read
        return None
    # Field 2 is the command name in parentheses, and it may hold anything, spaces and ')'
    # included (bytes too, hence no decoding). Every later field is a plain token, so split after
    # the last ')'. Counting fields from 1 as proc(5) does, field n is fields[n - 3].
    close = raw.rfind(b")")
    if close < 0:
        return None
    fields = raw[close + 1 :].split()
    try:
        return Stat(fields[0].decode("ascii"), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def all_processes() -> Iterator[tuple[int, Stat]]:
    """Every process /proc shows, with its stat; those that exit meanwhile are left out."""
    for name in os.listdir(PROC):
        if name.isdigit() and (stat := read_stat(int(name))) is not None:
            yield int(name), stat


def read_start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot; None if there is no such process."""
    stat = read_stat(pid)
    return None if stat is None else stat.start_time


def is_running(identity: ProcessIdentity) -> bool:
    """Whether that very process still runs: its pid exists, was not reused, and is no zombie."""
    stat = read_stat(identity.pid)
    return stat is not None and stat.start_time == identity.start_time and stat.state not in EXITED


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes in process group `pgid`, in pid order."""
    return sorted(pid for pid, stat in all_processes() if stat.pgid == pgid and stat.state not in EXITED)


def ticks_since_boot() -> int:
    """Now, on the clock and in the unit of /proc start times (CLOCK_BOOTTIME, clock ticks), rounded down."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK") // 1_000_000_000


class _Child:
    """A child process of ours, reaped the moment it exits.

    The kernel makes a pidfd readable when its process exits, so the event loop itself wakes us:
    no thread per child, no polling. Where pidfds are missing (Linux before 5.3, some sandboxes)
    a thread blocks in waitpid instead.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.exited = anyio.Event()
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:
            threading.Thread(target=self._wait_in_thread, args=(loop,), daemon=True).start()
        else:
            loop.add_reader(pidfd, self._on_readable, loop, pidfd)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _on_readable(self, loop: asyncio.AbstractEventLoop, pidfd: int) -> None:
        if self._popen.poll() is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self.exited.set()

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        self._popen.wait()
        loop.call_soon_threadsafe(self.exited.set)

    async def wait(self) -> int:
        await self.exited.wait()
        returncode = self._popen.returncode
        assert returncode is not None  # noqa: S101 - reaped before `exited` is set
        return returncode


class RunningProcess:
    """A process this module started: wait for it, or stop it and everything it spawned."""

    def __init__(self, process: _Child, identity: ProcessIdentity) -> None:
        self._process = process
        self.identity = identity
        # start_new_session makes the child lead a new session and process group, both named by its pid.
        self.pgid = identity.pid
        self._stop_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"RunningProcess(pid={self.identity.pid}, returncode={self.returncode})"

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited and been reaped; see `wait`."""
        return self._process.returncode

    async def wait(self) -> int:
        """The exit code, or minus the signal that killed the process, as subprocess reports it.

        It wakes the moment the process exits. Cancelling the wait leaves the process alone.
        """
        return await self._process.wait()

    async def stop(self, grace: float = 5.0) -> int | None:
        """Stop the process and every process left in its group; return the exit code.

        SIGTERM goes to the whole group, which has `grace` seconds to be gone; whatever is left is
        then SIGKILLed. Grandchildren are stopped too when the process itself has already exited.
        Calling it again, or after the process exited, is harmless.

        It runs shielded: a caller cancelled meanwhile still leaves nothing running, and the
        cancellation reaches it at its next await. None only if the process survived SIGKILL
        (stuck in the kernel) for KILL_TIMEOUT seconds.
        """
        with anyio.CancelScope(shield=True):
            async with self._stop_lock:
                await _stop(self.identity, grace, leader=self._process)
        return self._process.returncode


@dataclass(frozen=True, slots=True)
class StartedChild:
    """A child just started by `start_child`, in any thread: not yet identified nor watched."""

    popen: subprocess.Popen[bytes]
    # Clock ticks after boot just before the child was started: see `identify`.
    started_after: int

    def identify(self) -> ProcessIdentity:
        """The child's identity: its pid and its start time, from /proc.

        Reading /proc/<pid>/stat waits while the child is still mapping its program (the kernel
        takes its memory map's lock for the size fields), up to a millisecond for a small C
        program: a wave of children is started first and identified after, so that they map
        their programs in parallel. A child not yet reaped keeps its pid, zombie or not, so its
        start time can be read at any time until `watch` reaps it.
        """
        start_time = read_start_time(self.popen.pid)
        if start_time is None:
            # It has already been reaped (a pid namespace that reaps for us). The moment just
            # before the spawn then stands in for its start: no live process can match it any
            # more, and it is still no later than the start of anything in its group, which is
            # what stopping what the process left behind needs.
            start_time = self.started_after
        return ProcessIdentity(self.popen.pid, start_time)


def start_child(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], output: Path) -> StartedChild:
    """Start `argv` in a session of its own, with stdout and stderr appended to `output`.

    argv is run as given, never through a shell, and the program is looked up on env's PATH when it
    has no '/'. `env` is the whole environment of the process, not additions to ours. Its stdin is
    /dev/null, so a program that asks for input gets end of file rather than hanging.

    It blocks until the program is executed, and may run in any thread: the local placement starts
    a wave of workers in a thread of its own (see local.py). `watch` must follow in the event
    loop's thread.
    """
    if isinstance(argv, str):
        # A string is a sequence of one-letter arguments; anyio would run it through a shell.
        raise TypeError("argv must be a list of arguments, not one string: nothing is run through a shell")
    args = list(argv)
    if not args:
        raise ProcessStartError("cannot start a process from an empty argv")
    program = args[0]
    try:
        # O_APPEND: stdout and stderr share the file without overwriting each other, and a worker
        # started again adds to its log. Mode 0o600: a transcript may hold secrets.
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ProcessStartError(
            f"cannot start {program!r}: cannot open its output file {output}: {exc.strerror}"
        ) from exc
    started_after = ticks_since_boot()
    try:
        # Popen rather than the event loop's subprocess transport: it costs no pipe, no transport
        # and no watcher thread per child (measured: 0.8 ms less per worker on two cores), and the
        # child's end is watched by `_Child`.
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise ProcessStartError(_start_failure(program, cwd, exc)) from exc
    finally:
        os.close(fd)  # the child has its own copies
    return StartedChild(popen, started_after)


def watch(started: StartedChild, identity: ProcessIdentity) -> RunningProcess:
    """Begin watching a child started by `start_child`; in the event loop's thread."""
    return RunningProcess(_Child(started.popen), identity)


async def start_process(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], output: Path
) -> RunningProcess:
    """`start_child` and `watch` in one, in the event loop's thread: for a process or two."""
    started = start_child(argv, cwd=cwd, env=env, output=output)
    return watch(started, started.identify())


def _start_failure(program: str, cwd: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename is not None and Path(exc.filename) == cwd:
        return f"cannot start {program!r}: its working directory {cwd} does not exist"
    if isinstance(exc, FileNotFoundError):
        if "/" in program:
            return f"cannot start {program!r}: there is no such file"
        return f"cannot start {program!r}: no program of that name on the PATH it was given"
    if isinstance(exc, PermissionError):
        return f"cannot start {program!r}: it is not executable (permission denied)"
    return f"cannot start {program!r}: {exc.strerror or exc}"


async def stop_group(identity: ProcessIdentity, pgid: int, grace: float) -> None:
    """Stop a process group this module started in an earlier run (adopted after a restart).

    As `RunningProcess.stop`, but the process is not our child, so its end is seen in /proc.
    Only what can be shown to be that group is signalled:

    - While the leader still holds its pid with the recorded start time (running, or a zombie not
      yet reaped), the group is ours, and it is signalled as a whole.
    - If its pid now belongs to a process with another start time, the pid was reused. Linux never
      hands out a pid that still names a live process group, so our group had ended before that:
      nothing is signalled.
    - If its pid is unused, the leader is gone, and what is left of its group are the processes
      whose group and session are `pgid` and that started no earlier than the leader: a process
      older than the leader cannot be one it spawned. Each is signalled by pid.

    What start times cannot tell apart is a pid reused by a new session whose own leader has exited
    too, leaving members behind (a daemon's double fork), all while we were not looking: it takes
    the pid counter wrapping round onto that one pid, and its victims started after our group had
    ended, which no record here can show.
    """
    if pgid != identity.pid:
        raise ValueError(f"process group {pgid} is not led by pid {identity.pid}; this module made neither")
    with anyio.CancelScope(shield=True):
        await _stop(identity, grace, leader=None)


def _members(identity: ProcessIdentity) -> tuple[bool, list[int]]:
    """What is left of the group `identity` leads, and whether its id still names only that group.

    The rules are `stop_group`'s; the group's id is the leader's pid.
    """
    pgid = identity.pid
    leader = read_stat(pgid)
    if leader is not None:
        if leader.start_time != identity.start_time:
            return False, []
        return True, group_members(pgid)
    return False, sorted(
        pid
        for pid, stat in all_processes()
        if stat.pgid == pgid
        and stat.sid == pgid
        and stat.start_time >= identity.start_time
        and stat.state not in EXITED
    )


def _signal_group(identity: ProcessIdentity, sig: signal.Signals) -> None:
    whole, members = _members(identity)
    if not members:
        return
    if whole:
        # One killpg reaches the whole group at once, children forked a moment ago included.
        _send(os.killpg, identity.pid, sig)
    else:
        for pid in members:
            _send(os.kill, pid, sig)


def _send(kill: Callable[[int, int], None], target: int, sig: signal.Signals) -> None:
    try:
        kill(target, sig)
    except ProcessLookupError:
        pass  # it has just exited
    except PermissionError:
        # A worker that became another user (through sudo, say) is out of our reach.
        logger.warning("no permission to send %s to %d", sig.name, target)


async def _stop(identity: ProcessIdentity, grace: float, *, leader: _Child | None) -> None:
    _signal_group(identity, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await _gone(identity, leader, resend=None)
        return
    # SIGKILL cannot be caught or ignored. It is sent again at every look, so that a child forked
    # between a look at /proc and a kill is caught the next time round.
    with anyio.move_on_after(KILL_TIMEOUT):
        await _gone(identity, leader, resend=signal.SIGKILL)
        return
    logger.warning(
        "processes %s of the group led by pid %d survived SIGKILL for %.0f s",
        _members(identity)[1],
        identity.pid,
        KILL_TIMEOUT,
    )


async def _gone(identity: ProcessIdentity, leader: _Child | None, *, resend: signal.Signals | None) -> None:
    """Return once the group is gone and the leader, if it is our child, reaped."""
    if resend is not None:
        _signal_group(identity, resend)
    if leader is not None:
        await leader.wait()  # an event: asyncio wakes us when it reaps the leader
    delay = FIRST_LOOK
    while _members(identity)[1]:
        await anyio.sleep(delay)
        delay = min(2 * delay, LAST_LOOK)
        if resend is not None:
            _signal_group(identity, resend)


def this_process() -> ProcessIdentity:
    """The identity of the running process: how a server names itself as a workers' supervisor."""
    pid = os.getpid()
    start_time = read_start_time(pid)
    assert start_time is not None  # noqa: S101 - we are running
    return ProcessIdentity(pid, start_time)


def supervisor_alive(supervisor: str | None) -> bool:
    """Whether the server process named "pid:start time" (see `this_process`) still runs."""
    if supervisor is None:
        return False
    pid, _, start_time = supervisor.partition(":")
    if not (pid.isdigit() and start_time.isdigit()):
        return False
    return is_running(ProcessIdentity(int(pid), int(start_time)))


async def wait_until_gone(identity: ProcessIdentity) -> None:
    """Return once that process has exited; it need not be our child.

    A pidfd turns readable when its process exits, child or not. It is opened before the start
    time is checked, so it cannot name a later process that reused the pid. Without pidfds,
    /proc is looked at with a growing delay, up to a second.
    """
    try:
        pidfd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return
    except OSError:
        pidfd = None
    if pidfd is not None:
        try:
            if is_running(identity):
                await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        return
    delay = FIRST_LOOK
    while is_running(identity):
        await anyio.sleep(delay)
        delay = min(2 * delay, 1.0)


class WorkerProcess(Protocol):
    """What the engine supervises: our own child, or a process it adopted."""

    identity: ProcessIdentity

    async def wait(self) -> int | None: ...

    async def stop(self, grace: float = 5.0) -> int | None: ...


class AdoptedProcess:
    """A worker process that is not our child: started by a server that died, or run by tmux.

    Its exit code cannot be had from the kernel, so `exit_status` says what is known of it (the
    status file a tmux session writes), or None.
    """

    def __init__(self, identity: ProcessIdentity, exit_status: Callable[[], int | None]) -> None:
        self.identity = identity
        self._exit_status = exit_status

    def __repr__(self) -> str:
        return f"AdoptedProcess(pid={self.identity.pid})"

    async def wait(self) -> int | None:
        await wait_until_gone(self.identity)
        return self._exit_status()

    async def stop(self, grace: float = 5.0) -> int | None:
        await stop_group(self.identity, self.identity.pid, grace)
        return self._exit_status()


def check_program(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> None:
    """Raise ProcessStartError, as `start_child` would, if argv's program cannot be run.

    For a program started under the worker wrapper, which looks it up itself: without this, a
    missing program would be a worker that exits 127 rather than a spawn that says why it failed.
    """
    program = argv[0]
    if not os.path.isdir(cwd):
        raise ProcessStartError(f"cannot start {program!r}: its working directory {cwd} does not exist")
    if "/" in program:
        candidates = [os.path.join(cwd, program)]
    else:
        candidates = [os.path.join(directory, program) for directory in os.get_exec_path(dict(env))]
    found = [path for path in candidates if os.path.isfile(path)]
    if not found:
        missing = (
            "there is no such file" if "/" in program else "no program of that name on the PATH it was given"
        )
        raise ProcessStartError(f"cannot start {program!r}: {missing}")
    if not any(os.access(path, os.X_OK) for path in found):
        raise ProcessStartError(f"cannot start {program!r}: it is not executable (permission denied)")
