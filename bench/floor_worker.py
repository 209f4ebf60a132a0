"""The Temporal floor of bench_production.py: the baseline's I/O for one lead (one insert, one
SDK send) done by one activity of a one-step workflow, started by baseline_service.py's
/lead_durable. What any design with a durable Temporal workflow per lead pays on this machine at
least (a start, an activity, a completion: three workflow tasks), with none of sopflow's engine,
store records, gate or receipts-into-the-workflow. Its own process, as `sopflow worker` is.

    BASELINE_DATABASE_URL=… BASELINE_PUBLIC_URL=… TEMPORAL_ADDRESS=… FLOOR_TASK_QUEUE=… \
        TWILIO_*=… python bench/floor_worker.py
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def deliver(lead: str, phone: str) -> str:
    from baseline_service import insert, provider

    await asyncio.to_thread(insert, lead, phone)
    return await provider.send_message("sms", phone, f"Hi {lead}", lead)


@workflow.defn
class FloorRun:
    @workflow.run
    async def run(self, lead: str, phone: str) -> str:
        return await workflow.execute_activity(
            deliver, args=[lead, phone], start_to_close_timeout=timedelta(seconds=60)
        )


async def main() -> None:
    from floor_worker import FloorRun, deliver  # the sandbox re-imports a module, not __main__
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    worker = Worker(
        client, task_queue=os.environ["FLOOR_TASK_QUEUE"], workflows=[FloorRun],
        activities=[deliver],
    )  # fmt: skip
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())  # bench/ is on sys.path: baseline_service.py is imported from there
