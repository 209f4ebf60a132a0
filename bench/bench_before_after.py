"""Benchmark: the cost per step of the preview and of the production path, this tree against an
earlier commit, in the same run (rounds alternate, so both see the same noisy machine).

- preview: `simulate` of the callback SOP where nobody answers (its whole 3-day cadence), in a
  child process importing that tree's code; milliseconds per timeline entry.
- production: `bench/bench_runs.py --only throughput` of that tree (SopRun on the time-skipping
  dev server, activities through MemoryEffects); activities per second.

    .venv/bin/python bench/bench_before_after.py [--before b05a016] [--rounds 3] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child whose sys.path starts with the tree being measured (its own sopflow package).
PREVIEW_PROBE = """
import json, sys, time
from datetime import UTC, datetime
sys.path.insert(0, sys.argv[1])
from sopflow.sop.simulator import simulate
from sopflow.sop.validate import load_plan
from pathlib import Path
plan = load_plan(Path(sys.argv[1]) / "sop_definitions" / "new_lead_callback.yaml")
contact = {"id": "bench", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}
start = datetime(2026, 12, 1, 14, 10, tzinfo=UTC)
per_entry = []
for _ in range(int(sys.argv[2])):
    began = time.perf_counter()
    sim = simulate(plan, contact, start)
    per_entry.append((time.perf_counter() - began) / len(sim.timeline))
import sopflow
print(json.dumps({"ms_per_entry": sorted(per_entry)[len(per_entry) // 2] * 1000,
                  "entries": len(sim.timeline), "from": sopflow.__file__}))
"""


def _run(command: list[str], tree: Path, done: str = "") -> str:
    """stdout; a process that printed `done` may still abort at interpreter finalization
    (temporalio/sdk-python#300), which does not void what it measured."""
    out = subprocess.run(command, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0 and not (done and done in out.stdout):
        raise SystemExit(f"{' '.join(command[:3])} failed in {tree}:\n{out.stderr[-3000:]}")
    return out.stdout


def preview(tree: Path, sims: int) -> float:
    stdout = _run([sys.executable, "-c", PREVIEW_PROBE, str(tree), str(sims)], tree)
    found = json.loads(stdout.strip().splitlines()[-1])
    assert found["from"].startswith(str(tree)), found  # measured the tree asked for
    return float(found["ms_per_entry"])


def production(tree: Path, runs: int) -> float:
    command = [sys.executable, "bench/bench_runs.py", "--only", "throughput", "--runs", str(runs)]
    stdout = _run(command, tree, done="ratio sopflow/baseline")
    match = re.search(r"sopflow\s+[\d.]+ runs/s\s+(\d+) steps/s", stdout)
    assert match, stdout
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="b05a016", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sims", type=int, default=200, help="previews per round")
    parser.add_argument("--runs", type=int, default=200, help="concurrent runs per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(before), args.before],
            check=True, cwd=ROOT,
        )  # fmt: skip
        try:
            trees = {"before": before, "after": ROOT}
            ms: dict[str, list[float]] = {name: [] for name in trees}
            steps: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    ms[name].append(preview(tree, args.sims))
                    steps[name].append(production(tree, args.runs))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT)
    m = {name: statistics.median(values) for name, values in ms.items()}
    s = {name: statistics.median(values) for name, values in steps.items()}
    print(f"before = {args.before}, after = this tree; medians of {args.rounds} alternating rounds")
    print(f"preview  ms per timeline entry: before {m['before']:.3f}  after {m['after']:.3f}  "
          f"ratio after/before {m['after'] / m['before']:.2f}")  # fmt: skip
    print(f"production steps/s ({args.runs} runs): before {s['before']:.0f}  after {s['after']:.0f}  "
          f"ratio after/before {s['after'] / s['before']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
