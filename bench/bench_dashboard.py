"""Benchmark: each dashboard page's render time (p50, p95) on PostgreSQL with N runs and M step
events, against a bare `SELECT count(*)` of the rows that page reads, timed in the same run.

The store: callback-SOP runs (bench_scores.py's simulated shapes, shifted in time) enrolled
evenly over the year before now, their tasks spread over 8 teams of 10 reps; the runs of the
last 3 days are still running, stopped at their first task (due around now: some overdue). The
pages are rendered through the whole gateway (sign-in session, scope, templates) in-process
with httpx, signed in as ops and as the supervisor of one team. The report pages (reps,
funnel, referrals) come after one timed first pass that keeps every run's verdict, and are
rendered at most 5 times each (their p95 is then their slowest render).

    .venv/bin/python bench/bench_dashboard.py [--runs 100000] [--events 1000000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, func, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scores import PLAN, templates  # noqa: E402

from sopflow.gateway.app import create_app  # noqa: E402
from sopflow.gateway.auth import SESSION_COOKIE  # noqa: E402
from sopflow.identity.users import UserBook  # noqa: E402
from sopflow.principals import Role  # noqa: E402
from sopflow.settings import Secret  # noqa: E402
from sopflow.store.models import Run, StepEvent  # noqa: E402
from sopflow.store.reports import Scores  # noqa: E402
from sopflow.store.repository import Store  # noqa: E402
from sopflow.store.reps import RepDirectory  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEAMS = [f"team{t}" for t in range(8)]
REPS = [f"rep{t}_{r}" for t in range(8) for r in range(10)]
RUNNING_DAYS = 3  # runs enrolled this recently are still running
PASSWORD = "bench password 123"
_TIMES = ("executed_at", "planned_at", "due_at")


def fill(engine: Engine, runs: int, events: int, now: datetime) -> tuple[int, list[str]]:
    """`runs` runs with about `events` step events; returns the events written and run ids."""
    shapes = templates(100)
    short = [s for s in shapes if len(s) * runs <= events]
    long = [s for s in shapes if len(s) * runs > events] or shapes
    rng = random.Random(7)
    start = now - timedelta(days=365)
    written, ids = 0, []
    batch_runs: list[dict[str, Any]] = []
    batch_events: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for n in range(runs):
            # Long shapes while behind the target average, short ones while ahead of it.
            pool = long if written < events * n / runs else short
            shape = rng.choice(pool)
            enrolled = start + timedelta(seconds=365 * 86_400 * n / runs)
            shift = enrolled - shape[0]["executed_at"]
            running = enrolled > now - timedelta(days=RUNNING_DAYS)
            if running:  # stopped at its first task, due around now
                first_task = next(i for i, row in enumerate(shape) if row["kind"] == "assign")
                shape = shape[: first_task + 1]
            rep = REPS[n % len(REPS)]
            workflow_id = f"bench-{n:08d}"
            ids.append(workflow_id)
            batch_runs.append(
                {"workflow_id": workflow_id, "first_run_id": "r", "sop_id": PLAN.sop.id,
                 "version": PLAN.sop.version, "digest": PLAN.digest, "contact_id": f"c{n}",
                 "status": "running" if running else "finished",
                 "result": None if running else "done", "enrolled_at": enrolled,
                 "finished_at": None if running else shape[-1]["executed_at"] + shift}
            )  # fmt: skip
            for row in shape:
                moved = {k: row[k] + shift for k in _TIMES if row[k] is not None}
                actor = rep if row["kind"] == "assign" else row["actor"]
                batch_events.append(
                    row
                    | moved
                    | {"workflow_id": workflow_id, "temporal_run_id": "r", "actor": actor}
                )
            written += len(shape)
            if len(batch_events) >= 20_000 or n == runs - 1:
                connection.execute(insert(Run), batch_runs)
                connection.execute(insert(StepEvent), batch_events)
                batch_runs, batch_events = [], []
    return written, ids


REPORT_PAGES = ("reps", "funnel", "referrals")
REPORT_REPEAT = 5


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def timed(repeat: int, work: Callable[[], Awaitable[Any]]) -> list[float]:
    await work()  # warm: the plan cache, connections
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await work()
        times.append(time.perf_counter() - began)
    return times


async def measure(engine: Engine, ids: list[str], repeat: int, now: datetime) -> None:
    store = Store(engine)
    users = UserBook(engine)
    users.add("olga", Role.ops, None, PASSWORD)
    users.add("sup", Role.supervisor, REPS[0], PASSWORD)  # rep0_0 supervises team0
    sessions = {}
    for user in ("olga", "sup"):
        signed = users.sign_in(user, PASSWORD)
        assert signed is not None
        sessions[user] = signed.cookie

    async def no_temporal() -> Any:
        raise AssertionError("rendering needs no Temporal")

    app = create_app(store, no_temporal, Secret("bench-token"), "q")
    week = (now - timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
    run_id = ids[len(ids) // 2]
    counts = {
        "period": "SELECT count(*) FROM step_events e JOIN runs r ON r.workflow_id = e.workflow_id"
        " WHERE r.enrolled_at >= :since",
        "runs": "SELECT count(*) FROM runs",
        "tasks": "SELECT count(*) FROM step_events WHERE kind = 'assign'",
        "run": "SELECT count(*) FROM step_events WHERE workflow_id = :run",
        "held": "SELECT count(*) FROM step_events WHERE action = 'deferred' AND executed_at >= :since",
        "events": "SELECT count(*) FROM step_events e JOIN runs r ON r.workflow_id = e.workflow_id",
    }
    pages = [  # (name, user, path, params, the count it is compared with)
        ("overview (7 days)", "olga", "/dashboard", {}, "period"),
        ("overview, a supervisor", "sup", "/dashboard", {}, "period"),
        ("runs, first page", "olga", "/dashboard/runs", {}, "runs"),
        ("runs, late=true", "olga", "/dashboard/runs", {"late": "true"}, "runs"),
        ("runs, a supervisor", "sup", "/dashboard/runs", {}, "runs"),
        ("tasks, open", "olga", "/dashboard/tasks", {"status": "pending"}, "tasks"),
        ("a run", "olga", f"/dashboard/runs/{run_id}", {}, "run"),
        ("events: deferrals", "olga", "/dashboard/events", {"kind": "deferred"}, "held"),
        ("runs CSV (5,000 rows)", "olga", "/dashboard/runs", {"format": "csv"}, "runs"),
        # The report pages read every run of their window: fewer renders (REPORT_REPEAT).
        ("reps, all history", "olga", "/dashboard/reps", {}, "tasks"),
        ("reps, 7 days", "olga", "/dashboard/reps", {"since": week.isoformat()}, "period"),
        ("reps, a supervisor", "sup", "/dashboard/reps", {}, "tasks"),
        ("funnel, all history", "olga", "/dashboard/funnel", {"sop": PLAN.sop.id}, "events"),
        (
            "funnel, 7 days",
            "olga",
            "/dashboard/funnel",
            {"sop": PLAN.sop.id, "since": week.isoformat()},
            "period",
        ),
        ("referrals", "olga", "/dashboard/referrals", {}, "runs"),
    ]
    # The first report over runs with no kept verdict scores them and keeps them (store/
    # verdicts.py); the renders below read them. Timed once here, on its own.
    began = time.perf_counter()
    scored = await asyncio.to_thread(lambda: sum(1 for _ in Scores(engine).runs()))
    print(f"first pass: {scored:,} runs scored and their verdicts kept in "
          f"{time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
    print(f"{'page':<24} {'p50':>8} {'p95':>8}   {'count(*) p50':>12} {'p95':>8}   ratio p95")
    for name, user, path, params, count in pages:
        cookies = {SESSION_COOKIE: sessions[user]}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", cookies=cookies, timeout=600
        ) as http:

            async def render(path: str = path, params: dict[str, str] = params) -> None:
                answer = await http.get(path, params=params)
                assert answer.status_code == 200, answer.text[:300]

            report = path.rsplit("/", 1)[-1] in REPORT_PAGES
            page_times = await timed(min(repeat, REPORT_REPEAT) if report else repeat, render)

        def counted(sql: str = counts[count]) -> int:
            with engine.connect() as connection:
                return int(
                    connection.execute(text(sql), {"since": week, "run": run_id}).scalar_one()
                )

        async def count_rows() -> None:
            await asyncio.to_thread(counted)

        base_times = await timed(repeat, count_rows)
        p95, b95 = percentile(page_times, 0.95), percentile(base_times, 0.95)
        print(
            f"{name:<24} {statistics.median(page_times) * 1000:7.0f}ms {p95 * 1000:7.0f}ms"
            f"   {statistics.median(base_times) * 1000:11.1f}ms {b95 * 1000:7.1f}ms"
            f"   {p95 / b95:8.1f}x  ({count}: {counted():,} rows)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the schema (its name printed)")
    parser.add_argument("--schema", help="measure a schema kept by --keep (no fill)")
    args = parser.parse_args()
    schema = args.schema or f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES)
    engine = create_engine(POSTGRES, connect_args={"options": f"-csearch_path={schema}"})
    if args.schema:
        with engine.connect() as connection:
            rows = connection.execute(select(Run.workflow_id).order_by(Run.enrolled_at))
            ids = list(rows.scalars())
            now = connection.execute(select(func.max(Run.enrolled_at))).scalar_one()
        with engine.begin() as connection:  # the users of an earlier measure
            for table in ("browser_sessions", "api_tokens", "users"):
                connection.execute(text(f"DELETE FROM {table}"))
        asyncio.run(measure(engine, ids, args.repeat, now + timedelta(minutes=10)))
        return
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        store = Store(engine)
        store.migrate()
        store.deploy(PLAN)
        RepDirectory(engine).import_teams(
            [{"id": team, "name": team, "supervisor": REPS[10 * t],
              "reps": [{"id": rep} for rep in REPS[10 * t : 10 * t + 10]]}
             for t, team in enumerate(TEAMS)]
        )  # fmt: skip
        now = datetime.now(UTC)
        began = time.perf_counter()
        events, ids = fill(engine, args.runs, args.events, now)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        print(
            f"PostgreSQL: {args.runs:,} runs, {events:,} step events "
            f"(filled in {time.perf_counter() - began:.0f} s); {args.repeat} renders per page",
            flush=True,
        )
        asyncio.run(measure(engine, ids, args.repeat, now))
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept: --schema {schema}")
        else:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
