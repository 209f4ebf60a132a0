"""The sandbox phone network itself: one credential on every route, and a keep that outlives a
restart (messages and calls fetched through the real `twilio` SDK after it)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException

from sopflow.asgi import free_port, start_server
from sopflow.providers.twilio import TwilioConfig, TwilioProvider
from sopflow.sandbox.keep import Keep
from sopflow.sandbox.mail import MailSandbox
from sopflow.sandbox.server import Sandbox

ACCOUNT, TOKEN, FROM = "AC" + "1" * 32, "sandbox-token", "+15005550006"
ANN, BOB = "+12125550123", "+12125550124"


async def test_every_route_refuses_a_request_without_the_credential() -> None:
    """Walks the app's routes, so a control route added later without the check fails here."""
    sandbox = Sandbox({ACCOUNT: TOKEN})
    app = sandbox.app()
    app.include_router(MailSandbox().router(sandbox.auth))
    routes = [(path, method) for path, ops in app.openapi()["paths"].items() for method in ops]
    controls = [path for path, _ in routes if path.startswith("/sandbox/")]
    assert len(controls) == 8 and len(routes) == 16  # 8 Twilio API routes, 8 controls
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        for template, method in routes:
            path = re.sub(r"\{(\w+)\}", lambda m: "1" if m[1] == "mail_id" else m[1], template)
            path = path.replace("account", ACCOUNT)
            bare = await client.request(method, path, json={})
            assert bare.status_code == 401, (method, path, bare.text)
            assert bare.headers["WWW-Authenticate"] == 'Basic realm="sopflow sandbox"'
            assert bare.json()["message"] == (
                f"send HTTP Basic auth: the account SID ({ACCOUNT}) and its auth token "
                "(`sopflow up` keeps it in <data dir>/sandbox_token), e.g. "
                f"curl -u {ACCOUNT}:$(cat .sopflow/sandbox_token)"
            )
            for auth in ((ACCOUNT, "guess"), ("AC" + "2" * 32, TOKEN)):
                wrong = await client.request(method, path, json={}, auth=auth)
                assert wrong.status_code == 401, (method, path, wrong.text)
                assert wrong.json()["message"] == (
                    "wrong account SID or auth token for this sandbox"
                )
        assert sandbox.resources == {} and sandbox.rules == {} and not sandbox.faults
        # A malformed header is not credentials either.
        for header in ("Basic !!!", "Bearer " + TOKEN, "Basic " + "QUM="):
            odd = await client.get("/sandbox/numbers/x/messages", headers={"Authorization": header})
            assert odd.status_code == 401 and "send HTTP Basic auth" in odd.json()["message"]
        allowed = await client.get("/sandbox/numbers/x/messages", auth=(ACCOUNT, TOKEN))
        assert allowed.status_code == 200 and allowed.json() == []


def test_a_sandbox_needs_an_account_with_a_token() -> None:
    for accounts in ({}, {ACCOUNT: ""}):
        with pytest.raises(ValueError, match="at least one account, each with a non-empty token"):
            Sandbox(accounts)


@asynccontextmanager
async def serving(keep: Keep) -> AsyncIterator[tuple[Sandbox, TwilioProvider]]:
    """A sandbox on the keep, and the real SDK pointed at it; stopped on exit."""
    sandbox, port = Sandbox({ACCOUNT: TOKEN}, callbacks=False, keep=keep), free_port()
    sandbox.chaos.step_seconds = 0.01
    server, task = await start_server(sandbox.app(), port)
    config = TwilioConfig(
        ACCOUNT, TOKEN, FROM, "http://127.0.0.1:9", whatsapp_from=FROM,
        base_url=f"http://127.0.0.1:{port}", timeout=5,
    )  # fmt: skip
    provider = TwilioProvider(config)
    try:
        yield sandbox, provider
    finally:
        await provider.close()
        server.should_exit = True
        await task


async def settled(sandbox: Sandbox, sid: str, status: str) -> None:
    for _ in range(200):
        if sandbox.resources[sid].status == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sid} is {sandbox.resources[sid].status}, not {status}")


