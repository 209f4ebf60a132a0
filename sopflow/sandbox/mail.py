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
Its HTTP routes ask for the phone sandbox's credential (`auth.AccountAuth`). Every message taken
is written to the `Keep` it is given before the 250 goes out, and read back on start: a restart
of the stack keeps the inbox, and ids count on.
"""

from __future__ import annotations

import asyncio
import base64
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
from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from sopflow.sandbox.auth import AccountAuth
from sopflow.sandbox.keep import Keep

SANDBOX_SENDER = "sopflow@sandbox.sopflow.test"  # the From of `sopflow up`'s emails
MAGIC_RCPT = {"bounce": "550 5.1.1 No such mailbox", "full": "452 4.2.2 Mailbox full"}
_URL = re.compile(r"<(https?://[^>]+)>")
KEPT_MAIL = "mail"  # the keep's kind for the inbox


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
    raw: bytes  # as it came over the wire: what the keep stores, and `message` is parsed from
    unsubscribed: str | None = None  # the gateway's answer to the one-click POST
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)  # what policy.default builds
        self.message = parsed

    def doc(self) -> dict[str, Any]:
        """As the keep stores it (the raw message in base64: it may be 8-bit)."""
        return {
            "id": self.id, "received_at": self.received_at.isoformat(), "sender": self.sender,
            "to": self.to, "raw": base64.b64encode(self.raw).decode(),
            "unsubscribed": self.unsubscribed,
        }  # fmt: skip

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Mail:
        return cls(
            doc["id"], datetime.fromisoformat(doc["received_at"]), doc["sender"], doc["to"],
            base64.b64decode(doc["raw"]), doc["unsubscribed"],
        )  # fmt: skip

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


class MailSandbox:
    def __init__(self, keep: Keep | None = None) -> None:
        self.keep = keep or Keep(None)  # not ours to close: `sopflow up` (or a test) owns it
        self.inbox = [Mail.from_doc(doc) for doc in self.keep.load(KEPT_MAIL)]
        self.rules: dict[str, MailboxRule] = {}
        self._ids = itertools.count(max((m.id for m in self.inbox), default=0) + 1)

    def _record(self, mail: Mail) -> None:
        self.keep.put(KEPT_MAIL, str(mail.id), mail.doc())

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
        mail = Mail(
            next(self._ids),
            datetime.now(UTC),
            str(envelope.mail_from),
            list(envelope.rcpt_tos),
            raw,
        )
        self._record(mail)  # kept before the 250: what the sender was told it sent, stays
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
        self._record(mail)
        return mail

    def router(self, auth: AccountAuth) -> APIRouter:
        """The mailbox routes, behind the sandbox's credential (the phone network's, when both
        are served together)."""
        router = APIRouter(prefix="/sandbox", dependencies=[Depends(auth)])

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
