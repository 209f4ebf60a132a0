"""The rep inbox in a real headless Chromium (Debian's, driven by Playwright), on a gateway served
on 127.0.0.1 with a worker and a Temporal dev server: sign in as each role and land on the
role's page, see one's own task in one's local time, report an outcome from the inbox (the run
receives it), and fail to see another rep's task. Every request stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from temporalio.testing import WorkflowEnvironment

from sopflow.asgi import free_port, start_server
from sopflow.gateway.app import create_app
from sopflow.identity.users import UserBook
from sopflow.principals import Role
from sopflow.runtime import build_worker
from sopflow.settings import Secret
from sopflow.sop.plan import compile_plan
from sopflow.sop.protocol import RunState
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-admin-token"
PASSWORD = "correct horse battery"
SOP = {
    "id": "owner_callback",
    "version": 1,
    "name": "Call back",
    "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "contact_fields": {
        "appointment_at": {"type": "datetime", "description": "Appointment (your time)"}
    },
    "steps": [
        {
            "id": "call_lead",
            "kind": "task",
            "title": "Call the new lead",
            "instructions": "Hi {{ contact.first_name }}, it's {{ rep.first_name }} from Acme.",
            "due_within": "30m",
            "assign": {"strategy": "owner"},
            "outcomes": ["no_answer", "booked"],
            "outcome_fields": {"booked": ["appointment_at"]},
            "on_outcome": {"booked": "won"},
        },
        {"id": "lost", "kind": "end", "result": "lost"},
        {"id": "won", "kind": "end", "result": "converted"},
    ],
}
TEAMS = [
    {"id": "north", "supervisor": "sam", "reps": [
        {"id": "ana", "name": "Ana Lima", "timezone": "America/Chicago"},
        {"id": "sam", "name": "Sam Rivera"}]},
    {"id": "south", "reps": [{"id": "ben", "name": "Ben Ode"}]},  # no zone: the browser's
]  # fmt: skip


@dataclass
class Site:
    base: str
    store: Store
    env: WorkflowEnvironment
    runs: dict[str, str]  # rep → the run of their lead


async def waiting(env: WorkflowEnvironment, run_id: str) -> None:
    handle = env.client.get_workflow_handle(run_id)
    for _ in range(100):
        state = await handle.query("state", result_type=RunState)
        if state is not None and state.phase == "awaiting_outcome":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the run never waited for an outcome")


@pytest.fixture
async def site(
    live_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> AsyncIterator[Site]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    RepDirectory(store.engine).import_teams(TEAMS)
    users = UserBook(store.engine)
    for user, role, rep in (("ana", Role.rep, "ana"), ("ben", Role.rep, "ben"),
                            ("sam", Role.supervisor, "sam"), ("olga", Role.ops, None)):  # fmt: skip
        users.add(user, role, rep, password=PASSWORD)

    async def client() -> Any:
        return live_env.client

    app = create_app(store, client, Secret(TOKEN), task_queue)
    port = free_port()
    async with build_worker(live_env.client, store, task_queue, ()):
        server, served = await start_server(app, port)
        try:
            runs = {}
            for rep in ("ana", "ben"):
                lead = {"id": f"c-{rep}", "first_name": rep.upper(), "phone": "+12125550123",
                        "owner": rep}  # fmt: skip
                key = f"{rep}-{uuid.uuid4().hex[:8]}"  # the dev server outlives the test
                event = {"type": "lead.created", "contact": lead, "idempotency_key": key}
                runs[rep] = (await app_post(port, event))["enrolled"][0]["run_id"]
                await waiting(live_env, runs[rep])
            yield Site(f"http://127.0.0.1:{port}", store, live_env, runs)
        finally:
            server.should_exit = True
            await served
            store.engine.dispose()


async def app_post(port: int, event: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"http://127.0.0.1:{port}/api/v1/events",
            json=event,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 202, answer.text
    return answer.json()


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


@dataclass
class Visit:
    context: BrowserContext
    page: Page
    outside: list[str]
    errors: list[str]


async def visit(browser: Browser, timezone: str = "Asia/Tokyo") -> Visit:
    """A fresh browser (its own cookies) whose requests may not leave 127.0.0.1."""
    context = await browser.new_context(timezone_id=timezone, locale="en-US")
    page = await context.new_page()
    outside: list[str] = []
    errors: list[str] = []

    async def route(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "about:")):
            await route.continue_()
        else:
            outside.append(url)
            await route.abort("internetdisconnected")

    await page.route("**/*", route)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "403" not in message.text
            else None
        ),
    )
    return Visit(context, page, outside, errors)


@pytest.mark.timeout(180)
async def test_a_rep_works_their_inbox_and_sees_no_one_elses_task(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    landed = await visit(browser)
    page = landed.page
    await page.goto(f"{site.base}/inbox")  # no session: to the sign-in page, and back
    assert urlsplit(page.url).path == "/signin" and "next=%2Finbox" in page.url
    await page.fill("#user", "ana")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{site.base}/inbox")
    task = page.locator("section.task")
    assert await task.count() == 1
    text = await task.inner_text()
    assert "Call the new lead" in text and "ANA" in text and "BEN" not in text
    assert "Hi ANA, it's Ana from Acme." in text
    # Her zone (the teams file), not UTC nor the browser's (Tokyo).
    due = await task.locator("time.due").inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d CST", due), due
    assert re.search(r"due in (29|30) min", await task.locator(".countdown").inner_text())
    await page.screenshot(path=tmp_path / "inbox.png", full_page=True)

    # Another rep's task, by its notice link: refused, and nothing of it shown.
    theirs = f"{site.base}/inbox/task?run={site.runs['ben']}&step=call_lead"
    refused = await page.goto(theirs)
    assert refused is not None and refused.status == 403
    body = await page.inner_text("body")
    assert "held by 'ben', not by you" in body and "BEN" not in body

    # Report "booked" with its appointment, typed in her local time.
    await page.goto(f"{site.base}/inbox")
    needs = page.locator("fieldset.needs[data-outcome=booked]")
    assert await needs.is_hidden()  # shown once "booked" is chosen
    await page.check("input[name=outcome][value=booked]")
    assert await needs.is_visible()
    await page.fill("input[name='field.appointment_at']", "2026-12-05T11:00")
    await page.click("form.outcome button[type=submit]")
    await page.wait_for_url(f"{site.base}/inbox?reported=1")
    assert "Outcome recorded." in await page.inner_text("body")
    result = await asyncio.wait_for(
        site.env.client.get_workflow_handle(site.runs["ana"]).result(), 30
    )
    assert result["result"] == "converted"
    outcome = next(e for e in site.store.step_events(site.runs["ana"]) if e.action == "outcome")
    assert (outcome.outcome, outcome.actor) == ("booked", "ana")
    assert outcome.detail["data"] == {"appointment_at": "2026-12-05T11:00:00-06:00"}  # her zone
    assert await page.locator("section.task").count() == 0  # done: off her list
    assert landed.outside == [] and landed.errors == [], (landed.outside, landed.errors)


async def test_each_role_lands_on_its_page_and_a_rep_without_a_zone_sees_the_browsers(
    site: Site, browser: Browser
) -> None:
    ben = await visit(browser, timezone="Asia/Tokyo")
    await ben.page.goto(f"{site.base}/signin")
    await ben.page.fill("#user", "ben")
    await ben.page.fill("#password", PASSWORD)
    await ben.page.click("button[type=submit]")
    await ben.page.wait_for_url(f"{site.base}/inbox")
    due = await ben.page.locator("time.due").inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d GMT\+9", due), due  # inbox.js, Intl
    for user in ("sam", "olga"):  # a supervisor and ops: the dashboard
        other = await visit(browser)
        await other.page.goto(f"{site.base}/signin")
        await other.page.fill("#user", user)
        await other.page.fill("#password", PASSWORD)
        async with other.page.expect_response(
            lambda answer: (
                urlsplit(answer.url).path == "/signin" and answer.request.method == "POST"
            )
        ) as signed:
            await other.page.click("button[type=submit]")
        answer = await signed.value
        assert answer.status == 303 and answer.headers["location"] == "/dashboard", user
    wrong = await visit(browser)
    await wrong.page.goto(f"{site.base}/signin")
    await wrong.page.fill("#user", "ben")
    await wrong.page.fill("#password", "not his password")
    await wrong.page.click("button[type=submit]")
    await wrong.page.wait_for_selector(".message")
    assert await wrong.page.inner_text(".message") == "wrong user or password"
    assert ben.outside == [] and ben.errors == []
