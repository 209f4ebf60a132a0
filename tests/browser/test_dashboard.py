"""The supervisors' dashboard in a real headless Chromium (Debian's, driven by Playwright): sign
in, overview → the runs behind a figure → a run → its control form, and a CSV export, with every
request that would leave 127.0.0.1 aborted and recorded. The screenshots it takes are the
README's (docs/screenshots/)."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from test_docs_pages import assert_stayed_local, browser, chromium, open_watched  # noqa: F401

from sopflow.asgi import free_port, start_server
from sopflow.store.repository import Store, connect
from workflows.contracts import ControlSignal

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the dashboard tests' known runs
from dashboard.world import PASSWORD, Site, open_site

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Site]]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    async for site in open_site(store):
        port = free_port()
        server, task = await start_server(site.app, port)
        try:
            yield f"http://127.0.0.1:{port}", site
        finally:
            server.should_exit = True
            await task
    store.engine.dispose()


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png")


async def test_overview_to_a_run_and_its_controls(
    served: tuple[str, Site],
    browser: Browser,  # noqa: F811
) -> None:
    base, site = served
    page, watch = await open_watched(browser, f"{base}/dashboard?since=2026-11-01&until=2026-11-08")
    await page.set_viewport_size(VIEWPORT)
    # Not signed in: the sign-in page, then back to the page asked for.
    await page.locator("#user").fill("olga")
    await page.locator("#password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    assert page.url == f"{base}/dashboard?since=2026-11-01&until=2026-11-08"
    card = page.locator(".card", has_text="Late tasks")
    await expect(card.locator(".value")).to_have_text("2")
    await expect(page.locator("svg rect.bar")).to_have_count(3)
    await shot(page, "dashboard-overview")

    # A figure → the runs behind it, filtered.
    await card.locator("a").click()
    await expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    await expect(page.locator('select[name="late"]')).to_have_value("true")
    rows = page.locator("#runs tbody tr")
    await expect(rows).to_have_count(2)
    await shot(page, "dashboard-runs")

    # A run: its timeline, score and controls.
    r3 = site.world.runs["r3"]
    await rows.first.get_by_role("link", name=r3).click()
    await expect(page.get_by_role("heading", name=f"Run {r3}", level=1)).to_be_visible()
    await expect(page.locator("#held tbody tr")).to_have_count(1)
    await shot(page, "dashboard-run")
    control = page.locator("form.control")
    await control.locator('select[name="action"]').select_option("pause")
    await control.locator('input[name="reason"]').fill("the lead asked us to wait")
    await control.get_by_role("button", name="Send").click()
    await expect(page.get_by_role("status")).to_contain_text("Pause sent to the run")
    assert site.temporal.signals == [
        (
            r3,
            "control",
            ControlSignal(action="pause", actor="olga", reason="the lead asked us to wait"),
        )
    ]

    # A table's CSV, as the browser downloads it.
    async with page.expect_download() as download_info:
        await page.locator("#steps a.csv").click()
    download = await download_info.value
    assert download.suggested_filename == "steps.csv"
    exported = await asyncio.to_thread(Path(await download.path()).read_text)
    steps = list(csv.DictReader(io.StringIO(exported)))
    assert [s["Action"] for s in steps] == ["enrolled", "sms", "deferred", "assign"]
    assert_stayed_local(watch, base)
