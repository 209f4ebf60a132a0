"""Benchmark: SopRun workflows on real Temporal dev servers, against a hand-written baseline.

1. Throughput (time-skipping dev server): N concurrent runs of the callback SOP where nobody
   answers (the whole 3-day cadence: tasks, escalations, expiries, the ladder, the SMS), against a
   minimal workflow that sleeps the same timers and calls a no-op activity as many times, on the
   same server, in the same process. Reports runs/s and steps/s (activities/s) and the ratio.
2. Timer lateness (plain dev server, real time): N concurrent runs whose touches are anchored at
   enrolment + 5 s, 10 s, 15 s, against the baseline sleeping to the same instants. Lateness is
   when the workflow acted minus when it should have, p50/p99.
3. Enrolments/s on the embedded default (`sopflow up`'s dev server on a SQLite file) with and
   without WAL, against the in-memory dev server: N workflow starts, 16 in flight.

Worker memory: the process's resident set size, sampled during each phase (peak reported).

    .venv/bin/python bench/bench_runs.py [--runs 1000] [--lateness-runs 1000] [--starts 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activities.sop_activities import MemoryEffects, SopActivities  # noqa: E402
from sopflow.runtime import BUILD_ID  # noqa: E402
from sopflow.sop.plan import Plan, compile_plan  # noqa: E402
from sopflow.sop.protocol import SendMessage  # noqa: E402
from sopflow.sop.schema import Sop  # noqa: E402
from sopflow.sop.simulator import simulate  # noqa: E402
from sopflow.sop.validate import load_plan  # noqa: E402
from workflows.contracts import SopRunInput, SopRunResult  # noqa: E402
from workflows.sandbox import workflow_runner  # noqa: E402
from workflows.search_attributes import KEYS as SEARCH_ATTRIBUTES  # noqa: E402
from workflows.sop_run import SopRun  # noqa: E402

TEMPORAL = str(Path(sys.executable).with_name("temporal"))
TIME_SKIPPING = ["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"]
CONTACT = {"id": "c", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}
ZONES = ["America/New_York"]
IN_FLIGHT = 50  # concurrent start requests


# ---------------------------------------------------------------- the hand-written baseline
class Segment(BaseModel):
    sleep_until: float  # seconds after the start
    activities: int


class BaselineInput(BaseModel):
    segments: list[Segment]


@activity.defn(name="bench.noop")
async def noop(step: int) -> dict[str, int]:
    return {"step": step}


@workflow.defn(name="Baseline", sandboxed=False)
class Baseline:
    """What SopRun does, minus the engine: sleep to each instant, call activities, note lateness."""

    @workflow.run
    async def run(self, params: BaselineInput) -> list[float]:
        start = workflow.now()
        lateness = []
        step = 0
        for segment in params.segments:
            target = start + timedelta(seconds=segment.sleep_until)
            remaining = (target - workflow.now()).total_seconds()
            if remaining > 0:
                await asyncio.sleep(remaining)
            lateness.append((workflow.now() - target).total_seconds())
            for _ in range(segment.activities):
                step += 1
                await workflow.execute_activity(
                    noop, step, start_to_close_timeout=timedelta(seconds=60)
                )
        return lateness


def segments_of(plan: Plan) -> tuple[list[Segment], int]:
    """The preview's commands grouped by instant: one timer per instant, one activity each."""
    enrolled = datetime.now(UTC)
    preview = simulate(plan, CONTACT, enrolled, zones=ZONES)
    groups: dict[datetime, int] = {}
    for entry in preview.timeline:
        groups[entry.at] = groups.get(entry.at, 0) + 1
    segments = [
        Segment(sleep_until=(at - enrolled).total_seconds(), activities=count)
        for at, count in sorted(groups.items())
    ]
    return segments, len(preview.timeline)


