"""Who gets a task, on SQLite and PostgreSQL: owner, named rep, round robin, least loaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sopflow.errors import SopflowError
from sopflow.sop.protocol import AssignTask, Escalate
from sopflow.sop.schema import AssignRule
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
TEAMS = [
    {
        "id": "inside_sales",
        "name": "Inside sales",
        "supervisor": "sam",
        "reps": [
            {"id": "ana", "name": "Ana Lima", "phone": "+12125550101"},
            {"id": "ben", "name": "Ben Ortiz", "phone": "+12125550102"},
            {"id": "cy", "name": "Cy Young", "active": False},
        ],
    },
    {"id": "leads", "name": "Leads", "reps": [{"id": "sam", "name": "Sam Lee"}]},
]
ROUND_ROBIN = AssignRule(strategy="round_robin", team="inside_sales")


def _directory(store: Store) -> RepDirectory:
    reps = RepDirectory(store.engine)
    assert reps.import_teams(TEAMS) == (2, 4)
    return reps


def _assign(store: Store, workflow_id: str, n: int, rep_id: str, at: datetime = AT) -> None:
    store.start_run(workflow_id, "r", "t", 1, "d", "c-1", at)
    task = AssignTask(
        at=at,
        step="call",
        key=f"call:{n}:1",
        title="Call",
        instructions="",
        assign=ROUND_ROBIN,
        due_at=at,
        planned_at=at,
        attempt=1,
        context={},
    )
    store.record_command(workflow_id, "r", task, actor=rep_id)


def test_round_robin_takes_active_reps_in_turn(store: Store) -> None:
    reps = _directory(store)
    chosen = []
    for n in range(4):
        rep = reps.choose(ROUND_ROBIN, "c-1", "w1")
        assert rep is not None
        chosen.append(rep.id)
        _assign(store, "w1", n, rep.id)
    assert chosen == ["ana", "ben", "ana", "ben"]  # cy is inactive


def test_least_loaded_counts_the_last_24_hours(store: Store) -> None:
    reps = _directory(store)
    rule = AssignRule(strategy="least_loaded", team="inside_sales")
    _assign(store, "w1", 1, "ana")
    _assign(store, "w1", 2, "ben", at=AT - timedelta(days=2))  # too old to count
    _assign(store, "w1", 3, "ben", at=AT - timedelta(days=3))
    rep = reps.choose(rule, "c-1", "w1", now=AT)
    assert rep is not None and rep.id == "ben"


def test_owner_then_the_runs_rep_then_nobody(store: Store) -> None:
    reps = _directory(store)
    owner = AssignRule(strategy="owner")
    assert reps.choose(owner, "c-1", "w1") is None
    _assign(store, "w1", 1, "ben")
    rep = reps.choose(owner, "c-1", "w1")
    assert rep is not None and rep.id == "ben"
    store.upsert_contact({"id": "c-1", "owner": "ana"})
    rep = reps.choose(owner, "c-1", "w1")
    assert rep is not None and rep.id == "ana"
    store.upsert_contact({"id": "c-1", "owner": "cy"})  # inactive: falls back to the run's rep
    rep = reps.choose(owner, "c-1", "w1")
    assert rep is not None and rep.id == "ben"


def test_a_reassignment_moves_the_runs_rep(store: Store) -> None:
    reps = _directory(store)
    _assign(store, "w1", 1, "ana")
    move = Escalate(
        at=AT, step="call", key="esc", action="reassign", level=2, to=ROUND_ROBIN, due_at=AT
    )
    store.record_command("w1", "r", move, actor="ben")
    rep = reps.assigned_in_run("w1")
    assert rep is not None and rep.id == "ben"


def test_named_rep_supervisor_and_template_view(store: Store) -> None:
    reps = _directory(store)
    ana = reps.choose(AssignRule(strategy="rep", rep="ana"), "c-1", "w1")
    assert ana is not None and ana.template_view()["first_name"] == "Ana"
    assert reps.choose(AssignRule(strategy="rep", rep="cy"), "c-1", "w1") is None
    supervisor = reps.supervisor_of("ana")
    assert supervisor is not None and supervisor.id == "sam"
    assert reps.choose(AssignRule(strategy="round_robin", team="nobody"), "c-1", "w1") is None


def test_claiming_an_owner_keeps_an_existing_one(store: Store) -> None:
    reps = _directory(store)
    store.upsert_contact({"id": "c-1"})
    reps.claim_owner("c-1", "ben")
    reps.claim_owner("c-1", "ana")
    store.upsert_contact({"id": "c-1", "phone": "+12125550199"})  # a CRM update without owner
    contact = store.contact("c-1")
    assert contact is not None and contact.owner == "ben"


def test_an_import_naming_an_unknown_supervisor_changes_nothing(store: Store) -> None:
    reps = RepDirectory(store.engine)
    with pytest.raises(SopflowError, match="supervisor 'ghost' is not a rep"):
        reps.import_teams([{"id": "t", "supervisor": "ghost", "reps": [{"id": "x"}]}])
    assert reps.reps() == []


CAPPED = [
    {
        "id": "floor",
        "name": "Floor",
        "max_tasks_per_day": 2,
        "reps": [
            {"id": "ana", "name": "Ana"},
            {"id": "ben", "name": "Ben", "max_tasks_per_day": 1},
            {"id": "dee", "name": "Dee", "max_tasks_per_day": 5, "active": False},
        ],
    }
]


def test_workload_caps_skip_full_reps_then_defer_until_one_frees(store: Store) -> None:
    from sopflow.store.reps import RepsAtCapacity

    reps = RepDirectory(store.engine)
    reps.import_teams(CAPPED)
    rule = AssignRule(strategy="round_robin", team="floor")
    assert [r.max_tasks_per_day for r in reps.reps()] == [2, 1, 5]  # the team's default, or own
    _assign(store, "w1", 1, "ana", AT - timedelta(hours=23))
    _assign(store, "w2", 2, "ben", AT - timedelta(hours=20))  # ben is full
    chosen = reps.choose(rule, "c-1", "w3", AT)
    assert chosen is not None and chosen.id == "ana"  # round robin would say ana anyway
    _assign(store, "w3", 3, "ana", AT)  # ana is full too
    least = AssignRule(strategy="least_loaded", team="floor")
    for strategy in (rule, least):
        with pytest.raises(RepsAtCapacity, match="every active rep of team 'floor'") as full:
            reps.choose(strategy, "c-1", "w4", AT)
        # ana's older task leaves the 24-hour window first.
        assert full.value.retry_at == AT + timedelta(hours=1)
    later = reps.choose(least, "c-1", "w4", AT + timedelta(hours=1, seconds=1))
    assert later is not None and later.id == "ana"
    owner = AssignRule(strategy="rep", rep="ben")
    with pytest.raises(RepsAtCapacity, match="rep 'ben' reached max_tasks_per_day"):
        reps.choose(owner, "c-1", "w5", AT)


async def test_a_task_for_a_full_team_comes_back_blocked_for_the_engine_to_defer(
    store: Store,
) -> None:
    from activities.store_effects import StoreEffects
    from sopflow.providers.loopback import LoopbackProvider
    from workflows.contracts import CommandInput

    RepDirectory(store.engine).import_teams(CAPPED)
    _assign(store, "w1", 1, "ana", AT - timedelta(hours=2))
    _assign(store, "w2", 2, "ana", AT - timedelta(hours=1))
    _assign(store, "w3", 3, "ben", AT - timedelta(hours=1))
    task = AssignTask(
        at=AT,
        step="call",
        key="call:1:1",
        title="Call",
        instructions="",
        assign=AssignRule(strategy="round_robin", team="floor"),
        due_at=AT + timedelta(minutes=30),
        planned_at=AT,
        attempt=1,
        context={"contact": {"id": "c-9"}},
    )
    params = CommandInput(
        workflow_id="w9", run_id="r", sop="t", version=1, digest="d", command=task,
        contact_id="c-9", enrolled_at=AT,
    )  # fmt: skip
    effects = StoreEffects(store, LoopbackProvider())
    assert (await effects.rep_for(params))["id"] == "unassigned"  # nothing to render for
    result = await effects.perform(
        params.idempotency_key, params, {"title": "Call", "instructions": ""}
    )
    assert (result.status, result.detail) == ("blocked", {"rule": "rep_workload"})
    assert result.retry_at == AT + timedelta(hours=22)  # ana's first task of the day ages out
    assert store.step_events("w9") == []  # the engine records the deferral, with this reason


async def test_a_retried_assignment_keeps_the_rep_it_texted(store: Store) -> None:
    """Round robin moves on while a notice is in doubt; the retry must not give the lead (and a
    notice) to a second rep."""
    from activities.store_effects import StoreEffects
    from sopflow.providers.loopback import LoopbackProvider
    from workflows.contracts import CommandInput

    class LosesFirstNotice(LoopbackProvider):
        async def send_message(self, *args: Any, **kwargs: Any) -> str:
            provider_id = await super().send_message(*args, **kwargs)
            if len(self.sent) == 1:
                raise ConnectionError("response lost")
            return provider_id

    _directory(store)
    provider = LosesFirstNotice()
    effects = StoreEffects(store, provider)
    task = AssignTask(
        at=AT, step="call", key="call:1:1", title="Call", instructions="",
        assign=ROUND_ROBIN, due_at=AT, planned_at=AT, attempt=1,
        context={"contact": {"id": "c-5"}},
    )  # fmt: skip
    params = CommandInput(
        workflow_id="w5", run_id="r", sop="t", version=1, digest="d", command=task,
        contact_id="c-5", enrolled_at=AT,
    )  # fmt: skip
    rendered = {"title": "Call", "instructions": ""}
    with pytest.raises(ConnectionError):
        await effects.perform(params.idempotency_key, params, rendered)
    (first,) = provider.sent
    assert first[2] == "+12125550101"  # ana
    _assign(store, "w6", 2, "ana")  # meanwhile another lead went to ana: the rota says ben now
    retried = await effects.perform(params.idempotency_key, params, rendered)
    assert retried.detail["rep"] == "ana" and retried.detail["provider_id"] == first[0]
    assert len(provider.sent) == 1  # ben was never texted
    (event,) = store.step_events("w5")
    assert event.actor == "ana"


async def test_a_task_notice_shows_the_due_time_in_the_reps_zone_and_links_to_the_task(
    store: Store,
) -> None:
    """A rep's own zone wins, else their team's; the notice links to the task in the inbox, and
    the assignment keeps the instructions as rendered for the inbox to show."""
    from activities.store_effects import StoreEffects
    from sopflow.providers.loopback import LoopbackProvider
    from workflows.contracts import CommandInput

    zoned = [
        {"id": "east", "timezone": "America/New_York", "reps": [
            {"id": "ana", "name": "Ana", "phone": "+12125550101"},
            {"id": "ben", "name": "Ben", "phone": "+12125550102", "timezone": "Europe/Paris"},
        ]},
        {"id": "west", "reps": [{"id": "cho", "name": "Cho", "phone": "+12125550104"}]},
    ]  # fmt: skip
    reps = RepDirectory(store.engine)
    reps.import_teams(zoned)
    assert [(r.id, r.timezone) for r in reps.reps()] == [
        ("ana", "America/New_York"),  # the team's
        ("ben", "Europe/Paris"),  # their own
        ("cho", None),
    ]
    provider = LoopbackProvider()
    effects = StoreEffects(store, provider, public_url="https://sopflow.example.com/")
    for n, rep in enumerate(("ana", "ben", "cho")):
        task = AssignTask(
            at=AT, step="call", key=f"call:{n}:1", title="Call", instructions="x",
            assign=AssignRule(strategy="rep", rep=rep), due_at=AT + timedelta(minutes=30),
            planned_at=AT, attempt=1, context={"contact": {"id": "c-1", "first_name": "Ann"}},
        )  # fmt: skip
        params = CommandInput(
            workflow_id=f"sop:s:c-1:e{n}", run_id="r", sop="t", version=1, digest="d",
            command=task, contact_id="c-1", enrolled_at=AT,
        )  # fmt: skip
        await effects.perform(
            params.idempotency_key, params, {"instructions": "Hi Ann, this is Ana."}
        )
    texts = [text for _, _, _, text in provider.sent]
    link = "https://sopflow.example.com/inbox/task?run=sop%3As%3Ac-1%3Ae{}&step=call"
    assert texts[0].endswith(f"due 2026-12-01 10:30 EST {link.format(0)}")  # 15:30 UTC
    assert texts[1].endswith(f"due 2026-12-01 16:30 CET {link.format(1)}")
    assert texts[2].endswith(f"due 2026-12-01 15:30 UTC {link.format(2)}")
    (assign,) = [e for e in store.step_events("sop:s:c-1:e0") if e.action == "assign"]
    assert assign.detail["instructions"] == "Hi Ann, this is Ana."
