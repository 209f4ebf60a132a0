"""sopflow's own metrics, in Prometheus' text format.

Gateway (prometheus_client; `GET /metrics`, unauthenticated: labels are route templates and
closed vocabularies, never a path, a query, a token or a contact):

    sopflow_http_requests_total{method,route,status}          every request, by route template
    sopflow_http_request_duration_seconds{method,route,status} latency histogram, same labels
    sopflow_events_total{outcome=accepted|replayed}           business events (202); a replay is a known idempotency key
    sopflow_enrolments_total{outcome=accepted|refused}        runs started / refused (opted out)
    sopflow_opt_outs_total{via}                               opt-outs recorded (changed consent)
    sopflow_twilio_webhooks_total{kind,verdict}               Twilio's webhooks and what we made of them

Under `uvicorn --workers N` each process counts alone; with PROMETHEUS_MULTIPROC_DIR set (before
the processes start: prometheus_client reads it at import) every process writes its counts there
and `/metrics` adds them up.

Worker (Temporal's runtime meter: on the worker's `--metrics-port`, beside the SDK's temporal_*):

    sopflow_touches_total{channel,outcome=sent|failed}                touches that reached a provider or failed
    sopflow_touches_held_total{channel,rule,outcome=deferred|blocked} touches the gate (or a last-moment opt-out) held
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal, assert_never

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from temporalio.common import MetricMeter

from sopflow.errors import ConfigurationError
from sopflow.sop.protocol import Command, PlaceCall, SendMessage, touch_channel
from workflows.contracts import CommandResult

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

EventOutcome = Literal["accepted", "replayed"]
EnrolmentOutcome = Literal["accepted", "refused"]
OptOutVia = Literal["event", "consent_api", "sms_stop", "email_unsubscribe"]
WebhookKind = Literal["status", "voice", "inbound"]
WebhookVerdict = Literal["processed", "duplicate", "in_flight", "failed", "forged", "stale", "malformed"]  # fmt: skip

HTTP_REQUESTS = Counter("sopflow_http_requests", "Gateway requests.", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "sopflow_http_request_duration_seconds",
    "Gateway request latency, first byte in to last byte out.",
    ["method", "route", "status"],
)
# Every metric has labels, so importing this module writes no value (under multiprocess mode: no
# file), and multiprocess_dir can still refuse a missing directory with one line.
EVENTS = Counter("sopflow_events", "Business events: accepted, or replayed (a known key).", ["outcome"])  # fmt: skip
ENROLMENTS = Counter(
    "sopflow_enrolments", "Enrolments: runs started, or refused for an opt-out.", ["outcome"]
)
OPT_OUTS = Counter("sopflow_opt_outs", "Opt-outs recorded (a repeat that changes nothing is not).", ["via"])  # fmt: skip
TWILIO_WEBHOOKS = Counter("sopflow_twilio_webhooks", "Twilio webhooks by verdict.", ["kind", "verdict"])  # fmt: skip


def event(outcome: EventOutcome) -> None:
    EVENTS.labels(outcome).inc()


def enrolment(outcome: EnrolmentOutcome) -> None:
    ENROLMENTS.labels(outcome).inc()


def opt_out(via: OptOutVia) -> None:
    OPT_OUTS.labels(via).inc()


def twilio_webhook(kind: WebhookKind, verdict: WebhookVerdict) -> None:
    TWILIO_WEBHOOKS.labels(kind, verdict).inc()


def endpoint(_: Request) -> Response:
    """`GET /metrics`: this process's registry, or every process's under multiprocess mode. Sync,
    so Starlette runs it in a thread: reading the multiprocess files is blocking I/O."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@contextlib.contextmanager
def multiprocess_dir(workers: int) -> Iterator[Path | None]:
    """Where `--workers N` gateways add up their counts: PROMETHEUS_MULTIPROC_DIR if set (it
    must exist; empty it before a start, or the last run's counts carry over), else for N > 1 a
    temporary directory set for the worker processes and removed when they have stopped."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        if not Path(given).is_dir():
            raise ConfigurationError(f"{MULTIPROC_ENV} {given!r} is not a directory: create it")
        yield Path(given)
        return
    if workers == 1:  # one process: its own registry is the whole story
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="sopflow-metrics-") as made:
        os.environ[MULTIPROC_ENV] = made  # inherited by the processes uvicorn spawns
        try:
            yield Path(made)
        finally:
            os.environ.pop(MULTIPROC_ENV, None)


def metrics_address(env: Mapping[str, str], port: int | None, host: str | None) -> str | None:
    """The worker's metrics `host:port`: `--metrics-port` / SOPFLOW_METRICS_PORT (none: off),
    `--metrics-host` / SOPFLOW_METRICS_HOST (default 127.0.0.1, as the gateway's --host)."""
    if port is None:
        given = env.get("SOPFLOW_METRICS_PORT", "").strip()
        if not given:
            return None
        if not given.isdigit():
            raise ConfigurationError(f"SOPFLOW_METRICS_PORT {given!r} is not a port number")
        port = int(given)
    if not 0 < port < 65536:
        raise ConfigurationError(f"metrics port {port} is not a port number (1 to 65535)")
    return f"{host or env.get('SOPFLOW_METRICS_HOST') or '127.0.0.1'}:{port}"


def count_touch(meter: MetricMeter, command: Command, result: CommandResult) -> None:
    """Count what became of a command that reaches a contact (nothing for the others). `meter`:
    the activity's (`activity.metric_meter()`), a no-op unless the worker serves metrics."""
    channel = touch_channel(command)
    if channel is None:
        return
    match result.status:
        case "blocked":
            outcome = "deferred" if result.retry_at is not None else "blocked"
            rule = str(result.detail.get("rule") or "unknown")
            meter.create_counter(
                "sopflow_touches_held_total", "Touches held by a rule.", "touches"
            ).add(1, {"channel": channel, "rule": rule, "outcome": outcome})
        case "done" | "failed":
            # A task with a channel is the rep's touch to make, not ours. A deduplicated answer
            # is an attempt that found the touch done: the attempt that sent it counted it.
            if not isinstance(command, SendMessage | PlaceCall) or result.detail.get(
                "deduplicated"
            ):
                return
            meter.create_counter(
                "sopflow_touches_total", "Touches sent, or failed for good.", "touches"
            ).add(
                1, {"channel": channel, "outcome": "sent" if result.status == "done" else "failed"}
            )
        case _:
            assert_never(result.status)
