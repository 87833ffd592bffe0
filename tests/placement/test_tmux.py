"""Workers in tmux sessions: a real tmux server on a private socket, real processes, nothing mocked.

Each test has its own socket in a directory of its own under /tmp (a unix socket path must stay
under 108 bytes) and kills its tmux server at the end. The user's default tmux server is never
reached: TMUX_TMPDIR, where a tmux command without our socket would look, is an empty directory
of the test's own, and it must still be empty at the end.

No test sleeps to let something happen: they wait for a condition (a status file, a line on a
named pipe, /proc) every 10 ms under a deadline. The sleeps in worker scripts are what a worker does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import pytest

from mcp_swarm.config import DEFAULT_TMUX_SOCKET
from mcp_swarm.placement.processes import ProcessIdentity, is_running, stop_group
from mcp_swarm.placement.tmux import HEIGHT, WIDTH, Tmux, TmuxError, TmuxWorker, session_name, socket_args
from tests.support.helpers import DEADLINE, Fifo, names_in
from tests.support.proc import (
    alive,
    children,
    command_name,
    group_and_session,
    in_group,
    parent,
    peak_rss_kib,
    proc_file,
    running,
)

TMUX = shutil.which("tmux")
if TMUX is None:
    if os.environ.get("CI") == "true":
        pytest.fail("tmux is not installed; CI must install it (apt-get install tmux)", pytrace=False)
    pytest.skip("tmux is not installed", allow_module_level=True)

pytestmark = [pytest.mark.anyio, pytest.mark.tmux]

LOOK = 0.01
MIB = 1 << 20
SLEEPER = "import time; time.sleep(600)"
# Reaches the shell, tmux's command parser and its formats: each must arrive as it is.
TRICKY_ARGS = [
    "a b",
    "\"double\" 'single'",
    "$HOME",
    "x;",
    ";",
    "y\\;",
    "; echo injected",
    "#{pane_pid}",
    "#(echo formatted)",
    "",
    "-x",
    "--",
    "{",
    "}",
]


def env_files(directory: Path) -> list[str]:
    return [name for name in names_in(directory) if name.endswith(".env")]


# -- waiting -----------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        with anyio.fail_after(DEADLINE):
            while not condition():  # noqa: ASYNC110 - what is awaited gives no event to wait on
                await anyio.sleep(LOOK)
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE} s: {what}")


async def until_async(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        with anyio.fail_after(DEADLINE):
            while not await condition():  # noqa: ASYNC110 - tmux gives no event to wait on
                await anyio.sleep(LOOK)
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE} s: {what}")


async def status_of(path: Path) -> dict[str, object]:
    await until(lambda: Tmux.read_status(path) is not None, f"a status in {path}")
    status = Tmux.read_status(path)
    assert status is not None
    return status


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script), *args]


class Rig:
    """A private tmux server and a directory for logs, statuses and pipes; cleaned up by the fixture."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = str(directory / "tmux.sock")
        self.tmux = Tmux(self.socket)
        self.sockets = [self.socket]
        self.env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
        self.workers: list[TmuxWorker] = []
        self.fifos: list[Fifo] = []

    def log(self, session: str) -> Path:
        return self.directory / f"{session}.log"

    def status(self, session: str) -> Path:
        return self.directory / f"{session}.status"

    def fifo(self) -> Fifo:
        fifo = Fifo(self.directory / f"fifo-{len(self.fifos)}")
        self.fifos.append(fifo)
        return fifo

    async def start(
        self,
        argv: Sequence[str],
        *,
        session: str = "swarm-worker-1",
        keep: bool = False,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> TmuxWorker:
        worker = await self.tmux.start(
            session,
            argv,
            cwd=self.directory if cwd is None else cwd,
            env=self.env if env is None else env,
            log=self.log(session),
            status=self.status(session),
            keep=keep,
        )
        self.workers.append(worker)
        return worker


async def kill_server(socket: str) -> None:
    assert TMUX is not None
    await anyio.run_process([TMUX, "-S", socket, "kill-server"], check=False, env={"PATH": os.defpath})


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    tmux_tmpdir = Path(tempfile.mkdtemp(dir="/tmp", prefix="tmux-tmpdir-"))
    monkeypatch.setenv("TMUX_TMPDIR", str(tmux_tmpdir))
    monkeypatch.delenv("TMUX", raising=False)  # as when the tests run inside the user's tmux
    rig = Rig(Path(tempfile.mkdtemp(dir="/tmp", prefix="swarm-tmux-")))
    try:
        yield rig
    finally:
        for worker in rig.workers:
            await stop_group(worker.identity, worker.identity.pid, grace=0)
        for socket in rig.sockets:
            await kill_server(socket)
        for fifo in rig.fifos:
            fifo.close()
        shutil.rmtree(rig.directory)
        left = os.listdir(tmux_tmpdir)
        shutil.rmtree(tmux_tmpdir)
        assert left == [], f"a tmux command went to a socket in TMUX_TMPDIR, not ours: {left}"


# -- the tests ---------------------------------------------------------------------------------------


async def test_a_worker_runs_in_its_session_with_exactly_its_argv_env_and_directory(rig: Rig) -> None:
    script = """
        import json, os, sys
        print("args:", json.dumps(sys.argv[1:]), flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        print("env:", json.dumps(sorted(os.environ.items())), flush=True)
        print("cwd:", os.getcwd(), flush=True)
        print("stdin:", os.readlink("/proc/self/fd/0"), repr(sys.stdin.read()), flush=True)
        sys.exit(3)
    """
    # tmux format-expands a session's directory (and would run what is in #(...)): it must arrive as is.
    cwd = rig.directory / "work dir #{session_name} ## #(echo x)"
    cwd.mkdir()
    # A module of the worker's directory must not shadow the wrapper's (python -m would put it first).
    (cwd / "signal.py").write_text("raise SystemExit('the wrapper imported signal.py of its worker')\n")
    env = {**rig.env, "SWARM_SECRET": "s3cret; $HOME `id`"}
    rig.log("swarm-worker-1").write_text("from an earlier run\n")

    await rig.start(python(script, *TRICKY_ARGS), cwd=cwd, env=env, keep=True)

    assert await status_of(rig.status("swarm-worker-1")) == {"exit_code": 3}
    log = rig.log("swarm-worker-1").read_text()
    assert log.splitlines() == [
        "from an earlier run",
        f"args: {json.dumps(TRICKY_ARGS)}",
        "to stderr",
        f"env: {json.dumps(sorted(env.items()))}",
        f"cwd: {cwd}",
        "stdin: /dev/null ''",
    ]
    # The environment file, with its secret, was read and deleted before the worker started.
    assert env_files(rig.directory) == []

    # The pane showed the same output: it is what `tmux attach` shows.
    await until_async(lambda: pane_is_dead(rig.tmux, "swarm-worker-1"), "the kept pane to be dead")
    shown = (await rig.tmux.capture("swarm-worker-1")).splitlines()
    for line in log.splitlines()[1:]:
        assert line in shown

    # The session's own directory (where a window a user opens in it starts) is the worker's too.
    assert TMUX is not None
    session_path = await anyio.run_process(
        [TMUX, "-S", rig.socket, "display-message", "-p", "-t", "=swarm-worker-1:", "#{session_path}"],
        env={"PATH": os.environ.get("PATH", os.defpath)},
    )
    assert session_path.stdout.decode() == f"{cwd}\n"


async def pane_is_dead(tmux: Tmux, session: str) -> bool:
    return await tmux.pane_dead(session) is True


async def test_a_finished_session_is_gone_unless_kept(rig: Rig) -> None:
    await rig.start(["true"], session="swarm-worker-1")
    # With keep, even a worker that ends at once leaves its session, until it is killed.
    await rig.start(["true"], session="swarm-worker-2", keep=True)

    assert await status_of(rig.status("swarm-worker-1")) == {"exit_code": 0}
    assert await status_of(rig.status("swarm-worker-2")) == {"exit_code": 0}
    await until_async(
        lambda: negate(rig.tmux.has_session("swarm-worker-1")), "the finished session to be gone"
    )
    await until_async(lambda: pane_is_dead(rig.tmux, "swarm-worker-2"), "the kept pane to be dead")
    assert await rig.tmux.has_session("swarm-worker-2")
    assert await rig.tmux.list_sessions() == ["swarm-worker-2"]
    assert await rig.tmux.pane_dead("swarm-worker-1") is None

    await rig.tmux.kill_session("swarm-worker-2")
    assert not await rig.tmux.has_session("swarm-worker-2")
    await rig.tmux.kill_session("swarm-worker-2")  # gone already: no error
    assert await rig.tmux.list_sessions() == []


async def negate(answer: Awaitable[bool]) -> bool:
    return not await answer


async def test_the_worker_outlives_the_process_that_started_it(rig: Rig) -> None:
    fifo = rig.fifo()
    worker_script = """
        import sys, time
        with open(sys.argv[1], "w") as fifo:
            fifo.write("running\\n")
        time.sleep(600)
    """
    starter = f"""
        import anyio, json, sys
        from pathlib import Path
        from mcp_swarm.placement.tmux import Tmux

        async def main():
            worker = await Tmux({rig.socket!r}).start(
                "swarm-worker-7", {python(worker_script, str(fifo.path))!r},
                cwd=Path({str(rig.directory)!r}), env={rig.env!r},
                log=Path({str(rig.log("swarm-worker-7"))!r}),
                status=Path({str(rig.status("swarm-worker-7"))!r}),
                keep=False,
            )
            print(json.dumps([worker.identity.pid, worker.identity.start_time]))

        anyio.run(main)
    """
    with anyio.fail_after(DEADLINE):
        done = await anyio.run_process(python(starter))
    pid, start_time = json.loads(done.stdout)
    identity = ProcessIdentity(pid, start_time)
    rig.workers.append(TmuxWorker("swarm-worker-7", pid, identity))
    assert await fifo.line() == "running"

    # The starter has exited; the wrapper is the tmux server's child, not ours, and leads the
    # session and group its worker is in.
    assert is_running(identity)
    server = parent(pid)
    assert server != os.getpid()
    assert command_name(server).startswith("tmux")
    assert parent(server) != os.getpid()
    assert group_and_session(pid) == (pid, pid)
    (worker,) = children(pid)
    assert group_and_session(worker) == (pid, pid)
    assert await rig.tmux.list_sessions() == ["swarm-worker-7"]

    # Killing the session hangs up the pane: the worker is stopped, and the status still written.
    await rig.tmux.kill_session("swarm-worker-7")
    assert await status_of(rig.status("swarm-worker-7")) == {"exit_code": -signal.SIGHUP}
    await until(lambda: not alive(pid) and not alive(worker), "the wrapper and its worker to end")


async def test_stopping_the_wrappers_group_ends_the_worker_and_its_children(rig: Rig) -> None:
    fifo = rig.fifo()
    script = f"""
        import subprocess, sys, time
        kid = subprocess.Popen([sys.executable, "-c", {SLEEPER!r}])
        with open(sys.argv[1], "w") as fifo:
            fifo.write(f"{{kid.pid}}\\n")
        time.sleep(600)
    """
    env = {**rig.env, "SWARM_SECRET": "s3cret-for-the-worker-only"}
    worker = await rig.start(python(script, str(fifo.path)), env=env)
    grandchild = int(await fifo.line())
    (child,) = children(worker.pane_pid)
    assert sorted(in_group(worker.pane_pid)) == sorted([worker.pane_pid, child, grandchild])
    # The secret is in the worker's environment, and neither on a command line nor in the wrapper's.
    assert b"s3cret-for-the-worker-only" in proc_file(child, "environ")
    for pid in (worker.pane_pid, parent(worker.pane_pid)):
        for part in ("cmdline", "environ"):
            assert b"s3cret" not in proc_file(pid, part)

    await stop_group(worker.identity, worker.identity.pid, grace=DEADLINE)

    # stop_group returns once the group is gone: the status was written before the wrapper exited.
    assert Tmux.read_status(rig.status("swarm-worker-1")) == {"exit_code": -signal.SIGTERM}
    assert in_group(worker.pane_pid) == []
    for private in (rig.log("swarm-worker-1"), rig.status("swarm-worker-1")):
        assert private.stat().st_mode & 0o777 == 0o600
    assert not any(alive(pid) for pid in (worker.pane_pid, child, grandchild))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
async def test_a_signal_to_the_wrapper_alone_is_passed_on_to_the_worker(
    rig: Rig, signum: signal.Signals
) -> None:
    worker = await rig.start(["sleep", "600"])
    # Looked up on PATH as execvp does: each directory without it costs a child that fails at once.
    await until(lambda: running(worker.pane_pid, "sleep"), "the worker to be executed")
    (child,) = children(worker.pane_pid)

    os.kill(worker.pane_pid, signum)

    assert await status_of(rig.status("swarm-worker-1")) == {"exit_code": -signum}
    await until(lambda: not alive(worker.pane_pid) and not alive(child), "the wrapper and worker to end")


async def test_a_worker_that_leaves_a_child_holding_its_output_still_ends(rig: Rig) -> None:
    fifo = rig.fifo()
    script = f"""
        import signal, subprocess, sys
        # Its child inherits stdout, and ignores the SIGHUP that the end of the pane's session
        # leader (the wrapper) sends to the pane's processes, as a daemon would.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        kid = subprocess.Popen([sys.executable, "-c", {SLEEPER!r}])
        with open(sys.argv[1], "w") as fifo:
            fifo.write(f"{{kid.pid}}\\n")
        print("done", flush=True)
        sys.exit(5)
    """
    worker = await rig.start(python(script, str(fifo.path)))
    grandchild = int(await fifo.line())

    assert await status_of(rig.status("swarm-worker-1")) == {"exit_code": 5}
    assert rig.log("swarm-worker-1").read_text() == "done\n"
    await until(lambda: not alive(worker.pane_pid), "the wrapper to exit")
    # What the worker left behind was stopped by its wrapper before it wrote the status (it used
    # to live on, in the worker's group, until someone stopped that group).
    assert not alive(grandchild)
    await stop_group(worker.identity, worker.identity.pid, grace=DEADLINE)


@pytest.mark.parametrize("case", ["not-on-path", "no-such-file", "not-executable", "no-directory"])
async def test_a_worker_that_cannot_start_gets_127_and_says_why(rig: Rig, case: str) -> None:
    script = rig.directory / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    program, cwd, message = {
        "not-on-path": ("mcp-swarm-no-such-program", rig.directory, "'mcp-swarm-no-such-program': no prog"),
        "no-such-file": (str(rig.directory / "missing"), rig.directory, "missing': there is no such file"),
        "not-executable": (str(script), rig.directory, "script.sh': it is not executable"),
        "no-directory": (sys.executable, rig.directory / "gone", "working directory .*gone: No such file"),
    }[case]

    await rig.start([program, "arg"], cwd=cwd, keep=True)

    status = await status_of(rig.status("swarm-worker-1"))
    assert status["exit_code"] == 127
    error = status["error"]
    assert isinstance(error, str)
    assert re.search(message, error), error
    assert rig.log("swarm-worker-1").read_text() == f"mcp-swarm: {error}\n"
    await until_async(lambda: pane_is_dead(rig.tmux, "swarm-worker-1"), "the kept pane to be dead")
    assert f"mcp-swarm: {error}" in await rig.tmux.capture("swarm-worker-1")


async def test_a_flood_without_newlines_reaches_the_log_and_the_wrapper_stays_small(rig: Rig) -> None:
    megabytes = 50
    fifo = rig.fifo()
    script = f"""
        import sys, time
        block = b"x" * (1 << 20)
        for _ in range({megabytes}):
            sys.stdout.buffer.write(block)
        sys.stdout.flush()
        with open(sys.argv[1], "w") as fifo:
            fifo.write("flooded\\n")
        time.sleep(600)
    """
    worker = await rig.start(python(script, str(fifo.path)))
    assert await fifo.line() == "flooded"
    log = rig.log("swarm-worker-1")
    await until(lambda: log.stat().st_size == megabytes * MIB, "the whole flood in the log")

    # Its peak, over all the time it copied 50 MiB: the size of a Python that holds a chunk or two.
    peak = peak_rss_kib(worker.pane_pid)
    assert peak < 32 * 1024, f"the wrapper's resident memory reached {peak} KiB"
    assert log.read_bytes().count(b"x") == megabytes * MIB

    await stop_group(worker.identity, worker.identity.pid, grace=DEADLINE)
    assert Tmux.read_status(rig.status("swarm-worker-1")) == {"exit_code": -signal.SIGTERM}
    log.unlink()


async def test_attach_command_is_what_a_user_runs_to_watch_the_worker(rig: Rig) -> None:
    script = "import time; print('hello from worker 3', flush=True); time.sleep(600)"
    await rig.start(python(script), session="swarm-worker-3")
    command = rig.tmux.attach_command("swarm-worker-3")
    assert command == f"tmux -S {shlex.quote(rig.socket)} attach -t =swarm-worker-3"
    log = rig.log("swarm-worker-3")
    await until(lambda: log.exists() and log.read_text() == "hello from worker 3\n", "the worker's output")

    # Run it as a user would, in a terminal: a pane of a second private tmux server.
    viewer = Tmux(str(rig.directory / "viewer.sock"))
    rig.sockets.append(viewer.socket)
    assert TMUX is not None
    await anyio.run_process(
        # As large as the worker's window (and a status line), which then shows all of it.
        [
            *(TMUX, "-S", viewer.socket, "-f", "/dev/null", "new-session", "-d", "-s", "viewer"),
            *("-x", str(WIDTH), "-y", str(HEIGHT + 1), "--", "env", "-u", "TMUX", *shlex.split(command)),
        ],
        env={name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ},
    )

    async def shows_the_worker() -> bool:
        return "hello from worker 3" in await viewer.capture("viewer")

    await until_async(shows_the_worker, "the attached client to show the worker's pane")


def test_session_names_and_sockets() -> None:
    assert session_name("worker-3") == "swarm-worker-3"
    assert session_name("A_b-9") == "swarm-A_b-9"
    for unsafe in ["", "worker.3", "worker:3", "worker 3", "worker-3\n", "../x", "=x", "wörker", "x" * 65]:
        with pytest.raises(ValueError, match="cannot name a tmux session"):
            session_name(unsafe)
    assert socket_args("mcp-swarm") == ["-L", "mcp-swarm"]
    assert socket_args("/run/user/1000/swarm socket") == ["-S", "/run/user/1000/swarm socket"]
    with pytest.raises(ValueError, match="needs a name or a path"):
        socket_args("")
    assert (
        Tmux().attach_command("swarm-worker-3") == f"tmux -L {DEFAULT_TMUX_SOCKET} attach -t =swarm-worker-3"
    )
    assert Tmux("/tmp/my dir/s").attach_command("swarm-worker-3") == (
        "tmux -S '/tmp/my dir/s' attach -t =swarm-worker-3"
    )
    with pytest.raises(ValueError, match="not a session name"):
        Tmux().attach_command("swarm.worker")


async def test_without_a_server_or_session_nothing_is_an_error_but_tmux_failures_are(rig: Rig) -> None:
    assert await rig.tmux.list_sessions() == []
    assert not await rig.tmux.has_session("swarm-worker-1")
    assert await rig.tmux.pane_dead("swarm-worker-1") is None
    await rig.tmux.kill_session("swarm-worker-1")
    with pytest.raises(TmuxError, match="no session 'swarm-worker-1'"):
        await rig.tmux.capture("swarm-worker-1")
    # A socket in a directory that does not exist is a server that is not running, too.
    assert await Tmux(str(rig.directory / "missing" / "s")).list_sessions() == []

    # Exact targets: a session is never taken for another whose name it begins.
    await rig.start([sys.executable, "-c", SLEEPER], session="swarm-worker-12")
    await until(lambda: env_files(rig.directory) == [], "the wrapper to read its environment file")
    assert not await rig.tmux.has_session("swarm-worker-1")
    await rig.tmux.kill_session("swarm-worker-1")
    assert await rig.tmux.has_session("swarm-worker-12")

    with pytest.raises(TmuxError, match="duplicate session: swarm-worker-12"):
        await rig.start(["true"], session="swarm-worker-12")
    assert env_files(rig.directory) == []

    with pytest.raises(TmuxError, match="tmux is not installed"):
        await Tmux(rig.socket, executable=str(rig.directory / "no-tmux")).list_sessions()
    with pytest.raises(TypeError, match="not one string"):
        await rig.start("echo hi")
    with pytest.raises(ValueError, match="empty argv"):
        await rig.start([])
    with pytest.raises(ValueError, match="not a session name"):
        await rig.start(["true"], session="swarm:1")


def test_read_status_is_none_until_there_is_a_whole_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    assert Tmux.read_status(status) is None
    for partial in ["", '{"exit_code": ', "[]", '{"error": "x"}', '{"exit_code": true}']:
        status.write_text(partial)
        assert Tmux.read_status(status) is None
    status.write_text('{"exit_code": 127, "error": "cannot start"}')
    assert Tmux.read_status(status) == {"exit_code": 127, "error": "cannot start"}
