"""Which Mayor a request comes from: the scope of its `spawn` and plain `wait`.

One HTTP server may serve several Mayor sessions at once (a team, or one person's two
terminals). Each plain `wait` returns the results of the workers its own Mayor spawned, so the
server needs a name for the Mayor that survives a dropped connection: a session id does not (a
client that reconnects gets a new one), the bearer token cannot tell teammates apart who share
it. The Mayor is therefore recognised by a name it sends:

- the `X-Swarm-Mayor` header, on HTTP (set it in the headers of the client's MCP entry);
- else the client's own name, from its MCP `initialize` (clientInfo.name: `claude-code`,
  `codex-mcp-client`, ...), so that two different clients on one server are two Mayors even with
  no header; two sessions of one client with no header share one scope;
- on stdio, no name (None): a stdio server has one Mayor, and the command line's Mayors
  (`run`, `demo`) have none either, as before.

A name is not a credential: the bearer token decides who may call the tools at all; the name
only keeps the results of Mayors that trust each other apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

MAYOR_HEADER = "X-Swarm-Mayor"
MAX_MAYOR_CHARS = 64


def mayor_of(ctx: Context[Any, Any]) -> str | None:
    """The calling Mayor's name: its X-Swarm-Mayor header; else its client's name, on HTTP; None
    on stdio (a request without headers). A name that is not 1-64 printable characters is
    refused with a tool error that says how to send one that is."""
    headers = ctx.headers
    if headers is None:
        return None
    sent = _header(headers, MAYOR_HEADER)
    if sent is not None:
        return _checked(sent, f"the {MAYOR_HEADER} header")
    client = ctx.session.client_params
    if client is None:
        return None
    return _checked(client.client_info.name, "the client's name (clientInfo.name)")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette's headers look names up in any case; a plain mapping may keep them as sent.
    value = headers.get(name) or headers.get(name.lower())
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _checked(name: str, source: str) -> str:
    if not 1 <= len(name) <= MAX_MAYOR_CHARS or not name.isprintable():
        raise ToolError(
            f"{source} names the Mayor whose results wait returns, and must be 1 to "
            f"{MAX_MAYOR_CHARS} printable characters; it has {len(name)}"
            + ("" if name.isprintable() else ", some of them not printable")
            + f". Send a short name in the {MAYOR_HEADER} header of this server's MCP entry, "
            f'e.g. "{MAYOR_HEADER}": "alice"'
        )
    return name
