"""Users and roles through the gateway, on a real store and Temporal dev server: the actor of a
report is the authenticated user; a rep reports on and lists only the tasks they hold, a
supervisor their teams'; API tokens and browser sessions (sign-in, CSRF, sign-out, no open
redirect) are checked before any body is read."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from temporalio.testing import WorkflowEnvironment

from sopflow.identity.users import UserBook
from sopflow.principals import Role
from sopflow.sop.protocol import RunState
from sopflow.store.models import BrowserSession
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

TOKEN = "admin-token-123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "correct horse battery"
SOP = {
    "id": "owner_callback",
    "version": 1,
    "name": "Call back",
    "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "contact_fields": {"appointment_at": {"type": "datetime"}},
    "steps": [
        {
            "id": "call_lead",
            "kind": "task",
            "title": "Call the lead",
            "instructions": "Hi {{ contact.first_name }}, this is {{ rep.first_name }}.",
            "due_within": "30m",
            "assign": {"strategy": "owner"},
            "outcomes": ["connected", "booked"],
            "outcome_fields": {"booked": ["appointment_at"]},
            "on_outcome": {"booked": "won"},
        },
        {"id": "lost", "kind": "end", "result": "lost"},
        {"id": "won", "kind": "end", "result": "converted"},
    ],
}
TEAMS = [
    {"id": "north", "supervisor": "sam", "timezone": "America/New_York",
     "reps": [{"id": "ana", "name": "Ana Lima", "timezone": "America/Chicago"},
              {"id": "sam", "name": "Sam Rivera"}]},
    {"id": "south", "supervisor": "wes",
     "reps": [{"id": "ben", "name": "Ben Ode"}, {"id": "wes", "name": "Wes Tan"}]},
]  # fmt: skip


@dataclass
class World:
    http: httpx.AsyncClient
    store: Store
    env: WorkflowEnvironment
    tokens: dict[str, dict[str, str]]  # user → Authorization header
    runs: dict[str, str]  # rep → the run of their lead

    async def report(self, who: str, rep: str, **body: Any) -> httpx.Response:
        report = {"step": "call_lead", "outcome": "connected", **body}
        url = f"/api/v1/runs/{self.runs[rep]}/outcomes"
        return await self.http.post(url, json=report, headers=self.tokens[who])


async def awaiting_outcome(env: WorkflowEnvironment, run_id: str) -> None:
    handle = env.client.get_workflow_handle(run_id)
    for _ in range(100):
        state = await handle.query("state", result_type=RunState)
        if state is not None and state.phase == "awaiting_outcome":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the run never waited for an outcome")


@pytest.fixture
async def world(gateway: Any, live_env: WorkflowEnvironment) -> AsyncIterator[World]:
    """Two leads, ana's and ben's (their owners), each waiting for its call's outcome; users
    ana and ben (reps), sam (supervises north: ana) and wes (supervises south: ben)."""
    async with gateway(SOP, TOKEN, base_url="https://sopflow") as (http, store):
        RepDirectory(store.engine).import_teams(TEAMS)
        users = UserBook(store.engine)
        tokens = {"admin": ADMIN}
        for user, role in (("ana", Role.rep), ("ben", Role.rep), ("sam", Role.supervisor),
                           ("wes", Role.supervisor)):  # fmt: skip
            users.add(user, role, user, password=PASSWORD)
            tokens[user] = {"Authorization": f"Bearer {users.issue_token(user)[1]}"}
        users.add("olga", Role.ops, password=PASSWORD)
        runs = {}
        for rep in ("ana", "ben"):
            lead = {"id": f"c-{rep}", "first_name": rep.upper(), "phone": "+12125550123",
                    "owner": rep}  # fmt: skip
            key = f"e-{rep}-{uuid.uuid4().hex[:8]}"  # the dev server outlives the test
            event = {"type": "lead.created", "contact": lead, "idempotency_key": key}
            answer = await http.post("/api/v1/events", json=event, headers=ADMIN)
            assert answer.status_code == 202, answer.text
            runs[rep] = answer.json()["enrolled"][0]["run_id"]
            await awaiting_outcome(live_env, runs[rep])
        yield World(http, store, live_env, tokens, runs)


def outcomes(store: Store, run_id: str) -> list[tuple[str | None, str | None]]:
    return [(e.outcome, e.actor) for e in store.step_events(run_id) if e.action == "outcome"]


async def test_a_rep_reports_only_on_the_tasks_they_hold(world: World) -> None:
    # The bug of the issue: an outcome reported as another rep on ana's task was accepted and
    # credited to ana. Now the actor is the token's user, and the task must be theirs.
    posing = await world.report("ben", "ana", actor="ana")
    assert posing.status_code == 422
    assert posing.json()["detail"] == (
        "actor 'ana' is not you: it is reported as 'ben', the user of your token or session; "
        "leave `actor` out"
    )
    refused = await world.report("ben", "ana")
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "the task of step 'call_lead' is held by 'ana', not by you ('ben')"
    )
    other_team = await world.report("wes", "ana")
    assert other_team.status_code == 403 and "outside your teams" in other_team.text
    assert outcomes(world.store, world.runs["ana"]) == []  # nothing reached the run
    mine = await world.report("ana", "ana")
    assert mine.status_code == 200, mine.text
    supervised = await world.report("wes", "ben")  # ben is of wes's team
    assert supervised.status_code == 200, supervised.text
    for rep in ("ana", "ben"):
        await world.env.client.get_workflow_handle(world.runs[rep]).result()
    assert outcomes(world.store, world.runs["ana"]) == [("connected", "ana")]
    assert outcomes(world.store, world.runs["ben"]) == [("connected", "wes")]
    unknown = await world.http.post(
        "/api/v1/runs/nope/outcomes", json={"step": "call_lead", "outcome": "connected"},
        headers=world.tokens["ana"],
    )  # fmt: skip
    assert unknown.status_code == 404


async def test_controls_are_for_ops_and_the_runs_supervisor(world: World) -> None:
    url = f"/api/v1/runs/{world.runs['ana']}/control"
    rep = await world.http.post(url, json={"action": "pause"}, headers=world.tokens["ana"])
    assert rep.status_code == 403 and "a rep cannot pause, resume or cancel runs" in rep.text
    other = await world.http.post(url, json={"action": "pause"}, headers=world.tokens["wes"])
    assert other.status_code == 403 and "has no task of your teams" in other.text
    posing = {"action": "pause", "actor": "olga", "reason": "complaint"}
    assert (await world.http.post(url, json=posing, headers=world.tokens["sam"])).status_code == 422
    paused = await world.http.post(
        url, json={"action": "pause", "reason": "complaint"}, headers=world.tokens["sam"]
    )
    assert paused.status_code == 202, paused.text
    cancel = {"action": "cancel", "reason": "duplicate"}
    assert (await world.http.post(url, json=cancel, headers=ADMIN)).status_code == 202
    await world.env.client.get_workflow_handle(world.runs["ana"]).result()
    actors = {e.action: e.actor for e in world.store.step_events(world.runs["ana"])}
    assert actors["paused"] == "sam" and actors["cancelled"] == "admin"


async def test_listings_show_a_rep_their_tasks_and_a_supervisor_their_teams(
    world: World,
) -> None:
    async def listed(who: str, path: str, **params: str) -> httpx.Response:
        return await world.http.get(path, params=params, headers=world.tokens[who])

    def reps(answer: httpx.Response) -> list[str]:
        assert answer.status_code == 200, answer.text
        return sorted(row["rep"] for row in answer.json()["items"])

    assert reps(await listed("admin", "/api/v1/tasks")) == ["ana", "ben"]
    assert reps(await listed("ana", "/api/v1/tasks")) == ["ana"]
    assert reps(await listed("ana", "/api/v1/tasks", team="south")) == []  # narrows, never widens
    wider = await listed("ana", "/api/v1/tasks", rep="ben")
    assert wider.status_code == 403 and "not 'ben''s" in wider.text
    assert reps(await listed("wes", "/api/v1/tasks")) == ["ben"]
    assert reps(await listed("sam", "/api/v1/tasks", rep="ana")) == ["ana"]
    assert reps(await listed("sam", "/api/v1/tasks", rep="ben")) == []
    other = await listed("sam", "/api/v1/tasks", team="south")
    assert other.status_code == 403 and "team 'south' is not one of your teams" in other.text
    runs = (await listed("ana", "/api/v1/runs")).json()["items"]
    assert [r["run_id"] for r in runs] == [world.runs["ana"]]
    assert [r["run_id"] for r in (await listed("wes", "/api/v1/runs")).json()["items"]] == [
        world.runs["ben"]
    ]
    # Another rep's run is not there for them, as if it did not exist.
    assert (await listed("ana", f"/api/v1/runs/{world.runs['ben']}")).status_code == 404
    assert (await listed("ana", f"/api/v1/runs/{world.runs['ben']}/score")).status_code == 404
    assert (await listed("ana", f"/api/v1/runs/{world.runs['ana']}")).status_code == 200
    assert (await listed("sam", f"/api/v1/runs/{world.runs['ana']}/score")).status_code == 200


async def test_ops_routes_refuse_reps_and_revoked_tokens_are_refused(world: World) -> None:
    event = {"type": "lead.created", "contact": {"id": "c-9"}, "idempotency_key": "e-9"}
    refused = await world.http.post("/api/v1/events", json=event, headers=world.tokens["ana"])
    assert refused.status_code == 403
    assert refused.json()["detail"] == "a rep may not POST /api/v1/events: it is for ops"
    report = await world.http.get("/api/v1/reports/compliance", headers=world.tokens["sam"])
    assert report.status_code == 403
    UserBook(world.store.engine).revoke_tokens("ana")
    gone = await world.http.get("/api/v1/tasks", headers=world.tokens["ana"])
    assert gone.status_code == 401 and gone.headers["www-authenticate"] == "Bearer"
    assert (await world.http.get("/api/v1/tasks", headers=ADMIN)).status_code == 200


# ------------------------------------------------------------------ browser sessions
async def sign_in(
    http: httpx.AsyncClient, user: str, password: str, next_path: str = ""
) -> httpx.Response:
    form = await http.get("/signin", params={"next": next_path} if next_path else None)
    assert form.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    body = {"user": user, "password": password, "next": next_path, "csrf_token": token[1]}
    return await http.post("/signin", data=body)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found[1]


async def test_browser_pages_need_a_session_and_next_stays_on_this_site(world: World) -> None:
    http = world.http
    away = await http.get("/inbox/task", params={"run": "r", "step": "s"})
    assert away.status_code == 303
    assert away.headers["location"] == "/signin?next=%2Finbox%2Ftask%3Frun%3Dr%26step%3Ds"
    assert (await http.get("/dashboard")).headers["location"] == "/signin?next=%2Fdashboard"
    for user in ("ana", "nobody"):  # the same answer whether the user exists or not
        wrong = await sign_in(http, user, "not the password")
        assert wrong.status_code == 401 and "wrong user or password" in wrong.text
        assert "sopflow_session" not in wrong.headers.get("set-cookie", "")
    for evil in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/a\r\nX: y"):
        landed = await sign_in(http, "ana", PASSWORD, evil)
        assert landed.status_code == 303 and landed.headers["location"] == "/inbox", evil
    cookie = landed.headers["set-cookie"]
    assert "sopflow_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=lax" in cookie.lower() and "Max-Age=43200" in cookie
    kept = await sign_in(http, "ana", PASSWORD, "/inbox/task?run=r&step=s")
    assert kept.headers["location"] == "/inbox/task?run=r&step=s"
    assert (await sign_in(http, "sam", PASSWORD)).headers["location"] == "/dashboard"
    assert (await sign_in(http, "olga", PASSWORD)).headers["location"] == "/dashboard"
    nothing = await http.get("/inbox/task", params={"run": world.runs["ana"], "step": "lost"})
    assert nothing.status_code == 404 and "has given nobody a task" in html.unescape(nothing.text)
    # No token in any URL: a bearer token in the query string signs nobody in.
    http.cookies.clear()
    token = world.tokens["ana"]["Authorization"].split()[1]
    assert (await http.get("/api/v1/tasks", params={"token": token})).status_code == 401
    assert (await http.get("/inbox", params={"access_token": token})).status_code == 303


async def test_forms_need_the_sessions_csrf_token_and_sign_out_ends_the_session(
    world: World,
) -> None:
    http = world.http
    forged = await http.post("/signin", data={"user": "ana", "password": PASSWORD})
    assert forged.status_code == 403 and "sopflow_session" not in forged.headers.get(
        "set-cookie", ""
    )  # login CSRF: no sign-in without the form's own token
    assert (await sign_in(http, "ana", PASSWORD)).status_code == 303
    inbox = await http.get("/inbox")
    assert inbox.status_code == 200 and "Call the lead" in inbox.text
    csrf = csrf_of(inbox)
    form = {"run": world.runs["ana"], "step": "call_lead", "outcome": "connected"}
    for bad in ({}, {"csrf_token": "forged"}):
        refused = await http.post("/inbox/outcome", data=form | bad)
        assert refused.status_code == 403 and "CSRF token is missing or stale" in refused.text
    cross = await http.post(
        "/inbox/outcome", data=form | {"csrf_token": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert outcomes(world.store, world.runs["ana"]) == []
    out = await http.post("/signout", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    with Session(world.store.engine) as session:
        assert session.query(BrowserSession).count() == 0  # the session row is gone
    assert (await http.get("/inbox")).status_code == 303


async def test_an_expired_session_signs_in_again_and_failures_are_rate_limited(
    world: World,
) -> None:
    http = world.http
    assert (await sign_in(http, "ana", PASSWORD)).status_code == 303
    with Session(world.store.engine) as session, session.begin():
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(BrowserSession).values(expires_at=past))
    assert (await http.get("/inbox")).status_code == 303
    for _ in range(10):
        assert (await sign_in(http, "ben", "guess guess guess")).status_code == 401
    limited = await sign_in(http, "ben", PASSWORD)
    assert limited.status_code == 429 and "too many failed attempts" in limited.text


async def test_the_inbox_shows_a_rep_their_tasks_and_takes_their_outcome(world: World) -> None:
    http = world.http
    assert (await sign_in(http, "ana", PASSWORD)).status_code == 303
    inbox = await http.get("/inbox")
    assert "ANA" in inbox.text and "BEN" not in inbox.text
    assert "Hi ANA, this is Ana." in inbox.text  # the instructions as rendered for her
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d CST", inbox.text)  # her zone, not UTC
    theirs = await http.get("/inbox/task", params={"run": world.runs["ben"], "step": "call_lead"})
    assert theirs.status_code == 403 and "held by 'ben', not by you" in html.unescape(theirs.text)
    assert "BEN" not in theirs.text
    csrf = csrf_of(inbox)
    form = {"run": world.runs["ana"], "step": "call_lead", "outcome": "booked",
            "csrf_token": csrf}  # fmt: skip
    missing = await http.post("/inbox/outcome", data=form)
    assert missing.status_code == 422 and "needs appointment_at" in html.unescape(missing.text)
    other = await http.post("/inbox/outcome", data=form | {"run": world.runs["ben"]})
    assert other.status_code == 403
    booked = await http.post(
        "/inbox/outcome", data=form | {"field.appointment_at": "2026-12-05T11:00"}
    )
    assert booked.status_code == 303 and booked.headers["location"] == "/inbox?reported=1"
    result = await world.env.client.get_workflow_handle(world.runs["ana"]).result()
    assert result["result"] == "converted"
    assert outcomes(world.store, world.runs["ana"]) == [("booked", "ana")]
    (outcome,) = [e for e in world.store.step_events(world.runs["ana"]) if e.action == "outcome"]
    # Typed in Chicago time (ana's zone), not the server's UTC.
    assert outcome.detail["data"] == {"appointment_at": "2026-12-05T11:00:00-06:00"}
    done = await http.get("/inbox/task", params={"run": world.runs["ana"], "step": "call_lead"})
    assert done.status_code == 404 and "done or no longer open" in html.unescape(done.text)
