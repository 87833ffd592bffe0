"""The `mcp-swarm` command line.

Typer gives typed options, `--help` for every command and shell completion from plain function
signatures, which is less code to keep than an argparse tree.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape

from mcp_swarm import __version__
from mcp_swarm.config import Settings, load_settings
from mcp_swarm.errors import InvalidInput, SwarmError
from mcp_swarm.models import Worker

T = TypeVar("T")

app = typer.Typer(
    name="mcp-swarm",
    help="An MCP server that turns an agent session into the Mayor of a swarm of worker agents.",
    no_args_is_help=True,
    # --install-completion SHELL / --show-completion SHELL (bash, zsh, fish, powershell).
    add_completion=True,
    pretty_exceptions_enable=False,
    # Docstrings are wrapped at the source's line length; markdown joins their lines again.
    rich_markup_mode="markdown",
)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="The SQLite file of the swarm (default: .mcp-swarm/swarm.db of the project, found from here "
        "upwards)",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="A configuration file (default: ./mcp-swarm.toml if present)", show_default=False
    ),
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: WARNING)", show_default=False
    ),
]


ModeOption = Annotated[
    str | None,
    typer.Option(
        "--mode",
        help="local (workers are this server's children) or distributed (each in a tmux session that "
        "outlives the server); default: local",
        show_default=False,
    ),
]
HttpOption = Annotated[
    str | None,
    typer.Option(
        "--http",
        help="Serve over streamable HTTP at http://HOST:PORT/mcp instead of stdio, for several Mayors "
        "at once; HOST is 127.0.0.1 unless given (0.0.0.0:PORT: every interface; port 0: a free one)",
        metavar="[HOST:]PORT",
        show_default=False,
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="With --http: the file holding the token clients must send (default: MCP_SWARM_TOKEN, "
        "else token_file in mcp-swarm.toml, else .mcp-swarm/token, made on the first start)",
        show_default=False,
    ),
]
# `serve --worker ID` served any worker id it was given, to whoever ran it: it is gone, and said so.
WorkerOption = Annotated[str | None, typer.Option("--worker", hidden=True, show_default=False)]


def _reporting_errors(run: Callable[[], T]) -> T:
    """`run()`, with a domain error as one line on stderr (exit 2) and Ctrl-C before any worker
    started as exit 130; anything else keeps its traceback."""
    try:
        return run()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # before the workers started: nothing to stop
    except BaseException as exc:
        error = _domain_error(exc)
        if error is None:
            raise
        raise _fail(str(error)) from exc


def _fail(message: str) -> typer.Exit:
    typer.echo(f"mcp-swarm: {message}", err=True)
    return typer.Exit(code=2)


def _console() -> Console:
    console = Console(soft_wrap=True, highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        # Piped: tables as wide as they need, not squeezed into rich's default of 80 columns.
        console.width = 160
    return console


def _domain_error(exc: BaseException) -> SwarmError | None:
    """The domain error behind an exception, also from inside a task group's exception group."""
    if isinstance(exc, SwarmError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        group = cast(BaseExceptionGroup[BaseException], exc)
        for inner in group.exceptions:
            found = _domain_error(inner)
            if found is not None:
                return found
    return None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """An MCP server that turns an agent session into the Mayor of a swarm of worker agents.

    Every command finds the swarm from a subdirectory of the project, as git finds its repository."""


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary project and its database, and say where")
    ] = False,
    pace: Annotated[
        float, typer.Option("--pace", min=0, help="Seconds between a scripted worker's progress lines")
    ] = 0.25,
) -> None:
    """Watch a swarm build a small user auth system: 5 tasks in 4 waves, scripted workers.

    No configuration, no agent CLI and no LLM: the seed's example plan runs for real (spawn,
    supervision, validation) in a temporary git repository, removed at the end unless --keep."""
    from mcp_swarm.cli.demo import run_demo

    raise typer.Exit(_reporting_errors(lambda: run_demo(_console(), keep=keep, pace=pace)))


