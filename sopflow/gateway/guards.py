"""The gateway's door: authentication (auth.py) and a cap on request bodies, both checked before a
body is read. They are ASGI middleware because FastAPI reads and parses a route's body before the
route's dependencies run: a token check there would let anyone make the gateway buffer and parse
any body. Outside them, RequestMetrics counts every request, the refused ones too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sopflow.metrics import HTTP_LATENCY, HTTP_REQUESTS

MAX_API_BODY = 1024 * 1024  # an event or a report is a few kB; this leaves room for big CRMs
PROTECTED = "/api/"  # the other routes authenticate themselves (signatures, signed links)
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "(unmatched)"  # the route label of a path no route takes (a 404)


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


class RequestMetrics:
    """Count each HTTP request and time it, by method, route template and status. The label is
    the template (`/api/v1/runs/{run_id}`), never the path: paths hold ids and tokens, and one
    series per id would grow without bound."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        method = scope["method"] if scope["method"] in METHODS else "other"

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            labels = (method, route_template(self.router.routes, scope), str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route that took `scope` (routing leaves it in the scope, also
    for a 405). A request refused before routing (a 401, a 413) is matched here against the
    app's own routes; FastAPI's included routers have no template of their own to give, so such
    a refusal on one of theirs counts as unmatched."""
    routed = getattr(scope.get("route"), "path", None)
    if isinstance(routed, str):
        return routed
    partial = None
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return path
        if match == Match.PARTIAL and partial is None:
            partial = path
    return partial or UNMATCHED
