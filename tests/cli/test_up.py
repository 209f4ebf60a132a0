"""`sopflow up` as a user runs it: one foreground command, an API that enrols, Ctrl-C, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SOP = """\
id: quick_call
version: 1
name: Quick call
owner: qa
entry: {events: [lead.created]}
steps:
  - id: call_lead
    kind: task
    title: Call
    due_within: 30m
    outcomes: [connected, booked]
    on_outcome: {booked: won}
  - {id: lost, kind: end, result: lost}
  - {id: won, kind: end, result: converted}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Up:
    def __init__(self, tmp: Path, sops: Path) -> None:
        self.port, temporal, ui = free_port(), free_port(), free_port()
        self.log = tmp / f"up-{time.monotonic_ns()}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from sopflow.cli import main; main()",
                    "up",
                    "--sops",
                    str(sops),
                    "--port",
                    str(self.port),
                    "--temporal-port",
                    str(temporal),
                    "--ui-port",
                    str(ui),
                ],
                cwd=ROOT,
                env=os.environ | {"SOPFLOW_DATA_DIR": str(tmp / "data")},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                if httpx.get(f"{self.base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            self.stop()
            raise AssertionError(self.log.read_text())
        self.auth = {"Authorization": f"Bearer {(tmp / 'data' / 'api_token').read_text().strip()}"}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def test_up_enrols_stops_cleanly_and_keeps_runs_across_a_restart(tmp_path: Path) -> None:
    sops = tmp_path / "sops"
    sops.mkdir()
    (sops / "quick_call.yaml").write_text(SOP)
    first = Up(tmp_path, sops)
    try:
        event = {
            "type": "lead.created",
            "contact": {"id": "c-1", "phone": "+12125550123"},
            "idempotency_key": "k1",
        }
        enrolled = httpx.post(f"{first.base}/api/v1/events", json=event, headers=first.auth)
        assert enrolled.status_code == 202, enrolled.text
        run_id = enrolled.json()["enrolled"][0]["run_id"]
        for _ in range(100):
            steps = (
                httpx.get(f"{first.base}/api/v1/runs/{run_id}", headers=first.auth)
                .json()
                .get("steps", [])
            )
            if any(s["action"] == "assign" for s in steps):
                break
            time.sleep(0.1)
    finally:
        assert first.stop() == 0
    output = first.log.read_text()
    assert "sopflow is up" in output and "Traceback" not in output

    second = Up(tmp_path, sops)  # same data dir: Temporal's SQLite file and the store
    try:
        outcome = {"step": "call_lead", "outcome": "booked", "actor": "rep-1"}
        answer = httpx.post(
            f"{second.base}/api/v1/runs/{run_id}/outcomes", json=outcome, headers=second.auth
        )
        assert answer.status_code == 200, (
            answer.text
        )  # the run survived the restart and still waits
        for _ in range(100):
            run = httpx.get(f"{second.base}/api/v1/runs/{run_id}", headers=second.auth).json()
            if run["status"] == "finished":
                break
            time.sleep(0.1)
        assert run["result"] == "converted"
    finally:
        assert second.stop() == 0
    assert "unchanged" in second.log.read_text()  # redeploying the same SOP is a no-op
