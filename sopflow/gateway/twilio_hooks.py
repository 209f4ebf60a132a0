"""Twilio's webhooks on the gateway: delivery and call statuses, inbound messages.

Every request must carry a valid X-Twilio-Signature for the URL Twilio called, rebuilt from the
configured public base URL (so it is right behind a TLS-terminating proxy, where the request's
own URL says http://127.0.0.1). Forged, unsigned or stale requests get 403, are logged and are
never acted on. Duplicates (Twilio retries; the sandbox duplicates on purpose) are no-ops, keyed
by MessageSid + status or CallSid + SequenceNumber. Statuses arrive out of order: a status only
reaches the run when it ranks above the last one seen for that touch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import assert_never
from xml.sax.saxutils import escape

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from sopflow import metrics
from sopflow.channels.adapters import adapter
from sopflow.gateway.signals import signal_run, tell_runs
from sopflow.metrics import WebhookKind
from sopflow.phones import e164
from sopflow.sop.protocol import CARRIER
from sopflow.store.consent import INTERNAL_LIST, ConsentBook
from sopflow.store.repository import Store
from workflows.contracts import ContactEventSignal, OutcomeRequest, ProviderEventSignal

log = logging.getLogger("sopflow.gateway.twilio")
MAX_BODY = 64 * 1024  # enforced by the gateway's BodyLimit, before the body is read
RANK = {
    "queued": 0, "accepted": 0, "scheduled": 0, "sending": 1, "initiated": 1, "ringing": 2,
    "sent": 2, "in-progress": 3, "delivered": 4, "undelivered": 4, "failed": 4, "canceled": 4,
    "completed": 4, "busy": 4, "no-answer": 4, "read": 5,
}  # fmt: skip
FINAL_CALL = {"completed", "busy", "no-answer", "failed", "canceled"}


@dataclass(frozen=True)
class TwilioHooks:
    auth_token: str
    public_url: str  # e.g. https://sopflow.example.com (what Twilio calls)
    help_text: str = "Reply STOP to stop messages, START to resume. Questions? Call us."


def call_outcome(status: str, answered_by: str | None) -> str:
    """A finished call's outcome in the SOP's words."""
    if status == "completed":
        return "voicemail" if answered_by and answered_by.startswith("machine") else "connected"
    return {"busy": "busy", "no-answer": "no_answer"}.get(status, "failed")


def twiml(inner: str = "") -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>',
                    media_type="application/xml")  # fmt: skip


HANGUP = "<Hangup/>"


def twilio_router(
    hooks: TwilioHooks, store: Store, temporal: Callable[[], Awaitable[Client]]
) -> APIRouter:
    router = APIRouter(prefix="/twilio", include_in_schema=False)
    validator = RequestValidator(hooks.auth_token)
    consent = ConsentBook(store.engine)

    async def verified_form(request: Request, kind: WebhookKind) -> dict[str, str]:
        try:
            form = {k: str(v) for k, v in (await request.form()).items()}
        except Exception:  # malformed multipart / encoding: not Twilio's
            metrics.twilio_webhook(kind, "malformed")
            raise HTTPException(400, "malformed form body") from None
        url = hooks.public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(url, form, signature):
            client = request.client.host if request.client else "?"
            log.warning("refused an unsigned or forged Twilio webhook to %s from %s", url, client)
            metrics.twilio_webhook(kind, "forged")
            raise HTTPException(403, "invalid Twilio signature")
        return form

    async def once(
        kind: WebhookKind, key: str, form: Mapping[str, str], work: Callable[[], Awaitable[str]]
    ) -> Response:
        """Run `work` (which answers TwiML) once per key: a duplicate gets an empty answer, one
        that arrives while the first is in flight a 409 (Twilio retries), and a failure forgets
        the key so Twilio's retry is processed afresh — nothing is lost."""
        token, answer = await asyncio.to_thread(store.event_begin, key, "twilio", "", dict(form))
        if token is None:
            metrics.twilio_webhook(kind, "duplicate" if answer is not None else "in_flight")
            if answer is None:
                raise HTTPException(409, "this webhook is being processed: retry")
            return twiml()
        try:
            inner = await work()
        except BaseException:
            metrics.twilio_webhook(kind, "failed")
            await asyncio.to_thread(store.event_abandon, key, token)
            raise
        await asyncio.to_thread(store.event_finish, key, token, {"ok": True})
        metrics.twilio_webhook(kind, "processed")
        return twiml(inner)

    @router.post("/status")
    async def status(request: Request, key: str, exp: int) -> Response:
        form = await verified_form(request, "status")  # the signature covers key and exp
        if exp < time.time():
            log.warning("refused a stale Twilio status callback for %s", key)
            metrics.twilio_webhook("status", "stale")
            raise HTTPException(403, "stale status callback")
        sid = form.get("MessageSid") or form.get("CallSid")
        state = form.get("MessageStatus") or form.get("CallStatus")
        if not sid or not state:
            metrics.twilio_webhook("status", "malformed")
            raise HTTPException(400, "MessageSid/MessageStatus or CallSid/CallStatus required")
        seen = form.get("SequenceNumber", state) if "CallSid" in form else state

        async def work() -> str:
            if not await asyncio.to_thread(
                store.provider_status_advance, key, state, RANK.get(state, 0)
            ):
                return ""  # older than what we know: out of order
            workflow_id, _, rest = key.partition("/")
            engine_key, _, notice = rest.partition("/")
            if notice or not engine_key:  # a rep notice: the outbox keeps its status
                return ""
            detail = {k: form[k] for k in ("ErrorCode", "AnsweredBy", "CallDuration") if k in form}
            client = await temporal()
            await signal_run(
                client,
                workflow_id,
                "provider_event",
                ProviderEventSignal(key=engine_key, status=state, detail={"sid": sid, **detail}),
            )
            if "CallSid" in form and state in FINAL_CALL:
                await _report_call(client, workflow_id, engine_key, state, form.get("AnsweredBy"))
            return ""

        return await once("status", f"twilio:{sid}:{seen}", form, work)

    @router.post("/voice")
    async def voice(request: Request, key: str, exp: int) -> Response:
        """The lead leg of a click-to-call (<Dial action>): the carrier's word on the call."""
        form = await verified_form(request, "voice")
        if exp < time.time():
            metrics.twilio_webhook("voice", "stale")
            raise HTTPException(403, "stale voice callback")
        status, leg = form.get("DialCallStatus"), form.get("DialCallSid") or form.get("CallSid")
        if not status or not leg:
            metrics.twilio_webhook("voice", "malformed")
            raise HTTPException(400, "DialCallStatus and DialCallSid are required")
        workflow_id, _, engine_key = key.partition("/")
        if not engine_key:
            metrics.twilio_webhook("voice", "malformed")
            raise HTTPException(400, f"key {key!r} names no touch")
        duration = form.get("DialCallDuration", "")

        async def work() -> str:
            connected = status == "completed"  # the lead picked up
            client = await temporal()
            detail = {"sid": leg, "duration": int(duration) if duration.isdigit() else 0,
                      "dial_status": status}  # fmt: skip
            await signal_run(
                client, workflow_id, "provider_event",
                ProviderEventSignal(key=engine_key, status="connected" if connected else status,
                                    detail=detail),
            )  # fmt: skip
            if not connected:  # the carrier knows the outcome; the rep has nothing to add
                await _report_call(client, workflow_id, engine_key, status, None)
            return HANGUP

        return await once("voice", f"twilio:{leg}:dial", form, work)

    @router.post("/inbound")
    async def inbound(request: Request) -> Response:
        form = await verified_form(request, "inbound")
        sid, sender, body = form.get("MessageSid"), form.get("From", ""), form.get("Body", "")
        if not sid or not sender:
            metrics.twilio_webhook("inbound", "malformed")
            raise HTTPException(400, "MessageSid and From are required")
        return await once(
            "inbound", f"twilio:{sid}:inbound", form, lambda: answer(sid, sender, body)
        )

    async def answer(sid: str, sender: str, body: str) -> str:
        """What an inbound message means: STOP/START/HELP keywords, else a reply to the runs."""
        phone = e164(sender.removeprefix("whatsapp:")) or sender
        if sender.startswith("whatsapp:"):  # opens WhatsApp's 24-hour window for free text
            await asyncio.to_thread(store.note_whatsapp_inbound, phone, datetime.now(UTC))
        contact_ids = await asyncio.to_thread(store.contacts_with_phone, phone)
        channel = adapter("whatsapp" if sender.startswith("whatsapp:") else "sms")
        client = await temporal()
        match channel.keyword(body):
            case "stop":
                for contact_id in contact_ids:
                    if await asyncio.to_thread(
                        consent.record, contact_id, "revoke", method="sms_stop"
                    ):
                        metrics.opt_out("sms_stop")
                    await tell_runs(client, store, contact_id, ContactEventSignal(name="opted_out"))
                if not contact_ids and e164(phone):  # a stranger: keep the number off every list
                    added = await asyncio.to_thread(
                        consent.add_to_list, [phone], INTERNAL_LIST, "sms_stop"
                    )
                    if added:
                        metrics.opt_out("sms_stop")
            case "start":
                for contact_id in contact_ids:
                    await asyncio.to_thread(consent.record, contact_id, "grant", method="sms_start")
            case "help":
                return f"<Message>{escape(hooks.help_text)}</Message>"
            case None:
                reply = ContactEventSignal(name="reply", data={"text": body[:1600], "sid": sid})
                for contact_id in contact_ids:
                    await tell_runs(client, store, contact_id, reply)
            case _ as never:
                assert_never(never)
        return ""

    return router


async def _report_call(
    client: Client, workflow_id: str, engine_key: str, status: str, answered_by: str | None
) -> None:
    """An automated call's result, reported by the carrier (not by anyone's say-so)."""
    outcome = call_outcome(status, answered_by)
    step = engine_key.split(":", 1)[0]
    request = OutcomeRequest(step=step, outcome=outcome, actor=CARRIER, note=f"Twilio {status}")
    try:
        await client.get_workflow_handle(workflow_id).execute_update("report_outcome", request)
    except (WorkflowUpdateFailedError, RPCError) as exc:  # the step no longer waits: recorded
        log.info("call result %s for %s not applied: %s", outcome, workflow_id, exc)
