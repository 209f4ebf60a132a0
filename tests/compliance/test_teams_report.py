"""The reps and teams report on hand-built runs whose every number is worked out beside them,
on SQLite and PostgreSQL; scoped per principal; windowed by assignment time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sopflow.compliance.teams_report import TeamsReport
from sopflow.compliance.traced import Window
from sopflow.principals import ADMIN, Principal, Role
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

from .report_world import BASE, LEADS, NOW, OTHER, Writer

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
T = [BASE + timedelta(hours=n) for n in range(8)]  # 09:00, 10:00… in New York


def build(store: Store) -> None:
    """ana and ben are on `inside`, cy on `field`; each run says what it adds to whom."""
    store.deploy(LEADS)
    store.deploy(OTHER)
    RepDirectory(store.engine).import_teams(
        [
            {"id": "inside", "name": "Inside", "reps": [{"id": "ana"}, {"id": "ben"}]},
            {"id": "field", "name": "Field", "reps": [{"id": "cy"}]},
        ]
    )
    # r1: ana on time (SLA met), the run converts: a touch and a success for ana
    r1 = Writer(store, LEADS, "r1", T[0])
    r1.task("first_call", "ana", T[0], T[0] + 30 * MIN)
    r1.outcome("first_call", "booked", T[0] + 10 * MIN, "ana")
    r1.finish("converted", T[0] + 11 * MIN, "converted")
    # r2: ben 2 h late (SLA missed, a touch); ana's retry on time within its 30 m tolerance,
    # and the run converts: ana reported last, the success is hers
    r2 = Writer(store, LEADS, "r2", T[1])
    r2.task("first_call", "ben", T[1], T[1] + 30 * MIN)
    r2.outcome("first_call", "no_answer", T[1] + 150 * MIN, "ben")
    r2.task("retry_calls", "ana", T[1] + 3 * HOUR, T[1] + 4 * HOUR)
    r2.outcome("retry_calls", "connected", T[1] + 4 * HOUR + 20 * MIN, "ana")
    r2.finish("converted", T[1] + 4 * HOUR + 21 * MIN, "converted")
    # r3: cy's task open and past due now: overdue, settled, not scored
    r3 = Writer(store, LEADS, "r3", NOW - 3 * HOUR)
    r3.task("first_call", "cy", NOW - 2 * HOUR, NOW - HOUR)
    # r4: ana's task open, due tomorrow: open, not settled
    r4 = Writer(store, LEADS, "r4", NOW - 10 * MIN)
    r4.task("first_call", "ana", NOW - 5 * MIN, NOW + timedelta(days=1))
    # r5: ben never reported: missed (SLA judged, not met)
    r5 = Writer(store, LEADS, "r5", T[4])
    r5.task("first_call", "ben", T[4], T[4] + 30 * MIN)
    r5.outcome("first_call", "expired", T[4] + 150 * MIN, "sopflow")
    r5.finish("no_contact", T[4] + 151 * MIN, "no_contact")
    # r6: cancelled before ana's task was due: skipped (excused), no SLA verdict
    r6 = Writer(store, LEADS, "r6", T[5])
    r6.task("first_call", "ana", T[5], T[5] + 30 * MIN)
    r6.note("first_call", "cancelled", T[5] + 5 * MIN, actor="sue", reason="duplicate")
    r6.finish("first_call", T[5] + 5 * MIN, "cancelled")
    # r7: ben on time at 20:10 in New York, after the call window: one violation
    at = BASE + 10 * HOUR + 50 * MIN  # 19:50 local
    r7 = Writer(store, LEADS, "r7", at)
    r7.task("first_call", "ben", at, at + 30 * MIN)
    r7.outcome("first_call", "not_interested", at + 20 * MIN, "ben")
    r7.finish("lost", at + 21 * MIN, "lost")
    # r8: a task nobody was found for: in no rep's row
    r8 = Writer(store, LEADS, "r8", T[6])
    r8.task("first_call", None, T[6], T[6] + 30 * MIN)
    # r9: cy on time in an SOP naming no success results: no touch, no success counted
    r9 = Writer(store, OTHER, "r9", T[7])
    r9.task("first_call", "cy", T[7], T[7] + 30 * MIN)
    r9.outcome("first_call", "booked", T[7] + 5 * MIN, "cy")
    r9.finish("converted", T[7] + 6 * MIN, "converted")


def values(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v["value"] if isinstance(v, dict) else v for k, v in row.items()}


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: values(row) for row in rows}


# Worked out from the runs above (settled = on time + overdue + skipped).
ANA = {
    "tasks": 4, "settled": 3, "on_time": 2, "overdue": 0, "late": 0, "missed": 0, "skipped": 1,
    "open": 1, "on_time_pct": 66.7, "overdue_pct": 0.0, "skipped_pct": 33.3, "score": 100.0,
    "violations": 0, "sla_met": 1, "sla_judged": 1, "sla_met_pct": 100.0, "touches": 2,
    "successes": 2, "touches_per_success": 1.0,
}  # fmt: skip
BEN = {
    # score: on time 1 + late ½ + missed 0, minus 1 violation, over 3 → 16.7
    "tasks": 3, "settled": 3, "on_time": 1, "overdue": 2, "late": 1, "missed": 1, "skipped": 0,
    "open": 0, "on_time_pct": 33.3, "overdue_pct": 66.7, "skipped_pct": 0.0, "score": 16.7,
    "violations": 1, "sla_met": 1, "sla_judged": 3, "sla_met_pct": 33.3, "touches": 2,
    "successes": 0, "touches_per_success": None,
}  # fmt: skip
CY = {
    "tasks": 2, "settled": 2, "on_time": 1, "overdue": 1, "late": 0, "missed": 0, "skipped": 0,
    "open": 1, "on_time_pct": 50.0, "overdue_pct": 50.0, "skipped_pct": 0.0, "score": 100.0,
    "violations": 0, "sla_met": 1, "sla_judged": 1, "sla_met_pct": 100.0, "touches": 0,
    "successes": 0, "touches_per_success": None,
}  # fmt: skip
INSIDE = {
    # score: 2 + 1.5 earned, minus 1 violation, over 5 → 50
    "tasks": 7, "settled": 6, "on_time": 3, "overdue": 2, "late": 1, "missed": 1, "skipped": 1,
    "open": 1, "on_time_pct": 50.0, "overdue_pct": 33.3, "skipped_pct": 16.7, "score": 50.0,
    "violations": 1, "sla_met": 2, "sla_judged": 4, "sla_met_pct": 50.0, "touches": 4,
    "successes": 2, "touches_per_success": 2.0, "reps": 2,
}  # fmt: skip


@pytest.fixture
def report(report_store: Store) -> TeamsReport:
    build(report_store)
    return TeamsReport(report_store.engine)


def test_each_rep_and_team_metric_as_worked_out(report: TeamsReport) -> None:
    found = report.report(ADMIN, Window(), NOW)
    reps = by(found["reps"], "rep")
    assert set(reps) == {"ana", "ben", "cy"}  # the unassigned task is nobody's row
    assert reps["ana"] == {"rep": "ana", "name": "ana", "team": "inside"} | ANA
    assert reps["ben"] == {"rep": "ben", "name": "ben", "team": "inside"} | BEN
    assert reps["cy"] == {"rep": "cy", "name": "cy", "team": "field"} | CY
    teams = by(found["teams"], "team")
    assert teams["inside"] == {"team": "inside", "name": "Inside"} | INSIDE
    assert teams["field"] == {"team": "field", "name": "Field", "reps": 1} | CY


def test_every_count_names_the_listing_query_behind_it(report: TeamsReport) -> None:
    window = Window(BASE, BASE + timedelta(days=400))
    found = report.report(ADMIN, window, NOW)
    ana = next(row for row in found["reps"] if row["rep"] == "ana")
    span = {"since": BASE.isoformat(), "until": (BASE + timedelta(days=400)).isoformat()}
    assert ana["on_time"]["filter"] == {"rep": "ana", "status": "on_time"} | span
    assert ana["on_time"] | {"filter": None} == {
        "value": 2, "listing": "tasks", "exact": True, "filter": None,
    }  # fmt: skip
    assert ana["overdue"]["filter"] == {"rep": "ana", "late": True} | span
    assert ana["skipped"]["filter"] == {"rep": "ana", "status": "excused"} | span
    assert ana["open"]["filter"] == {"rep": "ana", "status": "pending"} | span
    assert ana["successes"] == {
        "value": 2, "listing": "runs", "filter": {"rep": "ana", "status": "finished"},
        "exact": False,
    }  # fmt: skip
    inside = next(row for row in found["teams"] if row["team"] == "inside")
    assert inside["missed"]["filter"] == {"team": "inside", "status": "missed"} | span


def test_the_window_is_the_time_tasks_were_assigned(report: TeamsReport) -> None:
    # [T4, T6): r5 (ben, missed), r2's retry (ana, on time; the run's success) and r6 (ana,
    # skipped); r2's first task (ben, T1) is out, and with it r2's SLA verdict
    found = report.report(ADMIN, Window(T[4], T[6]), NOW)
    reps = by(found["reps"], "rep")
    ben, ana = reps["ben"], reps["ana"]
    assert (ben["tasks"], ben["missed"], ben["overdue_pct"], ben["sla_judged"]) == (1, 1, 100, 1)
    assert (ana["tasks"], ana["on_time"], ana["skipped"], ana["score"]) == (2, 1, 1, 100)
    assert (ana["touches"], ana["successes"], ana["sla_judged"]) == (1, 1, 0)
    assert reps["cy"]["tasks"] == 0 and reps["cy"]["on_time_pct"] is None  # shown, at zero


def test_a_supervisor_sees_their_teams_reps_only(report: TeamsReport) -> None:
    sue = Principal("sue", Role.supervisor, teams=frozenset({"field"}))
    found = report.report(sue, Window(), NOW)
    assert [row["rep"] for row in found["reps"]] == ["cy"]
    assert by(found["teams"], "team") == {
        "field": {"team": "field", "name": "Field", "reps": 1} | CY
    }
    nobody = Principal("max", Role.supervisor)  # a supervisor of no team sees nothing
    assert report.report(nobody, Window(), NOW) == report.report(nobody, Window(), NOW) | {
        "reps": [], "teams": [],
    }  # fmt: skip


def test_a_rep_sees_their_own_row_and_no_team(report: TeamsReport) -> None:
    ben = Principal("u-ben", Role.rep, rep_id="ben")
    found = report.report(ben, Window(), NOW)
    assert [values(row) | {"rep": row["rep"]} for row in found["reps"]] == [
        {"rep": "ben", "name": "ben", "team": "inside"} | BEN
    ]
    assert found["teams"] == []


def test_ops_may_narrow_to_a_team(report: TeamsReport) -> None:
    found = report.report(ADMIN, Window(), NOW, team="inside")
    assert sorted(row["rep"] for row in found["reps"]) == ["ana", "ben"]
    assert by(found["teams"], "team") == {"inside": {"team": "inside", "name": "Inside"} | INSIDE}
