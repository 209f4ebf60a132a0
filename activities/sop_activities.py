"""Activities that carry out engine commands. Thin: re-check a touch at the gate, render the
templates, then hand the command to an effects backend (provider, task queue, store) keyed by
its idempotency key.

Only worker.py and tests build the backend (MemoryEffects here, StoreEffects for the store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from temporalio import activity

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.gate import ContactFacts, Touch
from sopflow.compliance.preflight import (
    Refused,
    RunFacts,
    facts_lookback,
    gate_and_clear,
    touch_request,
)
from sopflow.compliance.rules import Rule
from sopflow.errors import SopflowError
from sopflow.metrics import count_touch
from sopflow.sop.protocol import CheckSegments, Finish, Record, UpdateContact, touch_channel
from sopflow.sop.rep_view import UNASSIGNED_REP
from sopflow.sop.segment_routing import answer_detail
from workflows.contracts import CommandInput, CommandResult


class Effects(Protocol):
    """Where commands take effect. Contract (tests/activities/test_effects_contract.py runs one
    suite against every implementation): `perform` is called once per key and idempotent on
    retry; it answers done, blocked (with the rule) or failed (with the reason)."""

    async def contact_facts(
        self, params: CommandInput, at: datetime, lookback: timedelta
    ) -> ContactFacts: ...

    async def rep_for(self, params: CommandInput) -> dict[str, Any]: ...

    async def perform(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult: ...

    async def record(self, key: str, params: CommandInput) -> None: ...

    async def segment_memberships(
        self, contact_id: str, segments: Sequence[str], as_of: datetime
    ) -> dict[str, bool]:
        """Whether the contact is in each segment at `as_of`; SopflowError for an unknown one."""
        ...


class SopActivities:
    def __init__(
        self,
        effects: Effects,
        rules: Sequence[Rule] = (),
        links: UnsubscribeLinks | None = None,
    ) -> None:
        self.effects = effects
        self.rules = list(rules)  # legal + organisation rules (sopflow.compliance.rules)
        self.links = links  # email's signed unsubscribe links (None: emails fail, unconfigured)

    @activity.defn(name="sopflow.perform")
    async def perform(self, params: CommandInput) -> CommandResult:
        """The gate, the rep, the rendering (sopflow.compliance.preflight, as the simulator
        does), then the effect. Blocked touches are not performed and not recorded here: the
        engine records the deferral or block with this reason."""
        command = params.command
        facts = None
        # Server time of this attempt (virtual under time skipping), never before the engine
        # issued the command.
        at = max(command.at, activity.info().current_attempt_scheduled_time)
        request = touch_request(command, _run_facts(params), at)
        if request is not None:
            facts = await self.effects.contact_facts(
                params, at, facts_lookback(request, self.rules)
            )
        rep = await self.effects.rep_for(params)
        # Rendering runs user templates: in a thread, so a slow one never stalls the event loop
        # the worker shares (under `sopflow up`, with the gateway and its /healthz).
        ready = await asyncio.to_thread(
            gate_and_clear,
            command,
            request,
            facts,
            self.rules,
            rep,
            params.workflow_id,
            self.links,
        )
        # Context for JSON logs (run_id, the workflow id, comes from Temporal's own details).
        who = {"contact_id": params.contact_id, "step": command.step}
        if isinstance(ready, Refused):
            log = activity.logger.info if ready.status == "blocked" else activity.logger.warning
            log("command %s %s: %s", params.idempotency_key, ready.status, ready.reason, extra=who)
            refused = _result(ready)
            count_touch(activity.metric_meter(), command, refused)
            return refused
        params = params.model_copy(update={"command": ready.command})
        result = await self.effects.perform(params.idempotency_key, params, ready.rendered)
        if ready.due_at is not None and result.status == "done":
            result = result.model_copy(update={"due_at": ready.due_at})
        count_touch(activity.metric_meter(), command, result)
        if (channel := touch_channel(command)) is not None:
            activity.logger.info(
                "touch %s by %s: %s%s", params.idempotency_key, channel, result.status,
                f" ({result.reason})" if result.reason else "", extra={**who, "channel": channel},
            )  # fmt: skip
        return result

    @activity.defn(name="sopflow.record")
    async def record(self, params: CommandInput) -> None:
        await self.effects.record(params.idempotency_key, params)

    @activity.defn(name="sopflow.check_segments")
    async def check_segments(self, params: CommandInput) -> CommandResult:
        """A branch asks whether its contact is in segments, as of the engine's time (so both
        shells ask about the same instant). A segment no file defines any more fails the check
        at once (retrying cannot fix it): the branch records why and routes without it."""
        command = params.command
        assert isinstance(command, CheckSegments)
        try:
            found = await self.effects.segment_memberships(
                command.contact_id, command.segments, command.at
            )
        except SopflowError as exc:
            activity.logger.warning(
                "segment check %s failed: %s", params.idempotency_key, exc,
                extra={"contact_id": params.contact_id, "step": command.step},
            )  # fmt: skip
            return CommandResult(status="failed", reason=str(exc))
        return CommandResult(detail=answer_detail(found))

    def all(self) -> list[Any]:
        return [self.perform, self.record, self.check_segments]


def _run_facts(params: CommandInput) -> RunFacts:
    return RunFacts(params.sop, params.zones, params.policy, params.purpose, params.priority)


def _result(refused: Refused) -> CommandResult:
    return CommandResult(
        status=refused.status,
        reason=refused.reason,
        retry_at=refused.retry_at,
        detail=refused.detail,
    )


class MemoryEffects:
    """Effects kept in process memory, in order. A key already performed is answered from memory,
    so a retried activity never touches a person twice."""

    def __init__(self, reps: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.reps = dict(reps or {})
        self.performed: dict[str, tuple[CommandInput, dict[str, Any], CommandResult]] = {}
        self.records: dict[str, CommandInput] = {}
        self.attempts: dict[str, int] = {}
        self.opted_out: dict[str, datetime] = {}
        self.contacts: dict[str, dict[str, Any]] = {}  # what update steps wrote, by contact id
        self.segments: dict[str, set[str]] = {}  # contact id -> the segments it is in

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
            result = CommandResult()
            if isinstance(params.command, UpdateContact):
                result = self._update(rendered)
            self.performed[key] = (params, dict(rendered), result)
        return self.performed[key][2]

    def _update(self, rendered: Mapping[str, Any]) -> CommandResult:
        target = str(rendered["target"])  # checked by preflight.clear: a contact id
        contact = self.contacts.setdefault(target, {"id": target})
        contact.update(rendered.get("set", {}))
        tags = contact.setdefault("tags", [])
        tags.extend(t for t in rendered.get("add_tags", []) if t not in tags)
        return CommandResult()

    async def record(self, key: str, params: CommandInput) -> None:
        assert isinstance(params.command, Record | Finish)
        self.records.setdefault(key, params)

    async def segment_memberships(
        self, contact_id: str, segments: Sequence[str], as_of: datetime
    ) -> dict[str, bool]:
        """From `segments` (contact id -> the segments it is in): any other answers no."""
        held = self.segments.get(contact_id, set())
        return {s: s in held for s in segments}
