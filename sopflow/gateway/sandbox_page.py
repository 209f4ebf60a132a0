"""Pages on the gateway for the sandboxes of `sopflow up`: a sandbox number's inbox with a box to
text sopflow from it, as a lead would; a sandbox mailbox with each email's one-click unsubscribe
button, as a mail client shows it. They are browser pages (gateway/auth.py's BROWSER_PAGES): an
ops user's signed-in session opens them, as it opens the dashboard (without one: 303 to
/signin?next=<the page>; a rep or a supervisor gets a 403, for a reply speaks as any lead), and
their forms carry the session's CSRF token. No token travels in their URLs or forms.
The gateway calls the sandbox server-side with the sandbox's own credential (Basic, its account
SID and token), which never reaches the browser."""

from __future__ import annotations

from html import escape
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from sopflow.gateway.auth import CSRF_FIELD
from sopflow.gateway.who import csrf_token, principal
from sopflow.principals import Principal
from sopflow.sandbox.server import SANDBOX_FROM
from sopflow.settings import Secret

PREFIX = "/sandbox"


def operator(request: Request) -> Principal:
    """The signed-in ops user (auth.py has put them in the scope, or sent the browser to sign in)."""
    who = principal(request)
    if not who.sees_everything:
        raise HTTPException(403, "the sandbox pages read and text as any lead: ops use them")
    return who


def sandbox_page_router(sandbox_url: str, sandbox_account: str, sandbox_token: Secret) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(operator)])

    def client(timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=timeout, auth=httpx.BasicAuth(sandbox_account, sandbox_token.reveal())
        )

    def answered(answer: httpx.Response, expected: int) -> httpx.Response:
        if answer.status_code != expected:
            raise HTTPException(502, f"the sandbox said {answer.status_code}: {answer.text}")
        return answer

    async def listing(path: str) -> list[dict[str, Any]]:
        async with client(10) as sandbox:
            answer = await sandbox.get(f"{sandbox_url}/sandbox/{path}/messages")
        return list(answered(answer, 200).json())

    async def act(
        path: str, body: dict[str, str] | None, expected: int, back: str
    ) -> RedirectResponse:
        """Post to the sandbox as the phone or the mail client would, then back to the page."""
        async with client(30) as sandbox:
            answered(await sandbox.post(f"{sandbox_url}/sandbox/{path}", json=body), expected)
        return RedirectResponse(f"{PREFIX}/{back}", status_code=303)

    def page(title: str, heading: str, columns: str, rows: str) -> str:
        return (
            f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>"
            f"<h1>{escape(heading)}</h1><table border=1 cellpadding=4><tr>"
            + "".join(f"<th>{c}</th>" for c in columns.split(","))
            + f"</tr>{rows}</table>"
        )

    def csrf_input(request: Request) -> str:
        return f'<input type=hidden name={CSRF_FIELD} value="{escape(csrf_token(request))}">'

    @router.get("/{number}", response_class=HTMLResponse)
    async def inbox(number: str, request: Request) -> str:
        rows = "".join(
            f"<tr><td>{escape(m['date_created'][5:25])}</td><td>{escape(m['from'])}</td>"
            f"<td>{escape(m['to'])}</td><td>{escape(m['status'])}</td>"
            f"<td>{escape(m['body'])}</td></tr>"
            for m in await listing(f"numbers/{quote(number)}")
        )
        return (
            page(number, f"Sandbox phone {number}", "time,from,to,status,text", rows)
            + f'<form method=post action="{PREFIX}/{quote(number)}/reply">'
            + csrf_input(request)
            + '<input name=text size=60 placeholder="reply as this phone (try STOP)" required>'
            "<button>Send</button></form>"
        )

    @router.get("/mail/{address}", response_class=HTMLResponse)
    async def mailbox(address: str, request: Request) -> str:
        csrf = csrf_input(request)
        rows = "".join(
            f"<tr><td>{escape(m['received_at'][:19])}</td><td>{escape(m['subject'])}</td>"
            f"<td><pre>{escape(m['text'])}</pre></td><td>"
            + (
                escape(m["unsubscribed"])
                if m["unsubscribed"]
                else f'<form method=post action="{PREFIX}/mail/{m["id"]}/unsubscribe">{csrf}'
                f'<input type=hidden name=address value="{escape(address)}">'
                "<button>Unsubscribe</button></form>"
                if m["list_unsubscribe_post"]
                else ""
            )
            + "</td></tr>"
            for m in await listing(f"mailboxes/{quote(address)}")
        )
        columns = "received,subject,text,one-click unsubscribe"
        return page(address, f"Sandbox mailbox {address}", columns, rows)

    @router.post("/mail/{mail_id}/unsubscribe")
    async def unsubscribe(mail_id: int, address: Annotated[str, Form()]) -> RedirectResponse:
        return await act(
            f"mail/{mail_id}/unsubscribe", None, 200, f"mail/{quote(address, safe='')}"
        )

    @router.post("/{number}/reply")
    async def reply(number: str, text: Annotated[str, Form()]) -> RedirectResponse:
        message = {"from": number, "to": SANDBOX_FROM, "body": text}
        return await act("inbound", message, 201, quote(number))

    return router
