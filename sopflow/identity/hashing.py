"""Secrets at rest. API tokens and session ids are 256 random bits: one SHA-256 is enough to
keep a stolen table useless (nobody can search that space), and it lets the gateway find a token
by its digest with one indexed lookup. Passwords are chosen by people, so they get a slow,
salted, memory-hard hash: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane): a sign-in
took 46 ms here idle, 0.16 s under test load; argon2-cffi's defaults (64 MiB, 4 lanes) took
~0.9 s under the same load on this 2-core machine, so a few sign-ins at once would stall a
gateway. A hash keeps its parameters, so hashes made with others still verify.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "sft_"  # recognisable in a leaked log or a secret scanner
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work one request can ask for

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the user is unknown or has no password, so a failure takes as long either way.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The SHA-256 (hex) kept in place of a token or a session id."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"the password is shorter than {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password is longer than {MAX_PASSWORD} characters"
    return None


def password_matches(stored: str | None, given: str) -> bool:
    """Whether `given` is the password of `stored` (None: no password set); the same work is
    done when there is none, so timing does not tell which user ids exist."""
    if len(given) > MAX_PASSWORD:  # no stored password is that long: fail, in the same time
        stored, given = None, given[:MAX_PASSWORD]
    try:
        return _hasher.verify(stored or _DUMMY, given) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
