"""Errors under /dashboard as HTML pages: a 404 (an unknown run, page or SOP), a 403 (a report
not for this role) or a 422 (a bad parameter) reads as a page saying what happened, with the
dashboard's nav, not as the API's JSON. Everywhere else the app's own handlers answer, unchanged.

They wrap the handlers the app has when the dashboard is added (the FastAPI defaults and
app.py's), so they must be installed after those (add_dashboard is).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from sopflow.errors import SopflowError
from sopflow.gateway.dashboard.access import PREFIX
from sopflow.gateway.dashboard.render import render
from sopflow.principals import PRINCIPAL_KEY, Principal

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def on_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def error_page(request: Request, status: int, lines: list[str]) -> Response:
    found = request.scope.get(PRINCIPAL_KEY)
    who = found if isinstance(found, Principal) else None
    return render(
        request, who, "error.html", status=status, code=status,
        title=HTTPStatus(status).phrase, lines=lines,
    )  # fmt: skip


def _page_of(exc: Exception) -> tuple[int, list[str]] | None:
    """The status and the message lines of an error a page shows; None: not one for a page."""
    match exc:
        case HTTPException() if exc.status_code >= 400:  # a 303 to the inbox stays a redirect
            return exc.status_code, [str(exc.detail)]
        case RequestValidationError():
            lines = [
                f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                for e in exc.errors()
            ]
            return 422, lines
        case SopflowError():
            return exc.http_status, [str(exc)]
        case _:
            return None


def _wrapped(before: Handler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        shown = _page_of(exc) if on_dashboard(request.url.path) else None
        if shown is not None:
            return error_page(request, *shown)
        if before is None:
            raise exc
        answer = before(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def add_error_pages(app: FastAPI) -> None:
    """Answer errors under /dashboard with HTML pages; the API's JSON errors stay as they are."""
    defaults: dict[type[Exception], Handler | None] = {
        HTTPException: http_exception_handler,  # type: ignore[dict-item]
        RequestValidationError: request_validation_exception_handler,  # type: ignore[dict-item]
        SopflowError: None,
    }
    for kind, default in defaults.items():
        app.add_exception_handler(kind, _wrapped(app.exception_handlers.get(kind, default)))
