"""Limits that protect the host: a worker's log on disk, tasks per plan, message size, live workers.

Real servers over stdio and real worker processes. The flooding worker stands in for `claude -p
--output-format stream-json` (the claude runtime with `program` set to it), so that what is
checked includes the verdict read from the runtime's final event after its log was rotated. It
measures its log itself, as it writes, and says what it saw in that final event.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client

from mcp_swarm.cli.status_view import LogPosition, copy_new
from mcp_swarm.config import DEFAULT_MAX_LOG_BYTES, load_settings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.mail import MAX_BODY_CHARS, Mailbox
from mcp_swarm.models import MAX_PLAN_TASKS
from mcp_swarm.placement.logtail import CHUNK_BYTES, TAIL_BYTES, LogTail, log_position, rotated_path
from mcp_swarm.placement.worker_wrapper import CHUNK as WRAPPER_CHUNK
from mcp_swarm.server.stdio_limit import MAX_MESSAGE_BYTES
from mcp_swarm.store import Store
from tests.support import helpers
from tests.support.gated_workers import gated_project, go
from tests.support.helpers import assigned_workers, logs
from tests.support.mcp_client import INITIALIZE, call, connect, installed_command, refuse, stdio_parameters
from tests.support.proc import memory_kib, server_pid
from tests.support.worker_endpoints import as_worker

pytestmark = pytest.mark.anyio
__all__ = ["logs"]

MIB = 1 << 20
LOG_LIMIT = 2 * MIB
ROUNDS = 3

# Writes ten times the log's limit as fast as it can, ROUNDS times, each time going on only once
# its log has been cut (by the server, or by its tmux wrapper); then the final event. It looks at
# its log by name after every write: how large it got, and how often it was cut.
FLOOD = r"""
import json, os, sys, time
from pathlib import Path
LIMIT, ROUNDS = {limit}, {rounds}
prompt = sys.argv[-1]
log = Path.cwd() / ".mcp-swarm" / "logs" / (os.environ["SWARM_WORKER_ID"] + ".log")
def event(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()
event(type="system", subtype="init", session_id="s-flood")
seen = {{"peak": 0, "cuts": 0, "size": 0, "id": None}}
def look():
    try:
        st = os.stat(log)
    except FileNotFoundError:
        return  # between the tmux wrapper's renaming it and creating the next one
    if st.st_size < seen["size"] or (seen["id"] is not None and seen["id"] != st.st_ino):
        seen["cuts"] += 1
    seen["size"], seen["id"] = st.st_size, st.st_ino
    seen["peak"] = max(seen["peak"], st.st_size)
written = 0
if "@flood" in prompt:
    text = {{"type": "text", "text": "y" * 60}}
    line = json.dumps({{"type": "assistant", "message": {{"content": [text]}}}})
    block = ((line + "\n") * (65536 // (len(line) + 1))).encode()
    look()
    for _ in range(ROUNDS):
        cuts = seen["cuts"]
        end = written + 10 * LIMIT
        while written < end:
            sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
            written += len(block)
            look()
        # A worker's own pace: it waits for its log to be cut (a condition, with a deadline).
        deadline = time.monotonic() + 10
        while seen["cuts"] == cuts and time.monotonic() < deadline:
            time.sleep(0.005)
            look()
summary = "written={{}} peak={{peak}} cuts={{cuts}}".format(written, **seen)
event(type="result", subtype="success", is_error=False, result=summary, session_id="s-flood",
      total_cost_usd=0.25, num_turns=7)
"""


def write_project(tmp_path: Path, extra: str = "") -> Path:
    project = tmp_path / "project"
    project.mkdir()
    program = tmp_path / "flooding-claude"
    program.write_text(f"#!{sys.executable}\n" + FLOOD.format(limit=LOG_LIMIT, rounds=ROUNDS))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    (project / "mcp-swarm.toml").write_text(
        f'default_runtime = "claude"\nmax_log_bytes = {LOG_LIMIT}\n{extra}\n'
        f'[runtimes.claude]\ntype = "claude"\nprogram = {json.dumps(str(program))}\n'
    )
    return project


@asynccontextmanager
async def mayor(project: Path) -> AsyncGenerator[Client]:
    params = stdio_parameters(project / ".mcp-swarm" / "swarm.db", cwd=project)
    with anyio.fail_after(120):
        async with Client(params, mode="legacy") as client:
            yield client


def seen(summary: str) -> dict[str, int]:
    """What the flooding worker saw of its log: {"written", "peak", "cuts"}."""
    return {key: int(value) for key, value in (part.split("=") for part in summary.split())}


async def size_of(path: Path) -> int:
    """A file's size; 0 if there is none."""
    try:
        return (await anyio.Path(path).stat()).st_size
    except FileNotFoundError:
        return 0


async def test_a_local_workers_log_is_rotated_and_its_final_event_still_read(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    async with mayor(project) as client:
        # One worker through spawn, supervision and judgement first: what that costs once is not growth.
        await call(client, "TaskCreate", subject="warm up", description="")
        await call(client, "spawn")
        [warm] = (await call(client, "wait", timeoutSeconds=30))["done"]
        assert warm["state"] == "succeeded"
        pid = server_pid(project / ".mcp-swarm" / "swarm.db")
        rss_before, peak_before = memory_kib(pid, "VmRSS"), memory_kib(pid, "VmHWM")

        await call(client, "TaskCreate", subject="flood", description="@flood")
        [worker] = (await call(client, "spawn"))["workers"]
        [done] = (await call(client, "wait", timeoutSeconds=60))["done"]
        rss_growth = memory_kib(pid, "VmRSS") - rss_before
        peak_growth = memory_kib(pid, "VmHWM") - peak_before

    # The verdict and its numbers come from the final event, read after the rotations.
    verdict = (done["workerId"], done["state"], done["taskStatus"])
    assert verdict == ("worker-2", "succeeded", "completed"), json.dumps(done)
    assert done["costUsd"] == 0.25
    flood = seen(done["summary"])
    assert flood["written"] >= ROUNDS * 10 * LOG_LIMIT
    # The server cut the log while the worker wrote, each round.
    assert flood["cuts"] >= ROUNDS, flood
    # What is left on disk: the newest output in the log, the output before it in `.1`.
    log = Path(worker["log"])
    assert done["log"] == str(log)
    # A rotation copies what the worker adds while it copies, up to a chunk more. A log that a
    # rotation emptied just as the worker ended takes that rotated file back.
    live, rotated = await size_of(log), await size_of(rotated_path(log))
    assert 0 < live <= LOG_LIMIT + CHUNK_BYTES, live
    assert rotated <= LOG_LIMIT + CHUNK_BYTES, rotated
    assert live + rotated <= 2 * LOG_LIMIT + CHUNK_BYTES
    # The last line is the final event; it begins in `.1` if the last cut fell inside it.
    output = await anyio.Path(log).read_bytes()
    if rotated:
        output = await anyio.Path(rotated_path(log)).read_bytes() + output
    assert json.loads(output.splitlines()[-1])["result"] == done["summary"]
    assert rss_growth < 20 * 1024, f"the server's RSS grew by {rss_growth} KiB"
    assert peak_growth < 20 * 1024, f"the server's peak RSS grew by {peak_growth} KiB"


# A fixture: a tmux server of the test's own, killed afterwards.
socket = helpers.tmux_socket


@pytest.mark.tmux
async def test_a_tmux_workers_log_is_rotated_by_its_wrapper_within_the_limit(
    tmp_path: Path, socket: str
) -> None:
    project = write_project(tmp_path, f'mode = "distributed"\ntmux_socket = {json.dumps(socket)}\n')
    async with mayor(project) as client:
        await call(client, "TaskCreate", subject="flood", description="@flood")
        [worker] = (await call(client, "spawn"))["workers"]
        [done] = (await call(client, "wait", timeoutSeconds=60))["done"]
    assert (done["state"], done["taskStatus"], done.get("costUsd")) == ("succeeded", "completed", 0.25), done
    flood = seen(done["summary"])
    # The wrapper is the log's only writer: it never lets the log pass the limit by a whole chunk,
    # whatever the pace of the worker, and rotates every time it would.
    assert flood["peak"] < LOG_LIMIT + WRAPPER_CHUNK, flood
    assert flood["cuts"] >= ROUNDS * 9, flood
    live, rotated = await size_of(Path(worker["log"])), await size_of(rotated_path(Path(worker["log"])))
    assert live < LOG_LIMIT + WRAPPER_CHUNK
    assert LOG_LIMIT - WRAPPER_CHUNK < rotated < LOG_LIMIT + WRAPPER_CHUNK
    # Each file holds whole lines: the wrapper cuts after a line's end.
    assert (await anyio.Path(rotated_path(Path(worker["log"]))).read_bytes()).endswith(b"\n")
    assert (await anyio.Path(worker["log"]).read_bytes()).startswith(b"{")


# -- tasks per plan -------------------------------------------------------------------------------


async def test_a_plan_of_more_than_max_plan_tasks_is_refused_whole(tmp_path: Path) -> None:
    async with connect("memory", tmp_path / "swarm.db") as client:
        await call(client, "TaskCreate", subject="before", description="")
        too_many = [{"subject": f"task {n}"} for n in range(MAX_PLAN_TASKS + 1)]
        refused = await refuse(client, "TaskCreatePlan", tasks=too_many)
        assert f"at most {MAX_PLAN_TASKS} tasks; this one has {MAX_PLAN_TASKS + 1}" in refused
        # Nothing of it was created, and the next id is still the next one.
        assert (await call(client, "TaskList"))["counts"] == {"pending": 1, "ready": 1}
        created = await call(client, "TaskCreatePlan", tasks=too_many[:MAX_PLAN_TASKS])
        assert (created["ids"][0], created["ids"][-1]) == ("2", str(MAX_PLAN_TASKS + 1))


def test_a_plan_file_of_more_than_max_plan_tasks_is_refused_before_anything_runs(tmp_path: Path) -> None:
    plan = {"tasks": [{"key": f"t{n}", "subject": f"task {n}"} for n in range(MAX_PLAN_TASKS + 1)]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run(
        [installed_command(), "run", "plan.json", "--runtime", "anything"],
        cwd=tmp_path,
        env={name: value for name, value in os.environ.items() if not name.startswith("MCP_SWARM_")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"at most {MAX_PLAN_TASKS}" in done.stderr
    assert not (tmp_path / ".mcp-swarm" / "swarm.db").exists()


# -- message size ---------------------------------------------------------------------------------


async def test_messages_over_max_body_chars_are_refused_from_either_side(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    async with await Store.open(db) as store:
        [number] = await assigned_workers(store, 1)
    worker_id = f"worker-{number}"
    over = "é" * (MAX_BODY_CHARS + 1)  # characters, not bytes, are counted
    async with as_worker(db, number) as worker:
        for tool, arguments in [
            ("report_progress", {"message": over}),
            ("report_result", {"status": "done", "summary": over}),
            ("send_message", {"subject": "big", "body": over}),
            ("ask_for_help", {"subject": "big", "body": over}),
        ]:
            assert str(MAX_BODY_CHARS) in await refuse(worker, tool, **arguments), tool
        await call(worker, "report_progress", message="x" * MAX_BODY_CHARS)
    async with connect("memory", db) as mayor:
        refused = await refuse(mayor, "send_message", to=worker_id, subject="big", body=over)
        assert str(MAX_BODY_CHARS) in refused
        await call(mayor, "send_message", to=worker_id, subject="fits", body="y" * MAX_BODY_CHARS)
        [progress] = (await call(mayor, "fetch_inbox"))["messages"]
    async with await Store.open(db) as store:
        [answer] = await Mailbox(store).fetch_inbox(worker_id, limit=10)
    # Of all that was refused, nothing was stored: one message each way, the ones that fit.
    assert (progress["type"], len(progress["body"] or progress["subject"])) == ("progress", MAX_BODY_CHARS)
    assert (answer.subject, len(answer.body)) == ("fits", MAX_BODY_CHARS)


# -- live workers ---------------------------------------------------------------------------------

# Runs until its go file appears.


async def test_live_workers_stay_within_max_workers_across_spawns_and_servers(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    gates = gated_project(project, max_workers=2)
    full = {
        "reason": "the configured ceiling max_workers = 2 is reached (2 running on this database); "
        "spawn again after wait",
        "retry": True,
    }
    async with mayor(project) as first, mayor(project) as second:
        await call(first, "TaskCreatePlan", tasks=[{"subject": f"task {n}"} for n in range(1, 5)])
        spawned = await call(first, "spawn")
        assert [w["taskId"] for w in spawned["workers"]] == ["1", "2"]
        assert spawned["skipped"] == [{"taskId": "3", **full}, {"taskId": "4", **full}]
        before = [await call(first, "TaskGet", taskId=task) for task in ("3", "4")]
        # Again, from this server and from the other one: the slots are taken, whoever took them.
        again = await call(first, "spawn", taskIds=["3", "4"])
        other = await call(second, "spawn")
        assert (
            again == other == {"workers": [], "skipped": [{"taskId": "3", **full}, {"taskId": "4", **full}]}
        )
        # A larger maxWorkers does not raise the configured ceiling: no slot, for either task.
        wider = await call(second, "spawn", maxWorkers=3)
        assert wider == {"workers": [], "skipped": [{"taskId": "3", **full}, {"taskId": "4", **full}]}
        # The refusals changed nothing: tasks 3 and 4 are as they were, with no worker.
        assert [await call(second, "TaskGet", taskId=task) for task in ("3", "4")] == before
        for worker in ("worker-1", "worker-2"):
            go(gates, worker)
        finished: list[str] = []
        for client in (first, second):
            while (result := await call(client, "wait", timeoutSeconds=20))["running"]:
                finished += [d["workerId"] for d in result["done"]]
            finished += [d["workerId"] for d in result["done"]]
        assert sorted(finished) == ["worker-1", "worker-2"]


async def test_a_spawn_may_lower_the_configured_ceiling_but_never_raise_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    gates = gated_project(project, max_workers=2)
    ceiling = "the configured ceiling max_workers = 2 is reached (2 running on this database)"
    async with mayor(project) as first, mayor(project) as second:
        await call(first, "TaskCreatePlan", tasks=[{"subject": f"task {n}"} for n in range(1, 6)])
        # Lower: one slot, and the reason names the spawn's own limit.
        lowered = await call(first, "spawn", maxWorkers=1)
        assert [w["taskId"] for w in lowered["workers"]] == ["1"]
        assert all(s["reason"].startswith("maxWorkers (1) reached") for s in lowered["skipped"]), lowered
        # Higher than the configuration: the ceiling holds, over the whole database and from any server.
        for client, started in ((first, ["2"]), (second, [])):
            result = await call(client, "spawn", maxWorkers=200)
            assert [w["taskId"] for w in result["workers"]] == started
            assert len(result["skipped"]) == 5 - 2
            assert all(s["reason"].startswith(ceiling) and s["retry"] for s in result["skipped"]), result
        live = [await call(first, "TaskGet", taskId=str(n)) for n in range(1, 6)]
        assert [task["status"] for task in live] == ["in_progress"] * 2 + ["pending"] * 3
        for worker in ("worker-1", "worker-2"):
            go(gates, worker)
        while (await call(first, "wait", timeoutSeconds=20))["running"]:
            pass


# -- the follower across rotations (files only) ---------------------------------------------------


def numbered(first: int, last: int) -> bytes:
    return b"".join(b"line %08d\n" % n for n in range(first, last))


async def test_the_follower_finds_output_a_wrapper_rotated_before_it_first_looked(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    log.write_bytes(b"an earlier attempt\n")
    offset, file_id = log_position(log)
    with log.open("ab") as handle:
        handle.write(numbered(0, 100))
    # As the tmux wrapper rotates: a rename, then a new log.
    log.rename(rotated_path(log))
    log.write_bytes(numbered(100, 150))
    lines: list[str] = []
    LogTail(log, lines.append, offset=offset, file_id=file_id).drain()
    assert lines == numbered(0, 150).decode().splitlines()
    # Rotated twice before the first look: the first file is gone, and the newest output is read.
    # (Whether the one between is depends on the file system handing the first one's inode to the
    # newest: then it looks like the first. Only a flood of twice the limit in a moment does this.)
    log.unlink()
    offset, file_id = log_position(log)
    for first, last in ((200, 250), (250, 300)):
        with log.open("ab") as handle:
            handle.write(numbered(first, last))
        log.rename(rotated_path(log))
    log.write_bytes(numbered(300, 310))
    lines.clear()
    LogTail(log, lines.append, offset=offset, file_id=file_id).drain()
    assert lines[-10:] == numbered(300, 310).decode().splitlines()
    assert lines[0] in ("line 00000250", "line 00000300")


async def test_the_follower_behind_a_flood_reads_the_rotated_tail_and_the_last_line(logs: Path) -> None:
    log = logs / "worker-1.log"
    limit = 4 * TAIL_BYTES
    flood = numbered(0, 10 * limit // 14) + b'{"final": true}\n'
    log.write_bytes(flood)
    lines: list[str] = []
    tail = LogTail(log, lines.append, max_bytes=limit, chunk=4096)
    assert tail.read_some()
    assert tail.over_limit()
    assert await tail.rotate()
    tail.drain()
    # The first chunk, then the last TAIL_BYTES of what was rotated: not the middle of the flood.
    assert (lines[0], lines[-1]) == ("line 00000000", '{"final": true}')
    assert len(lines) < (4096 + TAIL_BYTES) // 14 + 2
    # Between them, `.1` and the log hold the newest `limit` bytes: all of it in `.1` where the log
    # is truncated, all but the last block's worth where the file system collapses it instead.
    rotated, kept = rotated_path(log).read_bytes(), log.read_bytes()
    assert rotated + kept == flood[-limit:]
    assert len(kept) < log.stat().st_blksize
    # The worker has ended: its last words end the log (begun in `.1` if the cut fell in them).
    await tail.settle()
    rotated = rotated_path(log).read_bytes() if rotated_path(log).exists() else b""
    assert (rotated + log.read_bytes()).endswith(b'{"final": true}\n')
    assert len(rotated) + log.stat().st_size <= limit


async def test_an_ended_workers_log_keeps_its_newest_part_and_the_one_before(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    limit = 1000 * 14
    flood = numbered(0, 3500) + b"the last words\n"  # 3.5 limits and a line
    log.write_bytes(flood)
    lines: list[str] = []
    tail = LogTail(log, lines.append, max_bytes=limit)
    await tail.settle()
    tail.drain()
    cut = (len(flood) - 1) // limit * limit
    assert log.read_bytes() == flood[cut:]
    assert rotated_path(log).read_bytes() == flood[cut - limit : cut]
    assert lines[-1] == "the last words"


# -- the settings -----------------------------------------------------------------------------------


def test_the_limits_settings_and_their_bounds(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert load_settings(cwd=tmp_path, environ={}).max_log_bytes == DEFAULT_MAX_LOG_BYTES == 64 * MIB
    (tmp_path / "mcp-swarm.toml").write_text(f"max_log_bytes = {MIB}\n")
    assert load_settings(cwd=tmp_path, environ={}).max_log_bytes == MIB
    # The environment wins over the file, as for every setting.
    assert (
        load_settings(cwd=tmp_path, environ={"MCP_SWARM_MAX_LOG_BYTES": str(2 * MIB)}).max_log_bytes
        == 2 * MIB
    )
    for value in ("0", "1000", "64MiB", "-1"):
        with pytest.raises(InvalidInput, match="MCP_SWARM_MAX_LOG_BYTES must be a whole number of bytes"):
            load_settings(cwd=tmp_path, environ={"MCP_SWARM_MAX_LOG_BYTES": value})
    (tmp_path / "mcp-swarm.toml").write_text("max_log_bytes = 1000\n")
    with pytest.raises(InvalidInput, match="max_log_bytes"):
        load_settings(cwd=tmp_path, environ={})
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for value in ("0", "257", "100000"):
        with pytest.raises(InvalidInput, match="MCP_SWARM_MAX_WORKERS must be between 1 and 256"):
            # Not below tmp_path: a command there would find the project above, and its bad file.
            load_settings(cwd=elsewhere, environ={"MCP_SWARM_MAX_WORKERS": value})


# -- one message on stdio -----------------------------------------------------------------------------


def huge_request(request_id: int, *, id_last: bool) -> bytes:
    """A tools/call of three times the limit, its id first (as the Python SDK writes) or last (as
    the TypeScript one does); the line is written, never built whole."""
    description = b"x" * (3 * MAX_MESSAGE_BYTES)
    call_ = b'"method":"tools/call","params":{"name":"TaskCreate","arguments":{"subject":"s","description":"'
    if id_last:
        return b"{" + call_ + description + b'"}},"jsonrpc":"2.0","id":%d}\n' % request_id
    return b'{"jsonrpc":"2.0","id":%d,' % request_id + call_ + description + b'"}}}\n'


async def test_a_message_over_the_limit_on_stdio_is_refused_and_never_held(tmp_path: Path) -> None:
    # (The worker tools are served over HTTP, whose limit tests/server/test_worker_endpoint.py checks.)
    db = tmp_path / "swarm.db"
    async with await Store.open(db) as store:
        await assigned_workers(store, 1)
    args: list[str] = []
    env = {name: value for name, value in os.environ.items() if not name.startswith("MCP_SWARM_")}
    command = [installed_command(), "serve", "--db", str(db), *args]
    async with await anyio.open_process(command, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL) as process:
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None
        assert stdout is not None
        replies = BufferedByteReceiveStream(stdout)

        async def ask(line: bytes) -> dict[str, Any]:
            await stdin.send(line)
            with anyio.fail_after(30):
                return json.loads(await replies.receive_until(b"\n", 1 << 20))

        assert "result" in await ask(json.dumps(INITIALIZE).encode() + b"\n")
        await stdin.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        peak_before = memory_kib(process.pid, "VmHWM")
        for request_id, id_last in ((7, False), (8, True)):
            line = huge_request(request_id, id_last=id_last)
            refused = await ask(line)
            assert (refused["id"], refused["error"]["code"]) == (request_id, -32600)
            assert refused["error"]["message"].startswith(f"refused: this message is {len(line) - 1} bytes")
        # A notification over the limit has no caller to answer: dropped, and the session goes on.
        await stdin.send(
            b'{"jsonrpc":"2.0","method":"notifications/progress","x":"'
            + b"y" * (2 * MAX_MESSAGE_BYTES)
            + b'"}\n'
        )
        listed = await ask(b'{"jsonrpc":"2.0","id":9,"method":"tools/list"}\n')
        assert (listed["id"], bool(listed["result"]["tools"])) == (9, True)
        # Three lines of three and two times the limit went by: at most the limit was ever held.
        growth = memory_kib(process.pid, "VmHWM") - peak_before
        assert growth < 2 * MAX_MESSAGE_BYTES // 1024, f"the server's peak grew by {growth} KiB"
        await stdin.aclose()
        with anyio.fail_after(30):
            assert await process.wait() == 0


@pytest.mark.parametrize("rotation", ["cut in place", "renamed"])
def test_logs_follow_goes_on_after_the_log_is_rotated(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes], rotation: str
) -> None:
    log = tmp_path / "worker-1.log"
    log.write_bytes(b"old 1\nold 2\n")
    at = LogPosition()
    copy_new(log, at)
    if rotation == "renamed":  # as a tmux worker's wrapper rotates
        log.rename(tmp_path / "worker-1.log.1")
        log.write_bytes(b"new\n")
    else:  # as the server rotates a local worker's log: the older part leaves the file
        with log.open("r+b") as handle:
            handle.truncate(0)
        with log.open("ab") as handle:
            handle.write(b"new\n")
    copy_new(log, at)
    with log.open("ab") as handle:
        handle.write(b"newer\n")
    copy_new(log, at)
    lines = capfdbinary.readouterr().out.decode().splitlines()
    assert lines == ["old 1", "old 2", f"[log rotated: older output is in {log}.1]", "new", "newer"]
