"""Signing in and out of the browser pages.

- `GET /signin?next=/inbox`: the form. Its POST carries a random token that must match the one
  in a short-lived cookie set with the form (double submit): another site cannot sign a browser
  in under its own account (login CSRF).
- `POST /signin`: user and password. A wrong user or a wrong password get the same answer in
  about the same time (an unknown user's password is checked against a dummy hash); after
  MAX_FAILURES failures in WINDOW for one user id or one client address, sign-in is refused
  for a while (429, in this process: each gateway counts its own). A right one starts a
  session (sopflow/identity/users.py) in an HttpOnly, Secure, SameSite=Lax cookie, and goes on
  to `next` if it is a path of this site (anything else is ignored: no open redirect), else to
  the role's page: a rep's inbox, the dashboard for supervisors and ops.
- `POST /signout` (a browser page: session and CSRF token checked by auth.py): the session row
  is deleted, so the cookie is dead even if it was copied.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import FormData

from sopflow.gateway.auth import CSRF_FIELD, SESSION_COOKIE
from sopflow.identity.users import SESSION_TTL, UserBook
from sopflow.principals import Principal, Role

SIGNIN = "/signin"
SIGNIN_COOKIE = "sopflow_signin"  # the sign-in form's CSRF token (double submit)
MAX_FAILURES = 10
WINDOW = 15 * 60.0  # seconds
MAX_NEXT = 2000
WRONG = "wrong user or password"

_pages = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=StrictUndefined,
)


def landing(principal: Principal) -> str:
    """Where a user goes after signing in when no page asked for them."""
    match principal.role:
        case Role.rep:
            return "/inbox"
        case Role.supervisor | Role.ops:
            return "/dashboard"


def local_path(target: str | None) -> str | None:
    """`target` if it is a path of this site, else None: `//evil.example`, `/\\evil.example`,
    `https://evil.example` and control characters (header splitting) are refused."""
    if not target or len(target) > MAX_NEXT or not target.startswith("/"):
        return None
    if target.startswith(("//", "/\\")) or any(c == "\\" or ord(c) < 32 for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


class Attempts:
    """Failed sign-ins per key (a user id, a client address) in the last WINDOW seconds."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = WINDOW) -> None:
        self.limit, self.window = limit, window
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self.failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds until these keys may try again (0: now)."""
        waits = [
            times[0] + self.window - now
            for times in (self._recent(k, now) for k in keys)
            if len(times) >= self.limit
        ]
        return max(waits, default=0.0)

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            self._recent(key, now).append(now)
        if len(self.failures) > 100_000:  # a spray of ids: forget the idle ones
            self.failures = {k: v for k, v in self.failures.items() if self._recent(k, now)}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def signin_router(users: UserBook) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    attempts = Attempts()

    def page(next_path: str, message: str = "", status: int = 200, user: str = "") -> Response:
        token = secrets.token_urlsafe(24)
        html = _pages.get_template("signin.html").render(
            next=next_path, message=message, user=user, csrf=token, csrf_field=CSRF_FIELD
        )
        response = HTMLResponse(html, status_code=status)
        response.set_cookie(
            SIGNIN_COOKIE,
            token,
            max_age=3600,
            path=SIGNIN,
            httponly=True,
            secure=True,
            samesite="strict",
        )
        return response

    @router.get(SIGNIN)
    async def signin_form(request: Request, next: str = "") -> Response:
        return page(local_path(next) or "")

    @router.post(SIGNIN)
    async def signin(request: Request) -> Response:
        form = await request.form()
        user, password = _text(form, "user").strip(), _text(form, "password")
        next_path = local_path(_text(form, "next")) or ""
        expected = request.cookies.get(SIGNIN_COOKIE, "")
        given = _text(form, CSRF_FIELD)
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            message = "the form had expired: sign in again"
            return page(next_path, message, 403, user)
        keys = [f"user:{user.lower()}", f"from:{request.client.host if request.client else '-'}"]
        now = time.monotonic()
        if (wait := attempts.wait(keys, now)) > 0:
            message = f"too many failed attempts: try again in {int(wait // 60) + 1} minutes"
            return page(next_path, message, 429, user)
        started = await asyncio.to_thread(users.sign_in, user, password)
        if started is None:
            attempts.failed(keys, now)
            return page(next_path, WRONG, 401, user)
        target = next_path or landing(started.signed_in.principal)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            started.cookie,
            max_age=int(SESSION_TTL.total_seconds()),
            path="/",
            httponly=True,
            secure=True,
            samesite="lax",
        )
        response.delete_cookie(SIGNIN_COOKIE, path=SIGNIN)
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            await asyncio.to_thread(users.sign_out, cookie)
        response = RedirectResponse(SIGNIN, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    return router
