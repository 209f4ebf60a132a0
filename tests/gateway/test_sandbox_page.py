"""The gateway's sandbox pages, served as `sopflow up` serves them (create_app with the pages added):
an ops user's browser session opens them, as it opens the dashboard; without one the browser is
sent to sign in, a rep or a supervisor is refused, a form without the session's CSRF token is
refused, and the API token in the URL or a form opens nothing. The pages call the sandbox
server-side with the sandbox's credential: with it a number's inbox shows and a reply is a signed
inbound webhook; with a wrong one the page says what the sandbox answered, and nothing is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI, Request
from twilio.request_validator import RequestValidator

from sopflow.asgi import free_port, start_server
from sopflow.gateway.app import create_app
from sopflow.gateway.auth import CSRF_FIELD, SESSION_COOKIE
from sopflow.gateway.sandbox_page import sandbox_page_router
from sopflow.identity.users import UserBook
from sopflow.principals import Role
from sopflow.sandbox.mail import SANDBOX_SENDER, Mail, MailSandbox
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Sandbox
from sopflow.settings import Secret
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory

API_TOKEN, SANDBOX_TOKEN, ANN = "api-secret", "sandbox-secret", "+12125550123"
PASSWORD = "correct horse battery"
ANN_PAGE = f"/sandbox/{ANN}"
ANN_REPLY = f"/sandbox/%2B{ANN[1:]}/reply"  # as the page's form posts it


@dataclass
class Sandboxes:
    phones: Sandbox
    mail: MailSandbox
    url: str
    hooks: str  # the recorder's address: inbound webhooks, one-click unsubscribe POSTs
    webhooks: list[tuple[str, dict[str, str], str]]  # url, form, X-Twilio-Signature
    one_clicks: list[bytes]  # the bodies of the one-click unsubscribe POSTs


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandboxes]:
    """The sandbox network and mail server; the network's inbound webhooks and the mail's
    one-click unsubscribe POSTs go to a recorder (sopflow's /twilio and /unsubscribe stand-in)."""
    webhooks: list[tuple[str, dict[str, str], str]] = []
    one_clicks: list[bytes] = []
    recorder, hook_port = FastAPI(), free_port()

    @recorder.post("/twilio/inbound")
    async def record(request: Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        webhooks.append((str(request.url), form, request.headers.get("x-twilio-signature", "")))
        return {}

    @recorder.post("/unsubscribe/signed")
    async def unsubscribe(request: Request) -> dict[str, str]:
        one_clicks.append(await request.body())
        return {"unsubscribed": "ann"}

    hooks = f"http://127.0.0.1:{hook_port}"
    hook_url = f"{hooks}/twilio/inbound"
    phones, mail, port = (
        Sandbox({SANDBOX_ACCOUNT: SANDBOX_TOKEN}, hook_url),
        MailSandbox(),
        free_port(),
    )
    app = phones.app()
    app.include_router(mail.router(phones.auth))
    hook_server, hook_task = await start_server(recorder, hook_port)
    server, task = await start_server(app, port)
    yield Sandboxes(phones, mail, f"http://127.0.0.1:{port}", hooks, webhooks, one_clicks)
    server.should_exit = hook_server.should_exit = True
    await task
    await hook_task


@dataclass
class Browsers:
    """`open(user, sandbox_token=...)`: a client of the gateway with the pages added, as
    `sopflow up` adds them, signed in as `user` (ops `olga`, supervisor `sue`, rep `ana`) or
    not (None); `csrf`: each user's session CSRF token."""

    open: Callable[..., httpx.AsyncClient]
    csrf: dict[str, str]


@pytest.fixture
async def browser(sandbox: Sandboxes, tmp_path: Path) -> AsyncIterator[Browsers]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    RepDirectory(store.engine).import_teams(
        [{"id": "inside", "supervisor": "sue", "reps": [{"id": "ana"}, {"id": "sue"}]}]
    )
    users = UserBook(store.engine)
    cookies, csrf = {}, {}
    for user, role, rep in (("olga", Role.ops, None), ("sue", Role.supervisor, "sue"),
                            ("ana", Role.rep, "ana")):  # fmt: skip
        users.add(user, role, rep, PASSWORD)
        signed = users.sign_in(user, PASSWORD)
        assert signed is not None
        cookies[user], csrf[user] = signed.cookie, signed.signed_in.csrf

    async def no_temporal() -> Any:
        raise AssertionError("the sandbox pages never ask Temporal")

    clients: list[httpx.AsyncClient] = []

    def open_as(user: str | None, sandbox_token: str = SANDBOX_TOKEN) -> httpx.AsyncClient:
        app = create_app(store, no_temporal, Secret(API_TOKEN), "q")
        app.include_router(sandbox_page_router(sandbox.url, SANDBOX_ACCOUNT, Secret(sandbox_token)))
        jar = {SESSION_COOKIE: cookies[user]} if user else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sopflow", cookies=jar
        )
        clients.append(client)
        return client

    yield Browsers(open_as, csrf)
    for client in clients:
        await client.aclose()


def form_csrf(page: httpx.Response) -> str:
    """The CSRF token the page's forms carry (the first form's: they all carry the same)."""
    marker = f'name={CSRF_FIELD} value="'
    assert marker in page.text, page.text
    return page.text.split(marker, 1)[1].split('"', 1)[0]


def mail(to: str, unsubscribe_url: str) -> Mail:
    """An email as sopflow sends it: with a one-click unsubscribe (RFC 8058)."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SANDBOX_SENDER, to, "Welcome, Ann"
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content("Thanks for signing up.")
    return Mail(1, datetime.now(UTC), SANDBOX_SENDER, [to], message.as_bytes())


def signin_of(page: str) -> str:
    return f"/signin?{urlencode({'next': page})}"


async def test_ops_reads_an_inbox_and_replies_as_the_number_a_signed_webhook(
    sandbox: Sandboxes, browser: Browsers
) -> None:
    await sandbox.phones.inbound(SANDBOX_ACCOUNT, ANN, SANDBOX_FROM, "hello from before")
    sandbox.webhooks.clear()
    async with browser.open("olga") as http:
        inbox = await http.get(ANN_PAGE)
        assert inbox.status_code == 200 and "hello from before" in inbox.text
        assert f'action="{ANN_REPLY}"' in inbox.text and "token=" not in inbox.text
        reply = await http.post(ANN_REPLY, data={"text": "STOP", CSRF_FIELD: form_csrf(inbox)})
        assert reply.status_code == 303, reply.text
        assert reply.headers["location"] == f"/sandbox/%2B{ANN[1:]}"  # back, no token in it
        assert "STOP" in (await http.get(reply.headers["location"])).text
    sent = [r for r in sandbox.phones.resources.values() if r.body == "STOP"]
    assert [(r.from_, r.to, r.account) for r in sent] == [(ANN, SANDBOX_FROM, SANDBOX_ACCOUNT)]
    [(url, form, signature)] = sandbox.webhooks  # the reply reached sopflow as Twilio's webhook
    assert (form["From"], form["To"], form["Body"]) == (ANN, SANDBOX_FROM, "STOP")
    assert RequestValidator(SANDBOX_TOKEN).validate(url, form, signature)


async def test_ops_reads_a_mailbox_and_unsubscribes_with_its_button(
    sandbox: Sandboxes, browser: Browsers
) -> None:
    to = "ann@example.com"
    sandbox.mail.inbox.append(mail(to, f"{sandbox.hooks}/unsubscribe/signed"))
    async with browser.open("olga") as http:
        mailbox = await http.get(f"/sandbox/mail/{to}")
        assert mailbox.status_code == 200 and "Welcome, Ann" in mailbox.text
        assert 'action="/sandbox/mail/1/unsubscribe"' in mailbox.text
        assert "token=" not in mailbox.text
        form = {"address": to, CSRF_FIELD: form_csrf(mailbox)}
        done = await http.post("/sandbox/mail/1/unsubscribe", data=form)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/sandbox/mail/ann%40example.com"
    assert sandbox.one_clicks == [b"List-Unsubscribe=One-Click"]
    assert sandbox.mail.inbox[0].unsubscribed == '200 {"unsubscribed":"ann"}'


async def test_without_a_session_the_browser_is_sent_to_sign_in_and_nothing_is_sent(
    sandbox: Sandboxes, browser: Browsers
) -> None:
    async with browser.open(None) as http:
        for page in (ANN_PAGE, "/sandbox/mail/ann@example.com"):
            answer = await http.get(page)
            assert answer.status_code == 303 and answer.headers["location"] == signin_of(page)
        reply = await http.post(ANN_REPLY, data={"text": "STOP", CSRF_FIELD: "x"})
    assert reply.status_code == 303 and reply.headers["location"].startswith("/signin?next=")
    assert sandbox.phones.resources == {}


async def test_the_api_token_in_the_url_a_form_or_a_bearer_header_opens_nothing(
    sandbox: Sandboxes, browser: Browsers
) -> None:
    """The pages once took `?token=<the API token>`: it is no credential for them now."""
    async with browser.open(None) as http:
        by_url = await http.get(ANN_PAGE, params={"token": API_TOKEN})
        by_bearer = await http.get(ANN_PAGE, headers={"Authorization": f"Bearer {API_TOKEN}"})
        by_form = await http.post(ANN_REPLY, data={"text": "STOP", "token": API_TOKEN})
        by_both = await http.post(
            ANN_REPLY, params={"token": API_TOKEN}, data={"text": "STOP", "token": API_TOKEN}
        )
    for answer in (by_url, by_bearer, by_form, by_both):
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin?")
    assert "hello" not in by_url.text and sandbox.phones.resources == {}


@pytest.mark.parametrize("user", ["sue", "ana"])  # a supervisor, a rep
async def test_a_supervisor_or_a_rep_is_refused(
    sandbox: Sandboxes, browser: Browsers, user: str
) -> None:
    await sandbox.phones.inbound(SANDBOX_ACCOUNT, ANN, SANDBOX_FROM, "hello from before")
    sandbox.mail.inbox.append(mail("ann@example.com", f"{sandbox.hooks}/unsubscribe/signed"))
    token = browser.csrf[user]  # their own session's: the forms' check passes, the role's not
    async with browser.open(user) as http:
        inbox = await http.get(ANN_PAGE)
        mailbox = await http.get("/sandbox/mail/ann@example.com")
        reply = await http.post(ANN_REPLY, data={"text": "STOP", CSRF_FIELD: token})
        form = {"address": "ann@example.com", CSRF_FIELD: token}
        unsubscribe = await http.post("/sandbox/mail/1/unsubscribe", data=form)
    for answer in (inbox, mailbox, reply, unsubscribe):
        assert answer.status_code == 403, answer.text
        assert "ops use them" in answer.json()["detail"]
    assert "hello from before" not in inbox.text
    assert [r.body for r in sandbox.phones.resources.values()] == ["hello from before"]
    assert sandbox.one_clicks == [] and sandbox.mail.inbox[0].unsubscribed is None


async def test_a_form_without_the_sessions_csrf_token_is_refused(
    sandbox: Sandboxes, browser: Browsers
) -> None:
    sandbox.mail.inbox.append(mail("ann@example.com", f"{sandbox.hooks}/unsubscribe/signed"))
    other = browser.csrf["sue"]  # a live token, of another session
    async with browser.open("olga") as http:
        answers = [
            await http.post(ANN_REPLY, data={"text": "STOP", **csrf})
            for csrf in ({}, {CSRF_FIELD: ""}, {CSRF_FIELD: "forged"}, {CSRF_FIELD: other})
        ]
        answers.append(
            await http.post("/sandbox/mail/1/unsubscribe", data={"address": "ann@example.com"})
        )
        cross_site = await http.post(
            ANN_REPLY,
            data={"text": "STOP", CSRF_FIELD: browser.csrf["olga"]},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
    for answer in answers:
        assert answer.status_code == 403 and "CSRF token is missing or stale" in answer.text
    assert cross_site.status_code == 403 and "another site" in cross_site.text
    assert sandbox.phones.resources == {} and sandbox.webhooks == []
    assert sandbox.one_clicks == [] and sandbox.mail.inbox[0].unsubscribed is None


async def test_with_a_wrong_sandbox_token_the_page_says_so_and_sends_nothing(
    sandbox: Sandboxes, browser: Browsers
) -> None:
    async with browser.open("olga", sandbox_token="not-the-token") as http:
        inbox = await http.get(ANN_PAGE)
        form = {"text": "STOP", CSRF_FIELD: browser.csrf["olga"]}
        reply = await http.post(ANN_REPLY, data=form)
    for answer in (inbox, reply):
        assert answer.status_code == 502
        assert answer.json()["detail"].startswith("the sandbox said 401: ")
        assert "wrong account SID or auth token for this sandbox" in answer.json()["detail"]
    assert sandbox.phones.resources == {}
