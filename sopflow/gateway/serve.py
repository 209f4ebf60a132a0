"""The gateway as its own process (`sopflow gateway`), for deployments that run N gateways and N
workers against a Temporal cluster and PostgreSQL; `sopflow up` builds the same app in-process.

Configuration comes from the environment (sopflow/settings.py, TEMPORAL_* for the connection).
A deployment sets SOPFLOW_API_TOKEN (gateways share it; no token kept in a data dir here),
SOPFLOW_PUBLIC_URL and SOPFLOW_UNSUBSCRIBE_KEY (shared with the workers). uvicorn's `--workers`
processes each build the app with `app_from_env`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.runtime import Runtime

from sopflow.compliance.rules import load_rules
from sopflow.errors import ConfigurationError
from sopflow.gateway.app import create_app
from sopflow.gateway.dashboard import TemporalUi
from sopflow.gateway.readiness import Probe, smtp_probe, twilio_probe
from sopflow.gateway.twilio_hooks import TwilioHooks
from sopflow.providers.smtp import smtp_config
from sopflow.providers.twilio import TwilioProvider, provider_config
from sopflow.runtime import connect_client, telemetry_runtime
from sopflow.settings import Settings, temporal_connect_config
from sopflow.store.repository import Store, connect, use_store_threads


def app_from_env() -> FastAPI:
    """The gateway for this environment; refuses to build without what it needs."""
    settings = Settings.from_env()
    if settings.api_token is None:
        raise ConfigurationError("SOPFLOW_API_TOKEN is not set: a gateway never runs open")
    if not settings.public_url:
        raise ConfigurationError(
            "SOPFLOW_PUBLIC_URL is not set: where Twilio and mail clients reach this gateway"
        )
    if settings.unsubscribe_key is None:
        raise ConfigurationError(
            "SOPFLOW_UNSUBSCRIBE_KEY is not set: every gateway and worker must sign and check "
            "email unsubscribe links with the same key"
        )
    rules = load_rules(settings.rules_file)
    # the workers run the migrations
    store = Store(connect(settings.database_url, settings.db_connections))
    twilio = provider_config(os.environ, settings.public_url)
    provider = TwilioProvider(twilio) if twilio else None
    hooks = TwilioHooks(twilio.auth_token, settings.public_url) if twilio else None
    # /readyz asks what this gateway's deployment sends through: Twilio, and the SMTP relay the
    # workers share this environment's settings for (the gateway itself sends no email).
    probes: dict[str, Probe] = {}
    if provider is not None:
        probes["twilio"] = twilio_probe(provider)
    if (mail := smtp_config(os.environ)) is not None:
        probes["smtp"] = smtp_probe(mail)
    config = temporal_connect_config()
    # One runtime per process, made on the first connect: Core's logs come out in our format.
    runtimes: list[Runtime] = []

    async def client_factory() -> Client:
        if not runtimes:
            runtimes.append(telemetry_runtime())
        try:
            return await connect_client(**config, runtime=runtimes[0])
        except RuntimeError as exc:  # the SDK's "Failed client connect": 503, retried later
            where = config["target_host"]
            raise ConfigurationError(f"cannot reach Temporal at {where}: {exc}") from None

    links = settings.unsubscribe_links(settings.public_url)
    app = create_app(
        store,
        client_factory,
        settings.api_token,
        settings.task_queue,
        hooks,
        provider,
        rules,
        links,
        probes=probes,
        temporal_ui=TemporalUi.for_server(
            settings.temporal_ui_url, config["target_host"], config.get("namespace") or "default"
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        use_store_threads(settings.db_connections)
        yield
        if provider is not None:
            await provider.close()

    app.router.lifespan_context = lifespan
    return app
