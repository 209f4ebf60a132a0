"""How sopflow builds its Temporal pieces, so worker.py and `sopflow up` build them one way."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.sop_activities import SopActivities
from activities.store_effects import StoreEffects
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.rules import Rule
from sopflow.providers.base import Mailer, Provider
from sopflow.providers.loopback import LoopbackProvider
from sopflow.store.repository import Store
from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun


async def connect_client(target_host: str, **options: object) -> Client:
    return await Client.connect(target_host, data_converter=pydantic_data_converter, **options)  # type: ignore[arg-type]


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
        workflows=[SopRun],
        activities=SopActivities(effects, rules, links).all(),
        workflow_runner=workflow_runner(),
    )


def hard_exit(code: int) -> NoReturn:
    """Exit after a clean shutdown without interpreter finalization: Temporal's Rust runtime threads
    can outlive it and abort the process (temporalio/sdk-python#300)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
