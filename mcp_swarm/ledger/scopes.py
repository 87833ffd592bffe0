"""Write scopes: the files a task declares it will change (`metadata.files`, paths or globs).

Two tasks whose scopes overlap must not run at once in one working tree; a task that declares
no scope is not checked (nothing is known of what it will touch).
"""

from __future__ import annotations

from typing import Any

from mcp_swarm.errors import InvalidInput
from mcp_swarm.ledger.patterns import normalise_pattern, overlaps
from mcp_swarm.models import Task


def scope_of(task: Task) -> list[str]:
    """The task's declared files, normalised; InvalidInput if `metadata.files` is malformed."""
    declared: Any = task.metadata.get("files")
    if declared is None:
        return []
    if isinstance(declared, str):
        declared = [declared]
    items: list[Any] = declared if isinstance(declared, list) else [None]  # pyright: ignore[reportUnknownVariableType]
    if not all(isinstance(item, str) for item in items):
        raise InvalidInput(f"task {task.id}: metadata.files must be a list of paths or globs")
    return [normalise_pattern(str(item)) for item in items]


def clash(scope: list[str], others: dict[str, list[str]]) -> str | None:
    """Why `scope` cannot run beside tasks with these scopes ({task id: scope}); None if it can."""
    for task_id, other in others.items():
        for mine in scope:
            for theirs in other:
                if overlaps(mine, theirs):
                    return (
                        f"its files overlap those of task {task_id} ({mine} and {theirs}); "
                        f"spawn it after task {task_id} has ended"
                    )
    return None
