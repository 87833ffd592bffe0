"""`mcp-swarm install CLIENT`: register `mcp-swarm serve` in an agent client's own configuration,
and put the Mayor skill where that client loads skills.

Each client keeps its MCP servers in a file of its own; this edits only the `swarm` entry of that
file and keeps everything else as it was (other servers, other keys, the indentation of a JSON
file, the comments and layout of a TOML one). Running it again changes nothing and says so. An
existing `swarm` entry that runs something else is never overwritten without `--force`, nor is a
skill file that differs from the one shipped in this package (someone edited it).

A project's files are shared with the team, so a project-scope entry runs `mcp-swarm` from PATH,
which works on every machine where it is installed; a user-scope entry names this installation's
absolute path, which works whatever the client's PATH.

| client | project scope | user scope |
| --- | --- | --- |
| claude | `.mcp.json`, approved in `.claude/settings.local.json` | `~/.claude.json` |
| codex | (not supported by codex) | `~/.codex/config.toml` (`$CODEX_HOME`) |
| cursor | `.cursor/mcp.json` | `~/.cursor/mcp.json` |
| gemini | `.gemini/settings.json` | `~/.gemini/settings.json` |

With `--http URL` (claude and codex), the entry connects to a running `mcp-swarm serve --http`
instead of starting a server, and takes the token from the client's environment, never from the
file: `"headers": {"Authorization": "Bearer ${MCP_SWARM_TOKEN}"}` for Claude Code, which expands
the variable, and `bearer_token_env_var = "MCP_SWARM_TOKEN"` for Codex.

The skill goes to `<dir>/skills/swarm/SKILL.md`, `<dir>` being the project's or the user's
`.claude` (`$CLAUDE_CONFIG_DIR`), `.cursor` or `.gemini`; Codex reads the user's `~/.agents`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import tomlkit
import tomlkit.exceptions
from tomlkit.items import InlineTable, Table

from mcp_swarm import DISTRIBUTION
from mcp_swarm.errors import InvalidInput, SwarmError
from mcp_swarm.runtimes.codex import codex_config_file

SERVER_NAME = "swarm"
# The skill's folder name is the name it is invoked by (`/swarm` in Claude Code).
SKILL_NAME = "swarm"
# What a project-scope entry runs: found on PATH, so the shared file works on a teammate's machine.
PORTABLE_COMMAND = ["mcp-swarm", "serve"]


# The variable an HTTP entry reads the Mayors' token from (server/http_token.py reads it too).
TOKEN_VARIABLE = "MCP_SWARM_TOKEN"  # noqa: S105 - the name of the variable, not a token
HTTP_CLIENTS = frozenset({"claude", "codex"})


class Client(StrEnum):
    CLAUDE = "claude"
    CODEX = "codex"
    CURSOR = "cursor"
    GEMINI = "gemini"


class Scope(StrEnum):
    PROJECT = "project"
    USER = "user"


CLIENT_NAMES = {Client.CLAUDE: "Claude Code", Client.CODEX: "Codex", Client.CURSOR: "Cursor",
                Client.GEMINI: "Gemini CLI"}  # fmt: skip


class InstallRefused(SwarmError):
    """The file already has a different `swarm` server; it is theirs until --force says otherwise."""


@dataclass(frozen=True)
class Change:
    path: Path
    changed: bool
    what: str
    # What to write, and where (the file a symlink points to); None when nothing changes.
    text: str | None = None
    target: Path | None = None
    private: bool = False


def packaged_skill() -> str:
    """The Mayor skill shipped inside the package."""
    return resources.files("mcp_swarm").joinpath("skill", "SKILL.md").read_text(encoding="utf-8")


def server_command(scope: Scope) -> list[str]:
    """How a client should start mcp-swarm: from PATH for a project, whose files are shared;
    for the user's own files, this installation's absolute path, so the client's PATH does not
    matter."""
    if scope is Scope.PROJECT:
        return list(PORTABLE_COMMAND)
    return this_installation()


def on_path() -> bool:
    """Whether a client started from here finds `mcp-swarm` on PATH, as a project entry needs."""
    return shutil.which(PORTABLE_COMMAND[0]) is not None


def install_hint() -> str:
    return f"pipx install {DISTRIBUTION}"


def this_installation() -> list[str]:
    """This mcp-swarm's command: the installed script's absolute path, if there is one."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "mcp-swarm" and argv0.is_file():
        return [str(argv0.absolute()), "serve"]
    beside = Path(sys.executable).parent / "mcp-swarm"
    if beside.is_file():
        return [str(beside), "serve"]
    found = shutil.which("mcp-swarm")
    if found:
        return [str(Path(found).absolute()), "serve"]
    return [sys.executable, "-m", "mcp_swarm", "serve"]


