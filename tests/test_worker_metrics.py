"""`sopflow worker --log-format json --metrics-port P` as a real process: its lines are JSON (an
activity's carry the run and the contact), and one port serves Temporal's metrics and sopflow's
touch counters."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from sopflow.asgi import free_port
from sopflow.errors import ConfigurationError
from sopflow.metrics import count_touch, metrics_address
from sopflow.sop.plan import compile_plan
from sopflow.sop.protocol import AssignTask, Command, Escalate, PlaceCall, SendMessage
from sopflow.sop.schema import AssignRule, Sop
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store, connect
from workflows.contracts import CommandResult, SopRunInput, SopRunResult
from workflows.sop_run import SopRun

ROOT = Path(__file__).resolve().parents[1]
HELLO = Sop.model_validate({
    "id": "hello", "version": 1, "name": "Hello", "owner": "qa", "entry": {"events": ["x"]},
    "steps": [{"id": "pause", "kind": "wait", "duration": "1s"},
              {"id": "greet", "kind": "sms", "body": "Hello"}],
})  # fmt: skip


def sopflow_worker(*args: str) -> list[str]:
    return [sys.executable, "-c", "from sopflow.cli import main; main()", "worker", *args]


def start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            sopflow_worker(*args), cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels` (others may come too)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match[1] for k, v in labels.items()):
            return float(match[2])
    return None


async def test_a_worker_logs_json_and_serves_temporal_and_sopflow_metrics(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(connect(database_url))
    store.migrate()
    ConsentBook(store.engine).record("c-2", "revoke", method="test")  # c-2 said STOP
    port, log = free_port(), tmp_path / "worker.log"
    env = os.environ | {
        "TEMPORAL_ADDRESS": live_env.client.service_client.config.target_host,
        "SOPFLOW_DATA_DIR": str(tmp_path / "data"),
        "SOPFLOW_DATABASE_URL": database_url,
        "SOPFLOW_TASK_QUEUE": task_queue,
    }
    worker = start(env, log, "--log-format", "json", "--metrics-port", str(port))
    try:
        plan = compile_plan(HELLO)
        results = []
        for contact in ("c-1", "c-2"):
            handle = await live_env.client.start_workflow(
                SopRun.run,
                SopRunInput(plan=plan, contact={"id": contact, "phone": "+447911123456"},
                            zones=["Europe/London"]),
                id=f"sop:hello:{contact}:{task_queue}", task_queue=task_queue,
                result_type=SopRunResult,
            )  # fmt: skip
            results.append(await asyncio.wait_for(handle.result(), timeout=60))
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()
    assert [r.result for r in results] == ["completed", "opted_out"], log.read_text()
    # Temporal's own metrics and sopflow's counters, on the one port.
    assert sample(scraped, "temporal_activity_execution_latency_count", task_queue=task_queue)
    sent = {"channel": "sms", "outcome": "sent", "activity_type": "sopflow.perform"}
    assert sample(scraped, "sopflow_touches_total", **sent) == 1, scraped
    held = {"channel": "sms", "rule": "opt_out", "outcome": "blocked"}
    assert sample(scraped, "sopflow_touches_held_total", **held) == 1, scraped
    # Every line is JSON; the activity's say which run and which contact.
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["msg"].startswith("worker started") for e in entries)
    touch = next(e for e in entries if e["msg"].startswith("touch ") and e["contact_id"] == "c-1")
    assert touch["run_id"] == f"sop:hello:c-1:{task_queue}" and touch["channel"] == "sms"
    assert touch["activity"] == "sopflow.perform" and touch["level"] == "INFO"
    blocked = next(e for e in entries if e.get("contact_id") == "c-2")
    assert blocked["run_id"] == f"sop:hello:c-2:{task_queue}" and " blocked: " in blocked["msg"]


def test_the_metrics_address_comes_from_options_then_the_environment() -> None:
    assert metrics_address({}, None, None) is None  # off unless asked for
    env = {"SOPFLOW_METRICS_PORT": "9464", "SOPFLOW_METRICS_HOST": "0.0.0.0"}
    assert metrics_address(env, None, None) == "0.0.0.0:9464"
    assert metrics_address(env, 9500, "127.0.0.1") == "127.0.0.1:9500"
    assert metrics_address({}, 9464, None) == "127.0.0.1:9464"
    with pytest.raises(
        ConfigurationError, match=r"^metrics port 0 is not a port number \(1 to 65535\)$"
    ):
        metrics_address({}, 0, None)


def test_a_bad_metrics_port_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    env = os.environ | {"SOPFLOW_DATA_DIR": str(tmp_path), "SOPFLOW_METRICS_PORT": "nine"}
    bad = subprocess.run(
        sopflow_worker(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == ConfigurationError.exit_code
    assert bad.stderr == "error: SOPFLOW_METRICS_PORT 'nine' is not a port number\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            sopflow_worker("--log-format", "json", "--metrics-port", str(port)),
            cwd=ROOT, env=os.environ | {"SOPFLOW_DATA_DIR": str(tmp_path)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert busy.returncode == ConfigurationError.exit_code, busy.stderr
    *_, entry = [json.loads(line) for line in busy.stderr.splitlines()]  # migrations, then why
    assert entry["level"] == "ERROR"
    assert entry["msg"].startswith(f"cannot start: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "Address already in use" in entry["msg"]


AT = datetime(2026, 1, 5, 15, tzinfo=UTC)
SMS = SendMessage(at=AT, step="greet", key="greet", channel="sms", body="Hi", planned_at=AT,
                  context={})  # fmt: skip
CALL = PlaceCall(at=AT, step="ring", key="ring", script="Hi", machine_detection=False,
                 planned_at=AT, context={})  # fmt: skip


def counted(*cases: tuple[Command, CommandResult]) -> list[tuple[str, int, dict[str, Any]]]:
    """What count_touch adds for each (command, result), through a real Temporal meter."""
    buffer = MetricBuffer(1000)
    meter = Runtime(
        telemetry=TelemetryConfig(metrics=buffer, attach_service_name=False)
    ).metric_meter
    for command, result in cases:
        count_touch(meter, command, result)
    return [(u.metric.name, u.value, dict(u.attributes)) for u in buffer.retrieve_updates()]


def test_touches_are_counted_once_by_channel_and_outcome() -> None:
    assert counted(
        (SMS, CommandResult()),
        (CALL, CommandResult(status="failed", reason="Twilio 21211")),
        (SMS, CommandResult(detail={"deduplicated": True})),  # counted by the attempt that sent
        (SMS, CommandResult(status="blocked", retry_at=AT, detail={"rule": "us_federal_tcpa"})),
        (CALL, CommandResult(status="blocked", detail={"rule": "opt_out"})),
    ) == [
        ("sopflow_touches_total", 1, {"channel": "sms", "outcome": "sent"}),
        ("sopflow_touches_total", 1, {"channel": "call", "outcome": "failed"}),
        ("sopflow_touches_held_total", 1,
         {"channel": "sms", "rule": "us_federal_tcpa", "outcome": "deferred"}),
        ("sopflow_touches_held_total", 1, {"channel": "call", "rule": "opt_out", "outcome": "blocked"}),
    ]  # fmt: skip


def test_a_rep_task_is_held_like_a_touch_but_never_counted_as_sent() -> None:
    task = AssignTask(at=AT, step="call_lead", key="call_lead", title="Call", instructions="",
                      assign=AssignRule(strategy="owner"), due_at=AT, planned_at=AT, attempt=1,
                      context={}, channel="call")  # fmt: skip
    escalate = Escalate(at=AT, step="call_lead", key="e1", action="remind", level=1, to=None,
                        due_at=AT)  # fmt: skip
    full = CommandResult(status="blocked", retry_at=AT, detail={"rule": "rep_workload"})
    assert counted((task, CommandResult()), (escalate, CommandResult()), (task, full)) == [
        ("sopflow_touches_held_total", 1,
         {"channel": "call", "rule": "rep_workload", "outcome": "deferred"}),
    ]  # fmt: skip
