"""`/readyz` asks the phone provider (an authenticated GET through its own client) and the mail
server (connect + NOOP) besides the store and Temporal: the sandboxes down, then up again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from sopflow.asgi import free_port, start_server
from sopflow.gateway.readiness import smtp_probe, twilio_probe
from sopflow.providers.smtp import SmtpConfig
from sopflow.providers.twilio import TwilioConfig, TwilioProvider
from sopflow.sandbox.mail import MailSandbox
from sopflow.sandbox.server import Sandbox

ACCOUNT, TWILIO_TOKEN = "AC" + "1" * 32, "sandbox-token"
SOP = {
    "id": "hello", "version": 1, "name": "Hello", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "steps": [{"id": "wait", "kind": "wait", "duration": "1d"}],
}  # fmt: skip


@dataclass
class Sandboxes:
    """The phone network and the mail server, each on its own port, stopped and started at will."""

    phone_port: int
    mail_port: int
    phones: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
    mail: asyncio.Server | None = None

    async def up(self) -> None:
        self.phones = await start_server(Sandbox({ACCOUNT: TWILIO_TOKEN}).app(), self.phone_port)
        self.mail = await MailSandbox().serve("127.0.0.1", self.mail_port)

    async def down(self) -> None:
        assert self.phones is not None and self.mail is not None
        server, task = self.phones
        server.should_exit = True
        await task
        self.mail.close()
        await self.mail.wait_closed()

    def provider(self, token: str = TWILIO_TOKEN) -> TwilioProvider:
        base = f"http://127.0.0.1:{self.phone_port}"
        return TwilioProvider(TwilioConfig(ACCOUNT, token, "+15005550006", "http://sopflow",
                                           base_url=base, timeout=2))  # fmt: skip

    def smtp(self) -> SmtpConfig:
        return SmtpConfig("127.0.0.1", self.mail_port, "hello@sopflow.test", starttls=False)


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    running = Sandboxes(free_port(), free_port())
    await running.up()
    yield running
    await running.down()


async def test_ready_only_while_the_phone_network_and_the_mail_server_answer(
    gateway: Any, sandboxes: Sandboxes
) -> None:
    provider = sandboxes.provider()
    probes = {"twilio": twilio_probe(provider), "smtp": smtp_probe(sandboxes.smtp())}
    try:
        async with gateway(SOP, "t", probes=probes) as (http, _):
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "ready": True, "store": "ok", "temporal": "ok", "twilio": "ok", "smtp": "ok"
            }  # fmt: skip
            await sandboxes.down()
            down = await http.get("/readyz")
            assert down.status_code == 503
            answer = down.json()
            assert (answer["ready"], answer["store"], answer["temporal"]) == (False, "ok", "ok")
            port, mail_port = sandboxes.phone_port, sandboxes.mail_port
            assert f"Cannot connect to host 127.0.0.1:{port}" in answer["twilio"]
            assert answer["smtp"].startswith("SMTPConnectError: ")
            assert f"127.0.0.1 on port {mail_port}" in answer["smtp"]
            await sandboxes.up()
            again = await http.get("/readyz")
            assert again.status_code == 200, again.text
    finally:
        await provider.close()


async def test_refused_credentials_make_the_gateway_unready_without_saying_them(
    gateway: Any, sandboxes: Sandboxes
) -> None:
    provider = sandboxes.provider(token="not-the-token")
    try:
        async with gateway(SOP, "t", probes={"twilio": twilio_probe(provider)}) as (http, _):
            answer = await http.get("/readyz")
    finally:
        await provider.close()
    assert answer.status_code == 503
    assert answer.json()["twilio"] == (
        "ProbeFailed: Twilio answered 401 (error 20003): "
        "wrong account SID or auth token for this sandbox"
    )
    assert ACCOUNT not in answer.text and "not-the-token" not in answer.text
