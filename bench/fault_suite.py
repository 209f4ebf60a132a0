"""Fault suite: the deployed shape under a storm of leads and STOPs while its parts are killed,
then an audit of what must never happen.

The stack (bench/stack.py): a Temporal dev server on a SQLite file, 2 `sopflow worker` and
2 `sopflow gateway` processes on PostgreSQL, touches through the Twilio SDK to the sandbox phone
network (in this process, on a Keep file). While N leads arrive (16 in flight, each one retried
on the other gateway when its gateway fails or answers 5xx/409, as a load balancer and a
careful client do) and one lead in ten texts STOP (signed inbound webhooks, retried on the other
gateway as Twilio's fallback URL would):
- the sandbox answers with faults: 429, 500, lost responses (created, then a 500) and slow ones;
- kill -9 a worker, then a gateway, then the Temporal dev server; each comes back a few seconds
  later (a supervisor restarts it), and the sandbox itself restarts from its file.
Then, once every run has finished (or a deadline passed), count:
- accepted events without a run (a 202 whose run is not in the store or not in Temporal),
- duplicate touches (a text sent twice to the same person),
- lost STOPs (a STOP answered 2xx without an opt-out in the store, or a text created more than
  a second after that answer: a send already past its last look may still be on the wire),
- and runs not finished by the deadline. Exit status 1 if any of the first three is not 0.

    .venv/bin/python bench/fault_suite.py [--leads 300] [--deadline 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack import ACCOUNT, AUTH, FROM, TOKEN, Stack, pg_schema
from temporalio.client import Client
from temporalio.service import RPCError

from sopflow.asgi import free_port, start_server
from sopflow.sandbox.keep import Keep
from sopflow.sandbox.server import Sandbox
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect

SOP = {
    "id": "two_texts", "version": 1, "name": "Two texts", "owner": "faults",
    "purpose": "service", "entry": {"events": ["lead.created"]},
    "steps": [
        {"id": "first", "kind": "sms", "body": "first for {{ contact.id }}"},
        {"id": "pause", "kind": "wait", "duration": "20s"},
        {"id": "second", "kind": "sms", "body": "second for {{ contact.id }}"},
    ],
}  # fmt: skip
TEXT = re.compile(r"(first|second) for (f\d+)")
IN_FLIGHT = 16


def phone(i: int) -> str:
    return f"+1212555{i % 10_000:04d}"


class Network:
    """The sandbox on a fixed port and a Keep file, restartable."""

    def __init__(self, port: int, keep_path: Path) -> None:
        self.port, self.keep_path = port, keep_path
        self.sandbox: Sandbox | None = None
        self.keep: Keep | None = None
        self.server: Any = None
        self.task: Any = None

    async def start(self) -> None:
        self.keep = Keep(self.keep_path)
        self.sandbox = Sandbox({ACCOUNT: TOKEN}, keep=self.keep)
        self.sandbox.chaos.step_seconds = 0.2
        self.server, self.task = await start_server(self.sandbox.app(), self.port, "error")

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task
        assert self.keep is not None
        self.keep.close()

    def faults(self, *names: str) -> None:
        assert self.sandbox is not None
        self.sandbox.faults.extend(names)


class Storm:
    def __init__(self, stack: Stack, leads: int) -> None:
        self.stack, self.leads = stack, leads
        self.client = httpx.AsyncClient(timeout=15)
        self.accepted: dict[int, str] = {}  # lead → run id, from a 202
        self.refused: dict[int, str] = {}  # lead → why it was never accepted
        self.stop_acked: dict[str, datetime] = {}  # phone → when a gateway answered the STOP
        self.retries = Counter[str]()

    async def _post(self, i: int, path: str, **kwargs: Any) -> httpx.Response | None:
        """POST to gateway i % 2, then the other one, for up to 90 s: None if never answered."""
        deadline = time.monotonic() + 90
        attempt = 0
        while time.monotonic() < deadline:
            base = self.stack.gateway_urls[(i + attempt) % 2]
            attempt += 1
            try:
                answer = await self.client.post(f"{base}{path}", **kwargs)
            except httpx.TransportError:
                self.retries["gateway unreachable"] += 1
                await asyncio.sleep(0.2)
                continue
            if answer.status_code in (409, 500, 502, 503, 504):
                self.retries[f"HTTP {answer.status_code}"] += 1
                await asyncio.sleep(0.5)
                continue
            return answer
        return None

    async def lead(self, i: int) -> None:
        event = {"type": "lead.created", "idempotency_key": f"fault-{i}",
                 "contact": {"id": f"f{i}", "phone": phone(i)}}  # fmt: skip
        answer = await self._post(i, "/api/v1/events", json=event, headers=AUTH)
        if answer is None or answer.status_code != 202:
            self.refused[i] = "no answer" if answer is None else answer.text[:200]
            return
        self.accepted[i] = answer.json()["enrolled"][0]["run_id"]
        if i % 10 == 0:
            asyncio.get_running_loop().create_task(self.stop_text(i))

    async def stop_text(self, i: int) -> None:
        """The person texts STOP a moment after their first text, as Twilio would post it."""
        await asyncio.sleep(1.0)
        url = f"{self.stack.public_url}/twilio/inbound"
        params = {"MessageSid": f"SMstop{i:08d}", "AccountSid": ACCOUNT, "From": phone(i),
                  "To": FROM, "Body": "STOP", "NumMedia": "0"}  # fmt: skip
        signature = RequestValidator(TOKEN).compute_signature(url, params)
        answer = await self._post(
            i, "/twilio/inbound", data=params, headers={"X-Twilio-Signature": signature}
        )
        if answer is not None and answer.status_code < 300:
            self.stop_acked[phone(i)] = datetime.now(UTC)


async def run(leads: int, deadline: float) -> int:
    with tempfile.TemporaryDirectory() as tmp, pg_schema() as url:
        work = Path(tmp)
        network = Network(free_port(), work / "sandbox.db")
        await network.start()
        store = Store(connect(url))
        store.migrate()
        store.deploy(compile_plan(Sop.model_validate(SOP)))
        os.environ["TWILIO_SEND_RATE"] = "0"
        stack = Stack(work / "stack", url, f"http://127.0.0.1:{network.port}", 2, 2)
        storm = Storm(stack, leads)
        began = time.monotonic()
        try:
            await stack.start()
            print(f"stack up in {time.monotonic() - began:.0f} s; storm of {leads} leads")
            queue = iter(range(leads))
            sent = 0

            async def lane() -> None:
                nonlocal sent
                for i in queue:
                    await storm.lead(i)
                    sent += 1

            async def chaos() -> None:
                """Faults all along; kills at fixed points of the storm."""
                steps = [
                    (0.15, "kill worker1", lambda: stack.kill("worker1")),
                    (0.25, "restart worker1", lambda: stack.start_worker(1)),
                    (0.35, "kill gateway1", lambda: stack.kill("gateway1")),
                    (0.45, "restart gateway1", lambda: stack.start_gateway(1)),
                    (0.55, "kill temporal", lambda: stack.kill("temporal")),
                    (0.60, "restart temporal", stack.start_temporal),
                ]
                sandbox_restarted = False
                while sent < leads:
                    network.faults("429", "500", "lost", "slow")
                    if steps and sent >= steps[0][0] * leads:
                        _, what, act = steps.pop(0)
                        print(f"  {time.monotonic() - began:5.0f} s, {sent} leads: {what}")
                        act()
                    elif not sandbox_restarted and sent >= 0.75 * leads:
                        print(f"  {time.monotonic() - began:5.0f} s: restart the sandbox")
                        await network.stop()
                        await network.start()
                        sandbox_restarted = True
                    await asyncio.sleep(1.0)
                while steps:  # the storm ended before the last kills: still do them
                    _, what, act = steps.pop(0)
                    print(f"  after the storm: {what}")
                    act()

            await asyncio.gather(chaos(), *(lane() for _ in range(IN_FLIGHT)))
            print(
                f"storm over after {time.monotonic() - began:.0f} s; retries {dict(storm.retries)}"
            )
            await asyncio.sleep(5)  # STOPs still on their way
            finished = await settle(url, storm, deadline, began)
            return await audit(url, stack, network, storm, finished)
        finally:
            await storm.client.aclose()
            stack.stop()
            store.engine.dispose()
            await network.stop()


async def settle(url: str, storm: Storm, deadline: float, began: float) -> int:
    """Wait for every accepted run to finish; the number that did."""
    engine = create_engine(url)
    run_ids = list(storm.accepted.values())
    done = 0
    try:
        while time.monotonic() - began < deadline:
            with engine.connect() as connection:
                done = connection.execute(
                    text("SELECT count(*) FROM runs WHERE status = 'finished'")
                ).scalar_one()
            if done >= len(run_ids):
                break
            await asyncio.sleep(2)
    finally:
        engine.dispose()
    print(f"{done} of {len(run_ids)} runs finished after {time.monotonic() - began:.0f} s")
    return int(done)


async def audit(url: str, stack: Stack, network: Network, storm: Storm, finished: int) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        runs = {r for (r,) in connection.execute(text("SELECT workflow_id FROM runs"))}
        opted_out = {
            p for (p,) in connection.execute(text(
                "SELECT c.phone FROM consent_events e JOIN contacts c ON c.id = e.contact_id "
                "WHERE e.action = 'revoke'"
            ))
        }  # fmt: skip
    engine.dispose()
    client = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
    missing = []
    for i, run_id in storm.accepted.items():
        try:
            await client.get_workflow_handle(run_id).describe()
        except RPCError:
            missing.append((i, "not in Temporal"))
            continue
        if run_id not in runs:
            missing.append((i, "not in the store"))
    assert network.sandbox is not None
    texts = Counter[tuple[str, str]]()
    after_stop = []
    for resource in network.sandbox.resources.values():
        found = TEXT.match(resource.body) if resource.kind == "message" else None
        if found is None or resource.direction != "outbound-api":
            continue
        texts[(resource.to, found.group(0))] += 1
        acked = storm.stop_acked.get(resource.to)
        if acked is not None and resource.created > acked + timedelta(seconds=1):
            after_stop.append(f"{found.group(0)} at {resource.created:%H:%M:%S.%f}")
    duplicates = {k: n for k, n in texts.items() if n > 1}
    lost_stops = [p for p in storm.stop_acked if p not in opted_out]
    print(
        f"leads {storm.leads}: accepted {len(storm.accepted)}, never accepted "
        f"{len(storm.refused)}{' ' + str(list(storm.refused.items())[:3]) if storm.refused else ''}"
    )
    print(f"texts sent {sum(texts.values())} to {len({to for to, _ in texts})} people")
    print(f"STOPs answered {len(storm.stop_acked)}")
    print(f"accepted events without a run: {len(missing)} {missing[:5]}")
    print(f"duplicate touches: {len(duplicates)} {list(duplicates.items())[:5]}")
    print(
        f"lost STOPs: {len(lost_stops) + len(after_stop)} "
        f"(no opt-out recorded: {lost_stops[:5]}; texts after the STOP: {after_stop[:5]})"
    )
    print(f"runs not finished by the deadline: {len(storm.accepted) - finished}")
    return 1 if missing or duplicates or lost_stops or after_stop else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--deadline", type=float, default=600, help="seconds for everything")
    args = parser.parse_args()
    return asyncio.run(run(args.leads, args.deadline))


if __name__ == "__main__":
    sys.exit(main())
