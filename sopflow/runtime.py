"""How sopflow builds its Temporal pieces, so worker.py and `sopflow up` build them one way."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Worker

from activities.cohort_activities import CohortActivities
from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow import __version__
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.rules import Rule
from sopflow.errors import ConfigurationError
from sopflow.providers.base import Mailer, Provider
from sopflow.providers.loopback import LoopbackProvider
from sopflow.store.repository import Store
from workflows.cohort_run import CohortRun
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun


async def connect_client(target_host: str, **options: object) -> Client:
    """A client with sopflow's data converter; `runtime=telemetry_runtime(…)` for its telemetry."""
    return await Client.connect(target_host, data_converter=pydantic_data_converter, **options)  # type: ignore[arg-type]


def telemetry_runtime(metrics_address: str | None = None) -> Runtime:
    """A Temporal runtime whose Core (Rust) logs go through Python logging, so they come out in
    the process's log format rather than as Core's own lines; given `host:port`, it also serves
    Prometheus metrics at http://host:port/metrics: the SDK's temporal_* and what activities
    count through `activity.metric_meter()` (sopflow.metrics.count_touch), on one port."""
    forwarded = LogForwardingConfig(logger=logging.getLogger("temporalio.core"))
    telemetry = TelemetryConfig(
        logging=LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarded
        ),
        # Temporal's names as its published dashboards expect them (no _total, milliseconds).
        metrics=PrometheusConfig(bind_address=metrics_address) if metrics_address else None,
    )
    try:
        return Runtime(telemetry=telemetry)
    except ValueError as exc:  # "Failed starting Prometheus exporter: Address already in use"
        raise ConfigurationError(f"cannot serve metrics on {metrics_address}: {exc}") from None


def build_worker(
    client: Client,
    store: Store,
    task_queue: str,
    rules: Sequence[Rule],
    provider: Provider | None = None,
    mailer: Mailer | None = None,
    links: UnsubscribeLinks | None = None,
) -> Worker:
    """`rules`: the contact rules the touch gate applies (`load_rules(settings.rules_file)`);
    `provider` / `mailer` None: touches are claimed and recorded in memory, not delivered;
    `links`: email's unsubscribe links (`Settings.unsubscribe_links`; None: emails fail)."""
    effects = StoreEffects(store, provider or LoopbackProvider(), mailer)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[SopRun, CohortRun],  # CohortRun: a cohort schedule's fan-out
        activities=[*SopActivities(effects, rules, links).all(), *CohortActivities(store).all()],
        workflow_runner=workflow_runner(),
        # Named, not derived: the SDK's default hashes the code of every loaded module, which
        # compiles them all from source when bytecode is not written (seconds at each start).
        build_id=f"sopflow-{__version__}",
    )


def hard_exit(code: int) -> NoReturn:
    """Exit after a clean shutdown without interpreter finalization: Temporal's Rust runtime threads
    can outlive it and abort the process (temporalio/sdk-python#300)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
