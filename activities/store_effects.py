"""Effects backed by the SQL store: every command becomes a step event, every touch goes through
the outbox before the provider is called, and tasks go to a rep from the store's teams.

Exactly-once policy for touches (no provider offers an idempotency key):
1. claim the key in the outbox (a row written before the provider call);
2. call the provider, with the key in the status-callback URL; 3. mark the row done with the
   provider's id.
A retried activity that finds the row done (or failed, or blocked) returns the stored answer
without sending. One that finds it still pending is in doubt (a crash, a timeout or a 5xx between
2 and 3): it asks the provider first (`find_sent`: the callback may already have told us, else
list the messages / calls to that number since the claim) and sends again only if nothing is
found. Provider errors: permanent → the touch failed (21610, unsubscribed → the contact is opted
out on every channel and the touch is blocked); retryable, configuration and in-doubt → the
activity retries (bounded by the workflow's retry policy).
Rep notifications (new task, reminder, escalation) go through the same outbox under `<key>/notify`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, assert_never
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.exceptions import ApplicationError

from sopflow.compliance.gate import ContactFacts
from sopflow.enrolment import enrolment_for, start_enrolment
from sopflow.errors import SopflowError
from sopflow.providers.base import Mailer, Provider, ProviderError, Template
from sopflow.providers.loopback import LoopbackProvider
from sopflow.segmenting.files import SEGMENTS_DIR
from sopflow.segmenting.membership import memberships
from sopflow.sop.protocol import (
    AssignTask,
    CheckSegments,
    EnrollContact,
    Escalate,
    Finish,
    PlaceCall,
    Record,
    SendMessage,
    UpdateContact,
)
from sopflow.sop.rep_view import UNASSIGNED_REP
from sopflow.sop.schema import AssignRule, Channel
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store, run_row
from sopflow.store.reps import RepDirectory, RepInfo, RepsAtCapacity
from sopflow.store.splits import SplitAssignments
from workflows.contracts import CommandInput, CommandResult


@dataclass(frozen=True)
class Outgoing:
    """One touch as its transport takes it."""

    channel: Channel
    to: str  # E.164 for phones, the address for email
    text: str  # the message, or a call's script
    template: Template | None = None  # WhatsApp outside the 24-hour session
    subject: str | None = None  # email
    unsubscribe_url: str | None = None  # email: the signed one-click link


class StoreEffects:
    def __init__(
        self,
        store: Store,
        provider: Provider,
        mailer: Mailer | None = None,
        segments: Path = SEGMENTS_DIR,
        public_url: str | None = None,
    ) -> None:
        """`segments`: the folder of segment files branches route by (as the gateway's);
        `public_url`: the gateway as reps reach it, for the inbox link in task notices."""
        self.store = store
        self.public_url = public_url
        self.segments = segments
        # No relay configured: emails are claimed and recorded like the loopback's texts.
        self.mailer: Mailer = mailer if mailer is not None else LoopbackProvider()
        self.reps = RepDirectory(store.engine)
        self.consent = ConsentBook(store.engine)
        self.splits = SplitAssignments(store.engine)
        self.provider = provider

    async def contact_facts(
        self, params: CommandInput, at: datetime, lookback: timedelta
    ) -> ContactFacts:
        phone = (
            params.command.context.get("contact", {}).get("phone")
            if hasattr(params.command, "context")
            else None
        )
        facts = await asyncio.to_thread(self.consent.facts, params.contact_id, phone, at, lookback)
        inbound = await asyncio.to_thread(self.store.whatsapp_inbound_at, phone) if phone else None
        return replace(facts, whatsapp_inbound_at=inbound)

    def _rep(self, params: CommandInput) -> RepInfo | None:
        """The rep a command concerns: a task's assignee by its rule, else the run's rep. A retry
        keeps the rep an earlier attempt chose and texted (the notice's outbox claim names
        them): round robin may have moved on meanwhile, and the lead must not go to two reps."""
        command = params.command
        now = command.at  # the engine's time (virtual under time skipping), as loads are stamped
        earlier = self.store.outbox_get(f"{params.idempotency_key}/notify")
        chosen = (earlier.result.get("recipient") or {}).get("rep") if earlier else None
        if chosen and (pinned := self.reps.rep(chosen)) is not None:
            return pinned
        if isinstance(command, AssignTask):
            return self.reps.choose(command.assign, params.contact_id, params.workflow_id, now)
        if isinstance(command, Escalate) and command.action == "reassign" and command.to:
            return self.reps.choose(command.to, params.contact_id, params.workflow_id, now)
        try:
            return self.reps.assigned_in_run(params.workflow_id) or self.reps.choose(
                _OWNER, params.contact_id, params.workflow_id, now
            )
        except RepsAtCapacity:  # the rep a message speaks for: the cap is about new tasks
            return self.reps.rep(self.reps.owner_of(params.contact_id))

    async def rep_for(self, params: CommandInput) -> dict[str, Any]:
        try:
            rep = await asyncio.to_thread(self._rep, params)
        except RepsAtCapacity:  # perform() answers with the deferral; nothing is rendered for it
            rep = None
        return rep.template_view() if rep else dict(UNASSIGNED_REP)

    def _record(self, params: CommandInput, provider_id: str | None = None, **learnt: Any) -> None:
        assert params.enrolled_at is not None
        run = run_row(
            params.workflow_id,
            params.run_id,
            params.sop,
            params.version,
            params.digest,
            params.contact_id,
            params.enrolled_at,
        )
        self.store.record_command(
            params.workflow_id, params.run_id, params.command, provider_id, run=run, **learnt
        )

    async def record(self, key: str, params: CommandInput) -> None:
        await asyncio.to_thread(self._record, params)

    async def segment_memberships(
        self, contact_id: str, segments: Sequence[str], as_of: datetime
    ) -> dict[str, bool]:
        """SQL over the store (sopflow.segmenting), in a thread: an RFM rule ranks everyone."""
        return await asyncio.to_thread(
            memberships, self.store.engine, self.segments, contact_id, segments, as_of
        )

    async def perform(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult:
        command = params.command
        match command:
            case AssignTask() | Escalate():
                return await self._rep_step(key, params, rendered)
            case EnrollContact():
                return await self._enroll(key, params, rendered)
            case UpdateContact():
                return await self._update(params, rendered)
            case SendMessage() | PlaceCall():
                return await self._touch(key, params, command, rendered)
            case Record() | Finish():
                raise AssertionError("bookkeeping is recorded, not performed")
            case CheckSegments():
                raise AssertionError("a segment check is asked (check_segments), not performed")
            case _:
                assert_never(command)

    async def _update(self, params: CommandInput, rendered: Mapping[str, Any]) -> CommandResult:
        """An update step: the fields and tags land on the target contact in the store (created
        if the CRM has not sent it yet, e.g. a referred friend); recorded with what was set."""
        target = str(rendered["target"])  # checked by preflight.clear: a contact id
        changes, tags = dict(rendered.get("set", {})), list(rendered.get("add_tags", []))
        await asyncio.to_thread(self.store.update_contact, target, changes, tags)
        detail = {"target": target, "set": changes, "add_tags": tags}
        await asyncio.to_thread(self._record, params, detail=detail)
        return CommandResult(detail={"target": target})

    async def _touch(
        self,
        key: str,
        params: CommandInput,
        command: SendMessage | PlaceCall,
        rendered: Mapping[str, Any],
    ) -> CommandResult:
        template: Template | None = None
        if rendered.get("whatsapp_template"):  # outside the 24-hour session (preflight.clear)
            template = (rendered["whatsapp_template"], rendered["variables"])
        out = Outgoing(
            channel=command.channel if isinstance(command, SendMessage) else "call",
            to=str(rendered["to"]),  # the channel adapter's address (preflight.clear)
            text=rendered["text"] if isinstance(command, SendMessage) else rendered["script"],
            template=template,
            subject=rendered.get("subject"),
            unsubscribe_url=rendered.get("unsubscribe_url"),
        )
        sent = await self._send_once(key, params, out, params.contact_id)
        if sent.status == "blocked":  # the engine records the block, with its reason
            return sent
        await asyncio.to_thread(self._record, params, sent.detail.get("provider_id"))
        return sent

    async def _send_once(
        self,
        key: str,
        params: CommandInput,
        out: Outgoing,
        contact_id: str | None = None,
        rep_id: str | None = None,
    ) -> CommandResult:
        """The outbox protocol around one provider call (see the module docstring).
        `contact_id`: a touch of a contact (not a rep notice), whose opt-out is looked at last;
        `rep_id`: for a rep notice, the rep the step chose (kept for retries, see `_rep`)."""
        channel, to = out.channel, out.to
        recipient = {"channel": channel, "to": to, "text": None if out.template else out.text}
        if rep_id:
            recipient["rep"] = rep_id
        claim = await asyncio.to_thread(
            self.store.outbox_begin, key, params.workflow_id, channel, recipient
        )
        if claim.status == "blocked":
            return _opted_out(claim.result.get("reason", ""), claim.result.get("rule", "opt_out"))
        if claim.status == "failed":
            return CommandResult(status="failed", reason=claim.result.get("reason", ""))
        if claim.status != "pending":
            return CommandResult(detail={"provider_id": claim.provider_id, "deduplicated": True})
        if claim.attempts > 1:  # an earlier attempt may have reached the provider: ask first
            claimed_at = claim.created_at or datetime.now(UTC)
            # Look for what the first attempt sent: this one may have rendered otherwise (a
            # WhatsApp session opened since, so free text now where a template went then).
            first = claim.result.get("recipient") or recipient
            found = await self._provider_call(
                self._find_sent(out, first.get("text"), key, claimed_at)
            )
            if found is not None:
                await asyncio.to_thread(self.store.outbox_finish, key, "done", found)
                return CommandResult(detail={"provider_id": found, "resolved": True})
        if contact_id is not None:
            # An opt-out that landed after the gate looked: the last look is after the claim,
            # so it either stops this touch or was recorded after the provider took it.
            since = await asyncio.to_thread(self.consent.opted_out_since, contact_id, channel)
            if since is not None:
                reason = f"the contact opted out at {since.isoformat()}, as the touch was going out"
                everywhere = await asyncio.to_thread(self.store.opted_out_at, contact_id)
                rule = "opt_out" if everywhere else "opt_out_channel"  # as the gate says it
                await asyncio.to_thread(
                    self.store.outbox_finish, key, "blocked", None, {"reason": reason, "rule": rule}
                )
                return _opted_out(reason, rule)
        try:
            provider_id = await self._transmit(out, key)
        except ProviderError as exc:
            if exc.kind != "permanent":
                raise _retry(exc) from None
            return await self._rejected(key, exc, contact_id)
        await asyncio.to_thread(self.store.outbox_finish, key, "done", provider_id)
        return CommandResult(detail={"provider_id": provider_id})

    async def _transmit(self, out: Outgoing, key: str) -> str:
        """The one place a touch meets its transport: Twilio for phones, SMTP for email."""
        match out.channel:
            case "call":
                return await self.provider.place_call(out.to, out.text, key)
            case "sms" | "whatsapp":
                return await self.provider.send_message(
                    out.channel, out.to, out.text, key, out.template
                )
            case "email":
                subject = out.subject or ""
                return await self.mailer.send_email(
                    out.to, subject, out.text, key, out.unsubscribe_url
                )
            case _:
                assert_never(out.channel)

    def _find_sent(
        self, out: Outgoing, text: str | None, key: str, since: datetime
    ) -> Awaitable[str | None]:
        match out.channel:
            case "call" | "sms" | "whatsapp":
                return self.provider.find_sent(out.channel, out.to, text, key, since)
            case "email":
                return self.mailer.find_sent_email(out.to, key, since)
            case _:
                assert_never(out.channel)

    @staticmethod
    async def _provider_call(call: Awaitable[str | None]) -> str | None:
        try:
            return await call
        except ProviderError as exc:
            raise _retry(exc) from None

    async def _rejected(
        self, key: str, exc: ProviderError, contact_id: str | None
    ) -> CommandResult:
        """A permanent refusal: recorded in the outbox so no retry sends it."""
        reason = str(exc)
        if exc.opted_out and contact_id is not None:
            # The carrier says the person texted STOP: honour it everywhere, as a STOP to us.
            await asyncio.to_thread(
                self.consent.record, contact_id, "revoke", method=f"carrier_{exc.code}"
            )
            await asyncio.to_thread(
                self.store.outbox_finish, key, "blocked", None, {"reason": reason}
            )
            return _opted_out(reason)
        await asyncio.to_thread(
            self.store.outbox_finish, key, "failed", None, {"reason": reason, "code": exc.code}
        )
        return CommandResult(status="failed", reason=reason, detail={"code": exc.code})

    async def _rep_step(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult:
        """Assign / remind / escalate: pick the rep, record them as the actor, text them."""
        command = params.command
        assert isinstance(command, AssignTask | Escalate)
        try:
            rep = await asyncio.to_thread(self._rep, params)
        except RepsAtCapacity as full:
            if isinstance(command, AssignTask):  # the engine defers the task (or skips it)
                return CommandResult(
                    status="blocked",
                    reason=str(full),
                    retry_at=full.retry_at,
                    detail={"rule": "rep_workload"},
                )
            rep = None  # a reassignment with everyone at capacity leaves the task where it is
        notify = rep
        if isinstance(command, Escalate) and command.action == "notify_supervisor":
            notify = await asyncio.to_thread(
                self.reps.supervisor_of, rep.id if rep else None, _team(params)
            )
        # The rep who holds the task after this step: the assignee, or whoever it moved to.
        holds = isinstance(command, AssignTask) or command.action == "reassign"
        actor = rep.id if rep and holds else None
        if rep and holds:
            await asyncio.to_thread(
                self.reps.claim_owner,
                params.contact_id,
                rep.id,
                transfer=isinstance(command, Escalate),
            )
        detail: dict[str, Any] = {"rep": rep.id if rep else None}
        if notify is not None and notify.phone:
            text = _notice(params, rendered, notify, self.public_url)
            notice = Outgoing("sms", notify.phone, text)
            sent = await self._send_once(
                f"{key}/notify", params, notice, rep_id=rep.id if rep else None
            )
            detail["notified"] = notify.id
            detail["provider_id"] = sent.detail.get("provider_id")
        recorded = dict(detail)
        if isinstance(command, AssignTask) and rendered.get("instructions"):
            # What the inbox shows the rep; kept in the store only, not in the run's history.
            recorded["instructions"] = rendered["instructions"]
        await asyncio.to_thread(self._record, params, None, actor=actor, detail=recorded)
        return CommandResult(detail=detail)

    async def _enroll(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult:
        """Start the target SOP (its newest version) for this contact, once per command key.
        An SOP that is not deployed or a contact it cannot run for is recorded as failed; the
        run goes on (the enrolment is a consequence, not a step the contact waits on)."""
        command = params.command
        assert isinstance(command, EnrollContact)
        contact = {**command.context.get("contact", {}), **rendered["data"]}
        try:
            plan = await asyncio.to_thread(self.store.latest_plan, command.sop)
            enrolment = enrolment_for(plan, contact, key=key.replace("/", ":"))
        except SopflowError as exc:
            await asyncio.to_thread(self._record, params, outcome="failed", reason=str(exc))
            return CommandResult(status="failed", reason=str(exc))
        await asyncio.to_thread(self.store.upsert_contact, enrolment.contact)
        variants = await asyncio.to_thread(self.splits.assign, plan, enrolment.contact["id"])
        await start_enrolment(
            activity.client(),
            enrolment,
            f"enrolled_by:{params.sop}",
            rendered["data"],
            activity.info().task_queue,
            variants,
        )
        await asyncio.to_thread(
            self._record, params, outcome="enrolled", detail={"run_id": enrolment.workflow_id}
        )
        return CommandResult(detail={"run_id": enrolment.workflow_id})


_OWNER = AssignRule(strategy="owner")


def _retry(exc: ProviderError) -> ApplicationError:
    """A provider error the activity retries: configuration errors wait longer (ops must act)."""
    delay = timedelta(minutes=1) if exc.kind == "configuration" else None
    return ApplicationError(
        str(exc), {"code": exc.code}, type=f"Provider_{exc.kind}", next_retry_delay=delay
    )


def _opted_out(reason: str, rule: str = "opt_out") -> CommandResult:
    """`opt_out`: out of every channel (the run ends); `opt_out_channel`: of this one only."""
    return CommandResult(status="blocked", reason=reason, detail={"rule": rule})


def _team(params: CommandInput) -> str | None:
    command = params.command
    if isinstance(command, AssignTask):
        return command.assign.team
    return None


def task_link(public_url: str, run_id: str, step: str) -> str:
    """The task in the rep inbox (sopflow/gateway/inbox.py)."""
    return f"{public_url.rstrip('/')}/inbox/task?{urlencode({'run': run_id, 'step': step})}"


def _notice(
    params: CommandInput, rendered: Mapping[str, Any], rep: RepInfo, public_url: str | None = None
) -> str:
    """The text a rep gets on their phone: a task's due time in the rep's zone (else UTC) and,
    when the gateway's address is known, a link to the task in their inbox."""
    command = params.command
    contact = getattr(command, "context", {}).get("contact", {})
    who = " ".join(
        str(contact.get(k, "")) for k in ("first_name", "last_name") if contact.get(k)
    ) or str(contact.get("id", params.contact_id))
    phone = contact.get("phone", "")
    if isinstance(command, AssignTask):
        due = command.due_at.astimezone(ZoneInfo(rep.timezone or "UTC"))
        link = f" {task_link(public_url, params.workflow_id, command.step)}" if public_url else ""
        return f"sopflow task: {command.title} — {who} {phone}, due {due:%Y-%m-%d %H:%M %Z}{link}"
    assert isinstance(command, Escalate)
    if command.action == "notify_supervisor":
        return f"sopflow: step {command.step} for {who} is overdue (level {command.level}); please follow up"
    if command.action == "reassign":
        return f"sopflow: step {command.step} for {who} {phone} is now yours"
    return f"sopflow reminder: step {command.step} for {who} {phone} is overdue"
