"""Everything between an engine command and its effect, shared by both shells.

The activity (production) and the simulator (preview) call the same functions here, so a preview
shows what production does: the gate with the same rules and facts, the task due time counted in
the law's windows, the rendered text with the footers the law wants, and a template that cannot
render ending as a failed command with its reason. Pure: facts, rules and time come in as values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sopflow.channels.adapters import adapter
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.gate import (
    ContactFacts,
    TouchRequest,
    Verdict,
    applicable,
    check_touch,
    lookback,
)
from sopflow.compliance.rules import Rule, contact_regions
from sopflow.errors import TemplateRenderError
from sopflow.sop.protocol import (
    AssignTask,
    Command,
    PlaceCall,
    SendMessage,
    UpdateContact,
    touch_channel,
)
from sopflow.sop.rendering import render_command
from sopflow.sop.schema import MAX_CONTACT_ID, ContactPolicy


@dataclass(frozen=True)
class RunFacts:
    """What the gate needs to know of the run a command belongs to."""

    sop: str
    zones: Sequence[str]
    policy: ContactPolicy | None
    purpose: str = "marketing"
    priority: int = 50


@dataclass(frozen=True)
class Refused:
    """The command is not carried out: blocked by the gate, or failed before reaching anyone."""

    status: Literal["blocked", "failed"]
    reason: str
    retry_at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cleared:
    """Carry out `command` with this rendered text; `due_at`, a task's due time moved by the
    gate, goes back to the engine with the result."""

    command: Command
    rendered: dict[str, Any]
    due_at: datetime | None = None


def touch_request(command: Command, run: RunFacts, at: datetime) -> TouchRequest | None:
    """The gate's question for a touch at `at`; None when the command reaches no contact."""
    channel = touch_channel(command)
    if channel is None:
        return None
    context: Mapping[str, Any] = getattr(command, "context", {})
    contact = context.get("contact", {})
    task = command if isinstance(command, AssignTask) else None
    return TouchRequest(
        channel=channel,
        at=at,
        zones=list(run.zones),
        regions=contact_regions(contact),
        sop=run.sop,
        purpose=run.purpose,
        priority=run.priority,
        policy=run.policy,
        due_within=task.due_within if task else None,
        issued_at=command.at,
    )


def facts_lookback(request: TouchRequest, rules: Sequence[Rule]) -> timedelta:
    """How far back the touch history must go for this request's caps."""
    return lookback(applicable(rules, request))


def _refusal(verdict: Verdict) -> Refused:
    """A blocked verdict as the engine receives it (it defers, skips or ends the run)."""
    assert not verdict.allowed
    return Refused("blocked", verdict.reason, verdict.retry_at, {"rule": verdict.rule})


def gate_and_clear(
    command: Command,
    request: TouchRequest | None,
    facts: ContactFacts | None,
    rules: Sequence[Rule],
    rep: Mapping[str, Any],
    run_id: str,
    links: UnsubscribeLinks | None = None,
) -> Cleared | Refused:
    """What both shells do once they hold the contact's facts: a touch (`request`, from
    `touch_request`) goes through the gate, then the command is made ready (`clear`)."""
    verdict = None
    if request is not None:
        verdict = check_touch(request, facts or ContactFacts(), rules)
        if not verdict.allowed:
            return _refusal(verdict)
    return clear(command, verdict, rep, run_id, facts, links)


# WhatsApp lets a business write freely only within 24 hours of the person's last message;
# outside it only an approved template goes (Twilio error 63016 otherwise).
WHATSAPP_SESSION = timedelta(hours=24)


def whatsapp_session_open(facts: ContactFacts, at: datetime) -> bool:
    last = facts.whatsapp_inbound_at
    return last is not None and at - WHATSAPP_SESSION < last <= at


def clear(
    command: Command,
    verdict: Verdict | None,
    rep: Mapping[str, Any],
    run_id: str,
    facts: ContactFacts | None = None,
    links: UnsubscribeLinks | None = None,
) -> Cleared | Refused:
    """An allowed (or ungated) command, made ready: the gate's due time, the rendered templates,
    the address it goes to (`rendered["to"]`, from the channel's adapter), the law's footers and
    an email's signed unsubscribe link (`rendered["unsubscribe_url"]`, from `links`), and for
    WhatsApp whether the free text or the template goes (`rendered["whatsapp_template"]`).
    A template that cannot render fails the command now: retrying cannot fix it, and the engine
    routes the failure (a touch's failure path, or `effect_failed`); so does a contact with no
    address on the channel, or a WhatsApp message outside the session with no template."""
    due_at = None
    to: str | None = None
    if isinstance(command, SendMessage | PlaceCall):
        channel = adapter("call" if isinstance(command, PlaceCall) else command.channel)
        contact = command.context.get("contact", {})
        to = channel.address(contact)
        if to is None:
            return Refused("failed", channel.missing_address(contact), detail={"error": "address"})
    if isinstance(command, SendMessage) and command.channel == "whatsapp":
        if whatsapp_session_open(facts or ContactFacts(), command.at):
            command = command.model_copy(update={"template": None})  # free text goes
        elif command.template is None:
            reason = (
                "the WhatsApp session is closed (no message from the contact in 24 hours) "
                f"and step {command.step!r} has no template"
            )
            return Refused("failed", reason, detail={"error": "whatsapp_session"})
    if (
        verdict is not None
        and verdict.due_at is not None
        and isinstance(command, AssignTask)
        and verdict.due_at != command.due_at
    ):
        due_at = verdict.due_at
        command = command.model_copy(update={"due_at": due_at})
    try:
        rendered = render_command(command, rep, run_id, links)  # links: referral links too
    except TemplateRenderError as exc:
        return Refused("failed", str(exc), detail={"error": "template"})
    if isinstance(command, UpdateContact):
        target = rendered["target"]
        if not target or len(target) > MAX_CONTACT_ID:
            reason = f"step {command.step!r}: the update's target {target!r} is not a contact id"
            return Refused("failed", reason, detail={"error": "target"})
    if to is not None:
        rendered["to"] = to
    if isinstance(command, SendMessage):
        if command.template is not None:
            rendered["whatsapp_template"] = command.template.content_sid
        channel = adapter(command.channel)
        url = None
        if channel.one_click_unsubscribe:
            if links is None:
                reason = "email needs the gateway's public URL and key for its unsubscribe link"
                return Refused("failed", reason, detail={"error": "configuration"})
            url = rendered["unsubscribe_url"] = links.url(str(command.context["contact"]["id"]))
        for footer in channel.footers(verdict.footers if verdict else (), url):
            if footer not in rendered["text"]:
                text = rendered["text"].rstrip()
                rendered["text"] = f"{text}{channel.footer_separator}{footer}"
    return Cleared(command, rendered, due_at)