# ---------------------------------------------------------------- measuring
class RssSampler:
    """Peak resident set size of this process (the worker runs here) while a phase runs."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def _sample(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, self.rss_mib())
            await asyncio.sleep(0.2)

    def __enter__(self) -> RssSampler:
        self.peak_mib = self.rss_mib()
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


def worker(client: Client, queue: str, effects: MemoryEffects) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[SopRun, Baseline],
        activities=[*SopActivities(effects).all(), noop],
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
    )


async def run_many(
    client: Client, queue: str, n: int, start: Callable[[int], Awaitable[Any]]
) -> tuple[float, float, list[Any]]:
    """Start n workflows (IN_FLIGHT at a time), wait for all; (seconds, peak RSS MiB, results)."""
    with RssSampler() as rss:
        began = time.perf_counter()
        handles = await bounded([lambda i=i: start(i) for i in range(n)], IN_FLIGHT)
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - began
    return elapsed, rss.peak_mib, results


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- 1. throughput
async def throughput(n: int) -> None:
    plan = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    segments, steps = segments_of(plan)
    env = await WorkflowEnvironment.start_time_skipping_v2(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=TEMPORAL,
        dev_server_extra_args=TIME_SKIPPING,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        queue = f"bench-{uuid.uuid4()}"
        effects = MemoryEffects()
        async with worker(env.client, queue, effects):

            async def baseline(i: int) -> Any:
                return await env.client.start_workflow(
                    Baseline.run,
                    BaselineInput(segments=segments),
                    id=f"baseline-{queue}-{i}",
                    task_queue=queue,
                )

            async def sopflow(i: int) -> Any:
                return await env.client.start_workflow(
                    SopRun.run,
                    SopRunInput(plan=plan, contact=CONTACT | {"id": f"c{i}"}, zones=ZONES),
                    id=f"sop:new_lead_callback:c{i}:{queue}",
                    task_queue=queue,
                    result_type=SopRunResult,
                    execution_timeout=timedelta(days=30),
                )

            base_s, base_rss, _ = await run_many(env.client, queue, n, baseline)
            sop_s, sop_rss, results = await run_many(env.client, queue, n, sopflow)
    assert all(r.result == "no_contact" for r in results), "a run did not finish its cadence"
    performed = len(effects.performed) + len(effects.records)
    assert performed == n * steps, (performed, n * steps)
    print(
        f"1. throughput: {n} concurrent callback runs, {steps} activities and {len(segments)} timers each"
    )
    print(
        f"   baseline  {n / base_s:7.1f} runs/s {n * steps / base_s:8.0f} steps/s  ({base_s:.1f} s, peak RSS {base_rss:.0f} MiB)"
    )
    print(
        f"   sopflow   {n / sop_s:7.1f} runs/s {n * steps / sop_s:8.0f} steps/s  ({sop_s:.1f} s, peak RSS {sop_rss:.0f} MiB)"
    )
    print(f"   ratio sopflow/baseline: {base_s / sop_s:.2f} (goal >= 0.7)")


# ---------------------------------------------------------------- 2. lateness
LATENESS_SOP = {
    "id": "bench_timers",
    "version": 1,
    "name": "Timers",
    "owner": "bench",
    "entry": {"events": ["bench"]},
    "steps": [
        step
        for k in (1, 2, 3)
        for step in (
            {
                "id": f"wait_{k}",
                "kind": "wait",
                "until": {"anchor": "enrolment", "offset": f"{5 * k}s"},
            },
            {"id": f"touch_{k}", "kind": "sms", "body": "tick"},
        )
    ],
}


async def lateness(n: int) -> None:
    plan = compile_plan(Sop.model_validate(LATENESS_SOP))
    segments = [Segment(sleep_until=5.0 * k, activities=1) for k in (1, 2, 3)]
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=TEMPORAL,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        queue = f"bench-{uuid.uuid4()}"
        effects = MemoryEffects()
        async with worker(env.client, queue, effects):

            async def baseline(i: int) -> Any:
                return await env.client.start_workflow(
                    Baseline.run,
                    BaselineInput(segments=segments),
                    id=f"b-{queue}-{i}",
                    task_queue=queue,
                )

            async def sopflow(i: int) -> Any:
                return await env.client.start_workflow(
                    SopRun.run,
                    SopRunInput(plan=plan, contact={"id": f"c{i}"}, zones=["UTC"]),
                    id=f"sop:bench_timers:c{i}:{queue}",
                    task_queue=queue,
                    result_type=SopRunResult,
                )

            _, base_rss, base_results = await run_many(env.client, queue, n, baseline)
            _, sop_rss, results = await run_many(env.client, queue, n, sopflow)
    base_late = [x for r in base_results for x in r]
    enrolled = {r.state.contact["id"]: r.state.enrolled_at for r in results}
    sop_late = []
    for params, _, _ in effects.performed.values():
        command = params.command
        if isinstance(command, SendMessage):
            k = int(command.step.split("_")[1])
            due = enrolled[params.contact_id] + timedelta(seconds=5 * k)
            sop_late.append((command.at - due).total_seconds())
    assert len(sop_late) == 3 * n, len(sop_late)
    print(f"2. timer lateness, {n} concurrent runs x 3 timers on the plain dev server (real time)")
    for name, values, rss in (("baseline", base_late, base_rss), ("sopflow", sop_late, sop_rss)):
        print(
            f"   {name:<9} p50 {pct(values, 0.5) * 1000:7.0f} ms  p99 {pct(values, 0.99) * 1000:7.0f} ms"
            f"  max {max(values) * 1000:7.0f} ms  (peak RSS {rss:.0f} MiB)"
        )


# ---------------------------------------------------------------- 3. enrolments/s
async def enrolments(n: int) -> None:
    plan = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    print(f"3. enrolments: {n} callback-run starts, 16 in flight, a worker running them")
    with tempfile.TemporaryDirectory() as tmp:
        setups: list[tuple[str, str | None, list[str]]] = [
            ("in memory", None, []),
            ("SQLite file", str(Path(tmp) / "plain.db"), []),
            (
                "SQLite file + WAL",
                str(Path(tmp) / "wal.db"),
                ["--sqlite-pragma", "journal_mode=wal"],
            ),
        ]
        for name, db, extra in setups:
            env = await WorkflowEnvironment.start_local(
                data_converter=pydantic_data_converter,
                dev_server_existing_path=TEMPORAL,
                dev_server_database_filename=db,
                dev_server_extra_args=extra,
                search_attributes=SEARCH_ATTRIBUTES,
            )
            async with env:
                queue = f"bench-{uuid.uuid4()}"
                async with worker(env.client, queue, MemoryEffects()):

                    async def start(i: int, queue: str = queue, env: Any = env) -> Any:
                        return await env.client.start_workflow(
                            SopRun.run,
                            SopRunInput(plan=plan, contact=CONTACT | {"id": f"c{i}"}, zones=ZONES),
                            id=f"sop:new_lead_callback:c{i}:{queue}",
                            task_queue=queue,
                        )

                    began = time.perf_counter()
                    await bounded([lambda i=i: start(i) for i in range(n)], 16)
                    elapsed = time.perf_counter() - began
            print(f"   {name:<18} {n / elapsed:6.1f} enrolments/s  ({elapsed:.1f} s)")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=1000, help="concurrent callback runs (throughput)"
    )
    parser.add_argument("--lateness-runs", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=300, help="enrolments per store setup")
    parser.add_argument("--only", choices=["throughput", "lateness", "enrolments"])
    args = parser.parse_args()
    if args.only in (None, "throughput"):
        await throughput(args.runs)
    if args.only in (None, "lateness"):
        await lateness(args.lateness_runs)
    if args.only in (None, "enrolments"):
        await enrolments(args.starts)


if __name__ == "__main__":
    asyncio.run(main())
