"""The authenticated user of a request, as a FastAPI dependency (see sopflow.principals)."""

from __future__ import annotations

from fastapi import HTTPException, Request

from sopflow.principals import PRINCIPAL_KEY, Principal


def principal(request: Request) -> Principal:
    """The Principal authentication put in the scope; 401 if none did (a route outside the
    authenticated paths asked for one: a wiring mistake, refused rather than served open)."""
    found = request.scope.get(PRINCIPAL_KEY)
    if not isinstance(found, Principal):
        raise HTTPException(401, "not signed in", headers={"WWW-Authenticate": "Bearer"})
    return found
