"""The `mcp-swarm` command line.

Typer gives typed options, `--help` for every command and shell completion from plain function
signatures, which is less code to keep than an argparse tree.
"""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from mcp_swarm import __version__
from mcp_swarm.config import load_settings
from mcp_swarm.errors import SwarmError

app = typer.Typer(
    name="mcp-swarm",
    help="An MCP server that turns an agent session into the Mayor of a swarm of worker agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="The SQLite file of the swarm (default: .mcp-swarm/swarm.db here)", show_default=False
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
WorkerOption = Annotated[
    str | None,
    typer.Option(
        "--worker",
        help="Serve one worker instead of the Mayor: only its own task, its reports, its inbox and "
        "its file reservations (the claude and codex runtimes configure this for their workers)",
        show_default=False,
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"mcp-swarm: {message}", err=True)
    return typer.Exit(code=2)


@app.command()
def serve(
    db: DbOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
    mode: ModeOption = None,
    worker: WorkerOption = None,
) -> None:
    """Speak MCP on stdin/stdout: register this command in Claude Code, Codex or any MCP client."""
    # Imported here so that `mcp-swarm --help` stays quick.
    from mcp_swarm.server import build_server

    try:
        settings = load_settings(db=db, config=config, log_level=log_level, mode=mode)
    except SwarmError as exc:
        raise _fail(str(exc)) from exc
    # stdout carries the protocol and nothing else: every log line goes to stderr.
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if worker is not None:
        from mcp_swarm.worker_server import build_worker_server

        try:
            worker_server = build_worker_server(settings, worker)
        except SwarmError as exc:
            raise _fail(str(exc)) from exc
        gc.collect()
        gc.freeze()
        worker_server.run("stdio")
        return
    server = build_server(settings)
    # Everything imported so far lives as long as the process: freezing it keeps the garbage
    # collector from walking it again on every full collection, which was the tail of TaskList.
    gc.collect()
    gc.freeze()
    server.run("stdio")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
