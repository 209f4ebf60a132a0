"""Adherence scoring, case by case: each status, each violation, the reasons, the groupings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sopflow.compliance.adherence import Report, RunFacts, RunScore, StepRow, score_run
from sopflow.sop.validate import load_plan

PLAN = load_plan(Path(__file__).parents[2] / "sop_definitions" / "new_lead_callback.yaml")
NY = ["America/New_York"]
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York


def assign(at: datetime, step: str = "first_call", n: int = 1, actor: str = "ana") -> StepRow:
    due = at + (timedelta(minutes=30) if step == "first_call" else timedelta(hours=1))
    return StepRow(
        f"{step}:{n}:1", step, "assign", "assign", at, at, due, actor=actor, channel="call"
    )


def outcome(at: datetime, value: str, step: str = "first_call", actor: str = "ana") -> StepRow:
    return StepRow(
        f"{step}:outcome:{at.timestamp()}",
        step,
        "record",
        "outcome",
        at,
        outcome=value,
        actor=actor,
        detail={"outcome": value, "actor": actor},
    )


def record(at: datetime, action: str, step: str = "retry_calls", **detail: Any) -> StepRow:
    return StepRow(
        f"{step}:{action}:{at.timestamp()}",
        step,
        "record",
        action,
        at,
        reason=detail.pop("reason", None),
        detail=detail,
    )


def sms(at: datetime, planned: datetime, step: str = "retry_calls") -> StepRow:
    return StepRow(f"{step}:1:f0", step, "send", "sms", at, planned, channel="sms")


def score(*rows: StepRow, finished: bool = True, opted_out_at: datetime | None = None) -> RunScore:
    facts = RunFacts("run-1", PLAN.sop.id, 1, finished, NY, opted_out_at)
    return score_run(PLAN, facts, rows)


def test_a_task_reported_in_time_scores_100_and_meets_the_sla() -> None:
    run = score(assign(T0), outcome(T0 + timedelta(minutes=12), "connected"))
    assert (run.score, run.sla_met, run.losses()) == (100.0, True, [])


def test_a_late_report_loses_half_and_says_by_how_much() -> None:
    run = score(assign(T0), outcome(T0 + timedelta(minutes=75), "no_answer"))
    assert run.score == 50.0 and run.sla_met is False
    (loss,) = run.losses()
    assert loss == {
        "step": "first_call",
        "key": "first_call:1:1",
        "actor": "ana",
        "status": "late",
        "points": 0.5,
        "reason": "outcome 'no_answer' reported 45m after it was due",
    }


def test_the_ladders_tolerance_is_still_on_time() -> None:
    at = T0 + timedelta(hours=3)
    run = score(
        assign(at, "retry_calls"), outcome(at + timedelta(minutes=85), "busy", "retry_calls")
    )
    assert run.items[0].status == "on_time"  # due after 60m, 30m tolerance
    late = score(
        assign(at, "retry_calls"), outcome(at + timedelta(minutes=95), "busy", "retry_calls")
    )
    assert "(tolerance 30m)" in late.losses()[0]["reason"]


def test_an_expired_task_is_missed() -> None:
    run = score(assign(T0), outcome(T0 + timedelta(minutes=150), "expired", actor="sopflow"))
    assert run.score == 0.0 and run.items[0].status == "missed"
    assert "no outcome reported; the task expired 2h after it was due" in run.losses()[0]["reason"]


def test_blocked_skipped_and_deferred_touches_are_excused() -> None:
    blocked = record(T0, "blocked", reason="the contact opted out", rule="opt_out")
    deferred = record(T0, "deferred", reason="outside the sms window", until="x")
    late_sms = sms(T0 + timedelta(hours=3), T0)
    run = score(
        assign(T0), outcome(T0 + timedelta(minutes=5), "connected"), blocked, deferred, late_sms
    )
    assert [i.status for i in run.items] == ["on_time", "excused", "excused"]
    assert run.items[1].reason == "blocked by opt_out: the contact opted out"
    assert run.score == 100.0


def test_a_system_touch_that_went_out_late_without_a_reason_is_late() -> None:
    # The ladder's tolerance is 30 minutes; a system touch gets at least 1 minute.
    run = score(sms(T0 + timedelta(minutes=50), T0), sms(T0 + timedelta(minutes=20), T0))
    assert [i.status for i in run.items] == ["late", "on_time"]
    assert run.losses()[0]["actor"] == "(system)"
    assert "sms went out 50m after its planned time" in run.losses()[0]["reason"]


def test_a_failed_send_is_missed() -> None:
    run = score(record(T0, "failed", reason="carrier rejected"))
    assert run.items[0].status == "missed" and "carrier rejected" in run.items[0].reason


def test_a_rep_call_outside_the_window_is_a_violation() -> None:
    night = datetime(2026, 12, 1, 22, 0, tzinfo=UTC) + timedelta(hours=5)  # 22:00 in New York
    run = score(assign(night - timedelta(minutes=10)), outcome(night, "no_answer"))
    (violation,) = run.violations
    assert violation.rule == "out_of_window" and violation.actor == "ana"
    assert "outside the call window 09:00-20:00" in violation.reason
    assert run.score == 0.0  # on time, but the violation costs the step's point


def test_a_call_after_the_opt_out_is_a_violation() -> None:
    run = score(assign(T0), outcome(T0 + timedelta(minutes=10), "no_answer"), opted_out_at=T0)
    assert [v.rule for v in run.violations] == ["after_opt_out"]


def test_open_tasks_are_pending_while_the_run_runs_and_excused_when_it_ended() -> None:
    running = score(assign(T0), finished=False)
    assert running.items[0].status == "pending" and running.score is None
    ended = score(assign(T0), finished=True)
    assert ended.items[0].status == "excused" and ended.score is None


def test_groupings() -> None:
    report_rows = {}
    runs = [
        score(
            assign(T0, actor="ana"), outcome(T0 + timedelta(minutes=5), "connected", actor="ana")
        ),
        score(assign(T0, actor="ben"), outcome(T0 + timedelta(hours=1), "busy", actor="ben")),
    ]
    for by in ("rep", "team", "sop", "version", "variant", "day"):
        report = Report(by, {"ana": "inside_sales"})  # type: ignore[arg-type]
        for run in runs:
            report.add(run)
        report_rows[by] = {r["group"]: r for r in report.rows()}
    assert (
        report_rows["rep"]["ana"]["score"] == 100.0 and report_rows["rep"]["ben"]["score"] == 50.0
    )
    assert set(report_rows["team"]) == {"inside_sales", "(no team)"}
    assert report_rows["sop"]["new_lead_callback"]["score"] == 75.0
    assert report_rows["sop"]["new_lead_callback"]["runs"] == 2
    assert report_rows["sop"]["new_lead_callback"]["sla_met"] == 1
    assert set(report_rows["version"]) == {"new_lead_callback v1"}
    assert set(report_rows["variant"]) == {"new_lead_callback:(none)"}
    assert set(report_rows["day"]) == {"2026-12-01"}
    with pytest.raises(ValueError, match="unknown grouping 'color'"):
        Report("color")  # type: ignore[arg-type]
