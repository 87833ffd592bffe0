"""Running the short-lived CLIs the server talks to (`ol`, `bd`): bounded output, a time limit.

Programs are run from argument lists, never through a shell, with stdin at /dev/null, in a
process group of their own that is stopped whole when time is up, and only a bounded part of
their output kept.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream

from mcp_swarm.errors import InvalidInput
from mcp_swarm.placement.processes import ProcessIdentity, ProcessStartError, read_start_time, stop_group

logger = logging.getLogger(__name__)

# Enough of a program's complaint to act on, small enough for a tool result and task metadata.
STDERR_KEEP_BYTES = 4000
# After SIGTERM a CLI has this long to tidy up before the rest of its process group is killed.
_STOP_GRACE = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramAnswer:
    """How a CLI the server asked answered: exit 0 is ok. `error` says why it could not answer at
    all (missing, out of time, could not start)."""

    ok: bool
    exit_code: int | None
    stderr: str = ""
    error: str | None = None

    def failure(self, what: str) -> str | None:
        """Why the answer counts as a failure, in words for the Mayor; None if it succeeded."""
        if self.ok:
            return None
        if self.error is not None:
            return self.error
        said = f": {self.stderr}" if self.stderr else ""
        return f"{what} failed (exit status {self.exit_code}){said}"


@dataclass(frozen=True, slots=True)
class ProgramRun:
    """How a short-lived CLI run ended. `exit_code` is None when it ran out of time."""

    exit_code: int | None
    stdout: bytes
    stderr: str
    # True when stdout was longer than the caller's limit and only its start was kept.
    stdout_cut: bool = False


class _Head:
    """Keeps the first `limit` bytes of a stream and reads (and drops) the rest, so the child never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = False

    async def drain(self, stream: ByteReceiveStream) -> None:
        async for chunk in stream:
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > room:
                self.cut = True


class _Tail:
    """Keeps the last `limit` bytes of a stream: a complaint usually ends with its point."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = False

    async def drain(self, stream: ByteReceiveStream) -> None:
        async for chunk in stream:
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]
                self.cut = True

    def text(self) -> str:
        text = self.data.decode(errors="replace").strip()
        return "…" + text if self.cut else text


async def run_program(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,  # noqa: ASYNC109 - on expiry the program is stopped and the run reported, not abandoned
    stdout_limit: int = 0,
    stderr_limit: int = STDERR_KEEP_BYTES,
) -> ProgramRun:
    """Run a CLI to its end or for `timeout` seconds, in a process group of its own.

    argv runs as given, never through a shell, with stdin at /dev/null. At most `stdout_limit`
    bytes of stdout are kept (0: stdout goes to /dev/null) and the last `stderr_limit` of stderr.
    When time is up the group gets SIGTERM, then SIGKILL. ProcessStartError if it cannot start.
    """
    if isinstance(argv, str):
        raise TypeError("argv must be a list of arguments, not one string: nothing is run through a shell")
    args = list(argv)
    if not args:
        raise ProcessStartError("cannot start a process from an empty argv")
    if timeout <= 0:
        raise InvalidInput(f"a timeout must be a positive number of seconds, not {timeout}")
    try:
        process = await anyio.open_process(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_limit > 0 else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if not await anyio.Path(cwd).is_dir():
            raise ProcessStartError(
                f"cannot start {args[0]!r}: its working directory {cwd} does not exist"
            ) from exc
        raise ProcessStartError(f"cannot start {args[0]!r}: there is no such program") from exc
    except OSError as exc:
        raise ProcessStartError(f"cannot start {args[0]!r}: {exc.strerror or exc}") from exc
    start_time = read_start_time(process.pid)
    identity = None if start_time is None else ProcessIdentity(process.pid, start_time)
    out, err = _Head(stdout_limit), _Tail(stderr_limit)
    code: int | None = None
    try:
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                if process.stdout is not None:
                    group.start_soon(out.drain, process.stdout)
                if process.stderr is not None:
                    group.start_soon(err.drain, process.stderr)
            code = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None and identity is not None:
                # Not reaped yet, so its pid, and the group it leads, are still ours to stop.
                await stop_group(identity, identity.pid, _STOP_GRACE)
            await process.aclose()
    return ProgramRun(exit_code=code, stdout=bytes(out.data), stderr=err.text(), stdout_cut=out.cut)


async def ask(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,  # noqa: ASYNC109 - a program out of time is an answer, not an error
    cannot_start: str = "",
) -> ProgramAnswer:
    """Run a CLI whose exit status is its answer (`ol hero ratchet`, `bd update`).

    What the program does comes back as an answer, never an exception: one that cannot start or
    runs out of time is not ok, with `error` saying why (after `cannot_start`, if it could not
    start), so a caller has one path.
    """
    what = " ".join([Path(argv[0]).name, *argv[1:]])
    try:
        run = await run_program(argv, cwd=cwd, timeout=timeout)
    except ProcessStartError as exc:
        return ProgramAnswer(ok=False, exit_code=None, error=f"{cannot_start}{exc}")
    if run.exit_code is None:
        return ProgramAnswer(
            ok=False,
            exit_code=None,
            stderr=run.stderr,
            error=f"{what} did not finish within {timeout:g} s",
        )
    if run.exit_code != 0:
        logger.warning("%s: exit status %d", what, run.exit_code)
    return ProgramAnswer(ok=run.exit_code == 0, exit_code=run.exit_code, stderr=run.stderr)