async def test_messages_and_calls_outlive_a_restart_and_sids_count_on(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    keep = Keep(path)
    async with serving(keep) as (sandbox, provider):
        sms = await provider.send_message("sms", ANN, "Hi Ann", "run-1/hi:1:0")
        call = await provider.place_call(BOB, "Hello Bob", "run-2/call:1:0")
        await sandbox.inbound(ACCOUNT, f"whatsapp:{ANN}", FROM, "hola")  # opens 24 hours
        await settled(sandbox, sms, "delivered")
        await settled(sandbox, call, "completed")
    keep.close()

    keep = Keep(path)  # a new process would see just this: the file
    async with serving(keep) as (sandbox, provider):
        fetched = await provider.client.messages(sms).fetch_async()
        assert (fetched.body, fetched.status, fetched.to) == ("Hi Ann", "delivered", ANN)
        listed = await provider.client.messages.list_async(to=ANN)
        assert [m.sid for m in listed] == [sms]
        (kept_call,) = await provider.client.calls.list_async()
        assert (kept_call.sid, kept_call.status, kept_call.answered_by) == (
            call, "completed", "human",
        )  # fmt: skip
        # The WhatsApp window the person opened before the restart is still open: free text goes.
        whatsapp = await provider.send_message("whatsapp", ANN, "See you", "run-1/wa:1:0")
        again = await provider.send_message("sms", ANN, "Hi again", "run-1/hi:2:0")
        sids = [sms, call, whatsapp, again]
        assert len(set(sids)) == 4 and all(len(sid) == 34 for sid in sids)
        # The counter resumed after the kept resources: SIDs sort in creation order.
        assert [int(sid[2:8]) for sid in sids] == [1, 2, 4, 5]  # 3: the inbound "hola"
        newest = await provider.client.messages.list_async(to=ANN)
        assert [m.sid for m in newest] == [again, sms]  # newest first, as Twilio lists
    keep.close()


async def test_without_a_keep_the_sandbox_lives_in_memory() -> None:
    async with serving(Keep(None)) as (_, provider):
        sid = await provider.send_message("sms", ANN, "Hi Ann", "run-1/hi:1:0")
    async with serving(Keep(None)) as (sandbox, provider):
        with pytest.raises(TwilioRestException) as missing:
            await provider.client.messages(sid).fetch_async()
        assert missing.value.status == 404 and sandbox.resources == {}


async def test_a_restarted_sandbox_goes_on_with_unfinished_walks(tmp_path: Path) -> None:
    """A message and a call caught mid-walk by a stop reach their end after the restart, and
    every callback of their plan goes out (the receipts sopflow's runs wait for)."""
    path = tmp_path / "sandbox.db"

    @asynccontextmanager
    async def network(step_seconds: float) -> AsyncIterator[tuple[Sandbox, TwilioProvider]]:
        keep = Keep(path)
        sandbox, port = Sandbox({ACCOUNT: TOKEN}, keep=keep), free_port()
        sandbox.chaos.step_seconds = step_seconds
        server, task = await start_server(sandbox.app(), port)
        config = TwilioConfig(
            ACCOUNT, TOKEN, FROM, "http://127.0.0.1:9", base_url=f"http://127.0.0.1:{port}",
            timeout=5,
        )  # fmt: skip
        provider = TwilioProvider(config)
        try:
            yield sandbox, provider
        finally:
            await provider.close()
            server.should_exit = True
            await task
            keep.close()

    async with network(step_seconds=60) as (sandbox, provider):  # stopped before any step
        sms = await provider.send_message("sms", ANN, "Hi Ann", "run-1/hi:1:0")
        call = await provider.place_call(BOB, "Hello Bob", "run-2/call:1:0")
        assert sandbox.resources[sms].status == "queued" and sandbox.callbacks_sent == []
    kept = Keep(path)  # and one the stop caught after its first state: it goes on from there
    (doc,) = [d for d in kept.load("twilio") if d["sid"] == sms]
    kept.put("twilio", sms, {**doc, "status": "sent"})
    kept.close()

    async with network(step_seconds=0.01) as (sandbox, provider):
        await settled(sandbox, sms, "delivered")
        await settled(sandbox, call, "completed")
        for _ in range(200):
            if not any(r.plan for r in sandbox.resources.values()):
                break
            await asyncio.sleep(0.01)
        told = [(p.get("MessageSid") or p["CallSid"], p.get("MessageStatus") or p["CallStatus"])
                for _, p in sandbox.callbacks_sent]  # fmt: skip
        assert sorted(s for sid, s in told if sid == sms) == ["delivered", "sent"]
        assert sorted(s for sid, s in told if sid == call) == sorted(
            ["initiated", "ringing", "in-progress", "completed"]
        )
        assert all(not r.plan for r in sandbox.resources.values())  # finished walks end
    async with network(step_seconds=0.01) as (sandbox, _):  # nothing left to resume
        await asyncio.sleep(0.1)
        assert sandbox.callbacks_sent == []
