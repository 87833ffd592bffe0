"""Starting and stopping real processes: output, exit codes, process groups, pid reuse, cancellation.

Nothing is mocked. A child says when it is ready by writing a line to a named pipe (`Fifo`), so no
test sleeps to let something happen; whether a process is gone is read from /proc by `alive`,
which shares no code with the module under test.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import anyio
import pytest

from mcp_swarm.placement.processes import (
    ProcessIdentity,
    ProcessStartError,
    RunningProcess,
    group_members,
    is_running,
    read_start_time,
    start_process,
    stop_group,
)
from tests.support.helpers import Fifo

pytestmark = pytest.mark.anyio

ENV = {"PATH": os.environ.get("PATH", os.defpath)}
# Long enough for a slow machine, short enough that a broken test fails rather than hangs.
DEADLINE = 20.0
SLEEPER = "import time; time.sleep(600)"


def alive(pid: int) -> bool:
    """Whether /proc shows pid as a process that has not exited (zombies have)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


@contextmanager
def our_stdin_is_an_open_pipe() -> Generator[None]:
    """Our fd 0 becomes a pipe nobody writes to or closes, for as long as the block runs."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)


def reaped(pid: int) -> bool:
    """Whether pid is gone from /proc: exited and waited for, not even a zombie."""
    return not Path(f"/proc/{pid}").exists()


def command_name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().removesuffix("\n")


def open_files() -> list[str]:
    """What this process's file descriptors point to."""
    targets: list[str] = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the descriptor listdir itself used is closed by now
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


class Lab:
    """Starts Python children in a temporary directory; the fixture stops every one of them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.output = directory / "output.log"
        self.started: list[RunningProcess] = []
        self.fifos: list[Fifo] = []

    def fifo(self) -> Fifo:
        fifo = Fifo(self.directory / f"fifo-{len(self.fifos)}")
        self.fifos.append(fifo)
        return fifo

    async def python(self, script: str, *args: str, env: Mapping[str, str] = ENV) -> RunningProcess:
        process = await start_process(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            cwd=self.directory,
            env=env,
            output=self.output,
        )
        self.started.append(process)
        return process


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    yield lab
    for process in lab.started:
        await process.stop(grace=0)
    for fifo in lab.fifos:
        fifo.close()


async def test_output_goes_to_the_file_and_the_exit_code_is_returned(lab: Lab) -> None:
    lab.output.write_text("from an earlier run\n")
    script = """
        import os, sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        print("stdin:", repr(sys.stdin.read()), os.readlink("/proc/self/fd/0"), flush=True)
        print("cwd:", os.getcwd(), "env:", os.environ.get("SWARM_TEST"), flush=True)
        print("arg:", sys.argv[1], flush=True)
        sys.exit(3)
    """
    # Our own stdin may well be /dev/null already; make it a pipe that never ends, so a child that
    # inherited it would show a pipe and hang on the read instead.
    with our_stdin_is_an_open_pipe(), anyio.fail_after(DEADLINE):
        process = await lab.python(script, "$HOME; echo not a shell", env={**ENV, "SWARM_TEST": "yes"})
        assert await process.wait() == 3
    assert process.returncode == 3
    assert lab.output.read_text() == (
        "from an earlier run\n"
        "to stdout\n"
        "to stderr\n"
        "stdin: '' /dev/null\n"
        f"cwd: {lab.directory} env: yes\n"
        "arg: $HOME; echo not a shell\n"
    )
    # Stopping a process that has exited changes nothing, however often it is done.
    assert await process.stop() == 3
    assert await process.stop() == 3
    # The output file was opened for the child only: this process holds no descriptor on it.
    assert str(lab.output) not in open_files()


@pytest.mark.parametrize("adopted", [False, True], ids=["stop", "stop_group"])
async def test_stopping_ends_the_grandchildren_too(lab: Lab, adopted: bool) -> None:
    fifo = lab.fifo()
    script = f"""
        import subprocess, sys
        kids = [subprocess.Popen([sys.executable, "-c", {SLEEPER!r}]) for _ in range(2)]
        with open(sys.argv[1], "w") as fifo:
            fifo.write(" ".join(str(kid.pid) for kid in kids) + "\\n")
        for kid in kids:
            kid.wait()
    """
    process = await lab.python(script, str(fifo.path))
    grandchildren = [int(pid) for pid in (await fifo.line()).split()]
    assert group_members(process.pgid) == sorted([process.identity.pid, *grandchildren])
    assert all(alive(pid) for pid in grandchildren)

    if adopted:
        # As after a restart: only the recorded identity and group are known.
        await stop_group(process.identity, process.pgid, grace=DEADLINE)
        assert await process.wait() == -signal.SIGTERM
    else:
        assert await process.stop(grace=DEADLINE) == -signal.SIGTERM

    assert group_members(process.pgid) == []
    assert not any(alive(pid) for pid in grandchildren)
    assert not is_running(process.identity)


IGNORES_SIGTERM = """
    import os, signal, sys, time
    # os.write, not a buffered file: a handler may run while the main code is inside a write.
    fifo = os.open(sys.argv[1], os.O_WRONLY)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.write(fifo, b"term\\n"))
    os.write(fifo, b"ready\\n")
    while True:
        time.sleep(60)
