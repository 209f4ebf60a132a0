"""Activities that carry out engine commands. Thin: re-check a touch at the gate, render the
templates, then hand the command to an effects backend (provider, task queue, store) keyed by
its idempotency key.

Only worker.py and tests build the backend (MemoryEffects here, StoreEffects for the store).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from sopflow.compliance.gate import (
    ContactFacts,
    Touch,
    TouchRequest,
    Verdict,
    applicable,
    check_touch,
    lookback,
)
from sopflow.compliance.rules import Rule, contact_regions
from sopflow.errors import TemplateRenderError
from sopflow.sop.protocol import AssignTask, Command, Finish, PlaceCall, Record, SendMessage
from sopflow.sop.rendering import render_command
from workflows.contracts import CommandInput, CommandResult

# Who a template's `rep` is before a rep is assigned (until the store's reps are wired in).
UNASSIGNED_REP: dict[str, Any] = {"id": "unassigned", "name": "the team", "first_name": "the team"}


class Effects(Protocol):
    async def contact_facts(
        self, params: CommandInput, at: datetime, lookback: timedelta
    ) -> ContactFacts: ...

    async def rep_for(self, params: CommandInput) -> dict[str, Any]: ...

    async def perform(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult: ...

    async def record(self, key: str, params: CommandInput) -> None: ...


class SopActivities:
    def __init__(self, effects: Effects, rules: Sequence[Rule] = ()) -> None:
        self.effects = effects
        self.rules = list(rules)  # legal + organisation rules (sopflow.compliance.rules)

    @activity.defn(name="sopflow.perform")
    async def perform(self, params: CommandInput) -> CommandResult:
        gate = await self._gate(params)
        if isinstance(gate, CommandResult):
            return gate
        rep = await self.effects.rep_for(params)
        try:
            rendered = render_command(params.command, rep, params.workflow_id)
        except TemplateRenderError as exc:  # retrying cannot fix a template: fail loudly, once
            raise ApplicationError(
                str(exc), type="TemplateRenderError", non_retryable=True
            ) from exc
        for footer in gate.footers if gate else ():
            if footer not in rendered["text"]:
                rendered["text"] = f"{rendered['text'].rstrip()} {footer}"
        return await self.effects.perform(params.idempotency_key, params, rendered)

    async def _gate(self, params: CommandInput) -> CommandResult | Verdict | None:
        """The touch gate at the moment of sending (None: not a touch). Blocked touches are not
        performed and not recorded here: the engine records the deferral or block with this
        reason. An allowed verdict may carry footers the law wants on the message."""
        command = params.command
        channel = touch_channel(command)
        if channel is None:
            return None
        assert isinstance(command, SendMessage | PlaceCall | AssignTask)
        contact = command.context.get("contact", {})
        # Server time of this attempt (virtual time under time skipping), never before the
        # engine issued the command.
        at = max(command.at, activity.info().current_attempt_scheduled_time)
        request = TouchRequest(
            channel=channel,
            at=at,
            zones=params.zones,
            regions=contact_regions(contact),
            sop=params.sop,
            purpose=params.purpose,
            priority=params.priority,
            policy=params.policy,
        )
        matching = applicable(self.rules, request)
        facts = await self.effects.contact_facts(params, at, lookback(matching))
        verdict = check_touch(request, facts, matching)
        if verdict.allowed:
            return verdict
        activity.logger.info(
            "touch %s blocked by %s: %s", params.idempotency_key, verdict.rule, verdict.reason
        )
        return CommandResult(
            status="blocked",
            reason=verdict.reason,
            retry_at=verdict.retry_at,
            detail={"rule": verdict.rule},
        )

    @activity.defn(name="sopflow.record")
    async def record(self, params: CommandInput) -> None:
        await self.effects.record(params.idempotency_key, params)

    def all(self) -> list[Any]:
        return [self.perform, self.record]


def touch_channel(command: Command) -> str | None:
    """The channel through which a command reaches the contact; None: not a touch. A rep task
    with a channel is a touch too (the rep will call or text the lead)."""
    if isinstance(command, SendMessage):
        return command.channel
    if isinstance(command, PlaceCall):
        return "call"
    if isinstance(command, AssignTask):
        return command.channel
    return None


class MemoryEffects:
    """Effects kept in process memory, in order. A key already performed is answered from memory,
    so a retried activity never touches a person twice."""

    def __init__(self, reps: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.reps = dict(reps or {})
        self.performed: dict[str, tuple[CommandInput, dict[str, Any], CommandResult]] = {}
        self.records: dict[str, CommandInput] = {}
        self.attempts: dict[str, int] = {}
        self.opted_out: dict[str, datetime] = {}

    async def contact_facts(
        self, params: CommandInput, at: datetime, lookback: timedelta
    ) -> ContactFacts:
        """Opt-outs from `opted_out` (every channel); touches from what this object performed."""
        touches = [
            Touch(p.command.at, channel, p.sop)
            for p, _, _ in self.performed.values()
            if p.contact_id == params.contact_id
            and (channel := touch_channel(p.command)) is not None
            and p.command.at > at - lookback
        ]
        opted = self.opted_out.get(params.contact_id)
        return ContactFacts(opted_out={"all": opted} if opted else {}, touches=touches)

    async def rep_for(self, params: CommandInput) -> dict[str, Any]:
        contact = getattr(params.command, "context", {}).get("contact", {})
        owner = str(contact.get("owner", ""))
        return self.reps.get(owner) or dict(UNASSIGNED_REP)

    async def perform(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if key not in self.performed:
            self.performed[key] = (params, dict(rendered), CommandResult())
        return self.performed[key][2]

    async def record(self, key: str, params: CommandInput) -> None:
        assert isinstance(params.command, Record | Finish)
        self.records.setdefault(key, params)
