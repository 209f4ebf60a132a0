"""A page on the gateway for a sandbox number (only under `sopflow up` without Twilio): the
number's inbox, and a box to text sopflow from it, as a lead would. It holds the API token in
its URL (`?token=`): a browser cannot send the bearer header, and a reply is a real webhook."""

from __future__ import annotations

import secrets
from html import escape
from typing import Annotated
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Form, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from sopflow.sandbox.server import SANDBOX_FROM
from sopflow.settings import Secret


def sandbox_page_router(sandbox_url: str, api_token: Secret) -> APIRouter:
    router = APIRouter(prefix="/sandbox", include_in_schema=False)

    def check(token: str) -> None:
        if not secrets.compare_digest(token.encode(), api_token.reveal().encode()):
            raise HTTPException(401, "add ?token=<the API token> to the address")

    @router.get("/{number}", response_class=HTMLResponse)
    async def inbox(number: str, token: str = "") -> str:
        check(token)
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{sandbox_url}/sandbox/numbers/{quote(number)}/messages")
        rows = "".join(
            f"<tr><td>{escape(m['date_created'][5:25])}</td><td>{escape(m['from'])}</td>"
            f"<td>{escape(m['to'])}</td><td>{escape(m['status'])}</td>"
            f"<td>{escape(m['body'])}</td></tr>"
            for m in answer.json()
        )
        return (
            f"<!doctype html><meta charset=utf-8><title>{escape(number)}</title>"
            f"<h1>Sandbox phone {escape(number)}</h1>"
            "<table border=1 cellpadding=4><tr><th>time</th><th>from</th><th>to</th>"
            f"<th>status</th><th>text</th></tr>{rows}</table>"
            f'<form method=post action="/sandbox/{quote(number)}/reply">'
            f'<input type=hidden name=token value="{escape(token)}">'
            '<input name=text size=60 placeholder="reply as this phone (try STOP)" required>'
            "<button>Send</button></form>"
        )

    @router.post("/{number}/reply")
    async def reply(
        number: str, text: Annotated[str, Form()], token: Annotated[str, Form()] = ""
    ) -> RedirectResponse:
        check(token)
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{sandbox_url}/sandbox/inbound",
                json={"from": number, "to": SANDBOX_FROM, "body": text},
            )
        if answer.status_code != 201:
            raise HTTPException(502, f"the sandbox said {answer.status_code}: {answer.text}")
        return RedirectResponse(f"/sandbox/{quote(number)}?token={quote(token)}", status_code=303)

    return router
