"""The authenticated user of a request, as a FastAPI dependency (see sopflow.principals)."""

from __future__ import annotations

from fastapi import HTTPException, Request

from sopflow.principals import PRINCIPAL_KEY, Principal

CSRF_KEY = "sopflow.csrf"  # in the scope: the browser session's CSRF token (gateway/auth.py)


def principal(request: Request) -> Principal:
    """The Principal authentication put in the scope; 401 if none did (a route outside the
    authenticated paths asked for one: a wiring mistake, refused rather than served open)."""
    found = request.scope.get(PRINCIPAL_KEY)
    if not isinstance(found, Principal):
        raise HTTPException(401, "not signed in", headers={"WWW-Authenticate": "Bearer"})
    return found


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's browser session: every form a page renders carries it
    as `<input type="hidden" name="csrf_token" value="...">` (or a script sends it as the
    `X-CSRF-Token` header); the gateway's authentication refuses a POST without it."""
    found = request.scope.get(CSRF_KEY)
    if not isinstance(found, str):
        raise HTTPException(401, "not signed in in a browser")
    return found
