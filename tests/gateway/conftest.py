"""A gateway on a real store and a real Temporal dev server, with a worker running its runs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from sopflow.gateway.app import create_app
from sopflow.runtime import build_worker
from sopflow.settings import Secret
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect

Gateway = Callable[..., contextlib.AbstractAsyncContextManager[tuple[httpx.AsyncClient, Store]]]


@pytest.fixture
def gateway(live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> Gateway:
    """`async with gateway(sop, token, **create_app options) as (http, store)`: the SOP deployed,
    the app served through ASGI at http://sopflow (`base_url`: https for the browser pages'
    Secure cookies), a worker (loopback provider) running."""

    @contextlib.asynccontextmanager
    async def start(
        sop: dict[str, Any], token: str, base_url: str = "http://sopflow", **options: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
        store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
        store.migrate()
        store.deploy(compile_plan(Sop.model_validate(sop)))

        async def client_factory() -> Any:
            return live_env.client

        app = create_app(store, client_factory, Secret(token), task_queue, **options)
        transport = httpx.ASGITransport(app=app)
        async with (
            build_worker(live_env.client, store, task_queue, ()),
            httpx.AsyncClient(transport=transport, base_url=base_url) as http,
        ):
            yield http, store

    return start
