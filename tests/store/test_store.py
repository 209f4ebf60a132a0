"""Store contract: deployments, runs, idempotent step events and the outbox, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sopflow.errors import InvalidContactError, UnknownSopError
from sopflow.sop import engine
from sopflow.sop.plan import compile_plan
from sopflow.sop.protocol import Record
from sopflow.sop.schema import Sop
from sopflow.sop.validate import load_plan
from sopflow.store.repository import Store, VersionConflictError

ROOT = Path(__file__).resolve().parents[2]
CALLBACK = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
START = datetime(2026, 12, 1, 14, 10, tzinfo=UTC)
PINNED = (CALLBACK.sop.id, CALLBACK.sop.version, CALLBACK.digest)
CONTACT = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}


def test_deploy_is_a_no_op_for_the_same_digest_and_refuses_a_reused_version(store: Store) -> None:
    first = store.deploy(CALLBACK)
    assert first.created and first.version == CALLBACK.sop.version
    assert not store.deploy(CALLBACK).created
    changed = CALLBACK.sop.model_copy(update={"name": "Renamed"})
    with pytest.raises(VersionConflictError, match="bump `version`"):
        store.deploy(compile_plan(changed))
    v2 = compile_plan(changed.model_copy(update={"version": CALLBACK.sop.version + 1}))
    assert store.deploy(v2).created
    assert store.latest_plan("new_lead_callback").digest == v2.digest
    with pytest.raises(UnknownSopError, match="new_lead_callback"):
        store.latest_plan("nope")


def test_every_command_of_a_run_is_stored_once_with_planned_and_actual_times(store: Store) -> None:
    store.deploy(CALLBACK)
    assert store.start_run("wf-1", "run-a", *PINNED, "c-1", START)
    assert not store.start_run("wf-1", "run-b", *PINNED, "c-1", START)  # a duplicate start
    commands = engine.start(CALLBACK, CONTACT, ["America/New_York"], START).commands
    assert len(commands) >= 2  # enrolled, assign
    stored = 0
    for command in commands:
        assert store.record_command("wf-1", "run-a", command)
        assert not store.record_command("wf-1", "run-a", command)  # a retried activity
        stored += 1
    events = store.step_events("wf-1")
    assert len(events) == stored
    assign = next(e for e in events if e.kind == "assign")
    assert (
        assign.executed_at.tzinfo is not None
        and assign.due_at == assign.executed_at + timedelta(minutes=30)
    )
    assert assign.detail["assign"]["strategy"] == "round_robin"


def test_finish_closes_the_run(store: Store) -> None:
    plan = compile_plan(
        Sop.model_validate(
            {
                "id": "tiny",
                "version": 1,
                "name": "T",
                "owner": "o",
                "entry": {"events": ["x"]},
                "steps": [{"id": "bye", "kind": "end", "result": "done"}],
            }
        )
    )
    store.start_run("wf-2", "run-a", plan.sop.id, 1, plan.digest, "c-2", START)
    for command in engine.start(plan, {"id": "c-2"}, ["UTC"], START).commands:
        store.record_command("wf-2", "run-a", command)
    run = store.run("wf-2")
    assert run is not None and run.status == "finished" and run.result == "done"
    assert run.finished_at == START


def test_outbox_claims_a_key_once(store: Store) -> None:
    first = store.outbox_begin("wf-1/first_call:1:0", "wf-1", "assign")
    assert first.status == "pending" and first.attempts == 1
    again = store.outbox_begin("wf-1/first_call:1:0", "wf-1", "assign")
    assert again.status == "pending" and again.attempts == 2  # in doubt: the caller must resolve it
    store.outbox_finish("wf-1/first_call:1:0", "done", provider_id="SM123", result={"sid": "SM123"})
    done = store.outbox_begin("wf-1/first_call:1:0", "wf-1", "assign")
    assert done.status == "done" and done.provider_id == "SM123" and done.result == {"sid": "SM123"}


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        store.start_run("wf-3", "run-a", *PINNED, "c-3", datetime(2026, 12, 1, 9, 0))


def test_the_migrations_build_exactly_the_models_schema(store: Store) -> None:
    """A model changed without a migration (or the reverse) fails here, on both databases."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sopflow.store.models import Base

    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        differences = [d for d in compare_metadata(context, Base.metadata)]
    assert differences == []


def test_a_contact_event_without_a_field_keeps_the_stored_value(store: Store) -> None:
    store.upsert_contact({**CONTACT, "timezone": "America/New_York", "owner": "ana"})
    store.upsert_contact({"id": "c-1", "phone": "", "lead_source": None, "score": 3})
    row = store.contact("c-1")
    assert row is not None
    assert (row.phone, row.timezone, row.owner) == ("+12125550123", "America/New_York", "ana")
    assert row.fields == {"first_name": "Ann", "lead_source": "web", "score": 3}
    assert store.contacts_with_phone("+12125550123") == ["c-1"]  # a STOP still finds them
    store.upsert_contact({"id": "c-1", "phone": "+12125550199", "first_name": "Anna"})
    row = store.contact("c-1")
    assert row is not None and (row.phone, row.fields["first_name"]) == ("+12125550199", "Anna")


def test_contact_values_the_database_cannot_keep_are_refused_before_writing(store: Store) -> None:
    with pytest.raises(InvalidContactError, match="contact 'c-1': `owner` is longer than 64"):
        store.upsert_contact({"id": "c-1", "owner": "o" * 65})
    with pytest.raises(InvalidContactError, match="`timezone` contains a NUL"):
        store.upsert_contact({"id": "c-1", "timezone": "UTC\x00"})
    with pytest.raises(InvalidContactError, match="`id` is longer than 64"):
        store.update_contact("c" * 65, {"score": 1})
    with pytest.raises(InvalidContactError, match="`owner` is not valid Unicode"):
        store.update_contact("c-1", {"owner": "\ud800"})
    assert store.contact("c-1") is None
    store.upsert_contact({"id": "c-1", "note": "a\x00b" * 1000})  # JSON fields keep anything
    row = store.contact("c-1")
    assert row is not None and row.fields["note"] == "a\x00b" * 1000


def test_step_event_free_text_is_cut_to_fit_rather_than_failing(store: Store) -> None:
    store.start_run("wf-1", "run-a", *PINNED, "c-1", START)
    report = Record(at=START, step="call", key="outcome:1", action="outcome", detail={})
    assert store.record_command(
        "wf-1", "run-a", report, actor="rep\x00" + "r" * 100, outcome="o" * 70, reason="x" * 900
    )
    (event,) = store.step_events("wf-1")
    assert (event.actor, event.outcome) == ("rep" + "r" * 61, "o" * 64)
    assert event.reason == "x" * 500
