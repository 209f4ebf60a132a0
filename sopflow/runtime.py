"""How sopflow builds its Temporal pieces, so worker.py and `sopflow up` build them one way."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError, RPCStatusCode
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
from workflows.search_attributes import KEYS, create_commands, missing, type_name
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


# Named, not derived: the SDK's default hashes the code of every loaded module, which compiles
# them all from source when bytecode is not written (seconds at each start; ~50 s in a test
# process that has loaded scipy). Every Worker, tests' included, passes this.
BUILD_ID = f"sopflow-{__version__}"


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
    public_url = links.public_url if links is not None else None  # also the inbox's address
    effects = StoreEffects(store, provider or LoopbackProvider(), mailer, public_url=public_url)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[SopRun, CohortRun],  # CohortRun: a cohort schedule's fan-out
        activities=[*SopActivities(effects, rules, links).all(), *CohortActivities(store).all()],
        workflow_runner=workflow_runner(),
        build_id=BUILD_ID,
    )


async def check_search_attributes(client: Client) -> None:
    """Refuse to start a worker on a namespace that lacks SopRun's search attributes, in one
    line naming them and the commands that create them. Checked, not created: creating them
    needs operator rights on the namespace (and on Temporal Cloud, tcld or the cloud API), which
    a worker should not hold; a run upserting an attribute the namespace lacks would fail its
    workflow task and stall retrying it, so a worker serving it is worse than none."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise ConfigurationError(f"cannot list Temporal's search attributes: {exc}") from None
        logging.getLogger("sopflow.worker").warning(
            "search attributes not checked (%s): docs/temporal-cluster.md lists them", exc.message
        )
        return
    registered = {
        name: SearchAttributeIndexedValueType(kind)
        for name, kind in listed.custom_attributes.items()
        if kind != IndexedValueType.INDEXED_VALUE_TYPE_UNSPECIFIED
    }
    lacking = missing(registered, KEYS)
    if not lacking:
        return
    names = ", ".join(
        f"{key.name} ({type_name(key.indexed_value_type)}"
        + (
            f", not {type_name(registered[key.name])}: remove that one first)"
            if key.name in registered
            else ")"
        )
        for key in lacking
    )
    commands = "; ".join(create_commands(client.namespace, lacking))
    raise ConfigurationError(
        f"Temporal namespace {client.namespace!r} lacks the search attributes {names}: "
        f"create them with `{commands}` (Temporal Cloud: docs/temporal-cluster.md)"
    )


def hard_exit(code: int) -> NoReturn:
    """Exit after a clean shutdown without interpreter finalization: Temporal's Rust runtime threads
    can outlive it and abort the process (temporalio/sdk-python#300)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
