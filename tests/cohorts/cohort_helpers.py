"""What the cohort tests share: an SOP with a schedule built inline, contacts in the store, a
segment file, and waiting for the fan-outs a schedule starts."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from temporalio.client import Client, ScheduleHandle

from sopflow.cohorts.contracts import CohortRunResult
from sopflow.sop.checks import check_sop
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.consent import ConsentBook
from sopflow.store.models import Run
from sopflow.store.repository import Store

SOP_ID = "winback"


def plan(
    schedule: dict[str, Any] | None,
    version: int = 1,
    events: list[str] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    segments: tuple[str, ...] = ("vips",),
) -> Plan:
    """A two-step SOP (wait a month, end) with `schedule` as its entry's; checked as deploy
    checks it (the segments known: `segments`)."""
    entry: dict[str, Any] = {"conditions": conditions or []}
    if schedule is not None:
        entry["schedule"] = schedule
    if events:
        entry["events"] = events
    sop = Sop.model_validate(
        {
            "id": SOP_ID,
            "version": version,
            "name": "Win-back",
            "owner": "crm@example.com",
            "entry": entry,
            "contact_fields": {"member_since": {"type": "date"}},
            "policy": {"timezone": {"sources": ["contact", "phone"], "default": "UTC"}},
            "steps": [
                {"id": "pause", "kind": "wait", "duration": "30d"},
                {"id": "done", "kind": "end", "result": "completed"},
            ],
        }
    )
    assert check_sop(sop, known_segments=segments) == []
    return compile_plan(sop)


def write_segment(folder: Path, segment_id: str = "vips", tag: str = "vip") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{segment_id}.yaml"
    path.write_text(
        f"id: {segment_id}\nname: Tagged {tag}\ndescription: contacts tagged {tag}\n"
        f"rules:\n  tags: {{all: [{tag}]}}\n"
    )
    return path


def add_contacts(store: Store, *contacts: dict[str, Any]) -> None:
    for contact in contacts:
        store.upsert_contact(contact)


def opt_out(store: Store, contact_id: str) -> None:
    ConsentBook(store.engine).record(contact_id, "revoke", channels=["all"], method="test")


def enrolled(store: Store, sop_id: str = SOP_ID) -> dict[str, str]:
    """contact id -> workflow id of every run of the SOP the store knows."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(Run.contact_id, Run.workflow_id).where(Run.sop_id == sop_id)
        ).all()
    found: dict[str, str] = {}
    for contact_id, workflow_id in rows:
        assert contact_id not in found, f"{contact_id} enrolled twice: {workflow_id}"
        found[contact_id] = workflow_id
    return found


async def triggered(client: Client, handle: ScheduleHandle) -> CohortRunResult:
    """Trigger the schedule now and wait for the fan-out it starts to finish. A second apart:
    a fan-out's id is the schedule's plus the scheduled time, to the second."""
    await asyncio.sleep(1.1)
    before = {a.action.workflow_id for a in (await handle.describe()).info.recent_actions}  # type: ignore[attr-defined]
    await handle.trigger()
    for _ in range(400):
        actions = (await handle.describe()).info.recent_actions
        new = [a for a in actions if a.action.workflow_id not in before]  # type: ignore[attr-defined]
        if new:
            run = client.get_workflow_handle(
                new[-1].action.workflow_id,  # type: ignore[attr-defined]
                result_type=CohortRunResult,
            )
            return await run.result()
        await asyncio.sleep(0.05)
    raise AssertionError("the schedule started no fan-out")


def local(iso: str) -> datetime:
    return datetime.fromisoformat(iso)
