"""The token of one worker attempt: what lets it use the worker tools of the server's endpoint.

A token is minted for each attempt when the attempt is recorded; only its SHA-256 is stored,
so a copy of the database grants nothing. The worker gets the token in its environment, never
on its command line (any user can read another's argument list). The hash is cleared with the
attempt's verdict, so an ended attempt's token opens nothing.
"""

from __future__ import annotations

import hashlib
import secrets

# Longer than any token we mint by far: a header of a megabyte is not hashed to be refused.
MAX_TOKEN_CHARS = 200


def mint_token() -> tuple[str, str]:
    """A fresh token and its hash, as stored."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    """The SHA-256 of a token, in hex: how the database knows it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
