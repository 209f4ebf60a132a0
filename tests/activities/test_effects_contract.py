"""One contract, every Effects backend: MemoryEffects (tests, previews of the worker) and
StoreEffects (the SQL store and a provider). Each command kind is carried out through the real
`sopflow.perform` activity; what a person or the store would see must be the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from temporalio.testing import ActivityEnvironment

from activities.sop_activities import MemoryEffects, SopActivities
from activities.store_effects import StoreEffects
from sopflow.providers.loopback import LoopbackProvider
from sopflow.sop.protocol import (
    AssignTask,
    Command,
    EnrollContact,
    Escalate,
    PlaceCall,
    SendMessage,
    UpdateContact,
)
from sopflow.sop.schema import AssignRule
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from workflows.contracts import CommandInput, CommandResult

AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
ANN = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "owner": "ana"}
CONTEXT = {"contact": ANN, "run": {"timezone": "America/New_York"}}


class Backend(Protocol):
    activities: SopActivities

    def contact(self, contact_id: str) -> dict[str, Any] | None: ...

    def deliveries(self) -> int: ...


class InMemory:
    def __init__(self) -> None:
        self.effects = MemoryEffects({"ana": {"id": "ana", "name": "Ana", "first_name": "Ana"}})
        self.activities = SopActivities(self.effects)

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        return self.effects.contacts.get(contact_id)

    def deliveries(self) -> int:
        return sum(
            isinstance(p.command, SendMessage | PlaceCall)
            for p, _, _ in self.effects.performed.values()
        )


class InStore:
    def __init__(self, folder: Path) -> None:
        self.store = Store(connect(f"sqlite:///{folder / 'store.db'}"))
        self.store.migrate()
        RepDirectory(self.store.engine).import_teams(
            [{"id": "t", "reps": [{"id": "ana", "name": "Ana", "phone": "+12125550101"}]}]
        )
        self.store.upsert_contact(dict(ANN))
        self.provider = LoopbackProvider()
        self.activities = SopActivities(StoreEffects(self.store, self.provider))

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        row = self.store.contact(contact_id)
        return None if row is None else {"id": row.id, "phone": row.phone, **row.fields}

    def deliveries(self) -> int:
        return sum(
            channel != "sms" or to == ANN["phone"] for _, channel, to, _ in self.provider.sent
        )


@pytest.fixture(params=["memory", "store"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield InMemory() if request.param == "memory" else InStore(tmp_path)


def params(command: Command) -> CommandInput:
    return CommandInput(
        workflow_id="sop:t:c-1:k",
        run_id="r",
        sop="t",
        version=1,
        command=command,
        contact_id="c-1",
        enrolled_at=AT,
        zones=["America/New_York"],
    )


async def perform(backend: Backend, command: Command) -> CommandResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, current_attempt_scheduled_time=command.at)
    return await env.run(backend.activities.perform, params(command))


def sms(key: str = "hi:1:0", body: str = "Hi {{ contact.first_name }}") -> SendMessage:
    return SendMessage(at=AT, step="hi", key=key, channel="sms", body=body, planned_at=AT,
                       context=CONTEXT)  # fmt: skip


def update(target: str, **changes: str) -> UpdateContact:
    return UpdateContact(at=AT, step="mark", key="mark:1:0", target=target, set=changes,
                         add_tags=["referred"], context=CONTEXT)  # fmt: skip


async def test_a_message_reaches_the_contact_once_however_often_it_is_retried(
    backend: Backend,
) -> None:
    first = await perform(backend, sms())
    again = await perform(backend, sms())
    assert first.status == again.status == "done"
    assert backend.deliveries() == 1


async def test_a_template_that_cannot_render_fails_without_a_delivery(backend: Backend) -> None:
    result = await perform(backend, sms(body="Hi {{ event.nothing }}"))
    assert result.status == "failed" and "template failed to render" in result.reason
    assert backend.deliveries() == 0


async def test_an_update_step_writes_the_target_contact(backend: Backend) -> None:
    result = await perform(
        backend, update("{{ contact.id }}-friend", referred_by="{{ contact.id }}")
    )
    assert result.status == "done"
    friend = backend.contact("c-1-friend")
    assert friend is not None
    assert friend["referred_by"] == "c-1" and friend["tags"] == ["referred"]


async def test_an_update_without_a_target_fails_with_its_reason(backend: Backend) -> None:
    result = await perform(backend, update("{{ contact.missing | default('') }}", x="1"))
    assert result.status == "failed" and "is not a contact id" in result.reason


async def test_a_task_goes_to_a_rep_and_an_escalation_is_done(backend: Backend) -> None:
    task = AssignTask(at=AT, step="call", key="call:1:0", title="Call", instructions="Call Ann",
                      assign=AssignRule(strategy="owner"), due_at=AT, planned_at=AT, attempt=1,
                      context=CONTEXT)  # fmt: skip
    assert (await perform(backend, task)).status == "done"
    remind = Escalate(at=AT, step="call", key="call:1:0:e1", action="remind", level=1, to=None,
                      due_at=AT)  # fmt: skip
    assert (await perform(backend, remind)).status == "done"


async def test_an_enrolment_into_an_sop_not_deployed_fails_with_its_reason(
    tmp_path: Path,
) -> None:
    backend = InStore(tmp_path)  # only the store knows what is deployed
    enrol = EnrollContact(at=AT, step="enrol", key="enrol:1:0", sop="nowhere", data={},
                          context=CONTEXT)  # fmt: skip
    result = await perform(backend, enrol)
    assert result.status == "failed" and "nowhere" in result.reason
