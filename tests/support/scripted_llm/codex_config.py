"""The `config.toml` that points a real Codex CLI at a scripted Responses server, hermetically."""

from __future__ import annotations

import json
from pathlib import Path

# A model whose tools are plain functions (exec_command, apply_patch): newer names put every tool
# behind a JavaScript `exec` that scripted calls cannot drive.
CODEX_MODEL = "gpt-5.5"
CODEX_KEY_VARIABLE = "SCRIPTED_OPENAI_API_KEY"


def _toml_string(value: str) -> str:
    # A JSON string literal is a valid TOML basic string for the ASCII values written here.
    return json.dumps(value)


def write_codex_config(codex_home: Path, base_url: str, *, confine_tmp: bool = False) -> Path:
    """Write `codex_home/config.toml`: our provider, no retries, no plugins, no analytics.

    Retries are off so that a refused call fails the turn at once (by default a 5xx is retried
    about 30 times over 25 s). Plugins and analytics are off because both reach the network.
    `confine_tmp` leaves only the working directory writable in the sandbox (by default /tmp and
    $TMPDIR are writable too).
    """
    config = f"""\
model = {_toml_string(CODEX_MODEL)}
model_provider = "scripted"
# Only the TUI checks for updates, but a worker must never depend on that staying true.
check_for_update_on_startup = false

[model_providers.scripted]
name = "Scripted"
base_url = {_toml_string(base_url)}
wire_api = "responses"
env_key = {_toml_string(CODEX_KEY_VARIABLE)}
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false

[analytics]
enabled = false
"""
    if confine_tmp:
        config += """
[sandbox_workspace_write]
exclude_slash_tmp = true
exclude_tmpdir_env_var = true
"""
    path = codex_home / "config.toml"
    path.write_text(config, encoding="utf-8")
    return path
