"""The gateway's door: the API token and a cap on request bodies, both checked before a body is
read. They are ASGI middleware because FastAPI reads and parses a route's body before the route's
dependencies run: a token check there would let anyone make the gateway buffer and parse any body.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sopflow.settings import Secret

MAX_API_BODY = 1024 * 1024  # an event or a report is a few kB; this leaves room for big CRMs
PROTECTED = "/api/"  # the other routes authenticate themselves (signatures, signed links)


class BearerAuth:
    """401 for a request under /api/ without `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: Secret) -> None:
        self.app = app
        self.token = token.reveal().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
            valid = scheme.lower() == "bearer" and secrets.compare_digest(
                given.strip().encode(), self.token
            )
            if not valid:
                refusal = JSONResponse(
                    {"detail": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised into the app when a body read passes its cap; the client gets a 413."""


class BodyLimit:
    """413 for a body over the cap of its path (the first matching prefix of `limits`, else
    `default`): at once when Content-Length says so, else as soon as the chunks read pass it,
    so no more than the cap is ever read into memory."""

    def __init__(self, app: ASGIApp, limits: Sequence[tuple[str, int]], default: int) -> None:
        self.app = app
        self.limits = limits
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = next((cap for prefix, cap in self.limits if path.startswith(prefix)), self.default)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        read = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if read > limit:  # the app's answer to the failed read (e.g. a 400) gives way to a 413
                return
            started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if read <= limit:
                raise
        if read > limit and not started:
            await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"the request body is over {limit} bytes"}, status_code=413)
