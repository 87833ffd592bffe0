"""Settings: built-in defaults, then `mcp-swarm.toml`, then `MCP_SWARM_*` variables, then flags.

Zero configuration works: everything has a default, and the state of a project lives in
`.mcp-swarm/` under the directory the server was started in.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_swarm.errors import InvalidInput

CONFIG_FILE_NAME = "mcp-swarm.toml"
STATE_DIR_NAME = ".mcp-swarm"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# local: workers are children of the server and end with it. distributed: each worker runs in a
# detached tmux session of its own and outlives the server and the Mayor's session.
Mode = Literal["local", "distributed"]
MODES: tuple[Mode, ...] = ("local", "distributed")
# tmux's own socket directory, under a name of the swarm's: never the user's default server.
DEFAULT_TMUX_SOCKET = "mcp-swarm"


# A worker's log past this many bytes moves its older output to `<log>.1` (placement/logtail.py).
DEFAULT_MAX_LOG_BYTES = 64 << 20
# Below a chunk of the tmux wrapper's copy, the limit could not be held to at all.
MIN_MAX_LOG_BYTES = 64 << 10
# `serve --http`: far above a team's Mayors, far below what the server's memory holds; and an
# hour of no request in flight before a session is closed (its client then opens a new one).
DEFAULT_HTTP_MAX_SESSIONS = 100
DEFAULT_HTTP_SESSION_IDLE_SECONDS = 60 * 60


class RuntimeSettings(BaseModel):
    """One `[runtimes.NAME]` table: a profile of a built-in runtime, or a configured command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["command", "claude", "codex"]
    argv: list[str] | None = None
    program: str | None = None
    model: str | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] | None = None
    max_turns: Annotated[int, Field(ge=1)] | None = None
    sandbox: str | None = None
    extra_args: list[str] = Field(default_factory=list[str])


