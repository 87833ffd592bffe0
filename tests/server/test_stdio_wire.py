"""The server's stdin and stdout (mcp_swarm/server/stdio_wire.py): pipes are polled by the event loop,
anything else is read and written in a thread; either way every message arrives whole."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import subprocess
import time
import tty
from pathlib import Path
from typing import Any

from tests.support.mcp_client import INITIALIZE, INITIALIZED, installed_command


def request(request_id: int, tool: str, **arguments: Any) -> dict[str, Any]:
    params = {"name": tool, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def lines(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(message).encode() + b"\n" for message in messages)


def answers(output: bytes) -> dict[int, dict[str, Any]]:
    """The answers, by id, in the complete lines of `output` (the last may be still being written)."""
    found = [json.loads(line) for line in output.split(b"\n")[:-1]]
    return {message["id"]: message for message in found if "id" in message}


def test_a_server_on_a_terminal_and_a_file_reads_every_request_and_writes_every_answer(
    tmp_path: Path,
) -> None:
    """A terminal and a file cannot be polled (nor made non-blocking: others share them): the server
    reads and writes them in a thread. A terminal that goes away ends its input, as end of file."""
    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # no echo, no line editing: the bytes as sent
    replies = tmp_path / "replies.jsonl"
    with replies.open("wb") as stdout:
        process = subprocess.Popen(
            [installed_command(), "serve", "--db", str(tmp_path / "swarm.db")],
            stdin=terminal,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
    os.close(terminal)

    def answered(count: int) -> dict[int, dict[str, Any]]:
        deadline = time.monotonic() + 60
        while len(got := answers(replies.read_bytes())) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return got

    try:
        create = request(1, "TaskCreate", subject="From a terminal", description="read without polling")
        os.write(controller, lines(INITIALIZE, INITIALIZED, create))
        answered(2)
        os.write(controller, lines(request(2, "TaskGet", taskId="1")))
        got = answered(3)
        assert sorted(got) == [0, 1, 2]
        task = json.loads(got[2]["result"]["content"][0]["text"])
        assert (task["subject"], task["description"]) == ("From a terminal", "read without polling")
    finally:
        os.close(controller)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors


def test_an_answer_larger_than_the_pipe_arrives_whole_to_a_slow_reader(tmp_path: Path) -> None:
    """An answer of a few hundred KiB does not fit in the pipe: it is written as the client reads,
    and arrives whole."""
    subject = "s" * 180
    plan = [{"subject": f"{subject} {n}", "description": "d" * 400} for n in range(500)]
    with subprocess.Popen(
        [installed_command(), "serve", "--db", str(tmp_path / "swarm.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETFL, os.O_NONBLOCK)
        received = bytearray()

        def send_and_read(data: bytes, count: int) -> None:
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(data)
            process.stdin.flush()
            deadline = time.monotonic() + 60
            # The client reads slowly, a little at a time: the server meets a full pipe many times.
            while received.count(b"\n") < count and time.monotonic() < deadline:
                try:
                    chunk = os.read(process.stdout.fileno(), 4096)
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                assert chunk, "the server closed its output early"
                received.extend(chunk)

        try:
            send_and_read(lines(INITIALIZE, INITIALIZED, request(1, "TaskCreatePlan", tasks=plan)), 2)
            send_and_read(lines(request(2, "TaskList")), 3)
            got = answers(bytes(received))
            listed = json.loads(got[2]["result"]["content"][0]["text"])
            pipe = fcntl.fcntl(process.stdout.fileno(), fcntl.F_GETPIPE_SZ)
            assert len(received.split(b"\n")[2]) > 3 * pipe  # the TaskList answer, three pipes full
            assert [task["subject"] for task in listed["tasks"]] == [f"{subject} {n}" for n in range(500)]
        finally:
            process.stdin.close()
            assert process.wait(timeout=30) == 0
