"""Twilio through the real `twilio` SDK (async client): SMS, WhatsApp and automated calls.

- Every create carries a status callback URL with the touch's key and an expiry, signed by
  Twilio as part of the URL, so the gateway knows which touch a receipt is about and can refuse
  stale replays.
- Messages get a short `validity_period`: a message stuck in Twilio's queue is dropped rather
  than sent after its window.
- A per-sender limiter spaces creates (Twilio queues beyond a number's rate, and a long queue
  defeats the validity period).
- Errors are classified (ProviderError.kind) from Twilio's codes; a timeout or a 5xx after the
  request was sent is `in_doubt`, and `find_sent` looks the touch up before any resend.
- `base_url` points the SDK's HTTP client at another host: the sandbox phone network.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from sopflow.providers.base import ErrorKind, ProviderError, Template

TWILIO_API = "https://api.twilio.com"
CALLBACK_LIFETIME = timedelta(days=3)  # receipts come within hours; later ones are replays
# Twilio error codes by what sopflow should do about them.
RETRYABLE = {20429, 21611, 30001, 30002}  # 5xx (20500, 20503) are in doubt: see classify
PERMANENT = {21211, 21214, 21217, 21401, 21407, 21421, 21610, 21612, 21614, 30003, 30004,
             30005, 30006, 30007, 63016}  # fmt: skip
CONFIGURATION = {20003, 20404, 21212, 21408, 21606, 21608, 21659, 30034, 63007}
UNSUBSCRIBED = 21610


def classify(status: int, code: int | None) -> ErrorKind:
    if status >= 500:
        return "in_doubt"  # Twilio may have created it before failing
    if code in RETRYABLE or status == 429:
        return "retryable"
    if code in PERMANENT:
        return "permanent"
    if code in CONFIGURATION or status in (401, 403):
        return "configuration"
    return "permanent"  # any other 4xx: this request will not succeed as it is


def _error(exc: TwilioRestException) -> ProviderError:
    kind = classify(exc.status, exc.code)
    return ProviderError(f"Twilio {exc.code}: {exc.msg}", kind, exc.code, exc.code == UNSUBSCRIBED)


class _BaseUrlClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's own async HTTP client, sent to `base_url` instead of api.twilio.com."""

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None

    async def request(self, method: str, url: str, **kwargs: Any) -> Response:
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        kwargs["timeout"] = kwargs.get("timeout") or self.timeout  # the SDK drops its own
        auth = kwargs.pop("auth", None)
        if auth is not None:  # as a header: aiohttp deprecates the BasicAuth the SDK would build
            kwargs["headers"] = {
                **(kwargs.get("headers") or {}),
                "Authorization": aiohttp.encode_basic_auth(*auth),
            }
        return await super().request(method, url, **kwargs)


