"""The gateway's `/metrics`: requests by route template (never a path, a token or an id), the
business counters where they happen, and `--workers N` processes added up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from sopflow.asgi import free_port
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.gateway.twilio_hooks import TwilioHooks

TOKEN, TWILIO_TOKEN, PUBLIC = "metrics-api-token", "twilio-token", "https://sopflow.example.com"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LINKS = UnsubscribeLinks("http://sopflow", b"metrics-test-key")
SOP = {
    "id": "hello", "version": 1, "name": "Hello", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "steps": [{"id": "wait", "kind": "wait", "duration": "1d"}],
}  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Scrape:
    """Counts read from /metrics, as differences from a first scrape (the registry is the
    process's: other tests count too)."""

    def __init__(self, before: str, after: str) -> None:
        self.before, self.after = samples(before), samples(after)

    def delta(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)


async def test_requests_are_counted_by_route_template_and_leak_nothing(gateway: Any) -> None:
    async with gateway(SOP, TOKEN, links=LINKS) as (http, _):
        before = (await http.get("/metrics")).text
        assert (await http.get("/healthz")).status_code == 200
        run = "/api/v1/runs/sop:hello:secret-contact:k1"
        assert (await http.get(run)).status_code == 401  # refused before routing: still named
        assert (await http.get(run, headers=AUTH)).status_code == 404
        assert (await http.get("/unsubscribe/forged-token-xyz")).status_code == 404
        assert (await http.get("/no/such/path-123")).status_code == 404
        assert (await http.delete("/healthz")).status_code == 405
        assert (await http.request("BREW", "/healthz")).status_code == 405
        huge = {**AUTH, "Content-Length": str(2 * 1024 * 1024)}
        assert (await http.post("/api/v1/events", headers=huge)).status_code == 413
        answer = await http.get("/metrics")  # no token needed
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    for secret in ("secret-contact", "forged-token-xyz", "path-123", TOKEN):
        assert secret not in answer.text
    counts = Scrape(before, answer.text)
    requests = "sopflow_http_requests_total"
    assert counts.delta(requests, method="GET", route="/healthz", status="200") == 1
    assert counts.delta(requests, method="GET", route="/api/v1/runs/{run_id}", status="401") == 1
    assert counts.delta(requests, method="GET", route="/api/v1/runs/{run_id}", status="404") == 1
    assert counts.delta(requests, method="GET", route="/unsubscribe/{token}", status="404") == 1
    assert counts.delta(requests, method="GET", route="(unmatched)", status="404") == 1
    assert counts.delta(requests, method="DELETE", route="/healthz", status="405") == 1
    assert counts.delta(requests, method="other", route="/healthz", status="405") == 1
    assert counts.delta(requests, method="POST", route="/api/v1/events", status="413") == 1
    latency = "sopflow_http_request_duration_seconds_count"
    assert counts.delta(latency, method="GET", route="/healthz", status="200") == 1


async def test_events_enrolments_and_opt_outs_are_counted(gateway: Any) -> None:
    def event(kind: str, key: str, contact: str = "c-1") -> dict[str, Any]:
        return {"type": kind, "idempotency_key": key, "contact": {"id": contact}}

    async with gateway(SOP, TOKEN) as (http, _):
        before = (await http.get("/metrics")).text
        for body in [
            event("lead.created", "m-1"),
            event("lead.created", "m-1"),  # the same key again: the first answer, a replay
            event("opted_out", "m-2"),
            event("lead.created", "m-3"),  # after the opt-out: refused
        ]:
            assert (await http.post("/api/v1/events", json=body, headers=AUTH)).status_code == 202
        revoke = {"action": "revoke", "method": "web_form"}
        for _ in range(2):  # the repeat changes nothing and is not counted
            consent = await http.post("/api/v1/contacts/c-2/consent", json=revoke, headers=AUTH)
            assert consent.status_code == 201
        after = (await http.get("/metrics")).text
    counts = Scrape(before, after)
    assert counts.delta("sopflow_events_total", outcome="accepted") == 3
    assert counts.delta("sopflow_events_total", outcome="replayed") == 1
    assert counts.delta("sopflow_enrolments_total", outcome="accepted") == 1
    assert counts.delta("sopflow_enrolments_total", outcome="refused") == 1
    assert counts.delta("sopflow_opt_outs_total", via="event") == 1
    assert counts.delta("sopflow_opt_outs_total", via="consent_api") == 1


async def test_twilio_webhooks_and_unsubscribes_are_counted_by_verdict(gateway: Any) -> None:
    hooks = TwilioHooks(TWILIO_TOKEN, PUBLIC)

    async def post(path: str, form: dict[str, str], signed: bool = True, **query: Any) -> int:
        url = path + (f"?{urlencode(query)}" if query else "")
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + url, form)
        headers = {"X-Twilio-Signature": signature if signed else "forged"}
        return (await http.post(url, data=form, headers=headers)).status_code

    stop = {"MessageSid": "SM-stop", "From": "+12125550123", "To": "+15005550006", "Body": "STOP"}
    async with gateway(SOP, TOKEN, twilio=hooks, links=LINKS) as (http, _):
        before = (await http.get("/metrics")).text
        assert await post("/twilio/inbound", stop, signed=False) == 403
        assert await post("/twilio/inbound", stop) == 200  # a stranger's STOP: listed
        assert await post("/twilio/inbound", stop) == 200  # Twilio's retry
        assert await post("/twilio/status", {"MessageSid": "SM1"}, key="r/k", exp=2**40) == 400
        past = int(time.time()) - 60
        form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
        assert await post("/twilio/status", form, key="r/k", exp=past) == 403
        one_click = {"content": b"List-Unsubscribe=One-Click",
                     "headers": {"Content-Type": "application/x-www-form-urlencoded"}}  # fmt: skip
        path = httpx.URL(LINKS.url("c-9")).path
        for _ in range(2):
            assert (await http.post(path, **one_click)).status_code == 200
        after = (await http.get("/metrics")).text
    counts = Scrape(before, after)
    webhooks = "sopflow_twilio_webhooks_total"
    assert counts.delta(webhooks, kind="inbound", verdict="forged") == 1
    assert counts.delta(webhooks, kind="inbound", verdict="processed") == 1
    assert counts.delta(webhooks, kind="inbound", verdict="duplicate") == 1
    assert counts.delta(webhooks, kind="status", verdict="malformed") == 1
    assert counts.delta(webhooks, kind="status", verdict="stale") == 1
    assert counts.delta("sopflow_opt_outs_total", via="sms_stop") == 1
    assert counts.delta("sopflow_opt_outs_total", via="email_unsubscribe") == 1


