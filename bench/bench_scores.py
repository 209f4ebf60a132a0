"""Benchmark: recompute adherence scores over N step events, on SQLite and PostgreSQL.

Fills a fresh store with callback-SOP runs (100 simulated runs with random outcomes, cloned
under new workflow ids until there are N step events), then, each in a fresh process so its peak
resident memory is its own:
- baseline: stream the same step events and runs without scoring (what reading costs);
- report: `Scores.report("rep")`, the whole recomputation (kept verdicts emptied first).
Reports medians of --repeat runs, the ratio report/baseline, and peak RSS at two sizes (memory
must not grow with the number of events).

    .venv/bin/python bench/bench_scores.py [--events 1000000] [--repeat 3] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.sop.protocol import AssignTask  # noqa: E402
from sopflow.sop.simulator import Script, ScriptedOutcome, simulate  # noqa: E402
from sopflow.sop.validate import load_plan  # noqa: E402
from sopflow.store.models import Run, RunVerdict, StepEvent  # noqa: E402
from sopflow.store.reports import Scores  # noqa: E402
from sopflow.store.repository import Store, connect, event_fields  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PLAN = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
REPS = ["ana", "ben", "cy", "dee"]
_EMPTY: dict[str, Any] = dict.fromkeys(
    ("planned_at", "due_at", "outcome", "actor", "channel", "reason", "provider_id")
) | {"detail": {}}  # executemany needs every row to have every column


def templates(count: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(1)
    out = []
    for n in range(count):
        start = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(20 * 24 * 60))

        def report() -> ScriptedOutcome:
            outcome = rng.choice(["no_answer", "busy", "connected", "not_interested"])
            return ScriptedOutcome(outcome, timedelta(minutes=rng.randrange(1, 200)))

        script = Script(outcomes={"first_call": [report()], "retry_calls": [report()] * 5})
        sim = simulate(PLAN, {"id": f"c{n}", "phone": "+12125550123"}, start, script)
        rep = REPS[n % len(REPS)]
        rows = []
        for command in sim.commands:
            fields = event_fields(command)
            if isinstance(command, AssignTask):
                fields["actor"] = rep
            rows.append(
                {**_EMPTY, "key": command.key, "step": command.step, "executed_at": command.at}
                | fields
            )
        out.append(rows)
    return out


def fill(store: Store, events: int) -> int:
    """Runs and step events until `events`; returns the number of runs."""
    store.deploy(PLAN)
    shapes = templates(100)
    enrolled = datetime(2026, 12, 1, tzinfo=UTC)
    runs, written, batch_runs, batch_events = 0, 0, [], []
    with store.engine.begin() as connection:
        while written < events:
            shape = shapes[runs % len(shapes)][: events - written]
            workflow_id = f"bench-{runs:08d}"
            batch_runs.append(
                {"workflow_id": workflow_id, "first_run_id": "r", "sop_id": PLAN.sop.id,
                 "version": 1, "digest": PLAN.digest, "contact_id": f"c{runs}",
                 "status": "finished", "enrolled_at": enrolled}
            )  # fmt: skip
            batch_events += [
                {**row, "workflow_id": workflow_id, "temporal_run_id": "r"} for row in shape
            ]
            runs += 1
            written += len(shape)
            if len(batch_events) >= 20_000 or written >= events:
                connection.execute(insert(Run), batch_runs)
                connection.execute(insert(StepEvent), batch_events)
                batch_runs, batch_events = [], []
    return runs


def measure(url: str, schema: str | None, mode: str) -> dict[str, float]:
    """In this (fresh) process: the time of one pass and the peak RSS."""
    options = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(url, connect_args=options) if schema else connect(url)
    began = time.perf_counter()
    if mode == "baseline":
        count = 0
        with engine.connect() as connection:
            for query in (
                select(Run.workflow_id, Run.digest),
                select(StepEvent).order_by(StepEvent.workflow_id, StepEvent.id),
            ):
                result = connection.execution_options(stream_results=True, yield_per=5000).execute(
                    query
                )
                for _ in result:
                    count += 1
    else:
        with engine.begin() as connection:  # the whole recomputation, not kept verdicts
            connection.execute(delete(RunVerdict))
        began = time.perf_counter()
        rows = Scores(engine).report("rep")
        count = sum(r["runs"] for r in rows)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "count": count}


def peak_rss_mib() -> float:
    """This process image's own peak RSS (VmHWM). Not ru_maxrss: on Linux that keeps the
    parent's peak across fork + exec, so a big parent would hide the child's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_measure(url: str, schema: str | None, mode: str) -> dict[str, float]:
    args = [sys.executable, __file__, "--measure", mode, "--url", url]
    if schema:
        args += ["--schema", schema]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_backend(name: str, events: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = None
        if name == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
            engine = connect(url)
        else:
            url, schema = POSTGRES, f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(POSTGRES)
            with admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        try:
            store = Store(engine)
            store.migrate()
            for size in sorted({events // 10, events}):
                with engine.begin() as connection:
                    connection.execute(StepEvent.__table__.delete())
                    connection.execute(Run.__table__.delete())
                began = time.perf_counter()
                runs = fill(store, size)
                if name == "postgresql":
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                        c.execute(text("VACUUM ANALYZE"))
                filled = time.perf_counter() - began
                results: dict[str, list[dict[str, float]]] = {"baseline": [], "report": []}
                for _ in range(repeat):
                    for mode in results:
                        results[mode].append(run_measure(url, schema, mode))
                base = statistics.median(r["seconds"] for r in results["baseline"])
                full = statistics.median(r["seconds"] for r in results["report"])
                peak = max(r["peak_rss_mib"] for r in results["report"])
                base_peak = max(r["peak_rss_mib"] for r in results["baseline"])
                print(
                    f"{name:<10} {size:>9,} events {runs:>7,} runs (filled in {filled:.0f} s): "
                    f"read {base:6.2f} s, score {full:6.2f} s (median of {repeat}), "
                    f"ratio {full / base:4.1f}; peak RSS read {base_peak:.0f} MiB, score {peak:.0f} MiB",
                    flush=True,
                )
        finally:
            engine.dispose()
            if schema:
                with admin.begin() as connection:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--measure", choices=["baseline", "report"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.url, args.schema, args.measure)))
        return
    for name in args.backends.split(","):
        bench_backend(name, args.events, args.repeat)


if __name__ == "__main__":
    main()
