"""What sopflow needs from a provider. Implementations raise ProviderError, never SDK errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal, Protocol

from sopflow.errors import SopflowError

ErrorKind = Literal["retryable", "permanent", "configuration", "in_doubt"]
Template = tuple[str, Mapping[str, str]]  # (content SID, rendered variables)


class ProviderError(SopflowError):
    """A provider call that did not succeed, classified for the retry decision:
    - retryable: nothing was sent; try again later (rate limits, queue full, 5xx before creation);
    - permanent: this touch can never go to this number (invalid, unsubscribed, landline…);
    - configuration: ours to fix (sender not enabled, permissions, credentials): retry slowly,
      bounded, so touches go out once ops fix it;
    - in_doubt: the request may have created the message or call (timeout, lost response);
      resolve with `find_sent` before any resend.
    `opted_out`: the carrier says the person unsubscribed (they texted STOP to the carrier)."""

    def __init__(
        self, message: str, kind: ErrorKind, code: int | None = None, opted_out: bool = False
    ) -> None:
        super().__init__(message)
        self.kind, self.code, self.opted_out = kind, code, opted_out


class Provider(Protocol):
    async def send_message(
        self, channel: str, to: str, text: str, key: str, template: Template | None = None
    ) -> str:
        """Send an SMS or WhatsApp message (a WhatsApp `template` instead of the text when the
        24-hour session is closed); return the provider's message id."""
        ...

    async def place_call(self, to: str, script: str, key: str) -> str:
        """Start an automated call; return the provider's call id."""
        ...

    async def click_to_call(self, rep_phone: str, lead_phone: str, key: str) -> str:
        """Call the rep, then bridge them to the lead; return the provider's call id."""
        ...

    async def find_sent(
        self, channel: str, to: str, text: str | None, key: str, since: datetime
    ) -> str | None:
        """The id of a message or call this key already created (after a lost response);
        `text` None: match on the recipient and time alone (calls, templates)."""
        ...


class Mailer(Protocol):
    async def send_email(
        self, to: str, subject: str, text: str, key: str, unsubscribe_url: str | None
    ) -> str:
        """Send one email with one-click unsubscribe headers; return its Message-ID."""
        ...

    async def find_sent_email(self, to: str, key: str, since: datetime) -> str | None:
        """The Message-ID of an email this key already sent, when the transport can tell."""
        ...
