"""Benchmark: the dashboard's reps and funnel reports over N runs and M step events on
PostgreSQL, against a bare `SELECT count(*)` of the same rows in the same run.

Fills a fresh schema of the `test` database with callback-SOP runs (200 simulated runs with
random outcomes and reps, cloned under new workflow ids, each cut to what keeps M step events in all), six reps
on two teams, then times, --repeat times each, in this process:
- count: `SELECT count(*)` of the step events joined to their runs (the rows both reports read);
- scorer, cold: the compliance scorer's pass over every run (`Scores.runs`, which both reports
  use) with no kept verdict: every run's step events read and scored, its verdict kept;
- scorer: the same pass served by the kept verdicts (store/verdicts.py), as every later report;
- reps: `TeamsReport.report` as ops (every rep and team, the whole history);
- funnel: `Funnel.report` of the SOP as ops;
- both again over the latest tenth of the period (`since` = the enrolment of the newest 10%).
Prints the medians and each figure's ratio to the count. 100,000 runs / 1,000,000 events (2 shared
cores, medians of 3): count 0.16 s; first pass 37 s (238×); kept: scorer 7.5 s (48×), reps 9.6 s
(62×), funnel 8.7 s (56×); before verdicts were kept, in one process: count 0.18 s, reps 36 s
(199×), funnel 38 s (212×).

    .venv/bin/python bench/bench_reports.py [--runs 100000] [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, func, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.compliance.funnel import Funnel  # noqa: E402
from sopflow.compliance.teams_report import TeamsReport  # noqa: E402
from sopflow.compliance.traced import Window  # noqa: E402
from sopflow.principals import ADMIN  # noqa: E402
from sopflow.sop.plan import compile_plan  # noqa: E402
from sopflow.sop.protocol import AssignTask, Finish  # noqa: E402
from sopflow.sop.simulator import Script, ScriptedOutcome, simulate  # noqa: E402
from sopflow.sop.validate import load_plan  # noqa: E402
from sopflow.store.models import Run, RunVerdict, StepEvent  # noqa: E402
from sopflow.store.reports import Scores  # noqa: E402
from sopflow.store.repository import Store, event_fields  # noqa: E402
from sopflow.store.reps import RepDirectory  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_SOURCE = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml").sop
PLAN = compile_plan(_SOURCE.model_copy(update={"success_results": ["converted"]}))
TEAMS = {"inside": ["ana", "ben", "cy"], "field": ["dee", "eve", "fay"]}
REPS = [rep for reps in TEAMS.values() for rep in reps]
BOOKING = {"appointment_at": "2026-12-20T15:00:00+00:00", "store_name": "A", "store_address": "B"}
_EMPTY: dict[str, Any] = dict.fromkeys(
    ("planned_at", "due_at", "outcome", "actor", "channel", "reason", "provider_id")
) | {"detail": {}}  # executemany needs every row to have every column


def shapes(count: int) -> list[tuple[list[dict[str, Any]], str | None]]:
    """Simulated runs: (step event rows, result or None if the run has not finished)."""
    rng = random.Random(1)
    found = []
    for n in range(count):
        start = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=rng.randrange(20 * 24 * 60))

        def report() -> ScriptedOutcome:
            outcome = rng.choice(
                ["no_answer", "busy", "no_answer", "connected", "booked", "not_interested"]
            )
            data = BOOKING if outcome == "booked" else {}
            return ScriptedOutcome(outcome, timedelta(minutes=rng.randrange(1, 90)), data)

        script = Script(outcomes={"first_call": [report()], "retry_calls": [report()] * 5})
        sim = simulate(PLAN, {"id": f"c{n}", "phone": "+12125550123"}, start, script)
        rows, result = [], None
        for command in sim.commands:
            fields = event_fields(command)
            if isinstance(command, AssignTask):
                fields["actor"] = rng.choice(REPS)
            if isinstance(command, Finish):
                result = command.result
            row = {**_EMPTY, "key": command.key, "step": command.step, "executed_at": command.at}
            rows.append(row | fields)
        found.append((rows, result))
    return found


def fill(store: Store, runs: int, events: int) -> None:
    store.deploy(PLAN)
    RepDirectory(store.engine).import_teams(
        [{"id": t, "name": t, "reps": [{"id": r} for r in reps]} for t, reps in TEAMS.items()]
    )
    templates = shapes(200)
    written = 0
    batch_runs: list[dict[str, Any]] = []
    batch_events: list[dict[str, Any]] = []
    with store.engine.begin() as connection:
        for n in range(runs):
            rows, result = templates[n % len(templates)]
            # Keep to M/N events a run on the whole: a short run leaves the next one more; a
            # long one is cut where the count is made up (and is still running).
            cut = rows[: max(1, round((n + 1) * events / runs) - written)]
            written += len(cut)
            finished = result is not None and len(cut) == len(rows)
            workflow_id = f"bench-{n:08d}"
            batch_runs.append(
                {"workflow_id": workflow_id, "first_run_id": "r", "sop_id": PLAN.sop.id,
                 "version": PLAN.sop.version, "digest": PLAN.digest, "contact_id": f"c{n}",
                 "status": "finished" if finished else "running",
                 "result": result if finished else None, "enrolled_at": cut[0]["executed_at"]}
            )  # fmt: skip
            batch_events += [{**r, "workflow_id": workflow_id, "temporal_run_id": "r"} for r in cut]
            if len(batch_events) >= 20_000 or n == runs - 1:
                connection.execute(insert(Run), batch_runs)
                connection.execute(insert(StepEvent), batch_events)
                batch_runs, batch_events = [], []


def runs_of(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Run)).scalar_one())


def timed(
    job: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    seconds, answer = [], None
    for _ in range(repeat):
        if before is not None:  # untimed
            before()
        began = time.perf_counter()
        answer = job()
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), answer


def measure(engine: Engine, repeat: int) -> None:
    now = datetime.now(UTC)
    rows = select(func.count()).select_from(StepEvent).join(Run)

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(rows).scalar_one())

    def forget() -> None:
        with engine.begin() as connection:
            connection.execute(delete(RunVerdict))

    base, counted = timed(count, repeat)
    # The compliance scorer's own pass over every run (what `sopflow report compliance` costs):
    # both reports stand on it, so it tells the scoring from what each report adds. Cold: no
    # kept verdict (each run's events read, scored, its verdict kept); then kept verdicts only,
    # as every later report over runs that did not change.
    cold_s, _ = timed(lambda: sum(1 for _ in Scores(engine).runs()), repeat, forget)
    scorer_s, _ = timed(lambda: sum(1 for _ in Scores(engine).runs()), repeat)
    reps_s, reps = timed(lambda: TeamsReport(engine).report(ADMIN, Window(), now), repeat)
    funnel_s, funnel = timed(
        lambda: Funnel(engine).report(ADMIN, PLAN.sop.id, Window(), now), repeat
    )
    # The dashboard's usual question: the latest tenth of the period (runs enrolled since).
    with engine.connect() as connection:
        recent = (
            select(Run.enrolled_at).order_by(Run.enrolled_at.desc()).offset(runs_of(engine) // 10)
        )
        since = connection.execute(recent.limit(1)).scalar_one()
    window = Window(since=since)
    recent_reps_s, _ = timed(lambda: TeamsReport(engine).report(ADMIN, window, now), repeat)
    recent_funnel_s, _ = timed(
        lambda: Funnel(engine).report(ADMIN, PLAN.sop.id, window, now), repeat
    )
    tasks = sum(row["tasks"]["value"] for row in reps["reps"])
    runs = funnel["versions"][-1]["runs"]["value"]
    print(f"count(*): {counted:,} step events in {base * 1000:.0f} ms (median of {repeat})")
    print(f"scorer, cold: {cold_s:6.2f} s, {cold_s / base:5.0f}× the count (every run rescored)")
    print(f"scorer: {scorer_s:6.2f} s, {scorer_s / base:5.0f}× the count (kept verdicts)")
    print(f"reps:   {reps_s:6.2f} s, {reps_s / base:5.0f}× the count ({tasks:,} tasks, 6 reps)")
    print(f"funnel: {funnel_s:6.2f} s, {funnel_s / base:5.0f}× the count ({runs:,} runs)")
    print(
        f"latest tenth (since {since:%Y-%m-%d %H:%M}): reps {recent_reps_s:.2f} s, funnel {recent_funnel_s:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(POSTGRES, connect_args={"options": f"-csearch_path={schema}"})
    try:
        store = Store(engine)
        store.migrate()
        began = time.perf_counter()
        fill(store, args.runs, args.events)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        print(
            f"PostgreSQL: {args.runs:,} runs, {args.events:,} step events "
            f"(filled in {time.perf_counter() - began:.0f} s)",
            flush=True,
        )
        measure(engine, args.repeat)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
