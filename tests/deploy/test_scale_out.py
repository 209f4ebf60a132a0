"""The documented deployment, for real: 2 `sopflow worker` and 2 `sopflow gateway` processes
against one Temporal server and PostgreSQL, touches through the Twilio SDK to the sandbox phone
network. Mid-storm one worker and one gateway are killed with SIGKILL; the clients retry the
refused events on the surviving gateway (as a load balancer would), and every lead must still get
exactly one run and exactly one of each text: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from temporalio.testing import WorkflowEnvironment

from sopflow.asgi import free_port, start_server
from sopflow.sandbox.server import Sandbox
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ACCOUNT, TOKEN, FROM = "AC" + "5" * 32, "scale-token", "+15005550006"
API = {"Authorization": "Bearer scale-token"}
LEADS = 40
SLOW = 12  # sends answered late, so the killed worker holds some
SOP = {
    "id": "two_texts", "version": 1, "name": "Two texts", "owner": "qa", "purpose": "service",
    "entry": {"events": ["lead.created"]},
    "steps": [
        {"id": "first", "kind": "sms", "body": "first for {{ contact.id }}"},
        {"id": "pause", "kind": "wait", "duration": "3s"},
        {"id": "second", "kind": "sms", "body": "second for {{ contact.id }}"},
    ],
}  # fmt: skip


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL schema of its own, reached by every process through the URL."""
    schema = f"scale_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[Sandbox, str]]:
    network = Sandbox({ACCOUNT: TOKEN})
    port = free_port()
    server, task = await start_server(network.app(), port, "error")
    try:
        yield network, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def spawn(command: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", "from sopflow.cli import main; main()", command, *args],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def until(check: Any, seconds: float, what: str) -> None:
    for _ in range(int(seconds * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(360)
async def test_two_workers_and_two_gateways_survive_losing_one_of_each(
    live_env: WorkflowEnvironment,
    pg_url: str,
    sandbox: tuple[Sandbox, str],
    tmp_path: Path,
) -> None:
    network, sandbox_url = sandbox
    store = Store(connect(pg_url))
    store.migrate()  # the deployment's upgrade step (`alembic upgrade`), before the processes
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    ports = [free_port(), free_port()]
    env = os.environ | {
        "SOPFLOW_DATA_DIR": str(tmp_path / "data"),
        "SOPFLOW_DATABASE_URL": pg_url,
        "SOPFLOW_API_TOKEN": "scale-token",
        # Both gateways sit behind one public address; the first one plays it here (it is the
        # one kept alive), so receipts and signatures keep working.
        "SOPFLOW_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",
        "SOPFLOW_UNSUBSCRIBE_KEY": "scale-key",
        "SOPFLOW_TASK_QUEUE": f"scale-{uuid.uuid4().hex[:8]}",
        "TEMPORAL_ADDRESS": live_env.client.service_client.config.target_host,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM": FROM,
        "TWILIO_BASE_URL": sandbox_url,
    }
    logs = [tmp_path / f"{kind}{i}.log" for kind in ("worker", "gateway") for i in range(2)]
    workers = [spawn("worker", env, logs[i]) for i in range(2)]
    gateways = [
        spawn("gateway", env, logs[2 + i], "--port", str(port)) for i, port in enumerate(ports)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    processes = workers + gateways
    client = httpx.AsyncClient(timeout=30)
    try:

        async def all_ready() -> bool:
            for base in bases:
                try:
                    if (await client.get(f"{base}/readyz")).status_code != 200:
                        return False
                except httpx.TransportError:
                    return False
            return all(p.poll() is None for p in processes)

        await until(all_ready, 60, "both gateways to be ready")

        async def send(i: int) -> str:
            """Event i, to gateway i % 2; a refused connection goes to the other gateway."""
            event = {"type": "lead.created", "idempotency_key": f"lead-{i}",
                     "contact": {"id": f"c-{i}", "phone": f"+1212555{100 + i:04d}"}}  # fmt: skip
            for attempt in range(20):
                base = bases[(i + attempt) % 2]
                try:
                    answer = await client.post(f"{base}/api/v1/events", json=event, headers=API)
                except httpx.TransportError:
                    continue  # that gateway is gone: the balancer tries the next one
                if answer.status_code == 409:  # the same key still in flight elsewhere
                    await asyncio.sleep(0.2)
                    continue
                assert answer.status_code in (200, 202), answer.text
                enrolled = answer.json()["enrolled"]
                assert len(enrolled) == 1, answer.text
                return str(enrolled[0]["run_id"])
            raise AssertionError(f"event {i} was never accepted")

        # The next texts reach the network, then their answers hang for 5 s: the killed
        # worker dies holding sends that went out, whose retries must find them, not resend.
        network.faults.extend(["slow"] * SLOW)
        network.slow_seconds = 5
        first_half = await asyncio.gather(*(send(i) for i in range(LEADS // 2)))

        async def sends_hanging() -> bool:
            return not network.faults

        await until(sends_hanging, 30, "the slow sends to reach the network")
        # Mid-storm: one worker and one gateway die without a chance to clean up.
        workers[1].send_signal(signal.SIGKILL)
        gateways[1].send_signal(signal.SIGKILL)
        second_half = await asyncio.gather(*(send(i) for i in range(LEADS // 2, LEADS)))
        run_ids = first_half + second_half
        assert len(set(run_ids)) == LEADS  # one run per lead, whichever gateway took it

        async def all_finished() -> bool:
            runs = await asyncio.to_thread(lambda: [store.run(r) for r in run_ids])
            return all(r is not None and r.status == "finished" for r in runs)

        await until(all_finished, 200, "every run to finish on the surviving worker")
        texts = Counter(  # a footer may follow the SOP's text
            (r.to, found.group(0))
            for r in network.resources.values()
            if r.kind == "message" and (found := re.match(r"(first|second) for c-\d+", r.body))
        )
        expected = {
            (f"+1212555{100 + i:04d}", f"{which} for c-{i}")
            for i in range(LEADS)
            for which in ("first", "second")
        }
        assert set(texts) == expected
        assert [k for k, n in texts.items() if n > 1] == []  # no text sent twice
        assert workers[0].poll() is None and gateways[0].poll() is None
        with store.engine.connect() as connection:
            retried = connection.execute(text("SELECT count(*) FROM outbox WHERE attempts > 1"))
            assert retried.scalar_one() > 0  # the kill did catch sends in flight
    finally:
        await client.aclose()
        for process in processes:
            if process.poll() is None:
                process.terminate()
        slow = []
        for process, log in zip(processes, logs, strict=True):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # reaped all the same, so no process outlives us
                process.kill()
                process.wait()
                slow.append(
                    f"{log.name} did not stop within 30 s of SIGTERM:\n{log.read_text()[-3000:]}"
                )
        store.engine.dispose()
    assert slow == [], "\n".join(slow)