class FileSettings(BaseModel):
    """What `mcp-swarm.toml` may set. Unknown keys are refused, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid")

    db: str | None = None
    log_level: LogLevel | None = None
    max_workers: Annotated[int, Field(ge=1, le=256)] | None = None
    default_runtime: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] | None = None
    idle_seconds: Annotated[float, Field(gt=0)] | None = None
    max_log_bytes: Annotated[int, Field(ge=MIN_MAX_LOG_BYTES)] | None = None
    env_allow: list[str] | None = None
    mode: Mode | None = None
    tmux_socket: str | None = None
    token_file: str | None = None
    http_max_sessions: Annotated[int, Field(ge=1, le=10_000)] | None = None
    http_session_idle_seconds: Annotated[float, Field(gt=0)] | None = None
    runtimes: dict[str, RuntimeSettings] = Field(default_factory=dict[str, RuntimeSettings])


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    project_dir: Path
    db_path: Path
    config_path: Path | None = None
    log_level: LogLevel = "WARNING"
    max_workers: int = 5
    default_runtime: str | None = None
    timeout_seconds: float = 30 * 60
    idle_seconds: float = 10 * 60
    # Per worker: past it, the older output of its log moves to `<log>.1` (placement/logtail.py).
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    env_allow: tuple[str, ...] | None = None
    mode: Mode = "local"
    tmux_socket: str = DEFAULT_TMUX_SOCKET
    # `serve --http`: the file holding the Mayors' bearer token, if the file names one (relative to
    # the project); `--token-file` and MCP_SWARM_TOKEN come before it (server/http_token.py).
    token_file: Path | None = None
    # `serve --http`: Mayor sessions open at once, and how long one may sit idle before it is closed.
    http_max_sessions: int = DEFAULT_HTTP_MAX_SESSIONS
    http_session_idle_seconds: float = DEFAULT_HTTP_SESSION_IDLE_SECONDS
    runtimes: dict[str, RuntimeSettings] = Field(default_factory=dict[str, RuntimeSettings])

    @property
    def state_dir(self) -> Path:
        return self.db_path.parent


def _read_config_file(path: Path) -> FileSettings:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read the configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path} is not valid TOML: {exc}") from exc
    try:
        return FileSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"{path}: {problems}") from exc


STATE_DIR_GITIGNORE = "# Made by mcp-swarm: nothing in here belongs in the repository.\n*\n"


def ignore_state_dir(state_dir: Path) -> None:
    """Give the state directory a `.gitignore` of its own (`*`), so `git status` stays clean.

    A file inside the directory, rather than a line in the project's .gitignore or in
    .git/info/exclude, leaves every file of the user's as it was and goes with the directory
    wherever it is. An existing one is left as it is: it may have been edited on purpose.
    """
    try:
        with (state_dir / ".gitignore").open("x", encoding="utf-8") as out:
            out.write(STATE_DIR_GITIGNORE)
    except FileExistsError:
        pass


def _default_db(project_dir: Path) -> Path:
    """`.mcp-swarm/swarm.db` of the project; refused if a symbolic link takes it out of the project.

    The state directory holds what the server writes for its workers (logs, prompts, worktrees);
    a link in a project checked out from elsewhere must not send those writes anywhere else. A
    database kept elsewhere on purpose is named explicitly (`db`, `--db`, MCP_SWARM_DB).
    """
    default = project_dir / STATE_DIR_NAME / "swarm.db"
    resolved = default.resolve()
    if project_dir not in resolved.parents:
        raise InvalidInput(
            f"{default} leads outside the project, to {resolved}, through a symbolic link; remove "
            f'the link, or name a database outside the project explicitly (db = "..." in '
            f"{CONFIG_FILE_NAME}, --db or MCP_SWARM_DB)"
        )
    return default


def find_project(start: Path) -> Path:
    """The project a command started in `start` belongs to, found as git finds its repository: the
    nearest directory, `start` or above, holding a swarm's state directory or `mcp-swarm.toml`.

    The search stops at the root of a git repository (a project does not reach above its own
    repository) and at the file system's root; with nothing found, `start` is the project.
    """
    for directory in (start, *start.parents):
        if (directory / STATE_DIR_NAME).is_dir() or (directory / CONFIG_FILE_NAME).is_file():
            return directory
        if (directory / ".git").exists():
            break
    return start


def load_settings(
    *,
    cwd: Path | None = None,
    db: Path | None = None,
    config: Path | None = None,
    log_level: str | None = None,
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings for a server or a CLI command started in `cwd`.

    The project is found from `cwd` upwards (`find_project`); paths given on the command line or
    in the environment are relative to `cwd`, the database named in the file to the project.
    """
    env = os.environ if environ is None else environ
    start = (cwd or Path.cwd()).resolve()
    project_dir = find_project(start)

    config_path = config or (Path(env["MCP_SWARM_CONFIG"]) if env.get("MCP_SWARM_CONFIG") else None)
    if config_path is not None:
        config_path = (start / config_path).resolve()
    elif (project_dir / CONFIG_FILE_NAME).is_file():
        config_path = project_dir / CONFIG_FILE_NAME
    if config_path is not None:
        if not config_path.is_file():
            raise InvalidInput(f"the configuration file {config_path} does not exist")
        file = _read_config_file(config_path)
    else:
        file = FileSettings()

    given_db = str(db) if db else env.get("MCP_SWARM_DB")
    if given_db:
        db_path = start / given_db
    elif file.db:
        db_path = project_dir / file.db
    else:
        db_path = _default_db(project_dir)

    level = (log_level or env.get("MCP_SWARM_LOG_LEVEL") or file.log_level or "WARNING").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise InvalidInput(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")

    max_workers = file.max_workers or 5
    if env.get("MCP_SWARM_MAX_WORKERS"):
        try:
            max_workers = int(env["MCP_SWARM_MAX_WORKERS"])
        except ValueError as exc:
            raise InvalidInput("MCP_SWARM_MAX_WORKERS must be a whole number") from exc
        if not 1 <= max_workers <= 256:
            # As the file's max_workers and spawn's maxWorkers: a bound on the host's load.
            raise InvalidInput(f"MCP_SWARM_MAX_WORKERS must be between 1 and 256; it is {max_workers}")

    max_log_bytes = file.max_log_bytes or DEFAULT_MAX_LOG_BYTES
    if env.get("MCP_SWARM_MAX_LOG_BYTES"):
        text = env["MCP_SWARM_MAX_LOG_BYTES"]
        if not text.isdigit() or int(text) < MIN_MAX_LOG_BYTES:
            raise InvalidInput(
                f"MCP_SWARM_MAX_LOG_BYTES must be a whole number of bytes, at least {MIN_MAX_LOG_BYTES}; "
                f"it is {text!r}"
            )
        max_log_bytes = int(text)

    chosen_mode = mode or env.get("MCP_SWARM_MODE") or file.mode or "local"
    if chosen_mode not in MODES:
        raise InvalidInput(f"unknown mode {chosen_mode!r}; use local or distributed")
    tmux_socket = env.get("MCP_SWARM_TMUX_SOCKET") or file.tmux_socket or DEFAULT_TMUX_SOCKET

    return Settings(
        project_dir=project_dir,
        db_path=db_path.resolve(),
        config_path=config_path,
        log_level=level,  # type: ignore[arg-type]
        max_workers=max_workers,
        default_runtime=env.get("MCP_SWARM_RUNTIME") or file.default_runtime,
        timeout_seconds=file.timeout_seconds or 30 * 60,
        idle_seconds=file.idle_seconds or 10 * 60,
        max_log_bytes=max_log_bytes,
        env_allow=None if file.env_allow is None else tuple(file.env_allow),
        mode=chosen_mode,  # type: ignore[arg-type]
        tmux_socket=tmux_socket,
        token_file=project_dir / file.token_file if file.token_file else None,
        http_max_sessions=file.http_max_sessions or DEFAULT_HTTP_MAX_SESSIONS,
        http_session_idle_seconds=file.http_session_idle_seconds or DEFAULT_HTTP_SESSION_IDLE_SECONDS,
        runtimes=file.runtimes,
    )


# Names copied from the server's environment into a worker's; a trailing * matches a prefix.
DEFAULT_ENV_ALLOW = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TZ", "TMPDIR", "SHELL",
    "ANTHROPIC_*", "CLAUDE_CONFIG_DIR", "OPENAI_*", "CODEX_HOME", "NO_PROXY", "no_proxy",
)  # fmt: skip


def allowed_environment(
    base: Mapping[str, str], allow: Sequence[str], extra: Mapping[str, str]
) -> dict[str, str]:
    """`base` cut down to the names `allow` lets through, then `extra`: what a program we start inherits."""
    prefixes = tuple(name[:-1] for name in allow if name.endswith("*"))
    exact = {name for name in allow if not name.endswith("*")}
    env = {key: value for key, value in base.items() if key in exact or key.startswith(prefixes)}
    env.update(extra)
    return env
