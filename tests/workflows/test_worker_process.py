"""worker.py as a real process: kill it mid-cadence, start another, and nothing is lost or repeated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.sop.simulator import simulate
from sopflow.store.repository import Store, connect
from workflows.contracts import SopRunInput, SopRunResult
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[2]


def drip(touches: int) -> Sop:
    steps: list[dict[str, Any]] = []
    for n in range(touches):
        steps += [
            {"id": f"pause_{n}", "kind": "wait", "duration": "2s"},
            {"id": f"touch_{n}", "kind": "sms", "body": f"Touch {n}"},
        ]
    return Sop.model_validate(
        {
            "id": "drip",
            "version": 1,
            "name": "Drip",
            "owner": "qa",
            # service: marketing texts to a US number would wait for the legal hours (08-21
            # local), and whether this test passed would depend on the time of day
            "purpose": "service",
            "entry": {"events": ["x"]},
            "steps": steps,
        }
    )


class WorkerProcess:
    """worker.py in a subprocess, logging to a file (read after it stops)."""

    def __init__(
        self, env: WorkflowEnvironment, database_url: str, task_queue: str, log: Path
    ) -> None:
        variables = os.environ | {
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": "default",
            "SOPFLOW_DATABASE_URL": database_url,
            "SOPFLOW_TASK_QUEUE": task_queue,
        }
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "worker.py"],
                cwd=ROOT,
                env=variables,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text()


def sends(store: Store, workflow_id: str) -> int:
    return sum(1 for e in store.step_events(workflow_id) if e.kind == "send")


async def test_a_killed_worker_loses_and_repeats_nothing(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(connect(database_url))
    store.migrate()
    plan = compile_plan(drip(5))
    workflow_id = f"sop:drip:c-5:{task_queue}"
    first = WorkerProcess(live_env, database_url, task_queue, tmp_path / "first.log")
    second = None
    try:
        handle = await live_env.client.start_workflow(
            SopRun.run,
            SopRunInput(plan=plan, contact={"id": "c-5", "phone": "+12125550123"}, zones=["UTC"]),
            id=workflow_id,
            task_queue=task_queue,
            result_type=SopRunResult,
        )
        for _ in range(300):  # until the second touch is recorded
            if sends(store, workflow_id) >= 2:
                break
            await asyncio.sleep(0.1)
        assert sends(store, workflow_id) >= 2, first.output()
        first.stop(signal.SIGKILL)
        second = WorkerProcess(live_env, database_url, task_queue, tmp_path / "second.log")
        result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
    assert result.result == "completed"
    events = store.step_events(workflow_id)
    contact = {"id": "c-5", "phone": "+12125550123"}
    preview = simulate(plan, contact, result.state.enrolled_at, zones=["UTC"])
    assert [e.key for e in events] == [e.key for e in preview.timeline]  # none lost, none twice
    assert sends(store, workflow_id) == 5


async def test_sigterm_stops_the_worker_cleanly(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        live_env, f"sqlite:///{tmp_path / 'store.db'}", task_queue, tmp_path / "w.log"
    )
    for _ in range(100):
        if "worker started" in worker.output():
            break
        await asyncio.sleep(0.1)
    assert worker.process.poll() is None, worker.output()
    assert worker.stop(signal.SIGTERM) == 0
    assert "worker started" in worker.output() and "worker stopped" in worker.output()


def test_a_bad_configuration_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(b"rules:\n  - id: caf\xe9\n")  # Latin-1, not UTF-8
    env = os.environ | {"SOPFLOW_DATA_DIR": str(tmp_path), "SOPFLOW_RULES": str(rules)}
    bad = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr  # 2: configuration
    assert "cannot start: " in bad.stderr and "not UTF-8 text" in bad.stderr
    unreachable = subprocess.run(  # the installed entry point: `sopflow worker`
        [sys.executable, "-c", "from sopflow.cli import main; main()", "worker"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k != "SOPFLOW_RULES"}
        | {"TEMPORAL_ADDRESS": "127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert "cannot reach Temporal at 127.0.0.1:9" in unreachable.stderr
