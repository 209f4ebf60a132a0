"""Effects backed by the SQL store: every command becomes a step event, every touch goes through
the outbox before the provider is called.

Exactly-once policy for touches (no provider offers an idempotency key):
1. claim the key in the outbox (a row written before the provider call);
2. call the provider; 3. mark the row done with the provider's id.
A retried activity that finds the row done returns the stored answer without sending. One that
finds it still pending is in doubt (a crash between 2 and 3): it does NOT send again — at most
once — and records the doubt; the Twilio issue resolves doubts by listing the provider's messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from activities.sop_activities import UNASSIGNED_REP
from sopflow.providers.base import Provider
from sopflow.sop.protocol import PlaceCall, SendMessage
from sopflow.store.repository import Store
from workflows.contracts import CommandInput, CommandResult


class StoreEffects:
    def __init__(self, store: Store, provider: Provider) -> None:
        self.store = store
        self.provider = provider

    async def rep_for(self, params: CommandInput) -> dict[str, Any]:
        return dict(UNASSIGNED_REP)

    def _ensure_run(self, params: CommandInput) -> None:
        assert params.enrolled_at is not None
        self.store.start_run(
            params.workflow_id,
            params.run_id,
            params.sop,
            params.version,
            params.digest,
            params.contact_id,
            params.enrolled_at,
        )

    def _record(self, params: CommandInput, provider_id: str | None = None) -> None:
        self._ensure_run(params)
        self.store.record_command(params.workflow_id, params.run_id, params.command, provider_id)

    async def record(self, key: str, params: CommandInput) -> None:
        await asyncio.to_thread(self._record, params)

    async def perform(
        self, key: str, params: CommandInput, rendered: Mapping[str, Any]
    ) -> CommandResult:
        command = params.command
        if not isinstance(command, SendMessage | PlaceCall):
            # Tasks, escalations, enrolments, updates: recorded for the rep queue and the audit.
            await asyncio.to_thread(self._record, params)
            return CommandResult()
        claim = await asyncio.to_thread(
            self.store.outbox_begin, key, params.workflow_id, command.kind
        )
        if claim.status != "pending" or claim.attempts > 1:
            in_doubt = claim.status == "pending"
            await asyncio.to_thread(self._record, params, claim.provider_id)
            return CommandResult(
                detail={
                    "provider_id": claim.provider_id,
                    "deduplicated": True,
                    "in_doubt": in_doubt,
                }
            )
        to = str(command.context.get("contact", {}).get("phone", ""))
        if isinstance(command, SendMessage):
            provider_id = await self.provider.send_message(
                command.channel, to, rendered["text"], key
            )
        else:
            provider_id = await self.provider.place_call(to, rendered["script"], key)
        await asyncio.to_thread(self.store.outbox_finish, key, "done", provider_id)
        await asyncio.to_thread(self._record, params, provider_id)
        return CommandResult(detail={"provider_id": provider_id})
