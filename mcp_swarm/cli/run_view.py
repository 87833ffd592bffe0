"""How a run looks: a live table on a terminal, one plain line per event anywhere else.

The live table (wave, task, worker, state, time, and what the worker is doing: the last line of
its log while it runs, its summary or the reason it failed once it has ended) is redrawn a few
times a second. Piped into a file or a CI log, the same run prints a line when a worker starts or
ends, which reads well and greps well.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mcp_swarm.cli.run_state import RunState, TaskRow
from mcp_swarm.placement.logtail import last_lines

_STYLE = {
    "waiting": "dim",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "blocked": "red dim",
    "stopped": "magenta",
}
_MARK = {"completed": "✓", "failed": "✗", "blocked": "·", "stopped": "■", "running": "▸", "waiting": " "}
_TAIL_BYTES = 4096
# How many of a failed worker's last lines `run` and `status` show.
TAIL_LINES = 5


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest:02d} s"


def last_line(log: Path | None) -> str:
    """The last line a worker printed, read from the end of its log (never the whole file)."""
    if log is None:
        return ""
    try:
        with log.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _activity(row: TaskRow) -> str:
    if row.state == "running":
        return last_line(row.log) or "starting…"
    return row.note


class LiveRunView:
    """A rich Live table, redrawn by `tick` and on every change."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None

    def begin(self, state: RunState) -> None:
        self._live = Live(self._render(state), console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def changed(self, row: TaskRow) -> None:
        pass  # the next tick shows it; rows change far less often than the ticks come

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    async def tick(self, state: RunState) -> None:
        while True:
            if self._live is not None:
                self._live.update(self._render(state), refresh=True)
            await anyio.sleep(0.2)

    def end(self, state: RunState) -> None:
        if self._live is not None:
            self._live.update(self._render(state), refresh=True)
            self._live.stop()
            self._live = None

    def _render(self, state: RunState) -> Group:
        table = Table(title=state.title, title_justify="left", expand=False)
        table.add_column("wave", justify="right")
        table.add_column("task", no_wrap=True, overflow="ellipsis", max_width=34)
        table.add_column("worker", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("activity", no_wrap=True, overflow="ellipsis", max_width=60)
        rows = _fitting(state.rows, max(5, self.console.height - 10))
        for row in rows:
            style = _STYLE.get(row.state, "")
            table.add_row(
                str(row.wave),
                f"{row.task_id}  {row.subject}",
                row.worker or "",
                Text(f"{_MARK.get(row.state, ' ')} {row.state}", style=style),
                seconds(row.elapsed()),
                Text(_activity(row), style="dim" if row.state == "running" else style),
            )
        done, total = state.count("completed"), len(state.rows)
        hidden = f" · {total - len(rows)} more not shown" if len(rows) < total else ""
        footer = Text(
            f"{done}/{total} completed · {state.count('running')} running · "
            f"{seconds(state.wall_seconds)}{hidden}",
            style="bold",
        )
        return Group(table, footer)


def _fitting(rows: list[TaskRow], room: int) -> list[TaskRow]:
    """The rows a screen has room for: those that need an eye (running, failed...) first, then the
    latest completed and the next waiting, in plan order. A long plan never scrolls the view away."""
    if len(rows) <= room:
        return rows
    urgent = [row for row in rows if row.state not in ("completed", "waiting")]
    completed = [row for row in rows if row.state == "completed"]
    waiting = [row for row in rows if row.state == "waiting"]
    left = max(0, room - len(urgent))
    recent = completed[-(left // 2) :] if left // 2 else []
    chosen = {id(row) for row in [*urgent[:room], *recent, *waiting[: left - len(recent)]]}
    return [row for row in rows if id(row) in chosen]


class _EventView:
    """A view that speaks only when something happens: nothing to redraw between events, and
    the workers a stop ended are told at the end."""

    def changed(self, row: TaskRow) -> None:
        raise NotImplementedError

    async def tick(self, state: RunState) -> None:
        await anyio.sleep_forever()

    def end(self, state: RunState) -> None:
        for row in state.rows:
            if row.state == "stopped":
                self.changed(row)


class PlainRunView(_EventView):
    """One line per event, for pipes and logs; NO_COLOR or not, no control sequences."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def begin(self, state: RunState) -> None:
        waves = max((row.wave for row in state.rows), default=0)
        self._line(f"{state.title}: {len(state.rows)} tasks in {waves} waves")

    def changed(self, row: TaskRow) -> None:
        head = f"wave {row.wave}  task {row.task_id} {row.subject!r}"
        if row.state == "running":
            self._line(f"{head}: {row.worker} started ({row.runtime})")
        elif row.state in ("completed", "failed"):
            by = f" by {row.worker}" if row.worker else ""
            took = f" in {seconds(row.seconds)}" if row.seconds is not None else ""
            # A failure's last lines come in the summary; here, where to read them.
            hint = f" (`mcp-swarm logs {row.worker}`)" if row.state == "failed" and row.worker else ""
            self._line(f"{head}: {row.state}{by}{took}" + (f": {row.note}" if row.note else "") + hint)
        elif row.state == "blocked":
            self._line(f"{head}: not run, {row.note}")
        elif row.note:
            self._line(f"{head}: {row.note}")

    def message(self, text: str) -> None:
        self._line(text)


def summary_lines(state: RunState) -> list[str]:
    """What a run came to, in a few lines: the counts, the failures, the time."""
    total = len(state.rows)
    lines: list[str] = []
    if state.interrupted:
        lines.append(f"Interrupted: {state.count('completed')} of {total} tasks completed before the stop")
    else:
        lines.append(f"{state.count('completed')} of {total} tasks completed in {state.waves_taken} waves")
    for row in state.rows:
        if row.state in ("failed", "blocked"):
            lines.append(f"  {row.state}: task {row.task_id} {row.subject!r}: {row.note}")
        if row.state == "failed":
            lines.extend(f"      {line}" for line in failure_tail(row))
    stopped = state.count("stopped")
    if stopped:
        lines.append(
            f"  {stopped} worker{'s' if stopped != 1 else ''} stopped; their tasks are pending again"
        )
    checks = [check for row in state.rows for check in row.checks]
    if checks:
        passed = sum(bool(check.get("passed")) for check in checks)
        lines.append(f"validation: {passed} of {len(checks)} checks passed")
    costs = [row.cost_usd for row in state.rows if row.cost_usd is not None]
    if costs:
        lines.append(f"cost: ${sum(costs):.2f}")
    lines.append(f"wall time: {seconds(state.wall_seconds)}")
    return lines


def print_summary(console: Console, lines: list[str]) -> None:
    console.print("Summary", style="bold", highlight=False)
    for line in lines:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def failure_tail(row: TaskRow) -> list[str]:
    """A failed task's last words: its worker's last lines, and the command that shows the rest."""
    if row.worker is None:
        return []
    lines = [f"| {line}" for line in last_lines(row.log, TAIL_LINES)]
    return [*lines, f"`mcp-swarm logs {row.worker}` shows the rest"]


class JsonRunView(_EventView):
    """One JSON document per line and per event, for scripts: `run --json`."""

    def begin(self, state: RunState) -> None:
        waves = max((row.wave for row in state.rows), default=0)
        _emit({"event": "run", "title": state.title, "tasks": len(state.rows), "waves": waves})

    def changed(self, row: TaskRow) -> None:
        _emit({"event": "task", **row_document(row)})

    def message(self, text: str) -> None:
        _emit({"event": "message", "text": text})


def row_document(row: TaskRow) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": row.task_id,
        "key": row.key,
        "subject": row.subject,
        "wave": row.wave,
        "state": row.state,
        "worker": row.worker,
        "runtime": row.runtime,
        "seconds": None if row.seconds is None else round(row.seconds, 3),
        "costUsd": row.cost_usd,
        "note": row.note or None,
    }
    if row.state == "failed" and row.worker is not None:
        document["tail"] = last_lines(row.log, TAIL_LINES)
        document["log"] = f"mcp-swarm logs {row.worker}"
    return {key: value for key, value in document.items() if value is not None}


def summary_document(state: RunState, db_path: Path) -> dict[str, Any]:
    """The closing line of `run --json`: what the run came to."""
    counts: dict[str, int] = {}
    for row in state.rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    costs = [row.cost_usd for row in state.rows if row.cost_usd is not None]
    checks = [check for row in state.rows for check in row.checks]
    return {
        "event": "summary",
        "exitStatus": state.exit_status,
        "interrupted": state.interrupted,
        "tasks": len(state.rows),
        "counts": counts,
        "failed": [row.task_id for row in state.rows if row.state == "failed"],
        "checks": {"passed": sum(bool(check.get("passed")) for check in checks), "total": len(checks)},
        "costUsd": round(sum(costs), 6) if costs else None,
        "wallSeconds": round(state.wall_seconds, 3),
        "db": str(db_path),
    }


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit_summary(state: RunState, db_path: Path) -> None:
    _emit(summary_document(state, db_path))


def make_view(console: Console, *, as_json: bool = False) -> LiveRunView | PlainRunView | JsonRunView:
    if as_json:
        return JsonRunView()
    return LiveRunView(console) if console.is_terminal else PlainRunView(console)
