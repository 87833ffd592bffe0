"""What a worker is given (its prompt, its environment, its files), and its own words made safe to show."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from stat import S_ISDIR, S_ISLNK

from mcp_swarm.models import Task

SUMMARY_LIMIT = 1000
# Terminal escape sequences, removed whole so that none of their text is left behind: CSI
# (colours, cursor moves, clearing the screen), OSC up to its end (window titles, hyperlinks, the
# clipboard), and the two-character ones.
_ESCAPES = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~]?)|\x9b[0-?]*[ -/]*[@-~]?"
)
# Names copied from the server's environment into a worker's; a trailing * matches a prefix.
DEFAULT_ENV_ALLOW = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TZ", "TMPDIR", "SHELL",
    "ANTHROPIC_*", "CLAUDE_CONFIG_DIR", "OPENAI_*", "CODEX_HOME", "NO_PROXY", "no_proxy",
)  # fmt: skip


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


def worker_environment(
    base: Mapping[str, str], allow: Sequence[str], extra: Mapping[str, str]
) -> dict[str, str]:
    prefixes = tuple(name[:-1] for name in allow if name.endswith("*"))
    exact = {name for name in allow if not name.endswith("*")}
    env = {key: value for key, value in base.items() if key in exact or key.startswith(prefixes)}
    env.update(extra)
    return env


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


def inside(root: Path, relative: str) -> Path | None:
    """The path `relative` names under `root`, resolved; None if it leads outside (`..`, an absolute
    path, a symbolic link) or names no file at all (a NUL byte, a name too long)."""
    try:
        top = root.resolve()
        candidate = (top / relative).resolve()
    except (OSError, ValueError):
        return None
    return candidate if candidate == top or top in candidate.parents else None


def without_links(path: Path, root: Path) -> bool:
    """Whether `path`, under `root`, is reached with no symbolic link below `root`, itself included.

    The server writes and reads a worker's files (log, prompt, result, check logs) in the state
    directory, which the worker can write too: a link planted there would have the server append
    to, truncate or read a file anywhere the user can.
    """
    # One lstat per name below `root`, not a realpath of each end. A name not made yet is made by
    # us, as a real one.
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in relative.parts:
        if part in ("..", "."):
            return False
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False
        if S_ISLNK(mode) or (current != path and not S_ISDIR(mode)):
            return False
    return True
