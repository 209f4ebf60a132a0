"""`sopflow gateway` as its own process, as a deployment runs N of them: it refuses to start
without its configuration, serves the API against a Temporal server and a store it did not
start, and says through /readyz whether it can take events."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from sopflow.asgi import free_port
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect

ROOT = Path(__file__).resolve().parents[2]
SOP = {
    "id": "hello", "version": 1, "name": "Hello", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "steps": [{"id": "wait", "kind": "wait", "duration": "1d"}],
}  # fmt: skip
AUTH = {"Authorization": "Bearer gw-token"}


def gateway_env(tmp: Path, temporal: str, port: int) -> dict[str, str]:
    return os.environ | {
        "SOPFLOW_DATA_DIR": str(tmp / "data"),
        "SOPFLOW_DATABASE_URL": f"sqlite:///{tmp / 'store.db'}",
        "SOPFLOW_API_TOKEN": "gw-token",
        "SOPFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SOPFLOW_UNSUBSCRIBE_KEY": "shared-key",
        "SOPFLOW_TASK_QUEUE": f"gw-{port}",
        "TEMPORAL_ADDRESS": temporal,
    }


def sopflow_gateway(env: dict[str, str], *args: str) -> list[str]:
    return [sys.executable, "-c", "from sopflow.cli import main; main()", "gateway", *args]


@contextmanager
def running(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            sopflow_gateway(env, "--port", str(port)), cwd=ROOT, env=env, stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(log.read_text())
        yield base
    finally:
        process.terminate()
        # uvicorn shuts down cleanly, then re-raises SIGTERM so the exit status says why.
        assert process.wait(timeout=30) in (0, -15), log.read_text()
        assert "Application shutdown complete" in log.read_text()


def test_the_gateway_refuses_to_start_without_its_configuration(tmp_path: Path) -> None:
    env = gateway_env(tmp_path, "127.0.0.1:9", free_port())
    for missing, says in [
        ("SOPFLOW_API_TOKEN", "SOPFLOW_API_TOKEN is not set: a gateway never runs open"),
        ("SOPFLOW_PUBLIC_URL", "SOPFLOW_PUBLIC_URL is not set"),
        ("SOPFLOW_UNSUBSCRIBE_KEY", "SOPFLOW_UNSUBSCRIBE_KEY is not set"),
    ]:
        without = {k: v for k, v in env.items() if k != missing}
        refused = subprocess.run(
            sopflow_gateway(without), cwd=ROOT, env=without, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f"error: {says}") and "Traceback" not in refused.stderr


def test_a_gateway_process_serves_events_and_reports_readiness(
    live_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()  # as the workers do: gateways do not migrate
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    temporal = live_env.client.service_client.config.target_host
    port = free_port()
    env = gateway_env(tmp_path, temporal, port)
    with running(env, port, tmp_path / "gw.log") as base:
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "store": "ok", "temporal": "ok"}
        event = {"type": "lead.created", "idempotency_key": f"gw-{port}",
                 "contact": {"id": "c-1", "phone": "+12125550123"}}  # fmt: skip
        assert httpx.post(f"{base}/api/v1/events", json=event).status_code == 401
        enrolled = httpx.post(f"{base}/api/v1/events", json=event, headers=AUTH)
        assert enrolled.status_code == 202, enrolled.text
        run_id = enrolled.json()["enrolled"][0]["run_id"]
        assert store.run(run_id) is not None  # recorded by this gateway in the shared store
    blind_port = free_port()
    blind = gateway_env(tmp_path, f"127.0.0.1:{free_port()}", blind_port)  # no Temporal there
    with running(blind, blind_port, tmp_path / "blind.log") as base:
        answer = httpx.get(f"{base}/readyz", timeout=30)
        assert answer.status_code == 503
        assert answer.json()["store"] == "ok" and answer.json()["temporal"] != "ok"
