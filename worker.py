"""A sopflow worker: runs SopRun workflows and their activities until SIGTERM/SIGINT.

    .venv/bin/python worker.py

Run as many as you like, on any hosts, against the same task queue. Configuration comes from the
environment (sopflow/settings.py; Temporal's own TEMPORAL_* variables for the connection).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow.providers.loopback import LoopbackProvider
from sopflow.settings import Settings, temporal_connect_config
from sopflow.store.repository import Store, connect
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

log = logging.getLogger("sopflow.worker")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(connect(settings.database_url))
    store.migrate()
    config = temporal_connect_config()
    client = await Client.connect(**config, data_converter=pydantic_data_converter)
    # Loopback until the Twilio issue: touches are recorded and claimed, not delivered to phones.
    activities = SopActivities(StoreEffects(store, LoopbackProvider()))
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[SopRun],
        activities=activities.all(),
        workflow_runner=workflow_runner(),
    )
    async with worker:
        log.info(
            "worker started task_queue=%s temporal=%s", settings.task_queue, config["target_host"]
        )
        await stop.wait()
        log.info("worker stopping: finishing running activities")
    log.info("worker stopped")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(Settings.from_env(), stop)

    asyncio.run(serve())
    # The worker has shut down cleanly. Skip interpreter finalization: Temporal's Rust runtime
    # threads can outlive it and abort the process (temporalio/sdk-python#300).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
