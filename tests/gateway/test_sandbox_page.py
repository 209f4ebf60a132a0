"""The gateway's sandbox pages call the sandbox server-side with the sandbox's credential: with
it a number's inbox shows and a reply is sent; with a wrong one the page says what the sandbox
answered, and nothing is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from sopflow.asgi import free_port, start_server
from sopflow.gateway.sandbox_page import sandbox_page_router
from sopflow.sandbox.mail import MailSandbox
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Sandbox
from sopflow.settings import Secret

API_TOKEN, SANDBOX_TOKEN, ANN = "api-secret", "sandbox-secret", "+12125550123"


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[Sandbox, str]]:
    phones, port = Sandbox({SANDBOX_ACCOUNT: SANDBOX_TOKEN}), free_port()
    app = phones.app()
    app.include_router(MailSandbox().router(phones.auth))
    server, task = await start_server(app, port)
    yield phones, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def pages(url: str, sandbox_token: str) -> httpx.AsyncClient:
    app = FastAPI()
    router = sandbox_page_router(url, Secret(API_TOKEN), SANDBOX_ACCOUNT, Secret(sandbox_token))
    app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sopflow")


async def test_the_pages_read_and_reply_with_the_sandbox_credential(
    sandbox: tuple[Sandbox, str],
) -> None:
    phones, url = sandbox
    await phones.inbound(SANDBOX_ACCOUNT, ANN, SANDBOX_FROM, "hello from before")
    async with pages(url, SANDBOX_TOKEN) as http:
        inbox = await http.get(f"/sandbox/{ANN}", params={"token": API_TOKEN})
        assert inbox.status_code == 200 and "hello from before" in inbox.text
        mailbox = await http.get("/sandbox/mail/ann@example.com", params={"token": API_TOKEN})
        assert mailbox.status_code == 200 and "Sandbox mailbox ann@example.com" in mailbox.text
        reply = await http.post(f"/sandbox/{ANN}/reply", data={"text": "STOP", "token": API_TOKEN})
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/sandbox/%2B{ANN[1:]}?token={API_TOKEN}"
    sent = [r for r in phones.resources.values() if r.body == "STOP"]
    assert [(r.from_, r.to, r.account) for r in sent] == [(ANN, SANDBOX_FROM, SANDBOX_ACCOUNT)]


async def test_with_a_wrong_sandbox_token_the_page_says_so_and_sends_nothing(
    sandbox: tuple[Sandbox, str],
) -> None:
    phones, url = sandbox
    async with pages(url, "not-the-token") as http:
        inbox = await http.get(f"/sandbox/{ANN}", params={"token": API_TOKEN})
        reply = await http.post(f"/sandbox/{ANN}/reply", data={"text": "STOP", "token": API_TOKEN})
    for answer in (inbox, reply):
        assert answer.status_code == 502
        assert answer.json()["detail"].startswith("the sandbox said 401: ")
        assert "wrong account SID or auth token for this sandbox" in answer.json()["detail"]
    assert phones.resources == {}
