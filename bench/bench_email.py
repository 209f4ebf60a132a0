"""Benchmark: emails per second through the SMTP mailer, and one-click unsubscribes per second on
the gateway, on loopback.

1. Sends: N emails through `SmtpMailer.send_email` (compose with the RFC 8058 headers, one SMTP
   session each, the phase bookkeeping) to the sandbox mail server, 16 in flight, against a
   baseline of the same-sized plain message sent with bare `aiosmtplib.send` to the same server
   (what SMTP itself costs).
2. Unsubscribes: N one-click POSTs (signature check, consent record in SQLite) to the gateway,
   16 in flight, against GET /healthz on the same server.
Each figure is the median of --repeat runs; the servers run in this process.

    .venv/bin/python bench/bench_email.py [--emails 300] [--clicks 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sopflow.asgi import free_port, start_server  # noqa: E402
from sopflow.channels.unsubscribe import UnsubscribeLinks  # noqa: E402
from sopflow.gateway.app import create_app  # noqa: E402
from sopflow.providers.smtp import SmtpConfig, SmtpMailer  # noqa: E402
from sopflow.sandbox.mail import MailSandbox  # noqa: E402
from sopflow.settings import Secret  # noqa: E402
from sopflow.store.repository import Store, connect  # noqa: E402

TEXT = "Hi Ann,\nthanks for signing up. See you soon.\n\nUnsubscribe: https://x.example/u/abc"


async def rate(count: int, in_flight: int, one: Callable[[int], Awaitable[Any]]) -> float:
    gate = asyncio.Semaphore(in_flight)

    async def bounded(i: int) -> None:
        async with gate:
            await one(i)

    began = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(count)))
    return count / (time.perf_counter() - began)


async def sends(count: int) -> tuple[float, float]:
    sandbox, port = MailSandbox(), free_port()
    server = await sandbox.serve("127.0.0.1", port)
    mailer = SmtpMailer(SmtpConfig("127.0.0.1", port, "news@acme.example", starttls=False))

    async def ours(i: int) -> None:
        await mailer.send_email(f"c{i}@example.com", "Welcome", TEXT, f"run/hello:{i}", "https://x")

    async def bare(i: int) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            "news@acme.example",
            f"c{i}@example.com",
            "Welcome",
        )
        message.set_content(TEXT)
        await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False)

    try:
        return await rate(count, 16, ours), await rate(count, 16, bare)
    finally:
        server.close()


async def clicks(count: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(connect(f"sqlite:///{Path(folder) / 'store.db'}"))
        store.migrate()
        port = free_port()
        links = UnsubscribeLinks(f"http://127.0.0.1:{port}", b"bench")

        async def no_temporal() -> Any:
            raise AssertionError("not used")

        app = create_app(store, no_temporal, Secret("t"), "q", links=links)
        server, task = await start_server(app, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                body = {"content": b"List-Unsubscribe=One-Click",
                        "headers": {"Content-Type": "application/x-www-form-urlencoded"}}  # fmt: skip

                async def click(i: int) -> None:
                    answer = await http.post(httpx.URL(links.url(f"c-{i}")).path, **body)  # type: ignore[arg-type]
                    assert answer.status_code == 200

                async def health(i: int) -> None:
                    assert (await http.get("/healthz")).status_code == 200

                return await rate(count, 16, click), await rate(count, 16, health)
        finally:
            server.should_exit = True
            await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--clicks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mail = [asyncio.run(sends(args.emails)) for _ in range(args.repeat)]
    click = [asyncio.run(clicks(args.clicks)) for _ in range(args.repeat)]
    ours, bare = (statistics.median(x) for x in zip(*mail, strict=True))
    posts, health = (statistics.median(x) for x in zip(*click, strict=True))
    print(
        f"emails        sopflow {ours:7.0f}/s  bare aiosmtplib {bare:7.0f}/s  ratio {ours / bare:.2f}"
    )
    print(
        f"unsubscribes  sopflow {posts:7.0f}/s  GET /healthz    {health:7.0f}/s  ratio {posts / health:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
