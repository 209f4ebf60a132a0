"""Benchmark: a cohort of contacts enrolled through a Temporal Schedule on the embedded default,
against baselines measured in the same run on the same kind of server.

The embedded default is what `sopflow up` runs: the Temporal dev server on a SQLite file (WAL,
synchronous=normal), the SQLite store, one worker in the process. Each measurement gets a fresh
server and store, with N contacts imported and the bench SOP deployed (a cron rule, no segment,
pace 1000/s so the pace is not what is measured; its runs start by waiting a month, so what is
measured is the enrolment: the run started, recorded, and its first workflow task done).

    cohort     the rule's schedule synced (CohortSchedules), triggered once, timed until the
               fan-out ends: pages of 500 evaluated in SQL, each enrolled 16 starts in flight
               through the event path's steps (conditions, opt-outs, business key, store row),
               held while more than ~64 of its runs wait for the worker (so every run counted
               was also taken up by the worker, as `sopflow up` would have to)
    sopruns    baseline: the same runs started directly (`start_enrolment`, 16 in flight), timed
               until the worker has taken each up: what the cohort costs over the runs it starts
    starts     baseline: N plain starts of an empty workflow, 16 in flight, on the same server
               and process (the Temporal floor of any enrolment here): the start calls alone,
               and until every one has run
    events     baseline: a sample of the same contacts enrolled through POST /api/v1/events, 16 in
               flight (the gateway in this process, as under `sopflow up`)

Enrolments/s for each, medians of --rounds. Goal: the cohort at >= 100/s.

    .venv/bin/python bench/bench_cohorts.py [--contacts 100000] [--rounds 3] [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select
from temporalio import workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.cohorts.contracts import CohortRunResult  # noqa: E402
from sopflow.cohorts.schedules import CohortSchedules  # noqa: E402
from sopflow.compliance.rules import load_rules  # noqa: E402
from sopflow.enrolment import enrolment_for, start_enrolment  # noqa: E402
from sopflow.gateway.app import create_app  # noqa: E402
from sopflow.runtime import BUILD_ID, build_worker  # noqa: E402
from sopflow.settings import Secret  # noqa: E402
from sopflow.sop.plan import compile_plan  # noqa: E402
from sopflow.sop.schema import Sop  # noqa: E402
from sopflow.store.models import Contact, Run, StepEvent  # noqa: E402
from sopflow.store.repository import Store, connect  # noqa: E402
from workflows.search_attributes import KEYS as SEARCH_ATTRIBUTES  # noqa: E402

TEMPORAL = str(Path(sys.executable).with_name("temporal"))
# As sopflow/up.py starts it.
PRAGMAS = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
IN_FLIGHT = 16  # the fan-out's CONCURRENCY, for the baselines too
TOKEN = "bench-token"
SOP = {
    "id": "bench_cohort",
    "version": 1,
    "name": "Bench cohort",
    "owner": "bench@example.com",
    "entry": {
        "schedule": {"cron": "0 10 * * MON", "timezone": "Europe/Paris", "max_per_second": 1000},
        "events": ["bench.cohort"],
        "conditions": [{"field": "contact.phone", "exists": True}],
    },
    "steps": [
        {"id": "pause", "kind": "wait", "duration": "30d"},
        {"id": "hello", "kind": "sms", "body": "Hello {{ contact.first_name | default('') }}"},
    ],
}


@workflow.defn(name="BenchEmpty", sandboxed=False)
class Empty:
    @workflow.run
    async def run(self) -> None:
        return None


def contact(n: int) -> dict[str, Any]:
    return {
        "id": f"c{n:06d}",
        "phone": f"+1212{200 + n // 10_000:03d}{n % 10_000:04d}",  # valid NANP numbers
        "timezone": "America/New_York",
        "fields": {"first_name": f"Ann{n}", "tags": ["vip"]},
        "updated_at": datetime.now(UTC),
    }


async def bounded(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with slots:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


class Stack:
    """A fresh embedded default: dev server on a SQLite file, SQLite store, one worker."""

    def __init__(self, folder: Path, contacts: int) -> None:
        self.folder, self.contacts = folder, contacts
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> Stack:
        self.env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=TEMPORAL,
            dev_server_database_filename=str(self.folder / "temporal.db"),
            dev_server_extra_args=[*PRAGMAS, "--log-level", "error"],
            search_attributes=SEARCH_ATTRIBUTES,
        )
        self.store = Store(connect(f"sqlite:///{self.folder / 'store.db'}"))
        self.store.migrate()
        rows = [contact(n) for n in range(self.contacts)]
        with self.store.engine.begin() as connection:
            for start in range(0, len(rows), 5000):
                connection.execute(insert(Contact), rows[start : start + 5000])
        self.store.deploy(compile_plan(Sop.model_validate(SOP)))
        self.worker = build_worker(self.env.client, self.store, self.queue, load_rules())
        self.empty = Worker(
            self.env.client, task_queue=f"{self.queue}-empty", workflows=[Empty], build_id=BUILD_ID
        )
        await self.worker.__aenter__()
        await self.empty.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.empty.__aexit__(None, None, None)
        await self.worker.__aexit__(None, None, None)
        self.store.engine.dispose()
        await self.env.shutdown()

    def runs(self) -> int:
        with self.store.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(Run)).scalar_one())


async def cohort(stack: Stack) -> float:
    schedules = CohortSchedules(stack.env.client, stack.store, stack.queue, ROOT / "segments")
    [sid] = (await schedules.sync()).created
    handle = stack.env.client.get_schedule_handle(sid)
    began = time.perf_counter()
    await handle.trigger()
    for _ in range(10_000):
        actions = (await handle.describe()).info.recent_actions
        if actions:
            break
        await asyncio.sleep(0.05)
    run = stack.env.client.get_workflow_handle(
        actions[0].action.workflow_id,  # type: ignore[attr-defined]
        result_type=CohortRunResult,
    )
    result = await run.result()
    elapsed = time.perf_counter() - began
    assert result.totals.enrolled == stack.contacts, result.totals
    assert stack.runs() == stack.contacts
    return stack.contacts / elapsed


async def starts(stack: Stack) -> tuple[float, float]:
    """(starts/s, done/s): the start calls alone, and until every workflow has run."""
    client, queue = stack.env.client, f"{stack.queue}-empty"

    async def start(n: int) -> None:
        await client.start_workflow(Empty.run, id=f"empty-{n}", task_queue=queue)

    began = time.perf_counter()
    await bounded([lambda n=n: start(n) for n in range(stack.contacts)], IN_FLIGHT)
    started = time.perf_counter() - began
    query = f'TaskQueue="{queue}" AND ExecutionStatus="Completed"'
    for _ in range(100_000):  # polled: visibility is the only place that counts them
        if (await client.count_workflows(query)).count >= stack.contacts:
            break
        await asyncio.sleep(0.2)
    return stack.contacts / started, stack.contacts / (time.perf_counter() - began)


async def sopruns(stack: Stack) -> float:
    """The same enrolments without the cohort: the bench SOP started for every contact through
    `start_enrolment` (16 in flight), timed until the worker has taken every run up (its first
    workflow task records the enrolment)."""
    plan = stack.store.latest_plan(SOP["id"])
    client = stack.env.client

    async def start(n: int) -> None:
        person = contact(n)
        enrolment = enrolment_for(plan, {"id": person["id"], "phone": person["phone"]}, "bench")
        await start_enrolment(client, enrolment, "bench.cohort", {}, stack.queue)

    began = time.perf_counter()
    await bounded([lambda n=n: start(n) for n in range(stack.contacts)], IN_FLIGHT)
    taken = select(func.count(func.distinct(StepEvent.workflow_id)))
    for _ in range(100_000):
        with stack.store.engine.connect() as connection:
            if connection.execute(taken).scalar_one() >= stack.contacts:
                break
        await asyncio.sleep(0.2)
    return stack.contacts / (time.perf_counter() - began)


async def events(stack: Stack, sample: int) -> float:
    async def client_factory() -> Any:
        return stack.env.client

    app = create_app(stack.store, client_factory, Secret(TOKEN), stack.queue)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sopflow", timeout=120
    ) as http:

        async def post(n: int) -> None:
            person = contact(n)
            body = {
                "type": "bench.cohort",
                "idempotency_key": f"bench-{n}",
                "contact": {"id": person["id"], "phone": person["phone"], "first_name": f"Ann{n}"},
            }
            answer = await http.post("/api/v1/events", json=body, headers=auth)
            assert answer.status_code == 202 and answer.json()["enrolled"], answer.text

        began = time.perf_counter()
        await bounded([lambda n=n: post(n) for n in range(sample)], IN_FLIGHT)
        return sample / (time.perf_counter() - began)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline-contacts", type=int, help="contacts of the starts and sopruns baselines"
    )
    parser.add_argument("--events", type=int, default=2000, help="contacts through the API")
    parser.add_argument(
        "--only", choices=["cohort", "sopruns", "starts", "events"], help="one measurement"
    )
    args = parser.parse_args()
    results: dict[str, list[float]] = {
        "cohort": [],
        "sopruns": [],
        "starts": [],
        "done": [],
        "events": [],
    }
    baseline = args.baseline_contacts or args.contacts
    print(
        f"{args.contacts} contacts; embedded default (dev server on SQLite + WAL, SQLite store, "
        f"one worker); {IN_FLIGHT} starts in flight"
    )
    for round_ in range(1, args.rounds + 1):
        # Alternate who goes first: the machine is shared, its load drifts.
        order = ["cohort", "sopruns", "starts", "events"]
        order = order if round_ % 2 else order[::-1]
        order = [args.only] if args.only else order
        for name in order:
            with tempfile.TemporaryDirectory(prefix="bench-cohorts-") as tmp:
                size = {"cohort": args.contacts, "events": args.events}.get(name, baseline)
                async with Stack(Path(tmp), size) as stack:
                    if name == "cohort":
                        rate = await cohort(stack)
                    elif name == "sopruns":
                        rate = await sopruns(stack)
                    elif name == "starts":
                        rate, done = await starts(stack)
                        results["done"].append(done)
                        print(f"  round {round_} empty workflows run to the end {done:7.1f}/s")
                    else:
                        rate = await events(stack, size)
            results[name].append(rate)
            print(f"  round {round_} {name:<7} {size:>7} enrolments {rate:7.1f}/s", flush=True)
    median = {name: statistics.median(rates) for name, rates in results.items() if rates}
    if args.only:
        return
    print(f"medians of {args.rounds} round(s):")
    print(f"  cohort through a schedule   {median['cohort']:7.1f} enrolments/s (goal >= 100/s)")
    print(f"  the same runs started directly {median['sopruns']:5.1f}/s (until taken up)")
    print(f"  plain starts, empty workflow {median['starts']:6.1f} starts/s")
    print(f"  ... until all have run       {median['done']:6.1f}/s")
    print(f"  events API ({args.events} contacts)   {median['events']:7.1f} enrolments/s")
    print(
        f"  cohort / runs started directly {median['cohort'] / median['sopruns']:.2f}; "
        f"cohort / empty workflows run {median['cohort'] / median['done']:.2f}; "
        f"cohort / events API {median['cohort'] / median['events']:.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