"""


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(lab: Lab) -> None:
    fifo = lab.fifo()
    process = await lab.python(IGNORES_SIGTERM, str(fifo.path))
    assert await fifo.line() == "ready"
    began = anyio.current_time()
    assert await process.stop(grace=0.3) == -signal.SIGKILL
    assert anyio.current_time() - began >= 0.3
    assert await fifo.line() == "term"  # it was asked first
    assert group_members(process.pgid) == []
    assert not alive(process.identity.pid)


async def test_stop_ends_what_a_leader_that_exited_left_behind(lab: Lab) -> None:
    fifo = lab.fifo()
    script = f"""
        import subprocess, sys
        kid = subprocess.Popen([sys.executable, "-c", {SLEEPER!r}])
        with open(sys.argv[1], "w") as fifo:
            fifo.write(f"{{kid.pid}}\\n")
    """
    process = await lab.python(script, str(fifo.path))
    grandchild = int(await fifo.line())
    assert await process.wait() == 0
    assert alive(grandchild)
    assert group_members(process.pgid) == [grandchild]

    assert await process.stop(grace=DEADLINE) == 0
    assert not alive(grandchild)
    assert group_members(process.pgid) == []


async def test_a_flood_of_output_goes_to_the_file_not_through_our_memory(lab: Lab) -> None:
    megabytes = 200
    script = f"""
        import sys
        block = b"x" * (1 << 20)
        for _ in range({megabytes}):
            sys.stdout.buffer.write(block)
    """
    before = vm_rss_kib()
    process = await lab.python(script)
    with anyio.fail_after(DEADLINE):
        assert await process.wait() == 0
    grown = vm_rss_kib() - before
    assert lab.output.stat().st_size == megabytes << 20
    assert grown < 8 * 1024, f"our resident memory grew by {grown} KiB"
    lab.output.unlink()  # kept temporary directories should not hold 200 MB


async def test_a_pid_with_another_start_time_is_not_ours_and_is_never_signalled(lab: Lab) -> None:
    fifo = lab.fifo()
    script = """
        import os, signal, sys, time
        fifo = os.open(sys.argv[1], os.O_WRONLY)
        def say(signum, frame):
            os.write(fifo, signal.Signals(signum).name.encode() + b"\\n")
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGWINCH):
            signal.signal(sig, say)
        os.write(fifo, b"ready\\n")
        while True:
            time.sleep(60)
    """
    process = await lab.python(script, str(fifo.path))
    assert await fifo.line() == "ready"
    pid, start = process.identity.pid, process.identity.start_time
    assert is_running(process.identity)
    assert read_start_time(pid) == start

    # What a record of an older process whose pid was reused looks like, and a later one too.
    for impostor in (ProcessIdentity(pid, start - 1), ProcessIdentity(pid, start + 1)):
        assert not is_running(impostor)
        await stop_group(impostor, pid, grace=0.2)

    # Had stop_group sent anything, it would be pending or handled before our SIGWINCH: the kernel
    # delivers pending signals lowest number first and Python runs handlers in that order, and
    # SIGHUP, SIGINT, SIGKILL and SIGTERM are all below SIGWINCH (SIGKILL would close the pipe).
    os.kill(pid, signal.SIGWINCH)
    assert await fifo.line() == "SIGWINCH"
    assert process.returncode is None
    assert is_running(process.identity)


async def test_a_zombie_is_not_running_and_not_a_group_member(lab: Lab) -> None:
    fifo = lab.fifo()
    script = f"""
        import os, subprocess, sys
        kid = subprocess.Popen([sys.executable, "-c", "pass"])
        os.waitid(os.P_PID, kid.pid, os.WEXITED | os.WNOWAIT)  # it has exited; it stays unreaped
        with open(sys.argv[1], "w") as fifo:
            fifo.write(f"{{kid.pid}}\\n")
        exec({SLEEPER!r})
    """
    process = await lab.python(script, str(fifo.path))
    zombie = int(await fifo.line())
    start = read_start_time(zombie)
    assert start is not None  # /proc still shows it
    assert not alive(zombie)
    assert not is_running(ProcessIdentity(zombie, start))
    assert group_members(process.pgid) == [process.identity.pid]


async def test_a_command_name_with_spaces_and_parentheses_is_parsed(lab: Lab) -> None:
    fifo = lab.fifo()
    script = """
        import sys, time
        with open("/proc/self/comm", "w") as comm:
            comm.write(") R 1 2 (")
        with open(sys.argv[1], "w") as fifo:
            fifo.write("renamed\\n")
        time.sleep(600)
    """
    process = await lab.python(script, str(fifo.path))
    assert await fifo.line() == "renamed"
    pid = process.identity.pid
    assert command_name(pid) == ") R 1 2 ("
    assert read_start_time(pid) == process.identity.start_time
    assert is_running(process.identity)
    assert group_members(process.pgid) == [pid]


async def test_a_program_that_cannot_start_raises_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    cases = [
        (["mcp-swarm-no-such-program"], tmp_path, "'mcp-swarm-no-such-program': no program of that name"),
        ([str(tmp_path / "missing")], tmp_path, "missing': there is no such file"),
        ([str(not_executable)], tmp_path, "script.sh': it is not executable"),
        ([sys.executable], tmp_path / "gone", "its working directory .* does not exist"),
    ]
    for argv, cwd, message in cases:
        with pytest.raises(ProcessStartError, match=message):
            await start_process(argv, cwd=cwd, env=ENV, output=lab.output)
    with pytest.raises(ProcessStartError, match="empty argv"):
        await start_process([], cwd=tmp_path, env=ENV, output=lab.output)
    with pytest.raises(TypeError, match="not one string"):
        await start_process("echo hi", cwd=tmp_path, env=ENV, output=lab.output)
    assert str(lab.output) not in open_files()


async def test_stop_completes_when_its_caller_is_cancelled(lab: Lab) -> None:
    fifo = lab.fifo()
    process = await lab.python(IGNORES_SIGTERM, str(fifo.path))
    assert await fifo.line() == "ready"
    async with anyio.create_task_group() as group:
        group.start_soon(process.stop, 0.3)
        assert await fifo.line() == "term"  # stop() is now in its grace period
        group.cancel_scope.cancel()
    assert process.returncode == -signal.SIGKILL
    assert group_members(process.pgid) == []


async def test_many_children_are_waited_for_at_once_without_a_thread_each(lab: Lab) -> None:
    """Each child's end wakes its waiter through a pidfd in the event loop: no watcher threads."""
    threads_before = {thread.ident for thread in threading.enumerate()}
    with anyio.fail_after(DEADLINE):
        processes = [await lab.python(f"import sys; sys.exit({n})") for n in range(20)]
        codes: dict[int, int] = {}

        async def wait_for(n: int, process: RunningProcess) -> None:
            codes[n] = await process.wait()

        async with anyio.create_task_group() as group:
            for n, process in enumerate(processes):
                group.start_soon(wait_for, n, process)
                # A second waiter on the same process gets the same answer.
                group.start_soon(process.wait)
    assert codes == {n: n for n in range(20)}
    assert {thread.ident for thread in threading.enumerate()} <= threads_before
    assert all(reaped(process.identity.pid) for process in processes)


async def test_without_pidfds_a_thread_waits_and_the_exit_is_still_seen(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernels before 5.3 (and some sandboxes) have no pidfd_open; the end is still reported."""

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    with anyio.fail_after(DEADLINE):
        process = await lab.python("import sys; sys.exit(7)")
        assert await process.wait() == 7
    assert process.returncode == 7
    assert reaped(process.identity.pid)  # no zombie left
