"""The supervisors' dashboard in a real headless Chromium (Debian's, driven by Playwright): sign
in, overview → the runs behind a figure → a run → its control form, and a CSV export; a run →
its rep's row on the reps page; the funnel → a count → the runs behind it, pilots, referrals;
a rep refused the funnel. Every request that would leave 127.0.0.1 is aborted and recorded.
The screenshots it takes are the README's (docs/screenshots/)."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from test_docs_pages import (  # noqa: F401
    Watch,
    assert_stayed_local,
    browser,
    chromium,
    open_watched,
)

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
    async for site in open_site(store, reports=True):  # pilots, referrals: in October
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


async def signed_in(chrome: Browser, base: str, path: str, user: str) -> tuple[Page, Watch]:
    """`user` signed in through the sign-in page, which leads on to `path`."""
    page, watch = await open_watched(chrome, f"{base}{path}")
    await page.set_viewport_size(VIEWPORT)
    await page.locator("#user").fill(user)
    await page.locator("#password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()
    return page, watch


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


async def test_a_run_to_its_reps_row_on_the_reps_page(
    served: tuple[str, Site],
    browser: Browser,  # noqa: F811
) -> None:
    base, site = served
    page, watch = await signed_in(
        browser, base, "/dashboard?since=2026-11-01&until=2026-11-08", "sue"
    )
    await expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    await page.locator(".card", has_text="Enrolments").locator("a").click()
    await expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    r2 = site.world.runs["r2"]
    await page.locator("#runs").get_by_role("link", name=r2, exact=True).click()
    await expect(page.get_by_role("heading", name=f"Run {r2}", level=1)).to_be_visible()
    # The score's task names its rep: their row on the reps page.
    await page.locator("#score tbody").get_by_role("link", name="ben").click()
    await expect(page.get_by_role("heading", name="Reps and teams", level=1)).to_be_visible()
    assert page.url == f"{base}/dashboard/reps#rep-ben"
    row = page.locator("#rep-ben")
    await expect(row).to_be_visible()
    await expect(row.locator("td").first).to_have_text("ben")
    await expect(page.locator("#reps tbody tr")).to_have_count(3)  # sue's team: ana, ben, sue
    await shot(page, "dashboard-reps")
    # ben's overdue tasks: the count leads to them.
    overdue = row.locator("td").nth(7).locator("a")
    count = int(await overdue.inner_text())
    await overdue.click()
    await expect(page.get_by_role("heading", name="Tasks", level=1)).to_be_visible()
    await expect(page.locator('select[name="late"]')).to_have_value("true")
    await expect(page.locator("#tasks tbody tr")).to_have_count(count)
    assert_stayed_local(watch, base)


async def test_the_funnel_to_the_runs_behind_a_count_then_pilots_and_referrals(
    served: tuple[str, Site],
    browser: Browser,  # noqa: F811
) -> None:
    base, site = served
    page, watch = await signed_in(browser, base, "/dashboard", "olga")
    await page.get_by_role("navigation").get_by_role("link", name="Funnel").click()
    await expect(page.get_by_text("Choose an SOP to see its funnel.")).to_be_visible()
    await page.locator('select[name="sop"]').select_option("new_lead_callback")
    await page.locator('input[name="since"]').fill("2026-11-01")
    await page.locator('input[name="until"]').fill("2026-11-08")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("heading", name="SOP funnel: new_lead_callback")).to_be_visible()
    await expect(page.locator("#steps tr.groups th")).to_have_text(["", "v1", "v2"])
    await shot(page, "dashboard-funnel")
    # first_call's v1 exits with "done": the finished runs of version 1 that week.
    first_call = page.locator("#steps tbody tr", has_text="first_call")
    done = first_call.locator("td").nth(7).locator("a.superset")
    await expect(done).to_have_text("2")
    assert "holds these 2 and more runs" in (await done.get_attribute("title") or "")
    await done.click()
    await expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    await expect(page.locator('input[name="sop"]')).to_have_value("new_lead_callback")
    await expect(page.locator('select[name="status"]')).to_have_value("finished")
    runs = page.locator("#runs tbody tr td:first-child")
    await expect(runs).to_have_text([site.world.runs["r2"], site.world.runs["r1"]])

    await page.goto(f"{base}/dashboard/pilots?sop=script_pilot")
    await expect(page.locator(".verdict")).to_contain_text("pick_script: significant at 5%")
    await expect(page.locator("#arms tbody tr")).to_have_count(3)
    await shot(page, "dashboard-pilots")
    await page.goto(f"{base}/dashboard/referrals?period=week")
    await expect(page.locator("#referrals tbody tr").first).to_contain_text("2026-W41")
    await shot(page, "dashboard-referrals")
    assert_stayed_local(watch, base)


async def test_a_rep_opening_the_funnel_gets_the_403_page(
    served: tuple[str, Site],
    browser: Browser,  # noqa: F811
) -> None:
    base, _ = served
    page, watch = await signed_in(browser, base, "/dashboard/funnel", "ana")
    await expect(page.get_by_role("heading", name="403 · Forbidden")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text(
        "an SOP's funnel counts other reps' runs: supervisors and ops see it"
    )
    # What they may open instead: their inbox and their own row of the reps report.
    await page.get_by_role("navigation").get_by_role("link", name="Reps").click()
    await expect(page.locator("#reps tbody tr")).to_have_count(1)
    await expect(page.locator("#rep-ana")).to_be_visible()
    watch.errors = [e for e in watch.errors if "status of 403" not in e]  # the refused page
    assert_stayed_local(watch, base)
