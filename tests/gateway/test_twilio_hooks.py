"""Twilio's webhooks on the gateway, signed with Twilio's own RequestValidator, behind a proxy
whose public URL differs from the one the app sees."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment
from twilio.request_validator import RequestValidator

from sopflow.gateway.app import create_app
from sopflow.gateway.twilio_hooks import TwilioHooks, call_outcome
from sopflow.settings import Secret
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store, connect

TOKEN, TWILIO_TOKEN = "api-token", "twilio-auth-token"
PUBLIC = "https://sopflow.example.com"  # what Twilio calls; the app itself sees http://sopflow
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANN = "+12125550123"
SOP = {
    "id": "call_new_lead", "version": 1, "name": "Call", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "interrupts": {"opted_out": "stopped"},
    "steps": [
        {"id": "call_lead", "kind": "task", "title": "Call", "due_within": "30m",
         "outcomes": ["connected"], "on_outcome": {"connected": "won"}},
        {"id": "won", "kind": "end", "result": "converted"},
        {"id": "stopped", "kind": "end", "result": "opted_out"},
    ],
}  # fmt: skip


@dataclass
class Hooks:
    http: httpx.AsyncClient
    store: Store
    env: WorkflowEnvironment

    async def post(
        self, path: str, params: dict[str, str], signature: str | None = None, **query: Any
    ) -> httpx.Response:
        suffix = f"?{urlencode(query)}" if query else ""
        if signature is None:
            signature = RequestValidator(TWILIO_TOKEN).compute_signature(
                PUBLIC + path + suffix, params
            )
        return await self.http.post(
            path + suffix, data=params, headers={"X-Twilio-Signature": signature}
        )

    async def enrol(self, key: str) -> str:
        event = {"type": "lead.created", "idempotency_key": key,
                 "contact": {"id": "c-1", "first_name": "Ann", "phone": ANN}}  # fmt: skip
        answer = await self.http.post("/api/v1/events", json=event, headers=AUTH)
        return str(answer.json()["enrolled"][0]["run_id"])


@pytest.fixture
async def hooks(gateway: Any, live_env: WorkflowEnvironment) -> AsyncIterator[Hooks]:
    async with gateway(SOP, TOKEN, twilio=TwilioHooks(TWILIO_TOKEN, PUBLIC)) as (http, store):
        yield Hooks(http, store, live_env)


def inbound(body: str, sid: str = "SM1", sender: str = ANN) -> dict[str, str]:
    return {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body,
            "AccountSid": "AC1", "NumMedia": "0"}  # fmt: skip


async def test_forged_unsigned_and_misaddressed_requests_are_refused(hooks: Hooks) -> None:
    stop = inbound("STOP")
    wrong_url = RequestValidator(TWILIO_TOKEN).compute_signature(
        "http://sopflow/twilio/inbound", stop
    )  # signed for the URL the app sees, not the one Twilio called
    wrong_key = RequestValidator("not-the-token").compute_signature(
        PUBLIC + "/twilio/inbound", stop
    )
    for signature in ("", wrong_url, wrong_key):
        answer = await hooks.post("/twilio/inbound", stop, signature=signature)
        assert answer.status_code == 403 and "invalid Twilio signature" in answer.text
    tampered = await hooks.http.post(
        "/twilio/inbound",
        data={**stop, "Body": "hello"},
        headers={"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(
            PUBLIC + "/twilio/inbound", stop)},
    )  # fmt: skip
    assert tampered.status_code == 403
    assert ConsentBook(hooks.store.engine).listed(ANN) is None  # nothing acted on


async def test_stop_opts_out_everywhere_and_ends_the_run_once(hooks: Hooks) -> None:
    run_id = await hooks.enrol("e1")
    answer = await hooks.post("/twilio/inbound", inbound(" stop "))
    assert answer.status_code == 200 and "<Response></Response>" in answer.text
    again = await hooks.post("/twilio/inbound", inbound(" stop "))  # Twilio retried
    assert again.status_code == 200
    result = await hooks.env.client.get_workflow_handle(run_id).result()
    assert result["result"] == "opted_out"
    book = ConsentBook(hooks.store.engine)
    assert {c: s["action"] for c, s in book.current("c-1").items()} == dict.fromkeys(
        ("sms", "whatsapp", "call", "email"),
        "revoke",  # STOP: every channel
    )
    assert [e.method for e in book.history("c-1")] == ["sms_stop"]
    start = await hooks.post("/twilio/inbound", inbound("Start", sid="SM2"))
    assert start.status_code == 200 and book.opted_out_since("c-1", "sms") is None


async def test_stop_in_chinese_and_from_a_stranger_lists_the_number(hooks: Hooks) -> None:
    stranger = "+8613812345678"
    answer = await hooks.post("/twilio/inbound", inbound("退订", sid="SM9", sender=stranger))
    assert answer.status_code == 200
    assert ConsentBook(hooks.store.engine).listed(stranger) == "internal"
    brand = await hooks.post("/twilio/inbound", inbound("STOP", sid="SM10", sender="ACME"))
    assert brand.status_code == 200  # a sender id that is no number: nothing to list, no error


async def test_help_gets_the_help_text_and_other_replies_reach_the_runs(hooks: Hooks) -> None:
    help_answer = await hooks.post("/twilio/inbound", inbound("HELP", sid="SM3"))
    assert "<Message>Reply STOP to stop messages" in help_answer.text
    run_id = await hooks.enrol("e2")
    await hooks.post("/twilio/inbound", inbound("Call me after 5 please", sid="SM4"))
    # A signal that arrives while a workflow task is open (the run's first one, recording its
    # enrolment as a local activity) joins the history when that task completes: wait for it.
    for _ in range(100):
        history = await hooks.env.client.get_workflow_handle(run_id).fetch_history()
        signals = [
            e.workflow_execution_signaled_event_attributes
            for e in history.events
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        if signals:
            break
        await asyncio.sleep(0.1)
    assert [s.signal_name for s in signals] == ["contact_event"]
    assert b"Call me after 5 please" in signals[0].input.payloads[0].data


async def test_status_callbacks_merge_by_rank_ignore_duplicates_and_refuse_stale(
    hooks: Hooks,
) -> None:
    key = "sop:x:c-1:k/hi:1:0"
    hooks.store.outbox_begin(key, "sop:x:c-1:k", "sms")
    fresh = int(time.time()) + 3600

    def receipt(status: str) -> dict[str, str]:
        return {"MessageSid": "SM7", "MessageStatus": status, "AccountSid": "AC1"}

    for status in ("delivered", "sent", "delivered"):  # out of order, then a duplicate
        answer = await hooks.post("/twilio/status", receipt(status), key=key, exp=fresh)
        assert answer.status_code == 200
    state = hooks.store.outbox_begin(key, "sop:x:c-1:k", "sms")
    assert state.result == {"provider_status": "delivered", "status_rank": 4}
    stale = await hooks.post("/twilio/status", receipt("read"), key=key, exp=int(time.time()) - 1)
    assert stale.status_code == 403 and "stale" in stale.text
    missing = await hooks.post("/twilio/status", {"AccountSid": "AC1"}, key=key, exp=fresh)
    assert missing.status_code == 400
    unknown = await hooks.post("/twilio/status", receipt("sent"), key="nope/x:1:0", exp=fresh)
    assert unknown.status_code == 200  # not ours: nothing to do


async def test_oversized_and_malformed_bodies_are_4xx(hooks: Hooks) -> None:
    big = await hooks.http.post(
        "/twilio/inbound", content=b"Body=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )  # fmt: skip
    assert big.status_code == 413
    no_sid = await hooks.post("/twilio/inbound", {"From": ANN, "Body": "hi"})
    assert no_sid.status_code == 400


def test_call_outcomes_from_carrier_statuses() -> None:
    assert call_outcome("completed", "human") == "connected"
    assert call_outcome("completed", "machine_end_beep") == "voicemail"
    assert call_outcome("no-answer", None) == "no_answer"
    assert call_outcome("busy", None) == "busy"
    assert call_outcome("canceled", None) == "failed"


@functools.cache
def _fuzz_app() -> Any:
    store = Store(connect("sqlite://"))
    store.migrate()

    async def no_temporal() -> Any:
        raise AssertionError("an unsigned webhook reached Temporal")

    return create_app(store, no_temporal, Secret(TOKEN), "q", TwilioHooks(TWILIO_TOKEN, PUBLIC))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=200), max_size=8),
    signature=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
def test_fuzzed_webhooks_never_crash_and_never_pass_unsigned(
    params: dict[str, str], signature: str
) -> None:
    """Any form, any signature header: a 4xx, never a 5xx, never acted on."""
    app = _fuzz_app()

    async def send() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
            codes = []
            for path in ("/twilio/inbound", "/twilio/status?key=a%2Fb&exp=9999999999"):
                answer = await client.post(
                    path, data=params, headers={"X-Twilio-Signature": signature}
                )
                codes.append(answer.status_code)
            return codes

    codes = asyncio.run(send())
    assert all(400 <= code < 500 for code in codes), codes


async def test_a_whatsapp_message_opens_the_24_hour_window(hooks: Hooks) -> None:
    from datetime import UTC, datetime, timedelta

    from sopflow.compliance.gate import ContactFacts
    from sopflow.compliance.preflight import whatsapp_session_open

    def session_open(at: datetime) -> bool:
        facts = ContactFacts(whatsapp_inbound_at=hooks.store.whatsapp_inbound_at(ANN))
        return whatsapp_session_open(facts, at)

    now = datetime.now(UTC)
    assert not session_open(now)
    answer = await hooks.post(
        "/twilio/inbound", inbound("hola", sid="SMW1", sender=f"whatsapp:{ANN}")
    )
    assert answer.status_code == 200
    assert session_open(now + timedelta(minutes=1))
    assert not session_open(now + timedelta(hours=25))


async def test_a_webhook_that_fails_midway_is_processed_again_on_twilios_retry(
    live_env: WorkflowEnvironment, tmp_path: Any
) -> None:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.upsert_contact({"id": "c-1", "phone": ANN})
    calls: list[int] = []

    async def flaky_temporal() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Temporal is restarting")
        return live_env.client

    app = create_app(store, flaky_temporal, Secret(TOKEN), "q", TwilioHooks(TWILIO_TOKEN, PUBLIC))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as http:
        hooks = Hooks(http, store, live_env)
        failed = await hooks.post("/twilio/inbound", inbound("STOP", sid="SMR1"))
        assert failed.status_code == 500
        assert ConsentBook(store.engine).history("c-1") == []
        retried = await hooks.post("/twilio/inbound", inbound("STOP", sid="SMR1"))
        assert retried.status_code == 200  # not taken for a duplicate: the STOP is kept
        assert ConsentBook(store.engine).opted_out_since("c-1", "sms") is not None
        again = await hooks.post("/twilio/inbound", inbound("STOP", sid="SMR1"))
        assert again.status_code == 200 and len(ConsentBook(store.engine).history("c-1")) == 1
