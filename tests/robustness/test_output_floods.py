"""A worker's floods of output, with and without newlines: they go to its log, not through the
server's memory, and the last line is still read.

Real processes throughout (no mocks); the server's memory is read from /proc, the engine's from
tracemalloc.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path

import anyio
import pytest

from mcp_swarm.engine.swarm import WorkerLimits
from mcp_swarm.ledger.tasks import Ledger
from mcp_swarm.models import NewTask, WorkerState
from tests.support.mcp_client import call
from tests.support.proc import memory_kib, server_pid
from tests.support.scripted_workers import (
    WORKER,
    FinalEventRuntime,
    command_runtime,
    running_engine,
    serve,
    write_project,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

MIB = 1 << 20


def ends_of(path: Path, head: int, tail: int) -> tuple[bytes, bytes]:
    """The first `head` and the last `tail` bytes of a file."""
    with path.open("rb") as handle:
        start = handle.read(head)
        handle.seek(-tail, os.SEEK_END)
        return start, handle.read()


FLOOD_MIB = 300
FLOOD = r"""
import sys
prompt = open(sys.argv[1]).read()
if "@flood" in prompt:
    block = (b"y" * 63 + b"\n") * 16384  # 1 MiB of 64-byte lines
    for _ in range(int(sys.argv[2])):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.write(b"flood over\n")
else:
    print("warming up")
"""


async def test_a_worker_flooding_its_output_costs_the_server_no_memory(tmp_path: Path) -> None:
    (tmp_path / "flood.py").write_text(FLOOD)
    argv = [sys.executable, str(tmp_path / "flood.py"), "{prompt_file}", str(FLOOD_MIB)]
    project = write_project(tmp_path / "project", argv)
    # All of the flood in one log, unrotated: rotation is test_host_limits.py's.
    config = project / "mcp-swarm.toml"
    config.write_text(f"max_log_bytes = {2 * FLOOD_MIB * MIB}\n" + config.read_text())
    db = tmp_path / "state" / "flood.db"
    log: Path | None = None
    try:
        with anyio.fail_after(60):
            async with serve(project, db) as client:
                await call(client, "TaskCreate", subject="warm up", description="")
                await call(client, "TaskCreate", subject="flood", description="@flood")
                # One worker through spawn, supervision and judgement first: what that costs once
                # (imports, buffers) is not growth.
                await call(client, "spawn", taskIds=["1"])
                [warm] = (await call(client, "wait", timeoutSeconds=30))["done"]
                assert warm["state"] == "succeeded"
                pid = server_pid(db)
                rss_before = memory_kib(pid, "VmRSS")
                peak_before = memory_kib(pid, "VmHWM")

                [worker] = (await call(client, "spawn", taskIds=["2"]))["workers"]
                [done] = (await call(client, "wait", timeoutSeconds=50))["done"]
                log = Path(worker["log"])

                rss_growth = memory_kib(pid, "VmRSS") - rss_before
                peak_growth = memory_kib(pid, "VmHWM") - peak_before
                assert (done["workerId"], done["state"], done["taskStatus"]) == (
                    worker["workerId"],
                    "succeeded",
                    "completed",
                )
        # The whole output went to the log, not through the server.
        assert (await anyio.Path(log).stat()).st_size == FLOOD_MIB * MIB + len(b"flood over\n")
        head, tail = ends_of(log, 64, 64 + len(b"flood over\n"))
        assert head == b"y" * 63 + b"\n"
        assert tail == b"y" * 63 + b"\nflood over\n"
        assert rss_growth < 20 * 1024, f"the server's RSS grew by {rss_growth} KiB"
        assert peak_growth < 20 * 1024, f"the server's peak RSS grew by {peak_growth} KiB"
    finally:
        if log is not None:
            log.unlink(missing_ok=True)  # 300 MiB: not worth keeping in pytest's temporary dirs


async def test_the_reader_sees_the_last_line_of_a_flood(tmp_path: Path) -> None:
    async with running_engine(tmp_path, command_runtime(tmp_path), WorkerLimits()) as swarm:
        await Ledger(swarm.store).create(NewTask(subject="floods", description="@flood-then-last-line"))
        [worker] = (await swarm.spawn()).workers
        [done] = (await swarm.wait(timeout=30)).done
        assert (await anyio.Path(worker.log).stat()).st_size == 32 * MIB + len(b"the last line\n")
        # The command runtime's summary is the last line of output when there is no result file.
        assert done.summary == "the last line"


async def test_output_without_newlines_costs_the_server_no_memory(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    limits = WorkerLimits(tail_interval=0.01)  # the reader keeps up with the worker
    async with running_engine(tmp_path, FinalEventRuntime(script), limits) as swarm:
        await Ledger(swarm.store).create(NewTask(subject="streams", description="@stream-without-newline"))
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            await swarm.spawn()
            [done] = (await swarm.wait(timeout=30)).done
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (done.state, done.summary) == (WorkerState.SUCCEEDED, "streamed")
        assert peak - before < 20 * MIB, f"the engine held {(peak - before) / MIB:.0f} MiB at its peak"
