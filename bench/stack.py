"""The deployed shape, for the production benchmark and the fault suite: a Temporal dev server,
`sopflow worker` and `sopflow gateway` processes against PostgreSQL, and the sandbox phone network
in this process (it survives the kills; its account and token are the workers' Twilio settings).

Every process can be killed (SIGKILL) and started again on the same ports and files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.asgi import free_port  # noqa: E402
from sopflow.up import die_with_parent  # noqa: E402
from workflows.search_attributes import dev_server_args  # noqa: E402

POSTGRES = os.environ.get("SOPFLOW_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1/test")
TEMPORAL = str(Path(sys.executable).with_name("temporal"))
ACCOUNT, TOKEN, FROM = "AC" + "7" * 32, "stack-token", "+15005550006"
API_TOKEN = "stack-api-token"
TEMPORAL_PRAGMAS = os.environ.get(
    "BENCH_TEMPORAL_PRAGMAS", "--sqlite-pragma journal_mode=wal"
).split()
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SOPFLOW = [sys.executable, "-c", "from sopflow.cli import main; main()"]


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of its own, as a URL every process can use; dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Stack:
    work: Path
    database_url: str
    sandbox_url: str
    workers: int = 1
    gateways: int = 1
    temporal_port: int = field(default_factory=free_port)
    gateway_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    task_queue: str = field(default_factory=lambda: f"stack-{uuid.uuid4().hex[:8]}")
    # The dev server's own store: "file" (SQLite, survives a kill -9, as under `sopflow up`)
    # or "memory" (what a cluster's scaled persistence looks like to one worker, roughly).
    temporal_store: str = "file"

    def __post_init__(self) -> None:
        self.gateway_ports = self.gateway_ports or [free_port() for _ in range(self.gateways)]

    @property
    def public_url(self) -> str:
        # Gateway 0 plays the load balancer's address: receipts and STOPs are signed for it.
        return f"http://127.0.0.1:{self.gateway_ports[0]}"

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.gateway_ports]

    def env(self) -> dict[str, str]:
        return os.environ | {
            "SOPFLOW_DATA_DIR": str(self.work / "data"),
            "SOPFLOW_DATABASE_URL": self.database_url,
            "SOPFLOW_API_TOKEN": API_TOKEN,
            "SOPFLOW_PUBLIC_URL": self.public_url,
            "SOPFLOW_UNSUBSCRIBE_KEY": "stack-key",
            "SOPFLOW_TASK_QUEUE": self.task_queue,
            "SOPFLOW_LOG_LEVEL": "warning",
            "TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM": FROM,
            "TWILIO_BASE_URL": self.sandbox_url,
        }

    def _spawn(self, name: str, command: list[str]) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        with (self.work / f"{name}.log").open("ab") as sink:
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=self.env(), stdout=sink, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # a benchmark stopped by a signal leaves no orphans
            )  # fmt: skip

    def start_temporal(self) -> None:
        persistence = [] if self.temporal_store == "memory" else [
            "--db-filename", str(self.work / "temporal.db"), *TEMPORAL_PRAGMAS
        ]  # fmt: skip
        self._spawn("temporal", [
            TEMPORAL, "server", "start-dev", "--ip", "127.0.0.1",
            "--port", str(self.temporal_port), "--headless", *persistence, "--log-level", "error",
            *dev_server_args(),
        ])  # fmt: skip

    def start_worker(self, i: int) -> None:
        self._spawn(f"worker{i}", [*SOPFLOW, "worker"])

    def start_gateway(self, i: int) -> None:
        port = str(self.gateway_ports[i])
        self._spawn(f"gateway{i}", [*SOPFLOW, "gateway", "--port", port])

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    async def start(self) -> None:
        self.start_temporal()
        await self.wait_for_temporal()
        for i in range(self.workers):
            self.start_worker(i)
        for i in range(self.gateways):
            self.start_gateway(i)
        await self.wait_ready()

    async def wait_for_temporal(self, seconds: float = 60) -> None:
        from temporalio.client import Client

        deadline = time.monotonic() + seconds
        while True:
            try:
                await Client.connect(f"127.0.0.1:{self.temporal_port}")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def wait_ready(self, seconds: float = 90) -> None:
        """Every gateway answers /readyz 200 and no process has died."""
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                dead = [n for n, p in self.processes.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"{dead} died: see {self.work}/{dead[0]}.log")
                try:
                    answers = [await client.get(f"{u}/readyz") for u in self.gateway_urls]
                    if all(a.status_code == 200 for a in answers):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateways are not ready: see {self.work}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
