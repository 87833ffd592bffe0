"""Processes run under the worker wrapper (worker_wrapper.py): local workers, tmux workers and
validation commands.

The wrapper runs the program, stops whatever the program left running once it has exited (it is
a child subreaper, so even a daemon that left its session is its child by then), and writes the
exit status to a file of the attempt. That file is the evidence of how the program ended, the same
for the server that watched it and for one that comes later: a worker that ended while no server
ran is judged from it as if it had been watched.

A wrapper gone without a status was killed (SIGKILL, by the server after its grace or by the
worker itself): what the worker left behind was then re-parented away from it, and is found in
/proc by the worker's key in its environment and killed (`by_environment.kill_strays`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mcp_swarm.placement import worker_wrapper
from mcp_swarm.placement.by_environment import kill_strays
from mcp_swarm.placement.processes import (
    ProcessIdentity,
    ProcessStartError,
    RunningProcess,
    StartedChild,
    WorkerProcess,
    check_program,
    start_child,
    watch,
)

WRAPPER = str(Path(worker_wrapper.__file__).resolve())
# Isolated (-I: no user site, no PYTHON* variables, neither the current directory nor the
# worker's on sys.path) and without site (-S), the wrapper imported by itself from its own
# directory, which only it is imported from: it imports only the standard library. Imported
# rather than run as a script, its compiled form is cached (a script is compiled at every run).
# Measured here, CPU time a start: 17 ms, against 21 ms as a script and 59 ms as
# `python -P -m mcp_swarm.placement.worker_wrapper`.
BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {str(Path(WRAPPER).parent)!r}); "
    "from worker_wrapper import main; sys.exit(main(sys.argv[1:]))"
)
WRAPPER_COMMAND = ("-I", "-S", "-c", BOOTSTRAP)
# What a local worker's processes are found by in /proc (see `worker_key`). Not SWARM_WORKER_ID:
# every swarm has a worker-1, and another project's must never be taken for ours.
WORKER_KEY_VARIABLE = "SWARM_WORKER_KEY"


def worker_key(files: Path) -> str:
    """The key of the worker whose files are in `files` (.mcp-swarm/workers/worker-N): one per
    worker of one swarm, the same whichever server works it out. Its directory's real path,
    hashed: the worker is not told where the swarm's state is."""
    return hashlib.sha256(os.path.realpath(files).encode()).hexdigest()[:32]


def wrapper_argv(
    argv: Sequence[str],
    *,
    status: Path,
    log: Path | None = None,
    env_file: Path | None = None,
    cwd: Path | None = None,
) -> list[str]:
    """The command line that runs `argv` under the wrapper. Without `log` and `env_file`, in direct
    mode: the wrapper's own output and environment are the program's."""
    if not sys.executable:
        raise ProcessStartError("cannot find the Python interpreter to run the worker wrapper with")
    command = [sys.executable, *WRAPPER_COMMAND]
    if log is None or env_file is None:
        command.append("--direct")
    else:
        command += ["--log", str(log.absolute()), "--env-file", str(env_file.absolute())]
    command += ["--status", str(status.absolute())]
    if cwd is not None:
        command += ["--cwd", str(cwd.absolute())]
    return [*command, "--", *argv]


def status_file(files: Path, attempt: int) -> Path:
    """Where the wrapper of this attempt writes the exit status."""
    return files / f"exit-{attempt}.json"


def read_status(status: Path) -> dict[str, object] | None:
    """What the wrapper wrote when the program ended: {"exit_code": n} and, if it could not be
    started, "error". None while there is none (the wrapper writes it whole, or not at all).

    A negative exit code is the signal that killed the program, as subprocess reports it.
    """
    try:
        loaded: dict[str, object] | list[object] | str | float | bool | None = json.loads(status.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(loaded, dict):
        return None
    code = loaded.get("exit_code")
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    return loaded


def exit_status_of(status: Path) -> Callable[[], int | None]:
    """The exit status the wrapper recorded; None if there is none (the wrapper was SIGKILLed)."""

    def read() -> int | None:
        recorded = read_status(status)
        code = None if recorded is None else recorded.get("exit_code")
        return code if isinstance(code, int) else None

    return read


def start_wrapped(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], output: Path, status: Path
) -> StartedChild:
    """`processes.start_child` for argv under the wrapper, in direct mode: the wrapper leads a new
    session and process group, argv runs in it with `env` and `cwd`, output appended to `output`.

    A program that cannot be run raises ProcessStartError here, as `start_child` would: the wrapper
    would only find it out after it had started.
    """
    if isinstance(argv, str):
        raise TypeError("argv must be a list of arguments, not one string: nothing is run through a shell")
    if not argv:
        raise ProcessStartError("cannot start a process from an empty argv")
    check_program(argv, cwd=cwd, env=env)
    return start_child(wrapper_argv(argv, status=status), cwd=cwd, env=env, output=output)


class WrappedProcess:
    """A process under the wrapper, our child or adopted: its exit code is the one the wrapper
    recorded, and if the wrapper recorded none (it was killed), what the worker left is killed."""

    def __init__(self, process: WorkerProcess, status: Path, *, worker: bool) -> None:
        self._process = process
        self.identity: ProcessIdentity = process.identity
        self._status = status
        # A worker's strays are found by its key (its files are beside its status); a check's
        # are not looked for.
        self._key = worker_key(status.parent) if worker else None

    def __repr__(self) -> str:
        return f"WrappedProcess({self._process!r}, status={self._status})"

    async def wait(self) -> int | None:
        return await self._ended(await self._process.wait())

    async def stop(self, grace: float = 5.0) -> int | None:
        return await self._ended(await self._process.stop(grace))

    async def _ended(self, wrapper_code: int | None) -> int | None:
        recorded = exit_status_of(self._status)()
        if recorded is not None:
            return recorded
        if self._key is not None:
            await kill_strays(WORKER_KEY_VARIABLE, self._key, self.identity.start_time)
        # How the wrapper itself ended (-9: killed), where the kernel told us; else unknown.
        return wrapper_code


async def start_wrapped_process(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], output: Path, status: Path
) -> WrappedProcess:
    """`start_wrapped` and `watch` in one, in the event loop's thread: for a validation command."""
    started = start_wrapped(argv, cwd=cwd, env=env, output=output, status=status)
    running: RunningProcess = watch(started, started.identify())
    return WrappedProcess(running, status, worker=False)
