"""An SOP's funnel on hand-built runs of two versions of the script pilot, on SQLite and
PostgreSQL: steps in plan order, one column per version, each count worked out beside the runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sopflow.compliance.funnel import Funnel
from sopflow.compliance.traced import Window
from sopflow.errors import UnknownSopError
from sopflow.principals import ADMIN, Principal, Role
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

from .report_world import BASE, NOW, OLD_PILOT, PILOT, Writer

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def pilot_run(store: Store, plan: Any, name: str, variant: str, at: Any) -> Writer:
    run = Writer(store, plan, name, at)
    run.note("pick_script", "variant", at, variant=variant)
    return run


def build(store: Store) -> None:
    store.deploy(OLD_PILOT)
    store.deploy(PILOT)
    RepDirectory(store.engine).import_teams(
        [
            {"id": "inside", "name": "Inside", "reps": [{"id": "ana"}]},
            {"id": "field", "name": "Field", "reps": [{"id": "cy"}]},
        ]
    )
    t = BASE
    # v3 f1: script A on time, booked, branch → converted
    f1 = pilot_run(store, PILOT, "f1", "script_a", t)
    f1.task("call_a", "ana", t, t + HOUR)
    f1.outcome("call_a", "booked", t + 10 * MIN, "ana")
    f1.note("score_result", "branch", t + 10 * MIN, case=1, goto="converted")
    f1.finish("converted", t + 10 * MIN, "converted")
    # v3 f2: script B expired unreported (overdue), branch → not_converted (lost)
    f2 = pilot_run(store, PILOT, "f2", "script_b", t + HOUR)
    f2.task("call_b", "ana", t + HOUR, t + 2 * HOUR)
    f2.outcome("call_b", "expired", t + 25 * HOUR, "sopflow")
    f2.note("score_result", "branch", t + 25 * HOUR, case="default", goto="not_converted")
    f2.finish("not_converted", t + 25 * HOUR, "lost")
    # v3 f3: cy's script A task open past its due time (overdue), running
    f3 = pilot_run(store, PILOT, "f3", "script_a", NOW - 3 * HOUR)
    f3.task("call_a", "cy", NOW - 2 * HOUR, NOW - HOUR)
    # v3 f4: script C cancelled before its task was due (skipped), ends at call_c
    f4 = pilot_run(store, PILOT, "f4", "script_c", t + 2 * HOUR)
    f4.task("call_c", "ana", t + 2 * HOUR, t + 3 * HOUR)
    f4.note("call_c", "cancelled", t + 2 * HOUR + 5 * MIN, actor="sue", reason="test lead")
    f4.finish("call_c", t + 2 * HOUR + 5 * MIN, "cancelled")
    # v2 g1: script A on time, interested
    g1 = pilot_run(store, OLD_PILOT, "g1", "script_a", t - 48 * HOUR)
    g1.task("call_a", "ana", t - 48 * HOUR, t - 47 * HOUR)
    g1.outcome("call_a", "interested", t - 48 * HOUR + 30 * MIN, "ana")
    g1.note("score_result", "branch", t - 48 * HOUR + 30 * MIN, case=2, goto="interested")
    g1.finish("interested", t - 48 * HOUR + 30 * MIN, "interested")
    # v2 g2: ended at the step v3 dropped
    g2 = pilot_run(store, OLD_PILOT, "g2", "script_b", t - 47 * HOUR)
    g2.finish("dropped", t - 47 * HOUR, "dropped")


@pytest.fixture
def funnel(report_store: Store) -> Funnel:
    build(report_store)
    return Funnel(report_store.engine)


def numbers(cell: dict[str, Any] | None) -> dict[str, Any] | None:
    if cell is None:
        return None
    counts = {k: v["value"] for k, v in cell.items() if k not in ("version", "exits")}
    return counts | {"exits": {k: v["value"] for k, v in cell["exits"].items()}}


def cell(entries: int = 0, items: int = 0, on_time: int = 0, overdue: int = 0,
         skipped: int = 0, open: int = 0, **exits: int) -> dict[str, Any]:  # fmt: skip
    return {
        "entries": entries, "items": items, "on_time": on_time, "overdue": overdue,
        "skipped": skipped, "open": open, "exits": exits,
    }  # fmt: skip


def test_steps_in_plan_order_with_a_column_per_version(funnel: Funnel) -> None:
    found = funnel.report(ADMIN, "script_pilot", Window(), NOW)
    assert [(v["version"], v["runs"]["value"]) for v in found["versions"]] == [(2, 2), (3, 4)]
    table = {s["step"]: [numbers(c) for c in s["columns"]] for s in found["steps"]}
    assert list(table) == [
        "pick_script", "call_a", "call_b", "call_c", "score_result",
        "converted", "interested", "not_converted", "dropped",
    ]  # fmt: skip
    assert table["pick_script"] == [cell(entries=2), cell(entries=4)]
    assert table["call_a"] == [cell(1, 1, on_time=1), cell(2, 2, on_time=1, overdue=1)]
    assert table["call_b"] == [cell(), cell(1, 1, overdue=1)]  # expired unreported
    assert table["call_c"] == [cell(), cell(1, 1, skipped=1, cancelled=1)]
    assert table["score_result"] == [cell(entries=1), cell(entries=2)]
    assert table["converted"] == [cell(), cell(entries=1, converted=1)]
    assert table["interested"] == [cell(entries=1, interested=1), cell()]
    assert table["not_converted"] == [cell(), cell(entries=1, lost=1)]
    assert table["dropped"] == [cell(entries=1, dropped=1), None]  # not a step of v3


def test_counts_point_at_the_runs_listing(funnel: Funnel) -> None:
    since, until = BASE - timedelta(days=1), NOW + HOUR
    found = funnel.report(ADMIN, "script_pilot", Window(since, until), NOW)
    span = {"since": since.isoformat(), "until": until.isoformat()}
    v3 = found["versions"][1]["runs"]
    assert v3 == {
        "value": 4, "listing": "runs", "filter": {"sop": "script_pilot", "version": 3} | span,
        "exact": True,
    }  # fmt: skip
    call_c = next(s for s in found["steps"] if s["step"] == "call_c")["columns"][1]
    assert (
        call_c["exits"]["cancelled"]["filter"]
        == {"sop": "script_pilot", "version": 3, "status": "finished"} | span
    )
    assert call_c["skipped"]["exact"] is False  # the listing has no step filter
    # The window is the enrolment time: v2's runs, enrolled two days before BASE, are out.
    assert [v["runs"]["value"] for v in found["versions"]] == [0, 4]


def test_a_supervisor_counts_the_runs_of_their_teams(funnel: Funnel) -> None:
    sue = Principal("sue", Role.supervisor, teams=frozenset({"field"}))
    found = funnel.report(sue, "script_pilot", Window(), NOW)
    assert [v["runs"]["value"] for v in found["versions"]] == [0, 1]
    table = {s["step"]: [numbers(c) for c in s["columns"]] for s in found["steps"]}
    assert table["call_a"] == [cell(), cell(1, 1, overdue=1)]  # cy's open task, f3
    assert table["converted"][1] == cell()


def test_an_unknown_sop_is_named(funnel: Funnel) -> None:
    with pytest.raises(UnknownSopError, match="script_pilto"):
        funnel.report(ADMIN, "script_pilto", Window(), NOW)
