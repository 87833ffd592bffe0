"""What a worker is given (its prompt), and its own words made safe to show."""

from __future__ import annotations

import re
import unicodedata

from mcp_swarm.models import Task

SUMMARY_LIMIT = 1000
# Terminal escape sequences, removed whole so that none of their text is left behind: CSI
# (colours, cursor moves, clearing the screen), OSC up to its end (window titles, hyperlinks, the
# clipboard), and the two-character ones.
_ESCAPES = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~]?)|\x9b[0-?]*[ -/]*[@-~]?"
)


def build_prompt(task: Task, instructions: str | None) -> str:
    lines = [
        f"You are a worker of a swarm. Your one task is task {task.id}: {task.subject}",
        "",
        task.description or "(no further description)",
    ]
    validation = task.metadata.get("validation")
    if validation:
        lines += ["", f"Your work will be checked with: {validation}"]
    if instructions:
        lines += ["", instructions]
    lines += [
        "",
        "Rules: work only on this task, in the current directory. Do not commit, and run no git "
        "command that changes history. End with a short summary of what you did.",
    ]
    return "\n".join(lines)


def clean_summary(text: str | None) -> str | None:
    """A worker's words, made safe to show: cut to a readable length, with nothing a terminal or a
    renderer would act on rather than show.

    Kept: printable characters, tabs and line ends (a carriage return becomes one). Removed:
    escape sequences whole, other control characters, and format characters (Unicode category
    Cf): bidi overrides and isolates that make text read otherwise than it is stored, zero-width
    characters, invisible tag characters that can carry hidden instructions to a model. Also
    lone surrogates (no UTF-8 can carry them) and private or unassigned code points. Odd spaces
    become spaces.
    """
    if text is None:
        return None
    # A few times the limit is plenty to fill it once cleaned, and keeps the work bounded.
    looked_at = 4 * SUMMARY_LIMIT
    head = _ESCAPES.sub("", text[:looked_at]).replace("\r\n", "\n").replace("\r", "\n")
    kept: list[str] = []
    for ch in head:
        if ch.isprintable() or ch in "\n\t":
            kept.append(ch)
        elif ch in "\u2028\u2029":
            kept.append("\n")
        elif unicodedata.category(ch) == "Zs":
            kept.append(" ")
    cleaned = "".join(kept)
    if len(cleaned) > SUMMARY_LIMIT or len(text) > looked_at:
        return cleaned[:SUMMARY_LIMIT] + " [cut; the full output is in the log]"
    return cleaned
