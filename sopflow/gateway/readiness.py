"""Readiness probes for what a gateway depends on besides the store and Temporal: the phone
provider and the mail server. A probe returns when the service answers and raises, with a
message fit for `/readyz` (which anyone may read: no secrets), when it does not. `/readyz` bounds
each with its own timeout."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import aiosmtplib

from sopflow.providers.smtp import SmtpConfig
from sopflow.providers.twilio import TWILIO_API, TwilioProvider

Probe = Callable[[], Awaitable[None]]


class ProbeFailed(Exception):
    """The service answered, but not as a working one does (refused our credentials…)."""


def twilio_probe(provider: TwilioProvider) -> Probe:
    """An authenticated GET through the provider's own client (its host, its credentials): one
    message of the account's list. (The account resource would do as well on Twilio, but the
    sandbox phone network serves only Messages and Calls; this asks the same of both.)"""
    account = provider.config.account_sid
    url = f"{TWILIO_API}/2010-04-01/Accounts/{account}/Messages.json"

    async def probe() -> None:
        answer = await provider.client.request_async("GET", url, params={"PageSize": 1})
        if answer.status_code != 200:  # Twilio's error JSON; its message, not the account's URL
            try:
                said = json.loads(answer.text)
                why = f"(error {said['code']}): {said['message']}"
            except (ValueError, KeyError, TypeError):
                why = "(not Twilio's error JSON)"
            raise ProbeFailed(f"Twilio answered {answer.status_code} {why}")

    return probe


def smtp_probe(config: SmtpConfig) -> Probe:
    """Connect, read the greeting, NOOP, QUIT: the server takes sessions. No STARTTLS or login
    (a probe every few seconds should not cost a TLS handshake; sends check those)."""

    async def probe() -> None:
        client = aiosmtplib.SMTP(
            hostname=config.host, port=config.port, timeout=config.timeout, start_tls=False
        )
        async with client:
            await client.noop()

    return probe
