"""Kept verdicts (store/verdicts.py): a run's score is read from `run_verdicts` while its inputs
stay the same, and rescored the moment one changes: a new step event (a late receipt on a
finished run too), the run finishing, an opt-out, a new time zone, another scorer version, a
damaged row. Open tasks turn overdue with the clock while their verdict stays kept. On SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update

from sopflow.compliance.adherence import RunFacts, RunScore, score_run
from sopflow.compliance.funnel import Funnel
from sopflow.compliance.teams_report import TeamsReport
from sopflow.compliance.traced import Window
from sopflow.principals import ADMIN
from sopflow.sop.protocol import AssignTask
from sopflow.sop.simulator import Script, ScriptedOutcome, simulate
from sopflow.store.models import Contact, Run, RunVerdict, StepEvent
from sopflow.store.reports import Scores, step_row
from sopflow.store.repository import Store

from .report_world import BASE, LEADS, Writer

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
KEPT = "(served from run_verdicts)"


def score(store: Store, run: Writer) -> RunScore:
    return Scores(store.engine).run(run.run_id)


def kept_row(store: Store, run: Writer) -> tuple[str, str] | None:
    with store.engine.connect() as connection:
        query = select(RunVerdict.basis, RunVerdict.verdict)
        found = connection.execute(query.where(RunVerdict.workflow_id == run.run_id)).first()
    return (found.basis, found.verdict) if found is not None else None


def mark_kept(store: Store, run: Writer) -> None:
    """Rewrite every kept item's reason, so a score served from the row shows it."""
    found = kept_row(store, run)
    assert found is not None
    zones, variant, items, violations = json.loads(found[1])
    marked = [[*item[:9], KEPT] for item in items]
    set_verdict(store, run, json.dumps([zones, variant, marked, violations]))


def set_verdict(store: Store, run: Writer, text: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(RunVerdict).where(RunVerdict.workflow_id == run.run_id).values(verdict=text)
        )


def served(found: RunScore) -> bool:
    return bool(found.items) and all(item.reason == KEPT for item in found.items)


def open_task(store: Store, name: str) -> Writer:
    store.deploy(LEADS)
    run = Writer(store, LEADS, name, BASE)
    run.task("first_call", "ana", BASE, BASE + 30 * MIN)
    return run


def test_a_kept_verdict_serves_until_a_new_step_event(report_store: Store) -> None:
    run = open_task(report_store, "a")
    assert [i.status for i in score(report_store, run).items] == ["pending"]
    mark_kept(report_store, run)
    assert served(score(report_store, run))
    run.outcome("first_call", "connected", BASE + 10 * MIN, "ana")
    fresh = score(report_store, run)
    assert not served(fresh)
    assert [i.status for i in fresh.items] == ["on_time"]
    assert served(score(report_store, run)) is False  # kept anew, from the new events
    mark_kept(report_store, run)
    assert served(score(report_store, run))


def test_a_late_receipt_on_a_finished_run_rescores_it(report_store: Store) -> None:
    run = open_task(report_store, "b")
    run.outcome("first_call", "connected", BASE + 10 * MIN, "ana")
    run.finish("first_call", BASE + 10 * MIN, "connected")
    assert score(report_store, run).score == 100.0
    mark_kept(report_store, run)
    # The carrier's failure of a touch arrives after the run has finished.
    run.note("first_call", "failed", BASE + 2 * HOUR, reason="carrier: undeliverable")
    fresh = score(report_store, run)
    assert not served(fresh)
    assert [i.status for i in fresh.items] == ["on_time", "missed"]
    assert fresh.score is not None and fresh.score < 100


def test_an_event_committed_late_with_an_older_id_rescores_the_run(report_store: Store) -> None:
    """Ids are handed out before commit: a concurrent writer's event may land with an id below
    the last one scored. The count of events catches it."""
    run = open_task(report_store, "h")
    row = {"workflow_id": run.run_id, "temporal_run_id": "r", "step": "first_call",
           "kind": "record", "detail": {}}  # fmt: skip
    deferred = {"id": 1_000, "key": "note:a", "action": "deferred", "executed_at": BASE}
    with report_store.engine.begin() as connection:
        connection.execute(insert(StepEvent).values(row | deferred))
    assert [i.status for i in score(report_store, run).items] == ["pending"]
    mark_kept(report_store, run)
    outcome = {"id": 500, "key": "note:b", "action": "outcome", "outcome": "connected",
               "actor": "ana", "executed_at": BASE + 10 * MIN}  # fmt: skip
    with report_store.engine.begin() as connection:
        connection.execute(insert(StepEvent).values(row | outcome))
    assert [i.status for i in score(report_store, run).items] == ["on_time"]


def test_a_run_that_finishes_without_a_new_event_is_rescored(report_store: Store) -> None:
    run = open_task(report_store, "c")
    assert score(report_store, run).items[0].status == "pending"
    mark_kept(report_store, run)
    with report_store.engine.begin() as connection:
        connection.execute(
            update(Run).where(Run.workflow_id == run.run_id).values(status="finished")
        )
    fresh = score(report_store, run)
    assert (fresh.items[0].status, fresh.items[0].reason) == (
        "excused",
        "the run ended before the task was due",
    )


