"""Fixtures of the referral tests: the store on SQLite and PostgreSQL (tests/store's own
fixture), and a gateway whose worker signs referral links with the gateway's key."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from referral_support import LINKS, TOKEN, Gateway, Stack
from temporalio.testing import WorkflowEnvironment

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.gateway.app import create_app
from sopflow.providers.loopback import LoopbackProvider
from sopflow.runtime import build_worker
from sopflow.settings import Secret
from sopflow.sop.validate import load_plan
from sopflow.store.repository import Store, connect

ROOT = Path(__file__).resolve().parents[2]


def _store_fixtures() -> Any:
    """tests/store/conftest.py, loaded by path (test folders are not packages): its `store`
    fixture runs each test on SQLite and on PostgreSQL."""
    path = ROOT / "tests" / "store" / "conftest.py"
    spec = importlib.util.spec_from_file_location("referrals_store_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


store = _store_fixtures().store


@pytest.fixture
def referral_gateway(live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> Gateway:
    """`async with referral_gateway() as stack`: the seed referral_ask deployed, the app served
    through ASGI at http://sopflow with LINKS, and a worker (loopback provider) signing with
    them. tests/gateway's fixture builds its worker without links: referral texts need them."""

    @contextlib.asynccontextmanager
    async def start(links: UnsubscribeLinks | None = LINKS) -> AsyncIterator[Stack]:
        store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
        store.migrate()
        store.deploy(load_plan(ROOT / "sop_definitions" / "referral_ask.yaml"))

        async def client_factory() -> Any:
            return live_env.client

        app = create_app(store, client_factory, Secret(TOKEN), task_queue, links=links)
        provider = LoopbackProvider()
        async with (
            build_worker(live_env.client, store, task_queue, (), provider, links=links),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://sopflow"
            ) as http,
        ):
            yield Stack(http, store, provider)

    return start
