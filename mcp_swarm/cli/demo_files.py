"""What the demo's scripted workers write: a small user auth system in plain Python.

Real code, standard library only, so that the last task's validation can run the tests the
workers wrote (`python -m unittest tests.test_auth`) and the demo shows a check that means
something. Each file belongs to one task, so workers of one wave never write the same file.
"""

from __future__ import annotations

_MODELS = '''"""The user model."""

from dataclasses import dataclass


@dataclass
class User:
    email: str
    password_hash: str = ""
    active: bool = True
'''

_SECURITY = '''"""Password hashing: PBKDF2-HMAC-SHA256, a random salt per password."""

import hashlib
import hmac
import os

ITERATIONS = 100_000


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"pbkdf2_sha256${ITERATIONS}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(candidate.hex(), digest)
'''

_ROUTES = '''"""The login endpoint: an email and a password in, the user out."""

from app.models import User
from app.security import verify_password


class LoginFailed(Exception):
    pass


def login(users: dict[str, User], email: str, password: str) -> User:
    user = users.get(email.strip().lower())
    # One message for every failure: a caller must not learn which emails exist.
    if user is None or not user.active or not verify_password(password, user.password_hash):
        raise LoginFailed("wrong email or password")
    return user
'''

_TOKENS = '''"""JWT (HS256) tokens for logged-in users, with the standard library only."""

import base64
import hashlib
import hmac
import json
import time


class InvalidToken(Exception):
    pass


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(message: str, secret: bytes) -> str:
    return _encode(hmac.new(secret, message.encode(), hashlib.sha256).digest())


def create_token(subject: str, secret: bytes, ttl_seconds: int = 3600) -> str:
    header = _encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _encode(json.dumps({"sub": subject, "exp": int(time.time()) + ttl_seconds}).encode())
    return f"{header}.{payload}.{_sign(f'{header}.{payload}', secret)}"


def verify_token(token: str, secret: bytes) -> str:
    """The token's subject; InvalidToken if it is malformed, forged or expired."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token")
    header, payload, signature = parts
    if not hmac.compare_digest(_sign(f"{header}.{payload}", secret), signature):
        raise InvalidToken("bad signature")
    claims = json.loads(_decode(payload))
    if claims["exp"] < time.time():
        raise InvalidToken("expired")
    return claims["sub"]
'''

_TESTS = """import unittest

from app.models import User
from app.routes import LoginFailed, login
from app.security import hash_password, verify_password
from app.tokens import InvalidToken, create_token, verify_token

SECRET = b"test-secret"


class AuthTests(unittest.TestCase):
    def setUp(self) -> None:
        self.users = {"ada@example.com": User("ada@example.com", hash_password("correct horse"))}

    def test_hashes_are_salted_and_verify(self) -> None:
        first, second = hash_password("pw"), hash_password("pw")
        self.assertNotEqual(first, second)
        self.assertTrue(verify_password("pw", first))
        self.assertFalse(verify_password("other", first))

    def test_login_with_the_right_password(self) -> None:
        self.assertEqual(login(self.users, "Ada@example.com ", "correct horse").email, "ada@example.com")

    def test_login_with_a_wrong_password_fails(self) -> None:
        with self.assertRaises(LoginFailed):
            login(self.users, "ada@example.com", "battery staple")

    def test_token_round_trip(self) -> None:
        self.assertEqual(verify_token(create_token("ada@example.com", SECRET), SECRET), "ada@example.com")

    def test_forged_and_expired_tokens_are_refused(self) -> None:
        token = create_token("ada@example.com", SECRET)
        with self.assertRaises(InvalidToken):
            verify_token(token, b"another secret")
        with self.assertRaises(InvalidToken):
            verify_token(create_token("ada@example.com", SECRET, ttl_seconds=-1), SECRET)


if __name__ == "__main__":
    unittest.main()
"""

TEMPLATES: dict[str, str] = {
    "app/__init__.py": '"""A small user auth system, written by a swarm."""\n',
    "app/models.py": _MODELS,
    "app/security.py": _SECURITY,
    "app/routes.py": _ROUTES,
    "app/tokens.py": _TOKENS,
    "tests/__init__.py": '"""Tests of the auth system."""\n',
    "tests/test_auth.py": _TESTS,
}
