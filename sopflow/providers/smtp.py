"""Email through SMTP with aiosmtplib: any relay (Postfix, SES, SendGrid, Mailgun…) or the
sandbox mail server of `sopflow up`.

- Each message carries RFC 8058 one-click unsubscribe headers (`List-Unsubscribe` with the
  signed link, `List-Unsubscribe-Post: List-Unsubscribe=One-Click`): Gmail and Yahoo require them
  of bulk senders, and a mail client's unsubscribe button then POSTs to the gateway. (The relay
  must DKIM-sign the message for clients to show that button; that is the relay's setup.)
- The Message-ID is derived from the touch's key, so a resend after an in-doubt attempt is the
  same message to every receiver that de-duplicates by Message-ID.
- Errors are classified by the SMTP phase: anything before DATA is answered means nothing was
  accepted (4xx and connection problems retry, 5xx are permanent for this address); a lost
  connection or a timeout while the message itself is being taken is in doubt. SMTP has no way
  to ask later whether a message went (`find_sent` answers None), so an in-doubt email is sent
  again under the same Message-ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from sopflow.emails import email_address
from sopflow.providers.base import ErrorKind, ProviderError
from sopflow.settings import Secret


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str  # the From address, e.g. "Acme <hello@acme.example>" or hello@acme.example
    username: str | None = None
    password: Secret | None = None
    starttls: bool | None = None  # None: when the server offers it
    timeout: float = 30.0

    @property
    def domain(self) -> str:
        return self.sender.rsplit("@", 1)[-1].strip(" >")


def smtp_config(env: Mapping[str, str]) -> SmtpConfig | None:
    """SMTP settings from SOPFLOW_SMTP_* variables; None when SOPFLOW_SMTP_HOST is unset."""
    if not env.get("SOPFLOW_SMTP_HOST"):
        return None
    sender = env.get("SOPFLOW_EMAIL_FROM", "")
    if not sender or email_address(sender.rsplit("<", 1)[-1].strip(" >")) is None:
        raise ProviderError(
            f"SOPFLOW_SMTP_HOST is set but SOPFLOW_EMAIL_FROM {sender!r} is not an address",
            "configuration",
        )
    port = env.get("SOPFLOW_SMTP_PORT", "587")
    if not port.isdigit():
        raise ProviderError(f"SOPFLOW_SMTP_PORT {port!r} is not a port number", "configuration")
    tls = env.get("SOPFLOW_SMTP_STARTTLS", "auto").lower()
    if tls not in ("auto", "true", "false"):
        raise ProviderError("SOPFLOW_SMTP_STARTTLS is one of auto, true, false", "configuration")
    password = env.get("SOPFLOW_SMTP_PASSWORD")
    return SmtpConfig(
        host=env["SOPFLOW_SMTP_HOST"],
        port=int(port),
        sender=sender,
        username=env.get("SOPFLOW_SMTP_USERNAME") or None,
        password=Secret(password) if password else None,
        starttls=None if tls == "auto" else tls == "true",
    )


def message_id(key: str, domain: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def _kind(code: int) -> ErrorKind:
    return "retryable" if 400 <= code < 500 else "permanent"


class SmtpMailer:
    """One SMTP session per message: touches are spread out in time, so a held connection would
    mostly sit idle and be dropped by the server."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def compose(
        self, to: str, subject: str, text: str, key: str, unsubscribe_url: str | None
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = message_id(key, self.config.domain)
        if unsubscribe_url:
            message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["X-Sopflow-Key"] = key
        message.set_content(text)
        return message

    async def send_email(
        self, to: str, subject: str, text: str, key: str, unsubscribe_url: str | None
    ) -> str:
        """Send one email; return its Message-ID. Raises ProviderError, classified."""
        message = self.compose(to, subject, text, key, unsubscribe_url)
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            timeout=config.timeout,
            start_tls=config.starttls,
        )
        taken = False  # the server has the message's content (a lost answer is in doubt)
        try:
            async with client:
                if config.username:
                    password = config.password.reveal() if config.password else ""
                    await client.login(config.username, password)
                sender = config.sender.rsplit("<", 1)[-1].strip(" >")
                await client.mail(sender)
                await client.rcpt(to)
                taken = True
                await client.data(message.as_bytes())
        except aiosmtplib.SMTPAuthenticationError as exc:
            message_ = f"SMTP login refused: {exc.message}"
            raise ProviderError(message_, "configuration", exc.code) from None
        except aiosmtplib.SMTPResponseException as exc:  # the server answered with a code
            message_ = f"SMTP {exc.code}: {exc.message}"
            raise ProviderError(message_, _kind(exc.code), exc.code) from None
        except (aiosmtplib.SMTPException, OSError) as exc:  # no answer: connection, timeout
            kind: ErrorKind = "in_doubt" if taken else "retryable"
            raise ProviderError(f"SMTP {type(exc).__name__}: {exc}", kind) from None
        return str(message["Message-ID"])

    async def find_sent_email(self, to: str, key: str, since: datetime) -> str | None:
        return None  # SMTP cannot be asked; a resend keeps the Message-ID (see the docstring)