@contextmanager
def gateway_process(tmp: Path, *args: str, **env: str) -> Iterator[str]:
    """`sopflow gateway ARGS` on a free port until the block ends; its base URL."""
    port = free_port()
    variables = (
        os.environ
        | {
            "SOPFLOW_DATA_DIR": str(tmp / "data"),
            "SOPFLOW_DATABASE_URL": f"sqlite:///{tmp / 'store.db'}",
            "SOPFLOW_API_TOKEN": TOKEN,
            "SOPFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "SOPFLOW_UNSUBSCRIBE_KEY": "shared-key",
            "TEMPORAL_ADDRESS": "127.0.0.1:9",  # not needed for what these tests ask
        }
        | env
    )
    log = tmp / "gateway.log"
    command = [sys.executable, "-c", "from sopflow.cli import main; main()", "gateway"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--port", str(port), *args], cwd=ROOT, env=variables, stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
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
        assert process.wait(timeout=30) in (0, -15), log.read_text()


def test_workers_add_up_their_counts_in_one_scrape(tmp_path: Path) -> None:
    with gateway_process(tmp_path, "--workers", "2") as base:
        for _ in range(20):  # a new connection each: the kernel spreads them over the processes
            assert httpx.get(f"{base}/api/v1/runs/x").status_code == 401
        scrapes = [samples(httpx.get(f"{base}/metrics").text) for _ in range(4)]
    key = (
        "sopflow_http_requests_total",
        frozenset({"method": "GET", "route": "/api/v1/runs/{run_id}", "status": "401"}.items()),
    )
    assert [scrape[key] for scrape in scrapes] == [20.0] * 4  # whichever process answers


def test_a_missing_multiprocess_dir_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(missing)}
    bad = subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", "gateway"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == (
        f"error: PROMETHEUS_MULTIPROC_DIR {str(missing)!r} is not a directory: create it\n"
    )
