"""The provider contract, through the real `twilio` SDK against the sandbox phone network:
sends, calls, Twilio's errors and their classes, signed callbacks, lost responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from temporalio.exceptions import ApplicationError
from twilio.request_validator import RequestValidator

from activities.store_effects import StoreEffects
from sopflow.asgi import free_port, start_server
from sopflow.compliance.preflight import Cleared, Refused, clear
from sopflow.providers.base import ProviderError
from sopflow.providers.twilio import TwilioConfig, TwilioProvider, classify
from sopflow.sandbox.server import Sandbox
from sopflow.sop.protocol import SendMessage
from sopflow.sop.rep_view import UNASSIGNED_REP
from sopflow.sop.schema import WhatsAppTemplate
from sopflow.store.repository import Store, connect
from sopflow.upkeep import Upkeep, start_upkeep
from workflows.contracts import CommandInput

ACCOUNT, TOKEN, FROM = "AC" + "0" * 32, "sandbox-token", "+15005550006"
ANN = "+12125550123"


@dataclass
class Phones:
    sandbox: Sandbox
    url: str
    provider: TwilioProvider
    received: list[tuple[str, dict[str, str], bool]] = field(default_factory=list)

    async def control(self, path: str, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(auth=(ACCOUNT, TOKEN)) as client:
            (await client.post(f"{self.url}{path}", json=body)).raise_for_status()

    async def callbacks(self, count: int, wait: float = 5.0) -> list[dict[str, str]]:
        for _ in range(int(wait / 0.05)):
            if len(self.received) >= count:
                break
            await asyncio.sleep(0.05)
        return [params for _, params, _ in self.received]


@pytest.fixture
async def phones() -> AsyncIterator[Phones]:
    """The sandbox, a receiver standing in for the gateway, and the provider pointed at both."""
    hook_port, sandbox_port = free_port(), free_port()
    public = f"http://127.0.0.1:{hook_port}"
    sandbox = Sandbox({ACCOUNT: TOKEN}, inbound_url=f"{public}/twilio/inbound")
    receiver = FastAPI()
    phones_ref: list[Phones] = []

    @receiver.post("/twilio/{kind}")
    async def hook(kind: str, request: Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        valid = RequestValidator(TOKEN).validate(
            str(request.url), form, request.headers.get("X-Twilio-Signature", "")
        )
        phones_ref[0].received.append((kind, form, valid))
        return {}

    url = f"http://127.0.0.1:{sandbox_port}"
    provider = TwilioProvider(
        TwilioConfig(ACCOUNT, TOKEN, FROM, public, whatsapp_from=FROM, base_url=url, timeout=5)
    )
    phones = Phones(sandbox, url, provider)
    phones_ref.append(phones)
    servers = [
        await start_server(receiver, hook_port),
        await start_server(sandbox.app(), sandbox_port),
    ]
    yield phones
    await provider.close()
    for server, task in servers:
        server.should_exit = True
        await task


async def test_a_text_goes_out_and_its_signed_receipts_come_back(phones: Phones) -> None:
    sid = await phones.provider.send_message("sms", ANN, "Hi Ann", "run-1/hi:1:0")
    assert sid.startswith("SM") and phones.sandbox.resources[sid].body == "Hi Ann"
    receipts = await phones.callbacks(2)
    assert [r["MessageStatus"] for r in receipts] == ["sent", "delivered"]
    assert all(valid for _, _, valid in phones.received)  # Twilio's own RequestValidator agrees
    (url, _) = phones.sandbox.callbacks_sent[0]
    assert "key=run-1%2Fhi%3A1%3A0" in url and "exp=" in url


async def test_whatsapp_and_calls(phones: Phones) -> None:
    with pytest.raises(ProviderError) as closed:  # nobody wrote to us: WhatsApp says no
        await phones.provider.send_message("whatsapp", ANN, "Hola", "run-1/w:1:0")
    assert (closed.value.kind, closed.value.code) == ("permanent", 63016)
    template = ("HX" + "ab" * 16, {"1": "Ann"})
    sid = await phones.provider.send_message("whatsapp", ANN, "Hola", "run-1/w:1:0", template)
    assert phones.sandbox.resources[sid].body == f'[content {template[0]}] {{"1": "Ann"}}'
    await phones.sandbox.inbound(ACCOUNT, f"whatsapp:{ANN}", FROM, "hola!")  # opens 24 hours
    sid = await phones.provider.send_message("whatsapp", ANN, "Hola", "run-1/w:1:1")
    assert phones.sandbox.resources[sid].to == f"whatsapp:{ANN}"
    await phones.control(f"/sandbox/numbers/{ANN}", {"call": "voicemail"})
    call = await phones.provider.place_call(ANN, "Hello from Example Home", "run-1/c:1:0")
    assert call.startswith("CA")
    statuses = [r for r in await phones.callbacks(6) if "CallStatus" in r]
    assert [s["CallStatus"] for s in statuses] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert statuses[-1]["AnsweredBy"] == "machine_start" and statuses[-1]["CallDuration"] == "18"
    assert "<Say>Hello from Example Home</Say>" in phones.sandbox.resources[call].body


async def test_a_forged_inbound_text_is_refused_and_nothing_is_signed(phones: Phones) -> None:
    stop = {"from": ANN, "to": FROM, "body": "STOP"}
    async with httpx.AsyncClient() as client:
        for auth in (None, (ACCOUNT, "guess"), ("AC" + "9" * 32, TOKEN)):
            forged = await client.post(f"{phones.url}/sandbox/inbound", json=stop, auth=auth)
            assert forged.status_code == 401 and forged.json()["code"] == 20003
        await asyncio.sleep(0.2)  # a webhook, had one been sent, would have arrived by now
        assert phones.received == [] and phones.sandbox.callbacks_sent == []
        assert phones.sandbox.resources == {}  # nothing recorded either
        sent = await client.post(f"{phones.url}/sandbox/inbound", json=stop, auth=(ACCOUNT, TOKEN))
    assert sent.status_code == 201 and sent.json()["direction"] == "inbound"
    (webhook,) = await phones.callbacks(1)
    assert webhook["Body"] == "STOP" and webhook["AccountSid"] == ACCOUNT
    assert phones.received[0][2]  # signed with the account's token: the gateway believes it


@pytest.mark.parametrize(
    ("to", "kind", "code"),
    [
        ("+15005550001", "permanent", 21211),
        ("+15005550004", "permanent", 21610),
        ("+15005550009", "permanent", 21614),
        ("+15005550003", "configuration", 21408),
    ],
)
async def test_twilio_errors_are_classified(phones: Phones, to: str, kind: str, code: int) -> None:
    with pytest.raises(ProviderError) as error:
        await phones.provider.send_message("sms", to, "Hi", "k")
    assert (error.value.kind, error.value.code) == (kind, code)


async def test_rate_limits_and_server_errors_are_retryable_or_in_doubt(phones: Phones) -> None:
    await phones.control("/sandbox/faults", {"next": ["429", "500"]})
    for expected in ("retryable", "in_doubt"):
        with pytest.raises(ProviderError) as error:
            await phones.provider.send_message("sms", ANN, "Hi", "k")
        assert error.value.kind == expected
    assert phones.sandbox.resources == {}  # neither created anything


async def test_a_lost_response_is_found_by_listing_not_sent_again(phones: Phones) -> None:
    since = datetime.now(UTC)
    await phones.control("/sandbox/faults", {"next": ["lost"]})
    with pytest.raises(ProviderError) as error:
        await phones.provider.send_message("sms", ANN, "Your visit is tomorrow", "run-2/r:1:0")
    assert error.value.kind == "in_doubt"
    (created,) = phones.sandbox.resources.values()  # it went out nonetheless
    found = await phones.provider.find_sent(
        "sms", ANN, "Your visit is tomorrow", "run-2/r:1:0", since
    )
    assert found == created.sid
    other = await phones.provider.find_sent("sms", ANN, "another text", "run-2/x:1:0", since)
    assert other is None
    later = await phones.provider.find_sent(
        "sms", ANN, "Your visit is tomorrow", "k", datetime.now(UTC) + timedelta(minutes=1)
    )
    assert later is None


async def test_a_slow_response_times_out_in_doubt(phones: Phones) -> None:
    await phones.control("/sandbox/faults", {"next": ["slow"], "slow_seconds": 8})
    with pytest.raises(ProviderError) as error:
        await phones.provider.send_message("sms", ANN, "Hi", "run-3/s:1:0")
    assert error.value.kind == "in_doubt"


async def test_wrong_credentials_are_a_configuration_error(phones: Phones) -> None:
    bad = TwilioProvider(
        TwilioConfig(ACCOUNT, "wrong", FROM, "http://127.0.0.1:9", base_url=phones.url)
    )
    try:
        with pytest.raises(ProviderError) as error:
            await bad.send_message("sms", ANN, "Hi", "k")
        assert (error.value.kind, error.value.code) == ("configuration", 20003)
    finally:
        await bad.close()


def test_classification_table() -> None:
    assert classify(429, 20429) == "retryable"
    assert classify(400, 21611) == "retryable"
    assert classify(400, 30034) == "configuration"
    assert classify(503, None) == "in_doubt"
    assert classify(400, 99999) == "permanent"


# ---------------------------------------------------------------- exactly once, in the activity
def _touch(to: str, n: int = 1) -> CommandInput:
    at = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    command = SendMessage(
        at=at,
        step="remind",
        key=f"remind:{n}:0",
        channel="sms",
        body="See you tomorrow",
        planned_at=at,
        context={"contact": {"id": "c-1", "phone": to}},
    )
    return CommandInput(
        workflow_id="sop:t:c-1:k", run_id="r", sop="t", version=1, digest="d",
        command=command, contact_id="c-1", enrolled_at=at,
    )  # fmt: skip


@pytest.fixture
def effects(phones: Phones, tmp_path: Path) -> StoreEffects:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    return StoreEffects(store, phones.provider)


async def test_a_lost_response_is_resolved_on_retry_and_sent_once(
    phones: Phones, effects: StoreEffects
) -> None:
    params = _touch(ANN)
    await phones.control("/sandbox/faults", {"next": ["lost"]})
    with pytest.raises(ApplicationError) as first:
        await effects.perform(
            params.idempotency_key, params, {"text": "See you tomorrow", "to": ANN}
        )
    assert first.value.type == "Provider_in_doubt" and not first.value.non_retryable
    again = await effects.perform(
        params.idempotency_key, params, {"text": "See you tomorrow", "to": ANN}
    )
    (message,) = [r for r in phones.sandbox.resources.values() if r.kind == "message"]
    assert again.status == "done" and again.detail == {"provider_id": message.sid, "resolved": True}
    third = await effects.perform(
        params.idempotency_key, params, {"text": "See you tomorrow", "to": ANN}
    )
    assert third.detail["provider_id"] == message.sid and len(phones.sandbox.resources) == 1


async def test_a_retry_finds_what_the_first_attempt_sent_even_if_it_renders_otherwise(
    phones: Phones, effects: StoreEffects
) -> None:
    """A WhatsApp template went out, its response was lost; before the retry the contact wrote,
    so the retry would send free text: it must find the template message, not send again."""
    params = _whatsapp(template=True)
    await phones.control("/sandbox/faults", {"next": ["lost"]})
    templated = {
        "text": "See you",
        "to": ANN,
        "variables": {"1": "c-1"},
        "whatsapp_template": "HX" + "cd" * 16,
    }
    with pytest.raises(ApplicationError):
        await effects.perform(params.idempotency_key, params, templated)
    again = await effects.perform(params.idempotency_key, params, {"text": "See you", "to": ANN})
    (message,) = [r for r in phones.sandbox.resources.values() if r.kind == "message"]
    assert again.detail == {"provider_id": message.sid, "resolved": True}
    assert message.body.startswith("[content HX")


async def test_a_failure_before_creation_is_sent_on_retry(
    phones: Phones, effects: StoreEffects
) -> None:
    params = _touch(ANN)
    await phones.control("/sandbox/faults", {"next": ["500"]})
    with pytest.raises(ApplicationError):
        await effects.perform(
            params.idempotency_key, params, {"text": "See you tomorrow", "to": ANN}
        )
    again = await effects.perform(
        params.idempotency_key, params, {"text": "See you tomorrow", "to": ANN}
    )
    assert again.status == "done" and len(phones.sandbox.resources) == 1


async def test_an_unsubscribed_number_opts_the_contact_out_everywhere(
    phones: Phones, effects: StoreEffects
) -> None:
    params = _touch("+15005550004")
    result = await effects.perform(
        params.idempotency_key, params, {"text": "See you tomorrow", "to": "+15005550004"}
    )
    assert (result.status, result.detail) == ("blocked", {"rule": "opt_out"})
    assert "21610" in result.reason
    assert set(effects.consent.current("c-1")) == {"sms", "whatsapp", "call", "email"}
    assert effects.store.opted_out_at("c-1") is not None


async def test_a_permanent_refusal_fails_the_touch_once(
    phones: Phones, effects: StoreEffects
) -> None:
    params = _touch("+15005550009")
    first = await effects.perform(
        params.idempotency_key, params, {"text": "See you tomorrow", "to": "+15005550009"}
    )
    assert first.status == "failed" and "21614" in first.reason
    again = await effects.perform(
        params.idempotency_key, params, {"text": "See you tomorrow", "to": "+15005550009"}
    )
    assert again.status == "failed" and phones.sandbox.resources == {}


def test_configuration_from_the_environment() -> None:
    from sopflow.providers.twilio import provider_config

    assert provider_config({}, "https://x") is None  # no account: the sandbox stands in
    with pytest.raises(ProviderError, match="TWILIO_AUTH_TOKEN, TWILIO_FROM is not"):
        provider_config({"TWILIO_ACCOUNT_SID": "AC1"}, "https://x")
    with pytest.raises(ProviderError, match="SOPFLOW_PUBLIC_URL"):
        provider_config(
            {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+1"}, ""
        )
    config = provider_config(
        {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+15005550006"},
        "https://sopflow.example.com",
    )
    assert config is not None and config.base_url is None  # api.twilio.com


def _whatsapp(template: bool) -> CommandInput:
    params = _touch(ANN)
    spec = WhatsAppTemplate(content_sid="HX" + "cd" * 16, variables={"1": "{{ contact.id }}"})
    params.command = params.command.model_copy(
        update={"channel": "whatsapp", "template": spec if template else None}
    )
    return params


async def test_whatsapp_outside_the_session_uses_the_template_or_says_why(
    phones: Phones, effects: StoreEffects
) -> None:
    """The session comes from the store's facts; preflight (as the activity and the simulator
    call it) decides free text, template or a failure with its reason."""

    async def ready(params: CommandInput) -> Cleared | Refused:
        facts = await effects.contact_facts(params, params.command.at, timedelta(0))
        return clear(params.command, None, UNASSIGNED_REP, params.workflow_id, facts)

    bare = _whatsapp(template=False)
    failed = await ready(bare)
    assert isinstance(failed, Refused) and "WhatsApp session is closed" in failed.reason
    templated = _whatsapp(template=True)
    cleared = await ready(templated)
    assert isinstance(cleared, Cleared)
    sent = await effects.perform(templated.idempotency_key + "x", templated, cleared.rendered)
    assert sent.status == "done", sent
    message = phones.sandbox.resources[sent.detail["provider_id"]]
    assert message.body == f'[content HX{"cd" * 16}] {{"1": "c-1"}}'
    # The contact writes on WhatsApp: Twilio (the sandbox) opens the window, and the signed
    # inbound webhook notes it in the store (done by hand here): free text again.
    await phones.sandbox.inbound(ACCOUNT, f"whatsapp:{ANN}", FROM, "ok")
    effects.store.note_whatsapp_inbound(ANN, templated.command.at - timedelta(hours=1))
    again = _whatsapp(template=True)
    again.command = again.command.model_copy(update={"key": "remind:2:0"})
    cleared = await ready(again)
    assert isinstance(cleared, Cleared) and "whatsapp_template" not in cleared.rendered
    free = await effects.perform(again.idempotency_key, again, cleared.rendered)
    assert free.status == "done", free
    assert phones.sandbox.resources[free.detail["provider_id"]].body == "See you tomorrow"


# ---------------------------------------------------------------- upkeep (APScheduler jobs)
async def test_upkeep_finds_a_send_no_attempt_saw_and_abandons_one_never_sent(
    phones: Phones, effects: StoreEffects
) -> None:
    lost, never = _touch(ANN, 1), _touch(ANN, 2)
    never.command = never.command.model_copy(update={"body": "other"})
    await phones.control("/sandbox/faults", {"next": ["lost", "500"]})
    for params, text in ((lost, "See you tomorrow"), (never, "Another text")):
        with pytest.raises(ApplicationError):  # in doubt; suppose no retry ever comes
            await effects.perform(params.idempotency_key, params, {"text": text, "to": ANN})
    upkeep = Upkeep(effects.store, phones.provider)
    soon = datetime.now(UTC) + timedelta(minutes=10)
    assert await upkeep.reconcile_outbox(soon) == {"found": 1, "abandoned": 0, "waiting": 1}
    (message,) = phones.sandbox.resources.values()
    done = effects.store.outbox_begin(lost.idempotency_key, "w", "sms")
    assert (done.status, done.provider_id) == ("done", message.sid)
    later = datetime.now(UTC) + timedelta(hours=2)
    assert await upkeep.reconcile_outbox(later) == {"found": 0, "abandoned": 1, "waiting": 0}
    gone = effects.store.outbox_begin(never.idempotency_key, "w", "sms")
    assert gone.status == "failed" and "never sent" in gone.result["reason"]
    # A retry that comes after all is answered from the row: nothing is sent.
    again = await effects.perform(never.idempotency_key, never, {"text": "Another text", "to": ANN})
    assert again.status == "failed" and len(phones.sandbox.resources) == 1


async def test_upkeep_deploys_edited_sops_and_refuses_reused_versions(
    phones: Phones, effects: StoreEffects, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "sops"
    folder.mkdir()
    sop = (
        "id: hello\nversion: 1\nname: Hello\nowner: qa\nentry: {events: [x]}\n"
        "steps:\n  - {id: hi, kind: sms, body: Hi}\n"
    )
    (folder / "hello.yaml").write_text(sop)
    upkeep = Upkeep(effects.store, phones.provider, folder)
    assert upkeep.redeploy() == ["hello v1"]
    assert upkeep.redeploy() == []  # same digest: nothing to do
    (folder / "hello.yaml").write_text(sop.replace("body: Hi", "body: Hello"))
    assert upkeep.redeploy() == [] and "already deployed with different content" in caplog.text
    (folder / "hello.yaml").write_text(
        sop.replace("body: Hi", "body: Hello").replace("version: 1", "version: 2")
    )
    assert upkeep.redeploy() == ["hello v2"]
    (folder / "broken.yaml").write_text("id: [")
    assert upkeep.redeploy() == [] and "broken.yaml" in caplog.text
    jobs = start_upkeep(upkeep)
    try:
        assert {job.id for job in jobs.scheduler.get_jobs()} == {"reconcile_outbox", "redeploy"}
    finally:
        jobs.scheduler.shutdown(wait=False)
