"""The hand-written baseline of bench_production.py: the same I/O as sopflow's production path
for one lead, and nothing else: one insert into PostgreSQL, one send through the Twilio SDK (the
same TwilioProvider) to the sandbox, and the signed receipts checked and written. No Temporal, no
engine, no gate. Run by the benchmark as its own uvicorn process, as sopflow's gateway is.

    BASELINE_DATABASE_URL=… BASELINE_PUBLIC_URL=http://127.0.0.1:PORT TWILIO_*=… \
        python -m uvicorn --app-dir bench baseline_service:app --port PORT
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sopflow.providers.twilio import TwilioProvider, provider_config

PUBLIC = os.environ["BASELINE_PUBLIC_URL"]
engine = create_engine(os.environ["BASELINE_DATABASE_URL"], pool_size=20)
config = provider_config(os.environ, PUBLIC)
assert config is not None, "TWILIO_* must point at the sandbox"
provider = TwilioProvider(config)
validator = RequestValidator(config.auth_token)
app = FastAPI()
temporal: Any = None  # a temporalio Client, connected on the first /lead_durable

with engine.begin() as connection:
    connection.execute(
        text(
            "CREATE TABLE IF NOT EXISTS leads (id TEXT PRIMARY KEY, phone TEXT, sid TEXT, status TEXT)"
        )
    )


def insert(lead: str, phone: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO leads (id, phone, status) VALUES (:id, :phone, 'new')"),
            {"id": lead, "phone": phone},
        )


def receipt(lead: str, sid: str, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE leads SET sid = :sid, status = :status WHERE id = :id AND status <> 'delivered'"
            ),
            {"id": lead, "sid": sid, "status": status},
        )


@app.post("/lead", status_code=202)
async def lead(request: Request) -> dict[str, str]:
    body = await request.json()
    await asyncio.to_thread(insert, body["id"], body["phone"])
    sid = await provider.send_message("sms", body["phone"], f"Hi {body['id']}", body["id"])
    return {"sid": sid}


@app.post("/lead_durable", status_code=202)
async def lead_durable(request: Request) -> dict[str, str]:
    """The same lead through floor_worker.py's one-step workflow: the Temporal floor."""
    from temporalio.client import Client

    global temporal
    body = await request.json()
    temporal = temporal or await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    handle = await temporal.start_workflow(
        "FloorRun", args=[body["id"], body["phone"]], id=f"floor-{body['id']}",
        task_queue=os.environ["FLOOR_TASK_QUEUE"],
    )  # fmt: skip
    return {"workflow_id": handle.id}


@app.post("/twilio/status")
async def status(request: Request, key: str) -> Response:
    form = dict(await request.form())
    signature = request.headers.get("X-Twilio-Signature", "")
    if not validator.validate(str(request.url), form, signature):
        raise HTTPException(403, "bad signature")
    await asyncio.to_thread(receipt, key, str(form["MessageSid"]), str(form["MessageStatus"]))
    return Response("<Response/>", media_type="application/xml")
