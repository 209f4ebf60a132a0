"""Telling running runs about what happened to their contact (API events, Twilio webhooks)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from sopflow.store.repository import Store


async def signal_run(client: Client, run_id: str, name: str, payload: Any) -> bool:
    """Signal one run; False when it has finished (or never existed): nothing to tell."""
    try:
        await client.get_workflow_handle(run_id).signal(name, payload)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def tell_runs(
    client: Client, store: Store, contact_id: str, payload: Any, skip: Collection[str] = ()
) -> list[str]:
    """Send a `contact_event` signal to each of the contact's running runs; the ones told."""
    told = []
    for run_id in await asyncio.to_thread(store.running_runs, contact_id):
        if run_id not in skip and await signal_run(client, run_id, "contact_event", payload):
            told.append(run_id)
    return told
