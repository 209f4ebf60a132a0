"""/docs (Swagger UI) and /redoc (ReDoc) in a real headless Chromium (Debian's, driven by
Playwright's Python package), served by a gateway started here on 127.0.0.1. Every request
that would leave 127.0.0.1 is recorded and aborted: the pages must work with no internet, list
the operations, log no console error, and still ask for the token when "Try it out" calls the
API. `make test` installs Chromium when it is missing (Makefile: chromium)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Route, async_playwright

from sopflow.asgi import free_port, start_server
from sopflow.gateway.app import create_app
from sopflow.settings import Secret
from sopflow.store.repository import Store, connect

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package `chromium`; no Playwright download
TOKEN = "browser-token"
LOCAL_SCHEMES = ("data", "blob", "about")  # stay inside the browser
RUNS_OPERATION = "operations-default-list_runs_api_v1_runs_get"  # Swagger UI's id: tag, operationId


async def no_temporal() -> Any:
    raise AssertionError("the docs pages need no Temporal")


@dataclass
class Watch:
    """What a page did: every URL it asked for, those that would have left 127.0.0.1 (aborted),
    and its console errors and uncaught exceptions."""

    requested: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES or parts.hostname == "127.0.0.1":
            await route.continue_()
        else:
            self.outside.append(url)
            await route.abort("internetdisconnected")

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location})")

    def request(self, request: Request) -> None:
        self.requested.append(request.url)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[str]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    port = free_port()
    server, task = await start_server(create_app(store, no_temporal, Secret(TOKEN), "q"), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        store.engine.dispose()


@pytest.fixture
def chromium() -> Path:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs it (apt-get)"
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium))
        yield launched
        await launched.close()


async def open_watched(browser: Browser, url: str) -> tuple[Page, Watch]:
    watch = Watch()
    page = await browser.new_page()
    await page.route("**/*", watch.route)
    page.on("console", watch.console)
    page.on("pageerror", lambda error: watch.errors.append(f"page error: {error}"))
    page.on("request", watch.request)
    answer = await page.goto(url)
    assert answer is not None and answer.status == 200
    return page, watch


def assert_stayed_local(watch: Watch, base: str) -> None:
    assert watch.outside == []
    assert watch.errors == []
    web = [u for u in watch.requested if urlsplit(u).scheme not in LOCAL_SCHEMES]
    assert web and all(u.startswith(base + "/") for u in web), web


LIVE_STATUS = f"#{RUNS_OPERATION} .live-responses-table tbody .response-col_status"


async def answered(page: Page, status: str) -> None:
    """Wait until Swagger UI shows the live answer of GET /api/v1/runs with this status."""
    await page.wait_for_function(
        "([selector, status]) => document.querySelector(selector)?.innerText.trim() === status",
        arg=[LIVE_STATUS, status],
    )


async def test_swagger_ui_lists_the_api_offline_and_try_it_out_needs_the_token(
    gateway: str, browser: Browser, tmp_path: Path
) -> None:
    page, watch = await open_watched(browser, f"{gateway}/docs")
    runs = page.locator('.opblock-summary-path[data-path="/api/v1/runs"]')
    await runs.wait_for(timeout=15_000)
    for path in ("/api/v1/tasks", "/api/v1/events", "/api/v1/runs/{run_id}"):
        assert await page.locator(f'.opblock-summary-path[data-path="{path}"]').count() == 1
    await page.screenshot(path=tmp_path / "docs.png", full_page=False)

    # "Try it out" on GET /api/v1/runs: without the token the gateway answers 401 ...
    operation = page.locator(f"#{RUNS_OPERATION}")
    await operation.locator(".opblock-summary").click()
    await operation.get_by_role("button", name="Try it out").click()
    await operation.get_by_role("button", name="Execute").click()
    await answered(page, "401")
    # ... and with it (Authorize, the schema's bearer scheme), 200.
    await page.locator(".auth-wrapper .authorize").click()
    await page.locator("#auth-bearer-value").fill(TOKEN)
    await page.locator(".auth-btn-wrapper .authorize").click()
    await page.locator(".auth-btn-wrapper .btn-done").click()
    await operation.get_by_role("button", name="Execute").click()
    await answered(page, "200")
    assert '"items": []' in await operation.locator(".live-responses-table").inner_text()
    watch.errors = [e for e in watch.errors if "401 (Unauthorized)" not in e]  # the first try
    assert_stayed_local(watch, gateway)


async def test_redoc_lists_the_api_offline(gateway: str, browser: Browser, tmp_path: Path) -> None:
    page, watch = await open_watched(browser, f"{gateway}/redoc")
    await page.get_by_text("List Runs").first.wait_for(timeout=15_000)
    for summary in ("List Tasks", "Post Event", "Get Run"):
        assert await page.get_by_text(summary, exact=True).count() >= 1
    assert await page.get_by_text("/api/v1/runs", exact=True).count() >= 1
    await page.screenshot(path=tmp_path / "redoc.png", full_page=False)
    assert_stayed_local(watch, gateway)


async def test_the_docs_need_no_token_but_the_api_does(gateway: str, browser: Browser) -> None:
    page = await browser.new_page()
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
        answer = await page.request.get(f"{gateway}{path}")
        assert answer.status == 200, path
    assert (await page.request.get(f"{gateway}/api/v1/runs")).status == 401
