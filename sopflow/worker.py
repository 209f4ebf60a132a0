"""A sopflow worker: runs SopRun workflows and their activities until SIGTERM/SIGINT.

    sopflow worker [--log-format json] [--metrics-port 9464]   (or: python worker.py)

Run as many as you like, on any hosts, against the same task queue. Configuration comes from the
environment (sopflow/settings.py; Temporal's own TEMPORAL_* variables for the connection;
SOPFLOW_LOG_FORMAT, SOPFLOW_LOG_LEVEL, SOPFLOW_METRICS_PORT unless given as options).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from sopflow.cohorts.schedules import CohortSchedules
from sopflow.compliance.rules import load_rules
from sopflow.errors import ConfigurationError, SopflowError
from sopflow.logs import LogSettings, configure_logging
from sopflow.metrics import metrics_address
from sopflow.providers.smtp import SmtpMailer, smtp_config
from sopflow.providers.twilio import TwilioProvider, provider_config
from sopflow.runtime import (
    build_worker,
    check_search_attributes,
    connect_client,
    hard_exit,
    telemetry_runtime,
)
from sopflow.settings import Settings, temporal_connect_config
from sopflow.store.repository import Store, connect, use_store_threads
from sopflow.upkeep import Upkeep, start_upkeep

log = logging.getLogger("sopflow.worker")


async def run(settings: Settings, stop: asyncio.Event, metrics_at: str | None = None) -> None:
    """Serve until `stop` is set; `metrics_at` (`host:port`): serve Prometheus metrics there."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    use_store_threads(settings.db_connections)
    store = Store(connect(settings.database_url, settings.db_connections))
    store.migrate()
    rules = load_rules(settings.rules_file)  # configuration first: a mistake stops us at once
    twilio = provider_config(os.environ, settings.public_url or "")
    mail = smtp_config(os.environ)
    if mail is not None and not settings.public_url:
        raise ConfigurationError(
            "SOPFLOW_SMTP_HOST is set but SOPFLOW_PUBLIC_URL (where unsubscribe links lead) is not"
        )
    config = temporal_connect_config()
    runtime = telemetry_runtime(metrics_at)  # a taken metrics port stops us here, in one line
    try:
        client = await connect_client(**config, runtime=runtime)
    except RuntimeError as exc:  # the SDK's "Failed client connect"
        raise ConfigurationError(
            f"cannot reach Temporal at {config['target_host']}: {exc}"
        ) from None
    await check_search_attributes(client)  # before serving a run that would upsert them
    if twilio is None:
        log.warning("no TWILIO_ACCOUNT_SID: touches go to the in-memory loopback, not to phones")
    if mail is None:
        log.warning("no SOPFLOW_SMTP_HOST: emails go to the in-memory loopback, not to mailboxes")
    provider = TwilioProvider(twilio) if twilio else None
    mailer = SmtpMailer(mail) if mail else None
    # Unsubscribe links lead to the gateways: the same public URL and key as theirs.
    links = settings.unsubscribe_links(settings.public_url or "http://127.0.0.1:8000")
    worker = build_worker(client, store, settings.task_queue, rules, provider, mailer, links)
    async with worker:
        # Cohort schedules follow the deployed plans from every worker (idempotent).
        cohorts = CohortSchedules(client, store, settings.task_queue)
        upkeep = start_upkeep(Upkeep(store, provider, cohorts=cohorts))
        log.info(
            "worker started task_queue=%s temporal=%s", settings.task_queue, config["target_host"]
        )
        if metrics_at:
            log.info("metrics on http://%s/metrics", metrics_at)
        await stop.wait()
        await upkeep.stop()
        log.info("worker stopping: finishing running activities")
    log.info("worker stopped")


def main(
    log_format: str | None = None,
    log_level: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> None:
    """Run a worker; the options win over SOPFLOW_LOG_FORMAT, SOPFLOW_LOG_LEVEL,
    SOPFLOW_METRICS_PORT and SOPFLOW_METRICS_HOST."""
    try:
        logs = LogSettings.from_env(os.environ, log_format, log_level)
        metrics_at = metrics_address(os.environ, metrics_port, metrics_host)
    except ConfigurationError as exc:  # logging is not set up yet: a plain line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    configure_logging(logs)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(Settings.from_env(), stop, metrics_at)

    try:
        asyncio.run(serve())
    except SopflowError as exc:  # bad configuration (rules file, Twilio settings…): one line
        log.error("cannot start: %s", exc)
        hard_exit(
            ConfigurationError.exit_code
        )  # whatever failed, a worker at start is misconfigured
    hard_exit(0)


if __name__ == "__main__":
    main()
