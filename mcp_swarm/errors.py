"""Domain exceptions.

Every layer raises these; only the MCP layer turns them into tool errors and only the CLI turns
them into exit codes, so the engine and the store never need to know who called them.
"""


class SwarmError(Exception):
    """Base of every error mcp-swarm raises on purpose. The message is written for the caller."""


class InvalidInput(SwarmError):
    """The request itself is wrong (a bad value, a field too long, an unknown status)."""


class TaskNotFound(SwarmError):
    """A task id names no task, or names a deleted one."""

    def __init__(self, task_id: str, *, deleted: bool = False) -> None:
        self.task_id = task_id
        if deleted:
            super().__init__(f"task {task_id} was deleted; deleted tasks cannot be read or changed")
        else:
            super().__init__(f"no task with id {task_id!r}; TaskList shows the ids that exist")


class DependencyCycle(SwarmError):
    """Adding a dependency would make a task wait, directly or through others, for itself."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " -> ".join(cycle)
        super().__init__(
            f"refused: this dependency would close the cycle {path} (each task is blocked by the next); "
            "nothing was changed"
        )


class BlockedTask(SwarmError):
    """A task was asked to start or finish while tasks it depends on are still open."""

    def __init__(self, task_id: str, status: str, open_blockers: list[str]) -> None:
        self.task_id = task_id
        self.open_blockers = open_blockers
        ids = ", ".join(open_blockers)
        super().__init__(
            f"task {task_id} cannot be set {status}: it is still blocked by {ids}; "
            "complete or delete those first"
        )


class RuntimeNotCapable(SwarmError):
    """A runtime cannot do what was asked, such as continue a session it has no notion of."""


class StoreUnavailable(SwarmError):
    """The state file cannot be used as asked: it is locked, full, read-only, damaged or foreign.

    The message names the file, says what is wrong and what to do. `transient`: the same write may
    succeed later without anyone touching the file (a lock released, space freed, a mode changed
    back), so a result waiting to be written is kept and tried again rather than dropped.
    """

    def __init__(self, path: object, message: str, *, transient: bool = False) -> None:
        self.path = path
        self.transient = transient
        super().__init__(message)