def checked_url(url: str) -> str:
    """The URL of a running `serve --http` as an entry may hold it, or a clear refusal."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port that is not a number in range raises
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "is not an http:// or https:// URL with a host"
    elif parts.username is not None or parts.password is not None:
        problem = f"holds a user name or password; the token comes from {TOKEN_VARIABLE}, never the URL"
    elif parts.path in ("", "/"):
        problem = "names no path; `mcp-swarm serve --http` serves at /mcp"
    elif parts.fragment or any(c.isspace() or not c.isprintable() for c in url):
        problem = "is not a URL a client can reach"
    else:
        return url
    # A password in the URL is not repeated back.
    shown = re.sub(r"(?<=://)[^/@]*@", "…@", url)
    raise InvalidInput(
        f"--http {shown!r} {problem}; give the URL `mcp-swarm serve --http` prints, such as "
        "http://127.0.0.1:8765/mcp"
    )


def http_entry(client: Client, url: str) -> dict[str, Any]:
    """The entry that connects `client` to the server at `url`, the token read from the environment."""
    if client is Client.CODEX:
        return {"url": url, "bearer_token_env_var": TOKEN_VARIABLE}
    return {"type": "http", "url": url, "headers": {"Authorization": f"Bearer ${{{TOKEN_VARIABLE}}}"}}


def install(
    client: Client,
    scope: Scope,
    command: list[str],
    *,
    home: Path,
    project: Path,
    force: bool = False,
    skill: bool = True,
    url: str | None = None,
) -> list[Change]:
    """Register `command` (or, with `url`, a connection to a running `serve --http`) as the
    `swarm` server of `client`, and (unless `skill` is False) install the Mayor skill where the
    client loads skills; what was changed, file by file.

    Every file is read and checked before any is written, so a refusal changes nothing at all.
    """
    if url is not None:
        if client.value not in HTTP_CLIENTS:
            raise InvalidInput(
                f"--http is for claude and codex; {CLIENT_NAMES[client]} takes the stdio entry"
            )
        entry = http_entry(client, checked_url(url))
    else:
        entry = {"command": command[0], "args": command[1:]}
    changes = _changes(client, scope, entry, home=home, project=project, force=force)
    if skill:
        changes.append(_skill_change(skill_path(client, scope, home=home, project=project), force))
    for change in changes:
        if change.text is not None and change.target is not None:
            _write(change.target, change.text, private=change.private)
    return changes


def _changes(
    client: Client, scope: Scope, entry: dict[str, Any], *, home: Path, project: Path, force: bool
) -> list[Change]:
    env = os.environ
    if client is Client.CODEX:
        if scope is Scope.PROJECT:
            raise InvalidInput("codex reads MCP servers from ~/.codex/config.toml only; use --scope user")
        return [_edit_toml(codex_config_file(env, home), entry, force)]
    if client is Client.CLAUDE:
        if scope is Scope.USER:
            config_dir = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home
            return [_edit_json(config_dir / ".claude.json", _put_server(entry, force), private=True)]
        return [
            _edit_json(project / ".mcp.json", _put_server(entry, force), private=False),
            # Claude Code asks before it starts a server from .mcp.json; whoever installs it here has
            # answered. settings.local.json is this person's own, never shared with the project.
            _edit_json(project / ".claude" / "settings.local.json", _approve, private=False),
        ]
    folder = ".cursor" if client is Client.CURSOR else ".gemini"
    name = "mcp.json" if client is Client.CURSOR else "settings.json"
    base = project if scope is Scope.PROJECT else home
    return [_edit_json(base / folder / name, _put_server(entry, force), private=scope is Scope.USER)]


def skill_path(client: Client, scope: Scope, *, home: Path, project: Path) -> Path:
    """Where `client` loads a skill named `swarm` from, in this scope (each reads `<dir>/SKILL.md`)."""
    env = os.environ
    if client is Client.CLAUDE:
        if scope is Scope.PROJECT:
            base = project / ".claude"
        else:
            base = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home / ".claude"
    elif client is Client.CODEX:
        # Codex reads the user's skills from ~/.agents/skills (the Agent Skills standard's folder).
        base = (project if scope is Scope.PROJECT else home) / ".agents"
    else:
        folder = ".cursor" if client is Client.CURSOR else ".gemini"
        base = (project if scope is Scope.PROJECT else home) / folder
    return base / "skills" / SKILL_NAME / "SKILL.md"


def _skill_change(path: Path, force: bool) -> Change:
    target = path.resolve() if path.is_symlink() else path
    shipped = packaged_skill()
    if not target.exists():
        return Change(path, True, "wrote the Mayor skill", shipped, target)
    if _read(target) == shipped:
        return Change(path, False, "the Mayor skill is there as shipped; nothing changed")
    if not force:
        return Change(
            path,
            False,
            "kept as it is: it differs from the Mayor skill of this mcp-swarm (edited, or from "
            "another version); --force replaces it",
        )
    return Change(path, True, "replaced the Mayor skill with the one of this mcp-swarm", shipped, target)


def _same(existing: object, entry: Mapping[str, Any]) -> bool:
    if not isinstance(existing, Mapping):
        return False
    found = cast(Mapping[str, Any], existing)
    if "url" in entry:
        return dict(found) == dict(entry)
    return found.get("command") == entry["command"] and list(found.get("args") or []) == entry["args"]


def _ours(existing: object) -> bool:
    """An entry this command wrote before: `mcp-swarm serve`, by name or by an absolute path (as a
    project entry once was), or a connection to a server over HTTP with the token from
    MCP_SWARM_TOKEN. Moving between them needs no --force."""
    if not isinstance(existing, Mapping):
        return False
    found = cast(Mapping[str, Any], existing)
    if isinstance(found.get("url"), str):
        return any(
            set(found) == set(shape) and all(found[key] == shape[key] for key in shape if key != "url")
            for shape in (http_entry(Client.CLAUDE, ""), http_entry(Client.CODEX, ""))
        )
    command = found.get("command")
    return (
        isinstance(command, str)
        and Path(command).name == PORTABLE_COMMAND[0]
        and list(found.get("args") or []) == PORTABLE_COMMAND[1:]
        and set(found) <= {"command", "args", "type"}
    )


def _refuse(path: Path, existing: object) -> InstallRefused:
    shown = json.dumps(existing, default=str)
    return InstallRefused(
        f"{path} already has a different {SERVER_NAME!r} server ({shown}); nothing was changed. "
        "--force replaces it"
    )


def _put_server(entry: dict[str, Any], force: bool) -> Callable[[dict[str, Any], Path], str | None]:
    def edit(data: dict[str, Any], path: Path) -> str | None:
        servers = data.setdefault("mcpServers", {})
        if not isinstance(servers, dict):
            raise InvalidInput(f"{path}: mcpServers is not a JSON object; fix it by hand first")
        servers = cast(dict[str, Any], servers)
        existing = servers.get(SERVER_NAME)
        if existing is not None and _same(existing, entry):
            return None
        if existing is not None and not force and not _ours(existing):
            raise _refuse(path, existing)
        servers[SERVER_NAME] = entry
        return f"{'replaced the' if existing is not None else 'added the'} {SERVER_NAME} server"

    return edit


def _approve(data: dict[str, Any], path: Path) -> str | None:
    if data.get("enableAllProjectMcpServers") is True:
        return None
    disabled = data.get("disabledMcpjsonServers")
    if isinstance(disabled, list) and SERVER_NAME in disabled:
        raise InvalidInput(
            f"{path} rejects the {SERVER_NAME} server (disabledMcpjsonServers); remove it from there, "
            "or run `claude mcp reset-project-choices`"
        )
    enabled = data.setdefault("enabledMcpjsonServers", [])
    if not isinstance(enabled, list):
        raise InvalidInput(f"{path}: enabledMcpjsonServers is not a list; fix it by hand first")
    if SERVER_NAME in enabled:
        return None
    cast(list[Any], enabled).append(SERVER_NAME)
    return f"approved the {SERVER_NAME} server of .mcp.json for this project"


def _edit_json(path: Path, edit: Callable[[dict[str, Any], Path], str | None], *, private: bool) -> Change:
    target = path.resolve() if path.is_symlink() else path  # a dotfile manager's link stays a link
    text = _read(target)
    try:
        data: Any = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON ({exc}); fix it, or add the server by hand") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} does not hold a JSON object; fix it, or add the server by hand")
    what = edit(cast(dict[str, Any], data), path)
    if what is None:
        return Change(path, False, "already there; nothing changed")
    match = re.search(r'^([ \t]+)"', text, re.MULTILINE)
    indent = match.group(1) if match else "  "
    new_text = json.dumps(data, indent=indent, ensure_ascii=False) + "\n"
    return Change(path, True, what, new_text, target, private)


def _edit_toml(path: Path, entry: dict[str, Any], force: bool) -> Change:
    target = path.resolve() if path.is_symlink() else path
    text = _read(target)
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise InvalidInput(f"{path} is not valid TOML ({exc}); fix it, or add the server by hand") from exc
    servers: Any = cast(dict[str, Any], doc).get("mcp_servers")
    if servers is None:
        servers = tomlkit.table(is_super_table=True)
        doc["mcp_servers"] = servers
    elif not isinstance(servers, MutableMapping):  # a Table, an inline one, or tables out of order
        raise InvalidInput(f"{path}: mcp_servers is not a table; fix it by hand first")
    existing: Any = cast(dict[str, Any], servers).get(SERVER_NAME)
    plain = existing.unwrap() if isinstance(existing, Table | InlineTable) else existing
    if existing is not None and _same(plain, entry):
        return Change(path, False, "already there; nothing changed")
    if existing is not None and not force and not _ours(plain):
        raise _refuse(path, plain)
    if isinstance(servers, InlineTable):
        servers[SERVER_NAME] = entry
    else:
        table = tomlkit.table()
        for key, value in entry.items():
            table[key] = value
        servers[SERVER_NAME] = table
    new_text = tomlkit.dumps(doc)
    # A table added before another one needs the blank line TOML files usually have between tables.
    new_text = re.sub(r"(\[mcp_servers\.swarm\]\n(?:[^\[\n][^\n]*\n)+)(?=\[)", r"\1\n", new_text)
    what = f"{'replaced the' if existing is not None else 'added the'} {SERVER_NAME} server"
    return Change(path, True, what, new_text, target, private=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def _write(path: Path, text: str, *, private: bool) -> None:
    """Replace the file in one step (never half-written), keeping its permissions; a new file in
    the user's home is readable by its owner only, as these files may hold tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600 if private else 0o644
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
