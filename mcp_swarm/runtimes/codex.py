"""Codex as a worker: `codex exec --json --skip-git-repo-check -C <dir> --sandbox workspace-write`.

Success is read from the events, not from the exit status alone: a completed turn and no
`turn.failed`. An `error` event alone is not a failure: codex prints "Reconnecting... n/5" as
`error` events while it retries, and a retry that then succeeds completes the turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcp_swarm.runtimes.base import Outcome, OutputReader, Runtime, WorkerRequest, as_object, json_event


@dataclass(frozen=True)
class CodexProfile:
    program: str = "codex"
    sandbox: str = "workspace-write"
    model: str | None = None
    extra_args: Sequence[str] = ()


class CodexRuntime(Runtime):
    name = "codex"

    def __init__(self, profile: CodexProfile | None = None) -> None:
        self.profile = profile or CodexProfile()

    def _options(self, request: WorkerRequest) -> list[str]:
        args = ["--json", "--skip-git-repo-check", "-C", str(request.cwd), "--sandbox", self.profile.sandbox]
        model = request.model or self.profile.model
        if model:
            args += ["--model", model]
        return [*args, *self.profile.extra_args]

    def argv(self, request: WorkerRequest) -> list[str]:
        # "--" ends the options: a prompt that starts with a dash stays a prompt.
        return [self.profile.program, "exec", *self._options(request), "--", request.prompt]

    def resume_argv(self, request: WorkerRequest, session_id: str, message: str) -> list[str]:
        return [self.profile.program, "exec", *self._options(request), "resume", session_id, "--", message]

    def reader(self, request: WorkerRequest) -> OutputReader:
        return CodexEventReader()


class CodexEventReader(OutputReader):
    def __init__(self) -> None:
        self.finished = False
        self._thread_id: str | None = None
        self._last_message: str | None = None
        self._completed = False
        self._failed = False
        self._errors: list[str] = []
        self._usage: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is None:
            return
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            self._thread_id = event["thread_id"]
        elif kind == "item.completed":
            item = as_object(event.get("item"))
            if item is not None and item.get("type") == "agent_message":
                self._last_message = str(item.get("text", ""))
        elif kind == "turn.completed":
            self._completed = True
            self.finished = True
            self._usage = as_object(event.get("usage"))
        elif kind in ("turn.failed", "error"):
            self._errors.append(_error_text(event))
            if kind == "turn.failed":
                self._failed = True
                self.finished = True

    def outcome(self, exit_code: int | None) -> Outcome:
        error: str | None = None
        if self._failed or not self._completed:
            reason = self._errors[-1] if self._errors else "no turn.completed event"
            status = "unknown" if exit_code is None else exit_code
            error = f"codex did not complete its turn (exit status {status}): {reason}"
        elif exit_code not in (0, None):
            error = f"codex exited with status {exit_code} after completing its turn"
        return Outcome(
            succeeded=error is None,
            summary=self._last_message,
            error=error,
            session_id=self._thread_id,
        )


def _error_text(event: dict[str, Any]) -> str:
    error = as_object(event.get("error"))
    if error is not None and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(event.get("message"), str):
        return str(event["message"])
    return str(event.get("type"))