def test_an_opt_out_after_scoring_rescores_the_run(report_store: Store) -> None:
    run = open_task(report_store, "d")
    run.outcome("first_call", "connected", BASE + 10 * MIN, "ana")
    assert score(report_store, run).violations == []
    mark_kept(report_store, run)
    with report_store.engine.begin() as connection:
        connection.execute(update(Contact).where(Contact.id == "d").values(opted_out_at=BASE))
    fresh = score(report_store, run)
    assert [v.rule for v in fresh.violations] == ["after_opt_out"]
    assert fresh.facts.opted_out_at == BASE


def test_a_new_time_zone_rescores_the_run(report_store: Store) -> None:
    run = open_task(report_store, "e")
    run.outcome("first_call", "connected", BASE + 10 * MIN, "ana")  # 09:10 in New York
    assert score(report_store, run).violations == []
    mark_kept(report_store, run)
    report_store.upsert_contact({"id": "e", "timezone": "Asia/Tokyo"})  # 23:10 there
    fresh = score(report_store, run)
    assert fresh.facts.zones == ["Asia/Tokyo"]
    assert [v.rule for v in fresh.violations] == ["out_of_window"]


def test_a_verdict_of_another_scorer_or_damaged_is_rescored(report_store: Store) -> None:
    run = open_task(report_store, "f")
    expected = score(report_store, run)
    found = kept_row(report_store, run)
    assert found is not None and found[0].startswith("v1/")
    mark_kept(report_store, run)
    with report_store.engine.begin() as connection:
        other = "v0/" + found[0].removeprefix("v1/")
        connection.execute(
            update(RunVerdict).where(RunVerdict.workflow_id == run.run_id).values(basis=other)
        )
    assert score(report_store, run) == expected
    for damaged in ("not json", "[1, 2]", '[[], null, [["x"]], []]', "null"):
        set_verdict(report_store, run, damaged)
        assert score(report_store, run) == expected
        assert kept_row(report_store, run) == found  # rescored and kept again


def test_an_open_task_turns_overdue_with_the_clock_while_kept(report_store: Store) -> None:
    run = open_task(report_store, "g")
    due = BASE + 30 * MIN
    funnel, reps = Funnel(report_store.engine), TeamsReport(report_store.engine)

    def first_call(now: Any) -> dict[str, int]:
        steps = funnel.report(ADMIN, LEADS.sop.id, Window(), now)["steps"]
        cell = next(s for s in steps if s["step"] == "first_call")["columns"][0]
        ana = next(r for r in reps.report(ADMIN, Window(), now)["reps"] if r["rep"] == "ana")
        return {
            "open": cell["open"]["value"],
            "overdue": cell["overdue"]["value"],
            "rep_overdue": ana["overdue"]["value"],
        }

    assert first_call(due - MIN) == {"open": 1, "overdue": 0, "rep_overdue": 0}
    basis = kept_row(report_store, run)
    assert first_call(due + MIN) == {"open": 0, "overdue": 1, "rep_overdue": 1}
    assert kept_row(report_store, run) == basis  # the same kept verdict, judged at a later now


def test_kept_verdicts_equal_fresh_scores(report_store: Store) -> None:
    """Random runs (late, missed, on time, open; some contacts in Tokyo, outside the window):
    the cold pass, the kept pass and the scorer in memory agree."""
    report_store.deploy(LEADS)
    rng = random.Random(11)
    expected: list[RunScore] = []
    for n in range(24):
        contact = {"id": f"r{n}", "phone": "+12125550123"}
        # Simulated in New York, scored in Tokyo: its touches fall outside the window there.
        tokyo = n % 3 == 0
        report_store.upsert_contact(contact | ({"timezone": "Asia/Tokyo"} if tokyo else {}))
        outcomes = [
            ScriptedOutcome(rng.choice(["no_answer", "connected", "busy"]), rng.choice(
                [timedelta(minutes=5), timedelta(minutes=50), timedelta(hours=30)]
            ))
            for _ in range(6)
        ]  # fmt: skip
        script = Script(outcomes={"first_call": outcomes[:1], "retry_calls": outcomes[1:]})
        start = BASE + timedelta(hours=n * 5)
        sim = simulate(LEADS, contact, start, script)
        commands = sim.commands[: rng.choice([len(sim.commands), 1 + n % 4])]
        run_id = f"sop:{LEADS.sop.id}:r{n}:k"
        report_store.start_run(run_id, "r", LEADS.sop.id, 1, LEADS.digest, f"r{n}", start)
        rows = []
        for command in commands:
            actor = "ana" if isinstance(command, AssignTask) else None
            report_store.record_command(run_id, "r", command, actor=actor)
            rows.append(step_row(command, actor))
        finished = len(commands) == len(sim.commands) and sim.state.finished
        zones = ["Asia/Tokyo"] if tokyo else sim.zones
        facts = RunFacts(run_id, LEADS.sop.id, 1, finished, zones)
        expected.append(score_run(LEADS, facts, rows))
    expected.sort(key=lambda s: s.facts.workflow_id)
    cold = list(Scores(report_store.engine).runs())
    kept = list(Scores(report_store.engine).runs())
    assert cold == expected
    assert kept == expected
    statuses = {i.status for s in expected for i in s.items}
    assert {"on_time", "late", "missed", "pending"} <= statuses
    assert any(s.violations for s in expected)
    assert any(i.late_by for s in expected for i in s.items)
