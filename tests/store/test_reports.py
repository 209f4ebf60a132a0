"""Scores recomputed from the stored event log equal the scores of the same commands in memory,
on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sopflow.compliance.adherence import Report, RunFacts, score_run
from sopflow.errors import SopflowError
from sopflow.sop.protocol import AssignTask
from sopflow.sop.simulator import Script, ScriptedOutcome, simulate
from sopflow.sop.validate import load_plan
from sopflow.store.reports import Scores, run_score_view, step_row
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

PLAN = load_plan(Path(__file__).parents[2] / "sop_definitions" / "new_lead_callback.yaml")
START = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)


def _record_runs(store: Store, count: int) -> Report:
    """Simulated runs written to the store as the worker writes them; their scores in memory."""
    store.deploy(PLAN)
    RepDirectory(store.engine).import_teams(
        [{"id": "inside", "name": "Inside", "reps": [{"id": "ana"}, {"id": "ben"}]}]
    )
    expected = Report("rep")
    rng = random.Random(5)
    for n in range(count):
        contact = {"id": f"c{n}", "first_name": "Ann", "phone": "+12125550123"}
        delay = timedelta(minutes=rng.choice([5, 50, 500]), seconds=3)
        script = Script(outcomes={"first_call": [ScriptedOutcome("connected", delay)]})
        started = START + timedelta(hours=n)
        sim = simulate(PLAN, contact, started, script)
        store.upsert_contact(contact)
        workflow_id = f"sop:new_lead_callback:c{n}:k"
        store.start_run(workflow_id, "r", PLAN.sop.id, 1, PLAN.digest, f"c{n}", started)
        rep = "ana" if n % 2 else "ben"
        rows = []
        for command in sim.commands:
            actor = rep if isinstance(command, AssignTask) else None
            store.record_command(workflow_id, "r", command, actor=actor)
            rows.append(step_row(command, actor))
        facts = RunFacts(workflow_id, PLAN.sop.id, 1, sim.state.finished, sim.zones)
        expected.add(score_run(PLAN, facts, rows))
    return expected


def test_the_stored_log_scores_like_the_commands(store: Store) -> None:
    expected = _record_runs(store, 12)
    scores = Scores(store.engine)
    assert scores.report("rep") == expected.rows()
    teams = {row["group"]: row for row in scores.report("team")}
    assert set(teams) == {"inside", "(system)"}
    since = scores.report("sop", since=START + timedelta(hours=6))
    assert since[0]["runs"] == 6


def test_one_runs_score_with_its_reasons(store: Store) -> None:
    _record_runs(store, 3)
    view = run_score_view(Scores(store.engine).run("sop:new_lead_callback:c2:k"))
    assert view["sop"] == "new_lead_callback" and view["items"][0]["step"] == "first_call"
    assert view["score"] is not None
    with pytest.raises(SopflowError, match="unknown run 'nope'"):
        Scores(store.engine).run("nope")
