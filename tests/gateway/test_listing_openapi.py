"""The OpenAPI schema describes every /api/ answer: each operation's success response is a named
model, and each declares the bearer token and its 401; the docs pages are served without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.gateway.answers import OTHER_ROUTES
from sopflow.gateway.app import create_app
from sopflow.gateway.docs_pages import REDOC_LOGO, redoc_script
from sopflow.providers.loopback import LoopbackProvider
from sopflow.settings import Secret
from sopflow.store.repository import Store, connect

TOKEN = "schema-token"


async def no_temporal() -> Any:
    raise AssertionError("the schema needs no Temporal")


@pytest.fixture
def schema(tmp_path: Path) -> dict[str, Any]:
    """Every optional router on: click-to-call (a provider), the referral pages (links)."""
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    links = UnsubscribeLinks("http://127.0.0.1:8000", b"key")
    app = create_app(
        store, no_temporal, Secret(TOKEN), "q", provider=LoopbackProvider(), links=links
    )
    return app.openapi()


def api_operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
    ]


def test_every_api_answer_is_a_named_model(schema: dict[str, Any]) -> None:
    operations = api_operations(schema)
    assert len(operations) >= 16  # the routes of today; more may come
    for method, path, operation in operations:
        success = [v for k, v in operation["responses"].items() if k.startswith("2")]
        assert len(success) == 1, (method, path)
        body = success[0]["content"]["application/json"]["schema"]
        assert set(body) == {"$ref"}, (method, path, body)  # a model, not a bare object
        assert operation["security"] == [{"bearer": []}], (method, path)
        assert "401" in operation["responses"], (method, path)
    documented = {(method, path) for method, path, _ in operations}
    assert set(OTHER_ROUTES) <= documented  # a renamed route would lose its model silently
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_the_listing_parameters_are_documented(schema: dict[str, Any]) -> None:
    parameters = schema["paths"]["/api/v1/runs"]["get"]["parameters"]
    names = {p["name"] for p in parameters}
    assert names == {
        "sop", "version", "rep", "team", "waiting_for", "late", "since", "until", "limit",
        "cursor", "status",
    }  # fmt: skip
    limit = next(p for p in parameters if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 200, 50)


async def test_the_docs_load_without_the_token(tmp_path: Path) -> None:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    app = create_app(store, no_temporal, Secret(TOKEN), "q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as http:
        docs = await http.get("/docs")
        assert docs.status_code == 200
        assert "/docs/assets/swagger-ui-bundle.js" in docs.text and "cdn." not in docs.text
        redoc = await http.get("/redoc")
        assert redoc.status_code == 200
        assert "/docs/assets/redoc.standalone.js" in redoc.text and "googleapis" not in redoc.text
        bundle = await http.get("/docs/assets/redoc.standalone.js")
        assert bundle.status_code == 200 and REDOC_LOGO not in bundle.content
        assert bundle.content == redoc_script()
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
            assert (await http.get(f"/docs/assets/{asset}")).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 200
        assert (await http.get("/api/v1/runs")).status_code == 401
