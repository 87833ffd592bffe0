"""Distributed mode for the engine: a worker in a detached tmux session that outlives its server.

The session runs the worker under `mcp_swarm.placement.worker_wrapper`, which appends its output to the
worker's log (and shows it in the pane, for `tmux attach`) and writes its exit status to a file
of the attempt when it ends. The engine watches the wrapper's pid (a pidfd: it is tmux's child,
not ours) and reads the exit status from that file, so the verdict is the same whichever server
sees the end: the one that started the worker, or one that adopted it after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mcp_swarm.placement.processes import AdoptedProcess, ProcessIdentity
from mcp_swarm.placement.tmux import Tmux, session_name


def status_file(files: Path, attempt: int) -> Path:
    """Where the wrapper of this attempt writes the exit status."""
    return files / f"exit-{attempt}.json"


def exit_status_of(status: Path) -> Callable[[], int | None]:
    """The exit status the wrapper recorded; None if there is none (the wrapper was SIGKILLed)."""

    def read() -> int | None:
        recorded = Tmux.read_status(status)
        code = None if recorded is None else recorded.get("exit_code")
        return code if isinstance(code, int) else None

    return read


def tmux_process(identity: ProcessIdentity, files: Path, attempt: int) -> AdoptedProcess:
    return AdoptedProcess(identity, exit_status_of(status_file(files, attempt)))


async def start_in_tmux(
    tmux: Tmux,
    worker_id: str,
    attempt: int,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    files: Path,
) -> tuple[AdoptedProcess, str]:
    """Start the attempt in its own session; the process to supervise, and the session's name.

    The session is kept once the worker has ended (its pane shows the output), so that a failed
    worker can be inspected; the engine removes it when the task is completed or the worker closed.
    """
    session = session_name(worker_id)
    status = status_file(files, attempt)
    status.unlink(missing_ok=True)
    # A session kept from an earlier attempt of this worker has the same name.
    await tmux.kill_session(session)
    started = await tmux.start(session, argv, cwd=cwd, env=env, log=log, status=status, keep=True)
    return tmux_process(started.identity, files, attempt), session
