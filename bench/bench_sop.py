"""Benchmark: validate + compile sop_definitions/, then simulate the callback SOP 1,000 times.

Machines here are shared and noisy, so besides absolute medians it reports the simulation cost
as a ratio to a baseline measured in the same process: a bare loop that feeds the engine the
same number of events without the simulator's scheduling and template rendering.

    .venv/bin/python bench/bench_sop.py [--runs 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sopflow.sop import engine
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import ActionResult, AssignTask, Tick
from sopflow.sop.simulator import Script, ScriptedOutcome, simulate
from sopflow.sop.validate import validate_paths

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ["connected", "booked", "no_answer", "busy", "wrong_number", "not_interested"]
BOOKING = {
    "appointment_at": "2026-12-10T11:00",
    "store_name": "Downtown",
    "store_address": "12 Market St",
}
CONTACT = {
    "id": "bench",
    "first_name": "Ann",
    "phone": "+12125550123",
    "lead_source": "web",
    "appointment_at": "2026-12-10T11:00",
    "store_name": "Downtown",
    "store_address": "12 Market St",
}


def random_script(rng: random.Random) -> Script:
    """Outcomes drawn at random; a third of the time the rep stays silent on a step."""

    def one() -> ScriptedOutcome:
        outcome = rng.choice(OUTCOMES)
        data = BOOKING if outcome == "booked" else {}  # a booking must say when and where
        return ScriptedOutcome(outcome, timedelta(minutes=rng.randint(1, 90)), data)

    def pick() -> list[ScriptedOutcome]:
        return [one() for _ in range(6) if rng.random() > 0.33]

    return Script(outcomes={"first_call": pick()[:1], "retry_calls": pick()})


def baseline(plan: Plan, start: datetime, inputs: int) -> float:
    """Seconds for the engine alone to take `inputs` events on the silent-rep path."""
    began = time.perf_counter()
    transition = engine.start(plan, CONTACT, ["America/New_York"], start)
    fed = 0
    while fed < inputs and not transition.state.finished:
        state = transition.state
        pending = next((c for c in transition.commands if isinstance(c, AssignTask)), None)
        event = (
            ActionResult(at=state.now, key=pending.key, status="done")
            if pending
            else Tick(at=state.wake_at or state.now)
        )
        transition = engine.handle(plan, state, event)
        fed += 1
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    began = time.perf_counter()
    plans, problems = validate_paths([ROOT / "sop_definitions"])
    validate_seconds = time.perf_counter() - began
    if problems:
        print("\n".join(map(str, problems)), file=sys.stderr)
        return 1
    plan = next(p for p in plans.values() if p.sop.id == "new_lead_callback")

    rng = random.Random(args.seed)
    start = datetime(2026, 12, 1, 14, 10, tzinfo=UTC)
    sim_times, base_times, results, entries = [], [], {}, []
    for _ in range(args.runs):
        script = random_script(rng)
        t0 = time.perf_counter()
        sim = simulate(plan, CONTACT, start, script)
        sim_times.append(time.perf_counter() - t0)
        results[sim.result] = results.get(sim.result, 0) + 1
        entries.append(len(sim.timeline))
        base_times.append(baseline(plan, start, sim.inputs))

    silent = []
    for _ in range(200):  # the longest path: nobody answers, every escalation and attempt runs
        t0 = time.perf_counter()
        full = simulate(plan, CONTACT, start)
        silent.append(time.perf_counter() - t0)

    sim_median, base_median = statistics.median(sim_times), statistics.median(base_times)
    print(
        f"validate+compile {len(plans)} SOPs: {validate_seconds * 1000:.1f} ms (cold, includes imports of holidays data)"
    )
    print(f"simulations: {args.runs}, timeline entries median {statistics.median(entries):.0f}")
    print(
        f"simulate callback SOP: median {sim_median * 1000:.2f} ms, p95 "
        f"{sorted(sim_times)[int(0.95 * len(sim_times))] * 1000:.2f} ms"
    )
    print(f"engine-only baseline (same number of inputs): median {base_median * 1000:.2f} ms")
    print(f"ratio simulate / engine-only: {sim_median / base_median:.2f}")
    print(
        f"silent-rep full cadence ({len(full.timeline)} entries): median {statistics.median(silent) * 1000:.2f} ms"
    )
    print(f"results: {dict(sorted(results.items(), key=lambda kv: str(kv[0])))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
