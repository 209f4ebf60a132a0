"""Benchmark: sends per second through the Twilio provider path, and webhook requests per second
on the gateway, on loopback.

1. Sends: N messages through `TwilioProvider.send_message` (the real `twilio` SDK, async) to the
   sandbox phone network, 16 in flight, against a baseline of the same form POSTed with a bare
   aiohttp session (the SDK's HTTP library) to the same endpoint (what HTTP itself costs).
2. Webhooks: N signed inbound messages to the gateway's /twilio/inbound (signature check,
   duplicate check in the store, contact lookup), 32 in flight, against GET /healthz on the
   same server.
Each figure is the median of --repeat runs; servers run in this process under uvicorn (one
event loop: the load tool shares the CPU with the server, as on a 2-core box anyway).

    .venv/bin/python bench/bench_twilio.py [--messages 500] [--webhooks 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.asgi import free_port, start_server  # noqa: E402
from sopflow.gateway.app import create_app  # noqa: E402
from sopflow.gateway.twilio_hooks import TwilioHooks  # noqa: E402
from sopflow.providers.twilio import TwilioConfig, TwilioProvider  # noqa: E402
from sopflow.sandbox.server import Sandbox  # noqa: E402
from sopflow.settings import Secret  # noqa: E402
from sopflow.store.repository import Store, connect  # noqa: E402

ACCOUNT, TOKEN, FROM = "AC" + "1" * 32, "bench-token", "+15005550006"


async def rate(count: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Operations per second for `count` calls of `one(i)`, `in_flight` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await one(i)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - began)


async def bench_sends(messages: int, repeat: int) -> None:
    port = free_port()
    sandbox = Sandbox({ACCOUNT: TOKEN}, callbacks=False)  # the API alone
    server, task = await start_server(sandbox.app(), port, "error")
    base = f"http://127.0.0.1:{port}"
    provider = TwilioProvider(
        TwilioConfig(ACCOUNT, TOKEN, FROM, "http://127.0.0.1:9", base_url=base, rate_per_sender=0)
    )
    # The baseline uses aiohttp, the HTTP library under the SDK's async client.
    raw = aiohttp.ClientSession(
        headers={"Authorization": aiohttp.encode_basic_auth(ACCOUNT, TOKEN)}
    )
    url = f"{base}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"

    async def sdk(i: int) -> None:
        await provider.send_message("sms", "+12125550123", f"Hi {i}", f"bench/{i}:1:0")

    async def bare(i: int) -> None:
        form = {"To": "+12125550123", "From": FROM, "Body": f"Hi {i}"}
        async with raw.post(url, data=form) as answer:
            answer.raise_for_status()
            await answer.read()

    try:
        base_rates, sdk_rates = [], []
        for _ in range(repeat):
            base_rates.append(await rate(messages, 16, bare))
            sdk_rates.append(await rate(messages, 16, sdk))
        b, s = statistics.median(base_rates), statistics.median(sdk_rates)
        print(f"sends: bare HTTP {b:7.0f}/s, TwilioProvider (SDK) {s:7.0f}/s, ratio {s / b:.2f}")
    finally:
        await raw.close()
        await provider.close()
        server.should_exit = True
        await task


async def bench_webhooks(count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(connect(f"sqlite:///{tmp}/bench.db"))
        store.migrate()
        port = free_port()
        public = f"http://127.0.0.1:{port}"

        async def no_runs() -> Any:
            return object()  # unknown senders: nothing is signalled

        app = create_app(store, no_runs, Secret("t"), "q", TwilioHooks(TOKEN, public))
        server, task = await start_server(app, port, "error")
        client = httpx.AsyncClient(base_url=public)
        validator = RequestValidator(TOKEN)
        serial = iter(range(10**9))

        async def hook(_: int) -> None:
            params = {"MessageSid": f"SM{next(serial)}", "From": "+12125550100",
                      "To": FROM, "Body": "hello", "AccountSid": ACCOUNT}  # fmt: skip
            signature = validator.compute_signature(f"{public}/twilio/inbound", params)
            answer = await client.post(
                "/twilio/inbound", data=params, headers={"X-Twilio-Signature": signature}
            )
            answer.raise_for_status()

        async def health(_: int) -> None:
            (await client.get("/healthz")).raise_for_status()

        try:
            base_rates, hook_rates = [], []
            for _ in range(repeat):
                base_rates.append(await rate(count, 32, health))
                hook_rates.append(await rate(count, 32, hook))
            b, h = statistics.median(base_rates), statistics.median(hook_rates)
            print(
                f"webhooks: GET /healthz {b:7.0f}/s, signed /twilio/inbound {h:7.0f}/s, ratio {h / b:.2f}"
            )
        finally:
            await client.aclose()
            server.should_exit = True
            await task


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    await bench_sends(args.messages, args.repeat)
    await bench_webhooks(args.webhooks, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
