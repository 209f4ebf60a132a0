"""Authentication, before any body is read (see guards.py for why it is ASGI middleware): who
is asking goes in the scope under PRINCIPAL_KEY (read with sopflow.gateway.who.principal).

- Under /api/: `Authorization: Bearer <token>`, the configured SOPFLOW_API_TOKEN (ops, user
  "admin") or a user's own token (`sopflow users token`); else 401. A rep or a supervisor may
  call the routes of SCOPED_API only (each scopes its answer to them); the rest is ops' (403).
- Browser pages (BROWSER_PAGES: /dashboard, /inbox, /signout, and /sandbox: the pages of
  `sopflow up`'s sandboxes): the session cookie of /signin;
  without a live one, 303 to `/signin?next=<the page>`. A form POST (any method but GET, HEAD,
  OPTIONS) must carry the session's CSRF token, as the `csrf_token` form field or an
  `X-CSRF-Token` header (the form is read here, capped at MAX_FORM, and handed on as read);
  a cross-site one (`Sec-Fetch-Site: cross-site`) is refused whatever it carries.
Tokens never travel in URLs: only headers and cookies are read.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Sequence
from urllib.parse import parse_qs, urlencode

from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sopflow.gateway.guards import PROTECTED
from sopflow.gateway.who import CSRF_KEY
from sopflow.identity.users import SignedIn, UserBook
from sopflow.principals import ADMIN, PRINCIPAL_KEY, Principal
from sopflow.settings import Secret

SESSION_COOKIE = "sopflow_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
BROWSER_PAGES = ("/dashboard", "/inbox", "/signout", "/sandbox")
SIGNIN = "/signin"
MAX_FORM = 64 * 1024  # a browser form of the dashboard or the inbox is a few hundred bytes
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What reps and supervisors may call under /api/: each route narrows its answer to what they
# may see (listing.py, app.py); anything else there (events, imports, consent, segments,
# reports, referrals) is for ops. A route added for them must be added here.
SCOPED_API: Sequence[tuple[str, re.Pattern[str]]] = (
    ("GET", re.compile(r"/api/v1/(runs|tasks)")),
    ("GET", re.compile(r"/api/v1/runs/[^/]+(/score)?")),
    ("POST", re.compile(r"/api/v1/runs/[^/]+/(outcomes|control)")),
    ("POST", re.compile(r"/api/v1/runs/[^/]+/tasks/[^/]+/call")),
    ("GET", re.compile(r"/api/v1/reports/(reps|funnel|pilots)")),  # the dashboard's, scoped
)


def browser_page(path: str) -> bool:
    return any(path == page or path.startswith(f"{page}/") for page in BROWSER_PAGES)


def scoped(method: str, path: str) -> bool:
    """Whether a rep or a supervisor may call `method path` at all."""
    method = "GET" if method == "HEAD" else method
    return any(m == method and pattern.fullmatch(path) for m, pattern in SCOPED_API)


def _json(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


class Authenticate:
    def __init__(self, app: ASGIApp, token: Secret, users: UserBook) -> None:
        self.app = app
        self.token = token.reveal().encode()
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path.startswith(PROTECTED):
            principal = await self._bearer(Headers(scope=scope))
            if principal is None:
                refusal = _json(
                    401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, send)
                return
            if not principal.sees_everything and not scoped(method, path):
                who = f"a {principal.role.value}"
                await _json(403, f"{who} may not {method} {path}: it is for ops")(
                    scope, receive, send
                )
                return
            scope[PRINCIPAL_KEY] = principal
        elif browser_page(path):
            signed = await self._session(scope)
            if signed is None:
                query = scope.get("query_string", b"").decode("latin-1")
                target = f"{path}?{query}" if query else path
                await RedirectResponse(f"{SIGNIN}?{urlencode({'next': target})}", 303)(
                    scope, receive, send
                )
                return
            scope[PRINCIPAL_KEY] = signed.principal
            scope[CSRF_KEY] = signed.csrf
            if method not in SAFE_METHODS:
                body = await _form_checked(scope, receive, send, signed.csrf)
                if body is None:
                    return
                receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _bearer(self, headers: Headers) -> Principal | None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return None
        if secrets.compare_digest(given.encode(), self.token):
            return ADMIN
        return await asyncio.to_thread(self.users.by_token, given)

    async def _session(self, scope: Scope) -> SignedIn | None:
        cookie = cookie_parser(Headers(scope=scope).get("cookie", "")).get(SESSION_COOKIE)
        if not cookie:
            return None
        return await asyncio.to_thread(self.users.session, cookie)


def _refused(detail: str) -> PlainTextResponse:
    return PlainTextResponse(detail, status_code=403)


async def _form_checked(scope: Scope, receive: Receive, send: Send, csrf: str) -> bytes | None:
    """The request's body when it carries the session's CSRF token; else the refusal is sent
    and None returned."""
    headers = Headers(scope=scope)
    if headers.get("sec-fetch-site") == "cross-site":
        await _refused("refused: a form of another site cannot post here")(scope, receive, send)
        return None
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > MAX_FORM:
            too_large = PlainTextResponse(f"the form is over {MAX_FORM} bytes", status_code=413)
            await too_large(scope, receive, send)
            return None
        if not message.get("more_body", False):
            break
    given = headers.get(CSRF_HEADER)
    if given is None and headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        given = next(iter(parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD, [])), None)
    if not given or not secrets.compare_digest(given.encode(), csrf.encode()):
        await _refused(
            "refused: the form's CSRF token is missing or stale: reload the page and try again"
        )(scope, receive, send)
        return None
    return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then what the client sends next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
