"""A worker with a session to continue (send_input), and the runtime that runs it: the first
attempt answers at once with session FIRST_SESSION and writes nothing, so it fails a validation
that wants fixed.txt; a continued attempt waits for the runtime's gate file, writes fixed.txt and
answers with the message it was sent. Its output is one JSON line an attempt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcp_swarm.runtimes import Outcome, OutputReader, Runtime, WorkerRequest

FIRST_SESSION = "session-7"

RESUMABLE_WORKER = r"""
import json, pathlib, sys, time
if sys.argv[1] == "--resume":
    gate = pathlib.Path(sys.argv[4])
    while not gate.exists():
        time.sleep(0.02)
    pathlib.Path("fixed.txt").write_text("fixed")
    print(json.dumps({"session": sys.argv[2], "summary": "resumed: " + sys.argv[3]}), flush=True)
else:
    print(json.dumps({"session": "FIRST_SESSION", "summary": "first attempt"}), flush=True)
""".replace("FIRST_SESSION", FIRST_SESSION)


class LastLine(OutputReader):
    """The attempt's last JSON line is its answer: its summary and its session."""

    def __init__(self) -> None:
        self.finished = False
        self.last: dict[str, str] = {}

    def feed(self, line: str) -> None:
        if line.startswith("{"):
            self.last, self.finished = json.loads(line), True

    def outcome(self, exit_code: int | None) -> Outcome:
        return Outcome(
            succeeded=exit_code == 0, summary=self.last.get("summary"), session_id=self.last.get("session")
        )


class Resumable(Runtime):
    """Runs RESUMABLE_WORKER from `script`; a continued attempt waits for the file `gate`."""

    name = "resumable"

    def __init__(self, script: Path, gate: Path) -> None:
        self.script, self.gate = script, gate

    def argv(self, request: WorkerRequest) -> list[str]:
        return [sys.executable, str(self.script), request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [sys.executable, str(self.script), "--resume", session_id, message, str(self.gate)]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return LastLine()
