"""Who may use a sandbox: HTTP Basic with an account SID and its auth token, as Twilio's API asks.

One credential for everything the sandbox serves: the Twilio routes check it against the account
in their path, the control routes (`/sandbox/...`: rules, faults, chaos, inbound texts, inboxes,
unsubscribe buttons) against the sandbox's accounts, through one FastAPI dependency on their
router, so no control route is left open by forgetting a check. Open control routes would let
anyone on the machine post an inbound text the sandbox signs, i.e. a STOP the gateway believes.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping

from fastapi import HTTPException, Request

# In the data dir: `sopflow up` keeps its sandbox account's token there, the CLI reads it there.
SANDBOX_TOKEN_FILE = "sandbox_token"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="sopflow sandbox"'}


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic …` header; None when it is not one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


class AccountAuth:
    """The sandbox's accounts (SID → auth token); as a dependency it answers the caller's SID."""

    def __init__(self, accounts: Mapping[str, str]) -> None:
        if not accounts or not all(accounts.values()):  # an empty token would let anyone in
            raise ValueError("a sandbox needs at least one account, each with a non-empty token")
        self.accounts = dict(accounts)

    def check(self, request: Request, account: str | None = None) -> str:
        """The authenticated account SID (it must be `account` when given), else a 401 that says
        what to send."""
        credentials = basic_credentials(request.headers.get("authorization", ""))
        if credentials is None:
            # Account SIDs are not secrets (Twilio puts them in every URL): name them, so the
            # answer says exactly what to send.
            raise HTTPException(
                401,
                f"send HTTP Basic auth: the account SID ({' or '.join(self.accounts)}) and its "
                f"auth token (`sopflow up` keeps it in <data dir>/{SANDBOX_TOKEN_FILE}), e.g. "
                f"curl -u {next(iter(self.accounts))}:$(cat .sopflow/{SANDBOX_TOKEN_FILE})",
                headers=CHALLENGE,
            )
        user, password = credentials
        token = self.accounts.get(user)
        # compare_digest even for an unknown user, so timing does not tell which part was wrong
        valid = secrets.compare_digest(password.encode(), (token or "").encode())
        if token is None or not valid or (account is not None and user != account):
            raise HTTPException(
                401, "wrong account SID or auth token for this sandbox", headers=CHALLENGE
            )
        return user

    async def __call__(self, request: Request) -> str:
        return self.check(request)
