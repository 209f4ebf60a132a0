"""Benchmark: sopflow's production path, as deployed, against a hand-written baseline doing the
same I/O, plus intake on the embedded default, a burst of leads, and a memory soak.

1. path: N leads through gateway intake → SopRun workflow → StoreEffects on PostgreSQL → the
   Twilio SDK → the sandbox → signed receipts back to the gateway (a `sopflow gateway` process and
   a `sopflow worker` process, a Temporal dev server), until every text is recorded delivered;
   against bench/baseline_service.py (one insert, one SDK send, the receipts checked and written),
   its own uvicorn process, on the same database and sandbox. Leads/s, median of --repeat rounds
   (baseline and sopflow alternate), and the ratio.
2. intake: `sopflow up` itself (the embedded default: dev server on a SQLite file, SQLite store,
   the sandbox): POST /api/v1/events for N new leads of new_lead_callback, 32 in flight.
   Enrolments/s and latency p50/p99, against GET /healthz on the same gateway in the same run.
3. burst: N leads at once (32 in flight) into an SOP whose first step is a rep task; for each
   lead, when its task was assigned minus when the gateway recorded the run: p50/p99/max, and
   the burst's wall time.
4. soak (--soak-minutes M): leads at a steady --soak-rate for M minutes; the worker's RSS
   sampled every 30 s: the first and last 5 minutes' medians, and the growth between them.

    .venv/bin/python bench/bench_production.py [--leads 300] [--repeat 3] [--intake 1000]
        [--burst 10000] [--workers 2] [--soak-minutes 30] [--only path,intake,burst,soak]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack import ACCOUNT, AUTH, ROOT, SOPFLOW, TOKEN, Stack, pg_schema, rss_mib

from sopflow.asgi import free_port, start_server
from sopflow.sandbox.server import Sandbox
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from sopflow.up import die_with_parent

IN_FLIGHT = 32
TEXT_SOP = {
    "id": "one_text", "version": 1, "name": "One text", "owner": "bench", "purpose": "service",
    "entry": {"events": ["lead.created"]},
    "steps": [{"id": "hello", "kind": "sms", "body": "Hi {{ contact.id }}"}],
}  # fmt: skip
TASK_SOP = {
    "id": "first_call", "version": 1, "name": "First call", "owner": "bench", "purpose": "service",
    "entry": {"events": ["lead.assigned"]},
    "steps": [
        {"id": "call", "kind": "task", "title": "Call the lead", "channel": "call",
         "due_within": "30m", "assign": {"strategy": "round_robin", "team": "floor"},
         "outcomes": ["connected"], "expires_after": "2h", "on_outcome": {"connected": "done"}},
        {"id": "done", "kind": "end", "result": "called"},
    ],
}  # fmt: skip
REPS = [{"id": "floor", "name": "Floor", "reps": [
    {"id": f"rep{i}", "name": f"Rep {i}", "phone": f"+1212555{200 + i:04d}"} for i in range(20)
]}]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    count: int, one: Callable[[int], Awaitable[None]], in_flight: int = IN_FLIGHT
) -> float:
    """Seconds to run `one(i)` for i < count, `in_flight` at a time."""
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            await one(i)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return time.perf_counter() - began


async def reach(url: str, sql: str, target: int, seconds: float) -> None:
    """Wait until the count `sql` selects reaches `target`."""
    deadline = time.monotonic() + seconds
    while await asyncio.to_thread(count, url, sql) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {target} of: {sql}")
        await asyncio.sleep(0.1)


def phone(i: int) -> str:
    return f"+1{212 + i // 10_000 % 700:03d}555{i % 10_000:04d}"


def count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


async def sandbox_on(port: int) -> tuple[Sandbox, Any, Any]:
    network = Sandbox({ACCOUNT: TOKEN})
    network.chaos.step_seconds = 0  # deliver at once: the carrier's pace is not what we measure
    server, task = await start_server(network.app(), port, "error")
    return network, server, task


# ---------------------------------------------------------------- 1. the production path
async def bench_path(leads: int, repeat: int) -> None:
    sandbox_port = free_port()
    network, server, task = await sandbox_on(sandbox_port)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    with tempfile.TemporaryDirectory() as tmp, pg_schema() as url:
        store = Store(connect(url))
        store.migrate()
        store.deploy(compile_plan(Sop.model_validate(TEXT_SOP)))
        stack = Stack(
            Path(os.environ.get("BENCH_KEEP", tmp)) / "stack", url, sandbox_url,
            temporal_store=os.environ.get("BENCH_TEMPORAL_STORE", "file"),
        )  # fmt: skip
        os.environ["TWILIO_SEND_RATE"] = "0"  # both sides: the sender's pace is not measured
        base_port = free_port()
        base_env = stack.env() | {
            "BASELINE_DATABASE_URL": url,
            "BASELINE_PUBLIC_URL": f"http://127.0.0.1:{base_port}",
            "FLOOR_TASK_QUEUE": f"floor-{stack.task_queue}",
        }
        baseline = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
            [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"),
             "baseline_service:app", "--port", str(base_port), "--log-level", "warning"],
            cwd=ROOT, env=base_env,
        )  # fmt: skip
        floor = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
            [sys.executable, str(ROOT / "bench" / "floor_worker.py")], cwd=ROOT, env=base_env,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        client = httpx.AsyncClient(timeout=60)
        try:
            await stack.start()
            for _ in range(300):
                try:
                    await client.get(f"http://127.0.0.1:{base_port}/docs")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            rates: dict[str, list[float]] = {"baseline": [], "floor": [], "sopflow": []}
            for round_ in range(repeat):
                first = round_ * leads
                done = (round_ + 1) * leads
                for name, route in (("baseline", "lead"), ("floor", "lead_durable")):

                    async def plain(i: int, first: int = first, route: str = route) -> None:
                        lead = {"id": f"{route}{first + i}", "phone": phone(first + i)}
                        answer = await client.post(
                            f"http://127.0.0.1:{base_port}/{route}", json=lead
                        )
                        answer.raise_for_status()

                    began = time.perf_counter()
                    await drive(leads, plain)
                    delivered = (
                        "SELECT count(*) FROM leads "
                        f"WHERE status = 'delivered' AND id LIKE '{route}_%'"
                    )
                    await reach(url, delivered, done, 300)
                    rates[name].append(leads / (time.perf_counter() - began))

                async def sop(i: int, first: int = first) -> None:
                    event = {"type": "lead.created", "idempotency_key": f"s{first + i}",
                             "contact": {"id": f"s{first + i}", "phone": phone(first + i)}}  # fmt: skip
                    answer = await client.post(
                        f"{stack.gateway_urls[0]}/api/v1/events", json=event, headers=AUTH
                    )
                    answer.raise_for_status()

                began = time.perf_counter()
                accepted = await drive(leads, sop)
                print(f"  sopflow intake of the round: {leads / accepted:.1f}/s")
                delivered = (
                    "SELECT count(*) FROM outbox "
                    "WHERE CAST(result AS jsonb) ->> 'provider_status' = 'delivered'"
                )
                await reach(url, delivered, done, 300)
                rates["sopflow"].append(leads / (time.perf_counter() - began))
                print(
                    f"  round {round_ + 1}: "
                    + ", ".join(f"{n} {r[-1]:.1f} leads/s" for n, r in rates.items())
                )
            b, f, s = (statistics.median(rates[n]) for n in ("baseline", "floor", "sopflow"))
            print(
                f"path: {leads} leads per round, {repeat} rounds: baseline {b:.1f} leads/s, "
                f"Temporal floor {f:.1f} leads/s (ratio {f / b:.2f}), sopflow {s:.1f} leads/s, "
                f"ratio {s / b:.2f} (goal >= 0.7), {s / f:.2f} of the floor"
            )
        finally:
            await client.aclose()
            for process in (baseline, floor):
                process.terminate()
                process.wait(timeout=30)
            stack.stop()
            store.engine.dispose()
            server.should_exit = True
            await task
            network_sent = sum(1 for r in network.resources.values() if r.kind == "message")
            print(f"  (the sandbox took {network_sent} texts)")


# ---------------------------------------------------------------- 2. intake on `sopflow up`
async def bench_intake(count_: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ports = {name: free_port() for name in ("port", "temporal", "ui", "sandbox", "smtp")}
        env = os.environ | {
            "SOPFLOW_DATA_DIR": str(Path(tmp) / "data"),
            "SOPFLOW_LOG_LEVEL": "warning",
        }
        for name in ("SOPFLOW_DATABASE_URL", "TWILIO_ACCOUNT_SID", "SOPFLOW_API_TOKEN"):
            env.pop(name, None)
        with (Path(tmp) / "up.log").open("wb") as sink:
            up = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock
                [*SOPFLOW, "up", "--teams", "examples/teams.yaml", f"--port={ports['port']}",
                 *(f"--{name}-port={ports[name]}" for name in ("temporal", "ui", "sandbox", "smtp"))],
                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{ports['port']}"
        client = httpx.AsyncClient(timeout=60)
        try:
            token_file = Path(tmp) / "data" / "api_token"
            for _ in range(900):
                if up.poll() is not None:
                    raise RuntimeError((Path(tmp) / "up.log").read_text())
                try:
                    if (
                        token_file.exists()
                        and (await client.get(f"{base}/readyz")).status_code == 200
                    ):
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            latencies: list[float] = []

            async def enrol(i: int) -> None:
                event = {"type": "lead.created", "idempotency_key": f"intake-{i}",
                         "contact": {"id": f"i{i}", "phone": phone(i), "first_name": "Ann"}}  # fmt: skip
                began = time.perf_counter()
                answer = await client.post(f"{base}/api/v1/events", json=event, headers=auth)
                latencies.append(time.perf_counter() - began)
                assert answer.status_code == 202 and answer.json()["enrolled"], answer.text

            async def health(_: int) -> None:
                (await client.get(f"{base}/healthz")).raise_for_status()

            probe = count_ / await drive(count_, health)
            rate = count_ / await drive(count_, enrol)
            print(
                f"intake on `sopflow up`: {count_} enrolments, {IN_FLIGHT} in flight: "
                f"{rate:.0f}/s (goal >= 100), latency p50 {pct(latencies, 0.5) * 1000:.0f} ms, "
                f"p99 {pct(latencies, 0.99) * 1000:.0f} ms; GET /healthz {probe:.0f}/s, "
                f"ratio {rate / probe:.2f}"
            )
        finally:
            await client.aclose()
            up.terminate()
            up.wait(timeout=60)


# ---------------------------------------------------------------- 3. a burst of leads
async def bench_burst(leads: int, workers: int) -> None:
    sandbox_port = free_port()
    _, server, task = await sandbox_on(sandbox_port)
    with tempfile.TemporaryDirectory() as tmp, pg_schema() as url:
        store = Store(connect(url))
        store.migrate()
        store.deploy(compile_plan(Sop.model_validate(TASK_SOP)))
        RepDirectory(store.engine).import_teams(REPS)
        os.environ["TWILIO_SEND_RATE"] = "0"
        stack = Stack(Path(tmp) / "stack", url, f"http://127.0.0.1:{sandbox_port}", workers=workers)
        client = httpx.AsyncClient(timeout=120)
        try:
            await stack.start()

            async def lead(i: int) -> None:
                event = {"type": "lead.assigned", "idempotency_key": f"burst-{i}",
                         "contact": {"id": f"u{i}", "phone": phone(i)}}  # fmt: skip
                answer = await client.post(
                    f"{stack.gateway_urls[0]}/api/v1/events", json=event, headers=AUTH
                )
                answer.raise_for_status()

            began = time.perf_counter()
            intake = await drive(leads, lead)
            assigned = "SELECT count(*) FROM step_events WHERE action = 'assign'"
            await reach(url, assigned, leads, 1800)
            wall = time.perf_counter() - began
            engine = create_engine(url)
            with engine.connect() as connection:
                rows = connection.execute(text(
                    "SELECT EXTRACT(EPOCH FROM (e.executed_at - r.enrolled_at)) "
                    "FROM step_events e JOIN runs r ON r.workflow_id = e.workflow_id "
                    "WHERE e.action = 'assign'"
                )).scalars().all()  # fmt: skip
            engine.dispose()
            waits = [float(w) for w in rows]
            within = sum(1 for w in waits if w <= 60) / len(waits)
            print(
                f"burst: {leads} leads, {workers} workers: intake {leads / intake:.0f}/s "
                f"({intake:.0f} s), every task assigned after {wall:.0f} s; assignment after "
                f"enrolment p50 {pct(waits, 0.5):.1f} s, p99 {pct(waits, 0.99):.1f} s, "
                f"max {max(waits):.1f} s; within 60 s: {within:.1%}"
            )
        finally:
            await client.aclose()
            stack.stop()
            store.engine.dispose()
            server.should_exit = True
            await task


# ---------------------------------------------------------------- 4. a soak
async def bench_soak(minutes: float, rate: float) -> None:
    sandbox_port = free_port()
    _, server, task = await sandbox_on(sandbox_port)
    with tempfile.TemporaryDirectory() as tmp, pg_schema() as url:
        store = Store(connect(url))
        store.migrate()
        store.deploy(compile_plan(Sop.model_validate(TEXT_SOP)))
        os.environ["TWILIO_SEND_RATE"] = "0"
        stack = Stack(Path(tmp) / "stack", url, f"http://127.0.0.1:{sandbox_port}")
        client = httpx.AsyncClient(timeout=60)
        samples: list[tuple[float, float]] = []
        try:
            await stack.start()
            worker = stack.processes["worker0"].pid
            began = time.monotonic()
            sent = 0
            next_sample = began
            while (now := time.monotonic()) - began < minutes * 60:
                due = int((now - began) * rate)
                while sent < due:
                    event = {"type": "lead.created", "idempotency_key": f"soak-{sent}",
                             "contact": {"id": f"k{sent}", "phone": phone(sent)}}  # fmt: skip
                    answer = await client.post(
                        f"{stack.gateway_urls[0]}/api/v1/events", json=event, headers=AUTH
                    )
                    answer.raise_for_status()
                    sent += 1
                if now >= next_sample:
                    samples.append(((now - began) / 60, rss_mib(worker)))
                    next_sample += 30
                await asyncio.sleep(0.05)
            window = min(5.0, minutes / 3)
            early = statistics.median(m for t, m in samples if t <= window)
            late = statistics.median(m for t, m in samples if t >= minutes - window)
            print(
                f"soak: {minutes:.0f} min at {rate:.0f} leads/s ({sent} leads): worker RSS "
                f"median {early:.0f} MiB in the first {window:.0f} min, {late:.0f} MiB in the "
                f"last {window:.0f} min ({(late - early) / early:+.1%}); "
                f"samples: {', '.join(f'{m:.0f}' for _, m in samples)}"
            )
        finally:
            await client.aclose()
            stack.stop()
            store.engine.dispose()
            server.should_exit = True
            await task


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=300, help="leads per round of the path")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--intake", type=int, default=1000, help="enrolments on sopflow up")
    parser.add_argument("--burst", type=int, default=2000, help="leads in the burst")
    parser.add_argument("--workers", type=int, default=2, help="worker processes in the burst")
    parser.add_argument("--soak-minutes", type=float, default=0, help="0: no soak")
    parser.add_argument("--soak-rate", type=float, default=5, help="leads per second")
    parser.add_argument("--only", default="path,intake,burst,soak")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if "path" in parts:
        await bench_path(args.leads, args.repeat)
    if "intake" in parts:
        await bench_intake(args.intake)
    if "burst" in parts:
        await bench_burst(args.burst, args.workers)
    if "soak" in parts and args.soak_minutes:
        await bench_soak(args.soak_minutes, args.soak_rate)


if __name__ == "__main__":
    asyncio.run(main())
