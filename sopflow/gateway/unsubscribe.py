"""Email unsubscribe on the gateway: RFC 8058 one-click, and a page for people who click.

- `POST /unsubscribe/{token}` is what a mail client's unsubscribe button sends (body
  `List-Unsubscribe=One-Click`); the footer's link leads to the page, whose button posts the
  same. Either records a revoke of email consent (method `email_one_click`), the same opt-out
  record a STOP writes, so the touch gate blocks every later email to the contact. The other
  channels and the running runs go on, as for any one-channel opt-out.
- `GET` only shows the page: link scanners and previews fetch URLs, and must not unsubscribe.
- The token is signed (sopflow.channels.unsubscribe); a forged or cut one gets 404 and is
  logged. Repeats change nothing (the first time is kept).
"""

from __future__ import annotations

import asyncio
import logging
from html import escape

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from sopflow import metrics
from sopflow.channels.unsubscribe import PATH, UnsubscribeLinks
from sopflow.store.consent import ConsentBook

log = logging.getLogger("sopflow.gateway.unsubscribe")
MAX_BODY = 1024  # the one-click body is 26 bytes; the gateway's BodyLimit enforces it


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>{escape(title)}</title>"
        f"<h1>{escape(title)}</h1>{body}",
        status_code=status,
    )


def unsubscribe_router(links: UnsubscribeLinks, consent: ConsentBook) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def contact_for(token: str, request: Request) -> str:
        contact_id = links.contact_for(token)
        if contact_id is None:
            client = request.client.host if request.client else "?"
            log.warning("refused a forged or damaged unsubscribe link from %s", client)
            raise HTTPException(404, "this unsubscribe link is not valid")
        return contact_id

    @router.get(PATH + "{token}", response_class=HTMLResponse)
    async def page(token: str, request: Request) -> HTMLResponse:
        contact_for(token, request)
        return _page(
            "Unsubscribe from our emails",
            f'<form method=post action="{escape(PATH + token)}">'
            "<input type=hidden name=List-Unsubscribe value=One-Click>"
            "<button>Unsubscribe</button></form>",
        )

    @router.post(PATH + "{token}", response_class=HTMLResponse)
    async def one_click(token: str, request: Request) -> HTMLResponse:
        contact_id = contact_for(token, request)
        changed = await asyncio.to_thread(
            consent.record, contact_id, "revoke", channels=("email",), method="email_one_click"
        )
        if changed:
            log.info("contact %s unsubscribed from email (one click)", contact_id)
            metrics.opt_out("email_unsubscribe")
        return _page("You are unsubscribed", "<p>We will not email you again.</p>")

    return router