class _Limiter:
    """At most `rate` creates per second per sender (a minimal spacing, not a burst bucket)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next_free: dict[str, float] = {}
        self.lock = asyncio.Lock()

    async def wait(self, sender: str) -> None:
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free.get(sender, now))
            self.next_free[sender] = start + self.gap
        await asyncio.sleep(start - now)


@dataclass(frozen=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    sms_from: str
    public_url: str  # where Twilio reaches the gateway (callbacks are signed against it)
    whatsapp_from: str | None = None
    call_from: str | None = None
    base_url: str | None = None  # the sandbox; None: api.twilio.com
    timeout: float = 10.0
    validity_seconds: int = 3600
    rate_per_sender: float = 10.0


class TwilioProvider:
    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        self._http: _BaseUrlClient | None = None
        self._client: Client | None = None
        self.limiter = _Limiter(config.rate_per_sender)

    @property
    def client(self) -> Client:
        """The SDK client, made on first use: its aiohttp session needs a running event loop,
        and a gateway is built (`sopflow gateway` checks its configuration) before one runs."""
        if self._client is None:
            self._http = _BaseUrlClient(self.config.base_url, self.config.timeout)
            self._client = Client(
                self.config.account_sid, self.config.auth_token, http_client=self._http
            )
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def callback_url(self, hook: str, key: str) -> str:
        """A webhook URL on the gateway that names the touch and expires (Twilio signs it)."""
        expires = int(time.time() + CALLBACK_LIFETIME.total_seconds())
        return f"{self.config.public_url.rstrip('/')}/twilio/{hook}?" + urlencode(
            {"key": key, "exp": expires}
        )

    def status_callback(self, key: str) -> str:
        return self.callback_url("status", key)

    async def _create(self, kind: str, sender: str, create: Any, **params: Any) -> str:
        await self.limiter.wait(sender)
        try:
            resource = await create(**params)
        except TwilioRestException as exc:
            raise _error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Sent or not? A lost response and a refused connection look alike from here.
            raise ProviderError(f"Twilio {kind} request failed: {exc!r}", "in_doubt") from None
        return str(resource.sid)

    async def send_message(
        self, channel: str, to: str, text: str, key: str, template: Template | None = None
    ) -> str:
        config = self.config
        if channel == "whatsapp":
            if not config.whatsapp_from:
                raise ProviderError("no WhatsApp sender configured", "configuration")
            sender, to = f"whatsapp:{config.whatsapp_from}", f"whatsapp:{to}"
        else:
            sender = config.sms_from
        content: dict[str, Any] = {"body": text}
        if template is not None:  # WhatsApp outside the 24-hour session: the approved template
            content = {"content_sid": template[0], "content_variables": json.dumps(template[1])}
        return await self._create(
            "message",
            sender,
            self.client.messages.create_async,
            to=to,
            from_=sender,
            status_callback=self.status_callback(key),
            validity_period=config.validity_seconds,
            **content,
        )

    async def place_call(self, to: str, script: str, key: str) -> str:
        sender = self.config.call_from or self.config.sms_from
        twiml = VoiceResponse()
        twiml.say(script)
        return await self._create(
            "call",
            sender,
            self.client.calls.create_async,
            to=to,
            from_=sender,
            twiml=str(twiml),
            machine_detection="Enable",
            status_callback=self.status_callback(key),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
        )

    async def click_to_call(self, rep_phone: str, lead_phone: str, key: str) -> str:
        """Call the rep; when they answer, dial the lead. The lead leg's result (connected,
        no-answer, busy…) comes to /twilio/voice?key=…; the rep leg's statuses to /status."""
        sender = self.config.call_from or self.config.sms_from
        twiml = VoiceResponse()
        twiml.say("Connecting you to your lead.")
        twiml.dial(lead_phone, action=self.callback_url("voice", key), caller_id=sender)
        return await self._create(
            "call",
            sender,
            self.client.calls.create_async,
            to=rep_phone,
            from_=sender,
            twiml=str(twiml),
            status_callback=self.status_callback(f"{key}/rep"),
            status_callback_event=["initiated", "ringing", "answered", "completed"],
        )

    async def find_sent(
        self, channel: str, to: str, text: str | None, key: str, since: datetime
    ) -> str | None:
        """After a lost response: the message to `to` with this text created since the claim
        (sopflow renders one text per key), or the call (or template message: its text is
        Twilio's rendering) to `to` created since then."""
        try:
            if channel == "call":
                calls = await self.client.calls.list_async(to=to, limit=50)
                found = [c for c in calls if _after(c.date_created, since)]
            else:
                target = f"whatsapp:{to}" if channel == "whatsapp" else to
                messages = await self.client.messages.list_async(to=target, limit=50)
                found = [
                    m
                    for m in messages
                    if (text is None or m.body == text) and _after(m.date_created, since)
                ]
        except TwilioRestException as exc:
            raise _error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(f"cannot list Twilio {channel}s: {exc!r}", "retryable") from None
        return str(found[-1].sid) if found else None  # the oldest match: the first create


def _after(created: datetime | str | None, since: datetime) -> bool:
    if created is None:
        return False
    if isinstance(created, str):
        created = parsedate_to_datetime(created)
    return created >= since - timedelta(seconds=5)  # clocks differ a little


def provider_config(env: Mapping[str, str], public_url: str) -> TwilioConfig | None:
    """Twilio settings from TWILIO_* variables; None when none are set (use the sandbox)."""
    if not env.get("TWILIO_ACCOUNT_SID"):
        return None
    missing = [n for n in ("TWILIO_AUTH_TOKEN", "TWILIO_FROM") if not env.get(n)]
    if not public_url:
        missing.append("SOPFLOW_PUBLIC_URL (where Twilio reaches the gateway)")
    if missing:
        raise ProviderError(
            f"TWILIO_ACCOUNT_SID is set but {', '.join(missing)} is not", "configuration"
        )
    rate = env.get("TWILIO_SEND_RATE", "10")
    try:
        per_sender = float(rate)
    except ValueError:
        per_sender = -1.0
    if not 0 <= per_sender <= 10_000:
        raise ProviderError(
            f"TWILIO_SEND_RATE={rate!r}: sends per second per sender, a number from 0 (no limit) "
            "to 10000",
            "configuration",
        )
    return TwilioConfig(
        account_sid=env["TWILIO_ACCOUNT_SID"],
        auth_token=env["TWILIO_AUTH_TOKEN"],
        sms_from=env["TWILIO_FROM"],
        public_url=public_url,
        whatsapp_from=env.get("TWILIO_WHATSAPP_FROM"),
        call_from=env.get("TWILIO_CALL_FROM"),
        base_url=env.get("TWILIO_BASE_URL"),
        rate_per_sender=per_sender,
    )
