"""What a worker is given (its prompt and its environment), and its own words made safe to show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mcp_swarm.models import Task

SUMMARY_LIMIT = 1000
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
    """A worker's words, made safe to show: control characters out, cut to a readable length."""
    if text is None:
        return None
    cut = len(text) > SUMMARY_LIMIT
    text = "".join(ch for ch in text[:SUMMARY_LIMIT] if ch in "\n\t" or ch.isprintable())
    return text + " [cut; the full output is in the log]" if cut else text
