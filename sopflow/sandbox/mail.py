"""A mail server on loopback for `sopflow up` and the tests: the email twin of the phone sandbox.

It speaks real SMTP (aiosmtpd), so sopflow's SMTP mailer talks to it exactly as to a relay, keeps
every message in an inbox readable over HTTP, and can press a message's one-click unsubscribe
button the way Gmail does (RFC 8058: a POST of `List-Unsubscribe=One-Click` to the
List-Unsubscribe URL). Behaviour per recipient, like Twilio's magic numbers:
- bounce@… is refused at RCPT with 550 (no such mailbox): a permanent failure;
- full@… is refused with 452 (mailbox full, try later): retried;
- rules set through `POST /sandbox/mailboxes/{address}` refuse an address with a code, or
  acknowledge its messages only after a delay (the message is kept: a client that timed out is
  in doubt).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

SANDBOX_SENDER = "sopflow@sandbox.sopflow.test"  # the From of `sopflow up`'s emails
MAGIC_RCPT = {"bounce": "550 5.1.1 No such mailbox", "full": "452 4.2.2 Mailbox full"}
_URL = re.compile(r"<(https?://[^>]+)>")


class MailboxRule(BaseModel):
    refuse: int | None = Field(None, ge=400, le=599, description="SMTP code RCPT answers with")
    delay: float = Field(
        0.0, ge=0, le=600, description="seconds before the message is acknowledged (a slow relay)"
    )


@dataclass
class Mail:
    id: int
    received_at: datetime
    sender: str
    to: list[str]
    message: EmailMessage
    unsubscribed: str | None = None  # the gateway's answer to the one-click POST

    def view(self) -> dict[str, Any]:
        body = self.message.get_body(("plain",))
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "from": self.sender,
            "to": self.to,
            "subject": str(self.message["Subject"] or ""),
            # As a mail client shows it: line ends are the wire's CRLF, not the text's.
            "text": body.get_content().replace("\r\n", "\n") if body is not None else "",
            "message_id": str(self.message["Message-ID"] or ""),
            "list_unsubscribe": str(self.message["List-Unsubscribe"] or ""),
            "list_unsubscribe_post": str(self.message["List-Unsubscribe-Post"] or ""),
            "unsubscribed": self.unsubscribed,
        }


@dataclass
class MailSandbox:
    inbox: list[Mail] = field(default_factory=list)
    rules: dict[str, MailboxRule] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------ aiosmtpd handler hooks
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        rule = self.rules.get(address.lower())
        if rule is not None and rule.refuse:
            return f"{rule.refuse} refused by the sandbox rule for {address}"
        local = address.split("@", 1)[0].lower()
        if local in MAGIC_RCPT:
            return MAGIC_RCPT[local]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        mail = Mail(
            next(self._ids),
            datetime.now(UTC),
            str(envelope.mail_from),
            list(envelope.rcpt_tos),
            parsed,
        )
        self.inbox.append(mail)
        delays = [r.delay for a in mail.to if (r := self.rules.get(a.lower()))]
        if delays:
            await asyncio.sleep(max(delays))  # taken, but answered late: the sender is in doubt
        return f"250 2.0.0 queued as {mail.id}"

    # ------------------------------------------------------------ server and controls
    async def serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: SMTP(self, hostname="sandbox.sopflow.test"), host, port
        )

    def mailbox(self, address: str) -> list[Mail]:
        wanted = address.lower()
        return [m for m in self.inbox if wanted in (a.lower() for a in m.to)]

    async def one_click(self, mail_id: int) -> Mail:
        """Press the message's unsubscribe button, as a mail client does (RFC 8058 §3.2)."""
        mail = next((m for m in self.inbox if m.id == mail_id), None)
        if mail is None:
            raise HTTPException(404, f"no message {mail_id} in the sandbox")
        found = _URL.search(str(mail.message["List-Unsubscribe"] or ""))
        if found is None or mail.message["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click":
            raise HTTPException(422, f"message {mail_id} offers no one-click unsubscribe")
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                found.group(1), content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
        mail.unsubscribed = f"{answer.status_code} {answer.text[:200]}"
        return mail

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/sandbox")

        @router.get("/mailboxes/{address}/messages")
        async def mailbox(address: str) -> list[dict[str, Any]]:
            """Every email to the address, oldest first (`sopflow sandbox mail` shows it)."""
            return [m.view() for m in self.mailbox(address)]

        @router.post("/mailboxes/{address}")
        async def set_rule(address: str, rule: MailboxRule) -> dict[str, Any]:
            self.rules[address.lower()] = rule
            return {"address": address, **rule.model_dump()}

        @router.post("/mail/{mail_id}/unsubscribe")
        async def unsubscribe(mail_id: int) -> dict[str, Any]:
            return (await self.one_click(mail_id)).view()

        return router