@app.command()
def run(
    plan: Annotated[
        Path, typer.Argument(help="A plan file, TOML or JSON ([[tasks]] with key, subject, ...)")
    ],
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime", help="Run every task with this runtime (claude, codex, demo, a configured one)"
        ),
    ] = None,
    max_workers: Annotated[
        int | None,
        typer.Option(
            "--max-workers",
            min=1,
            max=256,
            help="At most this many workers at once on the database (instead of max_workers)",
        ),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.001, help="Each worker's wall-clock limit in seconds (default 1800)"),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start the plan's run over: its earlier tasks are deleted (status deleted, history "
            "kept) and every task is created and run again",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON line per event (run, task started or ended, summary) instead of the view",
        ),
    ] = False,
) -> None:
    """Run a plan file to its end, headless: the engine is the Mayor.

    Every ready task gets a worker, wave after wave. Running the same plan again on the same
    database continues its run (the plan's `name`, else its path, names the run; each task is
    known by its key): completed tasks are kept and not run again, failed and pending ones run
    again, a task changed in the file is updated, one dropped from it is deleted. A second run of
    a plan whose run is live is refused. Exit status 0 if every task completed, 1 if not, 2 for
    a bad plan or a runtime that cannot start (nothing is created), 130 after Ctrl-C (which stops
    the workers; their tasks return to pending, and running the plan again continues)."""
    import anyio

    from mcp_swarm.app import demo_runtime, engine_runtimes
    from mcp_swarm.cli.run_checks import plan_runtimes
    from mcp_swarm.cli.run_lock import holding_run
    from mcp_swarm.cli.run_state import RunState
    from mcp_swarm.cli.run_view import emit_summary, make_view, print_summary, summary_lines
    from mcp_swarm.cli.runner import RunOptions, run_plan
    from mcp_swarm.ledger.plan_file import load_plan
    from mcp_swarm.runtimes.registry import DEMO_RUNTIME
    from mcp_swarm.store import SchemaTooNew
    from mcp_swarm.store.failures import unwritable

    console = _console()

    def start() -> tuple[Settings, RunState]:
        settings = load_settings(db=db, config=config)
        if max_workers is not None:
            # A flag of the user's, as --db is: it sets the ceiling, which spawns only lower.
            settings = settings.model_copy(update={"max_workers": max_workers})
        runtimes = engine_runtimes(settings, {DEMO_RUNTIME: demo_runtime()})
        options = RunOptions(runtime=runtime, max_workers=max_workers, timeout_seconds=timeout, fresh=fresh)
        # Every problem of the plan and of its runtimes at once, before anything exists.
        plan_file = load_plan(plan, check=lambda p: plan_runtimes(p, runtime, settings, runtimes).problems)
        identity = plan_file.identity(plan)
        # A state that cannot be written is said as the store says it, before the run's lock is made.
        if (refusal := unwritable(settings.db_path)) is not None:
            raise refusal
        with holding_run(settings.state_dir, identity):
            view = make_view(console, as_json=as_json)
            return settings, anyio.run(
                lambda: run_plan(
                    plan_file, settings, runtimes, options, view, title=plan.name, identity=identity
                )
            )

    try:
        settings, state = _reporting_errors(start)
    except SchemaTooNew as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        emit_summary(state, settings.db_path)
        raise typer.Exit(state.exit_status)
    # `status` run here finds the default database by itself; any other needs naming.
    here = load_settings().db_path == settings.db_path
    look = "mcp-swarm status" + ("" if here else f" --db {settings.db_path}")
    print_summary(console, [*summary_lines(state), f"state: {settings.db_path} (`{look}` shows it)"])
    raise typer.Exit(state.exit_status)


