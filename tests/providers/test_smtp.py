"""The SMTP mailer against the sandbox mail server over real SMTP on loopback: what goes out, and
how each failure is classified (the outbox's retry decision depends on it)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from sopflow.asgi import free_port, start_server
from sopflow.providers.base import ProviderError
from sopflow.providers.smtp import SmtpConfig, SmtpMailer, message_id, smtp_config
from sopflow.sandbox.keep import Keep
from sopflow.sandbox.mail import MailboxRule, MailSandbox

URL = "http://127.0.0.1:8000/unsubscribe/abc.def"


@pytest.fixture
async def mail() -> AsyncIterator[tuple[MailSandbox, SmtpMailer]]:
    sandbox, port = MailSandbox(), free_port()
    server = await sandbox.serve("127.0.0.1", port)
    config = SmtpConfig("127.0.0.1", port, "Acme <hello@acme.example>", starttls=False, timeout=2)
    try:
        yield sandbox, SmtpMailer(config)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_email_arrives_with_its_subject_text_and_one_click_headers(
    mail: tuple[MailSandbox, SmtpMailer],
) -> None:
    sandbox, mailer = mail
    sent = await mailer.send_email(
        "Zoe@Example.com", "Bonjour Zoë", "Merci ☕\nÀ bientôt", "run:s1:1:0", URL
    )
    (received,) = sandbox.mailbox("zoe@example.com")
    view = received.view()
    assert sent == message_id("run:s1:1:0", "acme.example") == view["message_id"]
    assert view["subject"] == "Bonjour Zoë"
    assert view["text"].rstrip("\n") == "Merci ☕\nÀ bientôt"
    assert view["list_unsubscribe"] == f"<{URL}>"
    assert view["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
    assert received.sender == "hello@acme.example"


async def test_a_refused_mailbox_is_permanent_and_a_full_one_is_retried(
    mail: tuple[MailSandbox, SmtpMailer],
) -> None:
    sandbox, mailer = mail
    with pytest.raises(ProviderError) as bounced:
        await mailer.send_email("bounce@example.com", "s", "t", "k1", None)
    assert (bounced.value.kind, bounced.value.code) == ("permanent", 550)
    with pytest.raises(ProviderError) as full:
        await mailer.send_email("full@example.com", "s", "t", "k2", None)
    assert (full.value.kind, full.value.code) == ("retryable", 452)
    sandbox.rules["ann@example.com"] = MailboxRule(refuse=554)
    with pytest.raises(ProviderError) as ruled:
        await mailer.send_email("ann@example.com", "s", "t", "k3", None)
    assert ruled.value.kind == "permanent" and "554" in str(ruled.value)
    assert sandbox.inbox == []  # nothing was taken


async def test_no_server_is_retried_and_a_lost_acknowledgement_is_in_doubt(
    mail: tuple[MailSandbox, SmtpMailer],
) -> None:
    sandbox, mailer = mail
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    nobody = SmtpMailer(SmtpConfig("127.0.0.1", closed.getsockname()[1], "a@b.example"))
    with pytest.raises(ProviderError) as refused:
        await nobody.send_email("ann@example.com", "s", "t", "k", None)
    assert refused.value.kind == "retryable"
    closed.close()
    sandbox.rules["slow@example.com"] = MailboxRule(delay=4)  # past the client's 2 s timeout
    with pytest.raises(ProviderError) as slow:
        await mailer.send_email("slow@example.com", "s", "t", "k4", None)
    assert slow.value.kind == "in_doubt"
    await asyncio.sleep(2.5)
    assert len(sandbox.mailbox("slow@example.com")) == 1  # it did arrive: hence "in doubt"
    assert (
        await mailer.find_sent_email("slow@example.com", "k4", sandbox.inbox[0].received_at) is None
    )


async def test_the_inbox_outlives_a_restart_and_ids_count_on(tmp_path: Path) -> None:
    gateway, gateway_port = FastAPI(), free_port()

    @gateway.post("/unsubscribe/{token}")
    async def unsubscribe(token: str) -> dict[str, str]:
        return {"unsubscribed": token}

    web, web_task = await start_server(gateway, gateway_port)
    link = f"http://127.0.0.1:{gateway_port}/unsubscribe/abc.def"
    path, port = tmp_path / "sandbox.db", free_port()
    keep = Keep(path)
    sandbox = MailSandbox(keep)
    server = await sandbox.serve("127.0.0.1", port)
    mailer = SmtpMailer(SmtpConfig("127.0.0.1", port, "Acme <hello@acme.example>", starttls=False))
    await mailer.send_email("zoe@example.com", "Bonjour Zoë", "Merci ☕", "run:s1:1:0", link)
    await sandbox.one_click(1)  # pressed before the restart: the gateway's answer is kept too
    before = [m.view() for m in sandbox.inbox]
    server.close()
    await server.wait_closed()
    keep.close()

    keep = Keep(path)
    again = MailSandbox(keep)
    server = await again.serve("127.0.0.1", port)
    try:
        assert [m.view() for m in again.mailbox("zoe@example.com")] == before
        assert before[0]["subject"] == "Bonjour Zoë" and before[0]["text"].startswith("Merci ☕")
        assert before[0]["unsubscribed"] == '200 {"unsubscribed":"abc.def"}'
        await mailer.send_email("zoe@example.com", "Encore", "Re-bonjour", "run:s1:2:0", None)
        assert [m.id for m in again.inbox] == [1, 2]  # ids count on: `sandbox unsubscribe 1` holds
    finally:
        server.close()
        await server.wait_closed()
        keep.close()
        web.should_exit = True
        await web_task


def test_smtp_settings_are_checked() -> None:
    assert smtp_config({}) is None
    config = smtp_config(
        {"SOPFLOW_SMTP_HOST": "smtp.example.com", "SOPFLOW_EMAIL_FROM": "Acme <hi@acme.example>"}
    )
    assert config is not None and (config.port, config.domain, config.starttls) == (
        587,
        "acme.example",
        None,
    )
    for env, problem in [
        ({"SOPFLOW_SMTP_HOST": "h"}, "SOPFLOW_EMAIL_FROM"),
        ({"SOPFLOW_SMTP_HOST": "h", "SOPFLOW_EMAIL_FROM": "nobody"}, "is not an address"),
        (
            {
                "SOPFLOW_SMTP_HOST": "h",
                "SOPFLOW_EMAIL_FROM": "a@b.example",
                "SOPFLOW_SMTP_PORT": "x",
            },
            "port",
        ),
        (
            {
                "SOPFLOW_SMTP_HOST": "h",
                "SOPFLOW_EMAIL_FROM": "a@b.example",
                "SOPFLOW_SMTP_STARTTLS": "maybe",
            },
            "STARTTLS",
        ),
    ]:
        with pytest.raises(ProviderError, match=problem) as bad:
            smtp_config(env)
        assert bad.value.kind == "configuration"
