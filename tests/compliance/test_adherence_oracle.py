"""1,000 simulated runs of the callback SOP with random outcomes, delays, start times and zones,
scored by sopflow and by an independent oracle written here from the SOP's plain rules:
first call due 30 minutes after it is assigned (no tolerance), retries due 1 hour after (30
minutes' tolerance), a task expires 2 hours after it is due, late earns half, a call reported
outside 09:00-20:00 Mon-Sat (or on a US holiday) is a violation, the follow-up text is on time
unless it had to wait for its 08:00-21:00 window (then it is excused)."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays

from sopflow.compliance.adherence import Report, RunFacts, RunScore, score_run
from sopflow.sop.protocol import AssignTask
from sopflow.sop.simulator import Script, ScriptedOutcome, Simulation, simulate
from sopflow.sop.validate import load_plan
from sopflow.store.reports import step_row

PLAN = load_plan(Path(__file__).parents[2] / "sop_definitions" / "new_lead_callback.yaml")
DUE = {"first_call": timedelta(minutes=30), "retry_calls": timedelta(hours=1)}
TOLERANCE = {"first_call": timedelta(0), "retry_calls": timedelta(minutes=30)}
EXPIRES = timedelta(hours=2)
PHONES = ["+12125550123", "+13105550123", "+13125550123", "+12065550123"]
REPS = ["ana", "ben", "cy"]
US_HOLIDAYS = holidays.country_holidays("US", years=[2026, 2027])
NEVER = timedelta(days=30)  # a report so late the task has long expired


@dataclass
class Case:
    run_id: str
    rep: str
    script: dict[str, list[ScriptedOutcome]]
    sim: Simulation


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    start = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 20 * 24 * 60))

    def report() -> ScriptedOutcome:
        outcome = rng.choice(["no_answer", "busy", "no_answer", "connected", "not_interested"])
        if rng.random() < 0.25:
            return ScriptedOutcome(outcome, NEVER)
        return ScriptedOutcome(outcome, timedelta(minutes=rng.randrange(1, 200), seconds=7))

    script = {"first_call": [report()], "retry_calls": [report() for _ in range(5)]}
    contact = {"id": f"c{seed}", "first_name": "Ann", "phone": rng.choice(PHONES)}
    sim = simulate(PLAN, contact, start, Script(outcomes={k: list(v) for k, v in script.items()}))
    return Case(f"run-{seed}", rng.choice(REPS), script, sim)


def sopflow_score(case: Case) -> RunScore:
    rows = []
    for command in case.sim.commands:
        # the store records the rep a task went to
        rows.append(step_row(command, case.rep if isinstance(command, AssignTask) else None))
    facts = RunFacts(case.run_id, PLAN.sop.id, PLAN.sop.version, True, case.sim.zones)
    return score_run(PLAN, facts, rows)


# ---------------------------------------------------------------- the oracle
def _call_allowed(at: datetime, zones: list[str]) -> bool:
    for name in zones:
        local = at.astimezone(ZoneInfo(name))
        if local.weekday() == 6 or local.date() in US_HOLIDAYS or not 9 <= local.hour < 20:
            return False
    return True


def _due(at: datetime, sla: timedelta, zones: list[str]) -> datetime:
    """The SLA counted while calling is allowed (the window's bounds are whole hours), written
    out by minutes and hours, independently of sopflow's clock."""
    remaining = sla
    while remaining > timedelta(0):
        next_minute = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if _call_allowed(at, zones):
            chunk = min(remaining, next_minute - at)
            remaining -= chunk
            at += chunk
        else:  # closed until a whole hour at the earliest
            at = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return at


def _sms_allowed(at: datetime, zones: list[str]) -> bool:
    return all(8 <= at.astimezone(ZoneInfo(name)).hour < 21 for name in zones)


@dataclass
class Expected:
    statuses: list[str]  # per task, in order
    violations: int
    earned: float
    possible: float
    sla_met: bool | None
    task_earned: float  # the rep's share: their tasks
    task_possible: float


def oracle(case: Case) -> Expected:
    queues = {step: list(outcomes) for step, outcomes in case.script.items()}
    statuses: list[str] = []
    violations, earned, possible = 0, 0.0, 0.0
    resolved_at: dict[int, datetime] = {}  # ladder attempt → when its outcome landed
    for entry in case.sim.timeline:
        if entry.action == "assign":
            step = entry.step
            scripted = queues[step].pop(0)
            due = _due(entry.at, DUE[step], case.sim.zones)
            assert entry.detail["due_at"] == due.isoformat()
            reported = entry.at + (scripted.delay or timedelta(0))
            possible += 1
            if reported >= due + EXPIRES:
                statuses.append("missed")
                landed = due + EXPIRES
            else:
                landed = reported
                on_time = reported <= due + TOLERANCE[step]
                statuses.append("on_time" if on_time else "late")
                earned += 1 if on_time else 0.5
                violations += not _call_allowed(reported, case.sim.zones)
            if step == "retry_calls":  # numbered by slot: a slot that passed keeps its number
                resolved_at[entry.detail["attempt"]] = landed
        elif entry.action == "sms":  # the follow-up after the second retry
            if _sms_allowed(resolved_at[2], case.sim.zones):
                assert entry.at == resolved_at[2]
                possible += 1
                earned += 1
            else:
                assert entry.at > resolved_at[2]  # waited for the window: excused
    sla = statuses[0] == "on_time" if statuses else None
    task_earned = sum({"on_time": 1.0, "late": 0.5, "missed": 0.0}[s] for s in statuses)
    return Expected(statuses, violations, earned, possible, sla, task_earned, len(statuses))


def _score(earned: float, possible: float, violations: int) -> float | None:
    if possible == 0:
        return None if violations == 0 else 0.0
    return round(max(0.0, 100 * (earned - violations) / possible), 1)


def test_a_thousand_simulated_runs_score_as_the_oracle_says() -> None:
    by_rep: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    report = Report("rep")
    seen_statuses: set[str] = set()
    for seed in range(1000):
        case = make_case(seed)
        expected = oracle(case)
        got = sopflow_score(case)
        tasks = [i.status for i in got.items if i.kind == "task"]
        assert tasks == expected.statuses, (seed, got.losses())
        assert len(got.violations) == expected.violations, (seed, got.violations)
        assert got.sla_met == expected.sla_met, seed
        assert got.score == _score(expected.earned, expected.possible, expected.violations), (
            seed,
            got.losses(),
        )
        for loss in got.losses():
            assert loss["reason"] and loss["points"] > 0
        seen_statuses.update(tasks)
        report.add(got)
        totals = by_rep[case.rep]
        totals[0] += expected.task_earned
        totals[1] += expected.task_possible
        totals[2] += expected.violations
    assert seen_statuses == {"on_time", "late", "missed"}  # the sample exercises every status
    rows = {row["group"]: row for row in report.rows()}
    for rep, (earned, possible, violations) in by_rep.items():
        assert rows[rep]["score"] == _score(earned, possible, int(violations)), rep
        assert rows[rep]["violations"] == violations
    # Touches sopflow makes itself are the system's, never a rep's.
    assert set(rows) == {*REPS, "(system)"}


def test_the_same_log_scores_the_same_every_time() -> None:
    case = make_case(7)
    first, again = sopflow_score(case), sopflow_score(case)
    assert first.losses() == again.losses() and first.score == again.score