@app.command()
def status(
    watch: Annotated[bool, typer.Option("--watch", help="Redraw as the swarm changes, until Ctrl-C")] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print one JSON document, {"tasks": [...], "workers": [...], "counts": {...}}, for scripts',
        ),
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Show tasks (wave, status, owner) and workers (state, duration, cost).

    Read from the database without changing it; --watch redraws as it changes. A failed task
    shows the last lines of its worker's output."""
    import anyio

    from mcp_swarm.cli.status_view import show_status

    if watch and as_json:
        raise _fail("--watch and --json do not go together; use one of them")
    try:
        settings = load_settings(db=db, config=config)
        anyio.run(lambda: show_status(_console(), settings.db_path, watch=watch, as_json=as_json))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except SwarmError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def logs(
    worker: Annotated[str, typer.Argument(help="The worker, e.g. worker-3 (`mcp-swarm status` lists them)")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as the log grows, until the worker ends")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Print a worker's log; --follow keeps printing until the worker ends."""
    import anyio

    from mcp_swarm.cli.status_view import show_log

    try:
        settings = load_settings(db=db, config=config)
        anyio.run(lambda: show_log(settings.db_path, worker, follow=follow))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:
        # `mcp-swarm logs worker-3 | head`: the reader has all it wanted.
        sys.stderr.close()
        raise typer.Exit(0) from None
    except SwarmError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def retry(
    tasks: Annotated[
        list[str],
        typer.Argument(
            help="Failed tasks' ids (`mcp-swarm status` lists them)", metavar="TASK", show_default=False
        ),
    ],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Set failed tasks back to pending, their owner cleared, to be run again.

    A `mcp-swarm run` still running on the database picks them up; else the next `run` or the
    Mayor's next spawn does. Every id must name a failed task, or nothing changes."""
    import anyio

    from mcp_swarm.cli.control import retry_tasks

    def start() -> list[str]:
        settings = load_settings(db=db, config=config)
        return [task.id for task in anyio.run(lambda: retry_tasks(settings, tasks))]

    for task_id in _reporting_errors(start):
        typer.echo(f"task {task_id}: pending again")


@app.command()
def stop(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Running workers (worker-3) or tasks (3) whose worker to stop",
            metavar="WORKER|TASK",
            show_default=False,
        ),
    ],
    fail: Annotated[
        bool, typer.Option("--fail", help="Mark their tasks failed rather than pending again")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Stop running workers, whichever process supervises them (a `serve` or a `run`).

    Each worker's whole process group gets SIGTERM, then SIGKILL after a grace period; it is
    recorded as cancelled and its task goes back to pending (--fail: failed). A pending task
    inside a live `run` is started again by it: use --fail to keep it from running."""
    import anyio

    from mcp_swarm.cli.control import stop_workers

    def start() -> list[Worker]:
        settings = load_settings(db=db, config=config)
        return anyio.run(lambda: stop_workers(settings, targets, fail=fail))

    for worker in _reporting_errors(start):
        status = "failed" if fail else "pending again"
        typer.echo(f"{worker.id} stopped ({worker.state.value}); task {worker.task_id} is {status}")


@app.command()
def clean(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; remove at once")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove what ended workers left on disk: logs, their files and results, worktrees.

    The records stay (each task's history, and the completed tasks a plan's run resumes from). A
    worktree holding completed work not integrated yet is kept. Refused while a worker runs."""
    import anyio

    from mcp_swarm.cli.control import clean as remove
    from mcp_swarm.engine.cleanup import EndedWork

    def confirm(work: EndedWork) -> bool:
        typer.echo(
            f"This removes {len(work.files)} files and directories and {len(work.worktrees)} worktrees:"
        )
        for path in work.files:
            typer.echo(f"  {path}")
        for worktree in work.worktrees:
            typer.echo(f"  {worktree.path} (worktree, branch {worktree.branch})")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InvalidInput("not removed: pass --yes to clean without a question")
        return typer.confirm("Remove them?", default=False)

    def start() -> bool:
        settings = load_settings(db=db, config=config)
        done = anyio.run(lambda: remove(settings, confirm))
        for note in done.work.kept:
            typer.echo(f"kept {note}")
        if done.work.empty:
            typer.echo("Nothing to clean.")
        elif not done.removed:
            typer.echo("Nothing was removed.")
        return done.removed

    if _reporting_errors(start):
        typer.echo("Removed.")


@app.command()
def install(
    client: Annotated[str, typer.Argument(help="claude, codex, cursor or gemini", show_default=False)],
    scope: Annotated[
        str | None,
        typer.Option(
            "--scope",
            help="project (this directory; the default) or user (every project; codex: always)",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing, different 'swarm' server entry or skill file"),
    ] = False,
    no_skill: Annotated[
        bool, typer.Option("--no-skill", help="Register the server only; leave the Mayor skill out")
    ] = False,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            help="Connect to a running `mcp-swarm serve --http` at this URL (claude, codex) rather than "
            "start a server; the client sends the token from its MCP_SWARM_TOKEN variable",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register `mcp-swarm serve` in Claude Code, Codex, Cursor or Gemini CLI, with the Mayor skill.

    Adds the MCP server 'swarm' to the client's configuration file and keeps the rest of the file
    as it was, and writes the Mayor skill (swarm/SKILL.md) where the client loads skills. Running it
    again changes nothing; a different existing 'swarm' or an edited skill needs --force."""
    from mcp_swarm.cli.install import (
        CLIENT_NAMES,
        TOKEN_VARIABLE,
        Client,
        InstallRefused,
        Scope,
        install_hint,
        on_path,
        server_command,
    )
    from mcp_swarm.cli.install import install as register

    try:
        chosen = Client(client.lower())
    except ValueError:
        raise _fail(f"unknown client {client!r}; use claude, codex, cursor or gemini") from None
    if scope is None:
        where = Scope.USER if chosen is Client.CODEX else Scope.PROJECT
    elif scope.lower() in ("project", "user"):
        where = Scope(scope.lower())
    else:
        raise _fail(f"unknown scope {scope!r}; use project or user")
    command = server_command(where)
    console = _console()
    try:
        changes = register(
            chosen,
            where,
            command,
            home=Path.home(),
            project=Path.cwd(),
            force=force,
            skill=not no_skill,
            url=http,
        )
    except InstallRefused as exc:
        typer.echo(f"mcp-swarm: {exc}", err=True)
        raise typer.Exit(1) from exc
    except SwarmError as exc:
        raise _fail(str(exc)) from exc
    what = f"connects to {http}" if http is not None else f"runs {' '.join(command)}"
    console.print(f"{CLIENT_NAMES[chosen]} ({where.value} scope): 'swarm' {what}", markup=False)
    for change in changes:
        mark = "[green]✓[/]" if change.changed else "[dim]·[/]"
        console.print(f"  {mark} {escape(str(change.path))}: {escape(change.what)}")
    if not any(change.changed for change in changes):
        console.print("Nothing to change: it was already registered.")
    if http is not None:
        console.print(
            f"The client sends the token from its environment: set {TOKEN_VARIABLE} (the server's token) "
            "where you start it. The file holds no token.",
            markup=False,
        )
    elif where is Scope.PROJECT:
        # The entry is shared with the project; each person needs the command on PATH.
        console.print(
            "The entry runs `mcp-swarm` from PATH, so it works for everyone who installs mcp-swarm "
            f"({install_hint()}).",
            markup=False,
        )
        if not on_path():
            console.print(
                f"Note: `mcp-swarm` is not on PATH here, so the client will not find it; {install_hint()} "
                "(or add this environment's bin directory to PATH), or use --scope user.",
                markup=False,
            )
    check = {
        Client.CLAUDE: "claude mcp list",
        Client.CODEX: "codex mcp list",
        Client.GEMINI: "gemini mcp list",
    }
    if chosen in check:
        console.print(f"Check it: {check[chosen]}", markup=False)
    else:
        console.print("Cursor lists it under Settings → MCP; enable it there if asked.", markup=False)
    if not no_skill:
        console.print(
            'Then ask the agent to use the swarm skill, e.g. "use the swarm skill to plan and build ...".',
            markup=False,
        )


@app.command()
def serve(
    db: DbOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
    mode: ModeOption = None,
    worker: WorkerOption = None,
    http: HttpOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Speak MCP on stdin/stdout: register this command in Claude Code, Codex or any MCP client.

    With --http, serve any number of Mayors over streamable HTTP instead; each request must carry
    `Authorization: Bearer <token>`."""
    # Imported here so that `mcp-swarm --help` stays quick.
    from mcp_swarm.server.mayor import build_server

    if worker is not None:
        raise _fail(
            "serve --worker is gone: each server serves its workers on its own worker endpoint, "
            "and a worker reaches it with its attempt's token ($SWARM_URL, $SWARM_TOKEN)"
        )
    try:
        settings = load_settings(db=db, config=config, log_level=log_level, mode=mode)
    except SwarmError as exc:
        raise _fail(str(exc)) from exc
    # stdout carries the protocol and nothing else: every log line goes to stderr.
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if http is None and token_file is not None:
        raise _fail("--token-file goes with --http; stdio needs no token")
    if http is not None:
        _serve_http(settings, http, token_file)
        return
    server = build_server(settings)
    # Everything imported so far lives as long as the process: freezing it keeps the garbage
    # collector from walking it again on every full collection, which was the tail of TaskList.
    gc.collect()
    gc.freeze()
    _serving(lambda: server.run("stdio"))
    _exit_after_signal(server.stopped_by)


def _serve_http(settings: Settings, http: str, token_file: Path | None) -> None:
    """`serve --http`: the token found (or made), then the server until a stop signal."""
    from mcp_swarm.server.http_token import mayor_token
    from mcp_swarm.server.http_wire import parse_address, run_http
    from mcp_swarm.server.mayor import build_server

    def say(message: str) -> None:
        print(f"mcp-swarm: {message}", file=sys.stderr, flush=True)

    try:
        address = parse_address(http)
    except SwarmError as exc:
        raise _fail(str(exc)) from exc

    def find_token() -> str:
        # Once the state file and the port are known good: a server that cannot start makes none.
        token = mayor_token(settings, token_file=token_file, environ=os.environ)
        if token.created:
            say(f"made a token for the Mayors in {token.source} (readable by you only); clients send "
                "it as 'Authorization: Bearer <token>', e.g. MCP_SWARM_TOKEN=$(cat that file)")  # fmt: skip
        else:
            say(f"clients must send the token in {token.source} as 'Authorization: Bearer <token>'")
        return token.value

    server = build_server(settings)
    gc.collect()
    gc.freeze()
    stopped_by: list[int | None] = []
    _serving(lambda: stopped_by.append(run_http(server, address, find_token, settings, say)))
    _exit_after_signal(stopped_by[0] if stopped_by else None)


def _exit_after_signal(signum: int | None) -> None:
    """Stopped by a signal, after the same orderly way out as at the end of the input: the
    conventional status, 128 + the signal's number (143 SIGTERM, 129 SIGHUP, 130 SIGINT)."""
    if signum is not None:
        raise typer.Exit(128 + signum)


def _serving(run: Callable[[], None]) -> None:
    """`run()`, with a domain error that ends the server (its state file failing under it) as one
    line on stderr and exit status 2 rather than a traceback; anything else is left as it was."""
    try:
        run()
    except Exception as exc:
        error = _domain_error(exc)
        if error is None:
            raise
        raise _fail(str(error)) from exc


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
