"""`serve --http`'s address and its token: parsed, found, made and refused in process (the server
itself, over the wire, is tested in tests/cli/test_serve_http*.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mcp_swarm.config import load_settings
from mcp_swarm.errors import InvalidInput
from mcp_swarm.server.http_token import mayor_token
from mcp_swarm.server.http_wire import Address, parse_address, url_of

TOKEN = "a-token-of-enough-characters-0123456789"


@pytest.mark.parametrize(
    ("text", "address", "loopback"),
    [
        ("8765", Address("127.0.0.1", 8765), True),
        ("0", Address("127.0.0.1", 0), True),
        ("0.0.0.0:8765", Address("0.0.0.0", 8765), False),  # noqa: S104 - asked for on purpose
        ("localhost:1", Address("localhost", 1), True),
        ("127.0.0.2:80", Address("127.0.0.2", 80), True),
        ("[::1]:8765", Address("::1", 8765), True),
        ("[::]:8765", Address("::", 8765), False),
        ("10.1.2.3:65535", Address("10.1.2.3", 65535), False),
    ],
)
def test_addresses_are_parsed_with_loopback_by_default(text: str, address: Address, loopback: bool) -> None:
    assert parse_address(text) == address
    assert parse_address(text).loopback is loopback


@pytest.mark.parametrize(
    "text", ["", "http", ":80", "host:", "65536", "-1", "::1:80", "1.2.3.4:x", "8765/mcp"]
)
def test_bad_addresses_are_refused_with_examples(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"is not \[HOST:\]PORT; for example 8765"):
        parse_address(text)


def test_urls_name_ipv6_hosts_in_brackets() -> None:
    assert url_of("127.0.0.1", 8765) == "http://127.0.0.1:8765/mcp"
    assert url_of("::1", 8765) == "http://[::1]:8765/mcp"


def test_a_token_is_made_private_from_its_first_moment_and_reused(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    old = os.umask(0)  # what would leave a file readable and writable by all
    try:
        made = mayor_token(settings, environ={})
    finally:
        os.umask(old)
    path = tmp_path / ".mcp-swarm" / "token"
    assert made.created
    assert made.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == made.value + "\n"
    assert len(made.value) >= 40
    # The state directory keeps it out of git, as everything in it.
    assert (tmp_path / ".mcp-swarm" / ".gitignore").read_text().endswith("*\n")
    again = mayor_token(settings, environ={})
    assert (again.value, again.created) == (made.value, False)
    # Nowhere in what may be printed.
    assert made.value not in repr(made)
    assert made.value not in str(made)


def test_the_token_comes_from_the_flag_then_the_environment_then_the_config(tmp_path: Path) -> None:
    (tmp_path / "mcp-swarm.toml").write_text('token_file = "team-token"\n')
    for name, value in (
        ("team-token", "from-the-config-file-0123"),
        ("flag-token", "from-the-flag-file-01234"),
    ):
        (tmp_path / name).write_text(value)
        (tmp_path / name).chmod(0o600)
    settings = load_settings(cwd=tmp_path, environ={})
    assert settings.token_file == tmp_path / "team-token"
    env = {"MCP_SWARM_TOKEN": "from-the-environment-012"}
    assert (
        mayor_token(settings, token_file=tmp_path / "flag-token", environ=env).value
        == "from-the-flag-file-01234"
    )
    assert mayor_token(settings, environ=env).value == "from-the-environment-012"
    assert mayor_token(settings, environ=env).source == "MCP_SWARM_TOKEN"
    assert mayor_token(settings, environ={}).value == "from-the-config-file-0123"
    assert not (tmp_path / ".mcp-swarm" / "token").exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o606, 0o644])
def test_a_token_file_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(mode)
    settings = load_settings(cwd=tmp_path, environ={})
    with pytest.raises(InvalidInput, match="may be read or written by others") as refused:
        mayor_token(settings, token_file=path, environ={})
    assert f"chmod 600 {path}" in str(refused.value)
    assert TOKEN not in str(refused.value)


def test_a_token_file_must_be_a_private_regular_file_with_a_token_in_it(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    real = tmp_path / "real"
    real.write_text(TOKEN)
    real.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InvalidInput, match="is a symbolic link"):
        mayor_token(settings, token_file=link, environ={})
    with pytest.raises(InvalidInput, match=r"cannot read the token file .*missing"):
        mayor_token(settings, token_file=tmp_path / "missing", environ={})
    with pytest.raises(InvalidInput, match="is not a regular file"):
        mayor_token(settings, token_file=tmp_path, environ={})
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(InvalidInput, match="at least 16 printable characters") as refused:
        mayor_token(settings, token_file=short, environ={})
    assert "abc" not in str(refused.value)
    # A default file planted as a link elsewhere is not followed.
    state = tmp_path / "p" / ".mcp-swarm"
    state.mkdir(parents=True)
    (state / "token").symlink_to(real)
    with pytest.raises(InvalidInput, match="is a symbolic link"):
        mayor_token(load_settings(cwd=tmp_path / "p", environ={}), environ={})


@pytest.mark.parametrize("value", ["", "short", "has a space in it, long enough", "tab\tin-it-long-enough-0"])
def test_a_weak_or_malformed_token_in_the_environment_is_refused(tmp_path: Path, value: str) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    with pytest.raises(InvalidInput, match="the token in MCP_SWARM_TOKEN must be at least 16") as refused:
        mayor_token(settings, environ={"MCP_SWARM_TOKEN": value})
    assert not value or value not in str(refused.value)
