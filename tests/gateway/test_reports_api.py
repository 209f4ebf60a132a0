"""GET /api/v1/reports/reps, /funnel and /pilots on SQLite and PostgreSQL: the numbers of a small
hand-built world, every exact count cross-checked against the listing query it names, the scope
of each role, and the refusals (404 naming the SOP, 422 naming the parameter)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from store_kinds import make_store

from sopflow.errors import SopflowError
from sopflow.gateway.app import create_app
from sopflow.gateway.reports_api import reports_router
from sopflow.principals import PRINCIPAL_KEY, Principal, Role
from sopflow.settings import Secret
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import AssignTask, Finish, Record
from sopflow.sop.schema import AssignRule, Sop
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

TOKEN = "reports-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).parents[2]
SOURCE = yaml.safe_load((ROOT / "sop_definitions" / "new_lead_callback.yaml").read_text())
LEADS = compile_plan(Sop.model_validate(SOURCE | {"success_results": ["converted"]}))
PILOT = compile_plan(
    Sop.model_validate(yaml.safe_load((ROOT / "sop_definitions" / "script_pilot.yaml").read_text()))
)
NOW = datetime.now(UTC).replace(microsecond=0)
BASE = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)  # 09:00 in New York, a Tuesday
MIN, HOUR = timedelta(minutes=1), timedelta(hours=1)


async def no_temporal() -> Any:
    raise AssertionError("reports need no Temporal")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from make_store(request.param, tmp_path)


def write(store: Store, plan: Plan, name: str, at: datetime) -> Any:
    run_id = f"sop:{plan.sop.id}:{name}:k"
    store.upsert_contact({"id": name, "phone": "+12125550123"})
    store.start_run(run_id, "r", plan.sop.id, plan.sop.version, plan.digest, name, at)

    def record(command: Any, actor: str | None = None) -> None:
        store.record_command(run_id, "r", command, actor=actor)

    return record


def task(step: str, at: datetime, due: datetime, key: str) -> AssignTask:
    return AssignTask(
        at=at, step=step, key=key, title="Call", instructions="Call",
        assign=AssignRule(strategy="round_robin", team="inside"), due_at=due, planned_at=at,
        attempt=1, context={}, channel="call",
    )  # fmt: skip


def outcome(step: str, at: datetime, what: str, actor: str) -> Record:
    detail = {"outcome": what, "actor": actor}
    return Record(at=at, step=step, key=f"{step}:{what}", action="outcome", detail=detail)


def build(store: Store) -> None:
    store.deploy(LEADS)
    store.deploy(PILOT)
    RepDirectory(store.engine).import_teams(
        [
            {"id": "inside", "name": "Inside", "reps": [{"id": "ana"}, {"id": "ben"}]},
            {"id": "field", "name": "Field", "reps": [{"id": "cy"}]},
        ]
    )
    r1 = write(store, LEADS, "r1", BASE)  # ana on time, converted
    r1(task("first_call", BASE, BASE + 30 * MIN, "t1"), "ana")
    r1(outcome("first_call", BASE + 10 * MIN, "booked", "ana"))
    r1(Finish(at=BASE + 11 * MIN, step="converted", key="end", result="converted"))
    r2 = write(store, LEADS, "r2", BASE + HOUR)  # ben 2 h late, lost
    r2(task("first_call", BASE + HOUR, BASE + 90 * MIN, "t2"), "ben")
    r2(outcome("first_call", BASE + 3 * HOUR + 30 * MIN, "not_interested", "ben"))
    r2(Finish(at=BASE + 4 * HOUR, step="lost", key="end", result="lost"))
    r3 = write(store, LEADS, "r3", NOW - 3 * HOUR)  # cy open past due: overdue
    r3(task("first_call", NOW - 2 * HOUR, NOW - HOUR, "t3"), "cy")
    r4 = write(store, LEADS, "r4", NOW - 10 * MIN)  # ana open, due tomorrow
    r4(task("first_call", NOW - 5 * MIN, NOW + timedelta(days=1), "t4"), "ana")


@pytest.fixture
async def http(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    build(store)
    app = create_app(store, no_temporal, Secret(TOKEN), "q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
        yield client


class As:
    """Authentication stood in for: every request is `who`'s."""

    def __init__(self, app: ASGIApp, who: Principal) -> None:
        self.app, self.who = app, who

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[PRINCIPAL_KEY] = self.who
        await self.app(scope, receive, send)


@pytest.fixture
def signed_in(store: Store) -> Any:
    """`signed_in(principal)`: a client of the reports router whose requests are theirs."""
    build(store)

    def client(who: Principal) -> httpx.AsyncClient:
        app = FastAPI()
        app.include_router(reports_router(store.engine))

        @app.exception_handler(SopflowError)
        async def _user_error(_: Request, exc: SopflowError) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

        transport = httpx.ASGITransport(app=As(app, who))
        return httpx.AsyncClient(transport=transport, base_url="http://sopflow")

    return client


async def get(http: httpx.AsyncClient, route: str, **params: Any) -> Any:
    answer = await http.get(f"/api/v1/reports/{route}", params=params, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


def value(row: dict[str, Any], name: str) -> Any:
    return row[name]["value"]


async def test_reps_and_teams_with_the_worked_out_numbers(http: httpx.AsyncClient) -> None:
    body = await get(http, "reps")
    reps = {row["rep"]: row for row in body["reps"]}
    ana, ben, cy = reps["ana"], reps["ben"], reps["cy"]
    assert [value(ana, n) for n in ("tasks", "on_time", "open", "settled")] == [2, 1, 1, 1]
    assert (ana["on_time_pct"], ana["score"], ana["sla_met_pct"]) == (100.0, 100.0, 100.0)
    assert (value(ana, "touches"), value(ana, "successes"), ana["touches_per_success"]) == (1, 1, 1)
    assert [value(ben, n) for n in ("tasks", "late", "overdue")] == [1, 1, 1]
    assert (ben["overdue_pct"], ben["score"], ben["sla_met_pct"]) == (100.0, 50.0, 0.0)
    assert (value(cy, "open"), value(cy, "overdue"), cy["overdue_pct"], cy["score"]) == (
        1, 1, 100.0, None,
    )  # fmt: skip
    teams = {row["team"]: row for row in body["teams"]}
    assert (value(teams["inside"], "tasks"), teams["inside"]["on_time_pct"]) == (3, 50.0)
    assert teams["inside"]["score"] == 75.0  # (1 + ½) / 2


async def test_each_exact_count_is_what_its_listing_query_lists(http: httpx.AsyncClient) -> None:
    body = await get(http, "reps", since=(BASE - HOUR).isoformat())
    checked = 0
    for row in body["reps"] + body["teams"]:
        for name, count in row.items():
            if not isinstance(count, dict) or not count["exact"]:
                continue
            listed = await http.get(
                f"/api/v1/{count['listing']}", params=count["filter"] | {"limit": 200},
                headers=AUTH,
            )  # fmt: skip
            assert listed.status_code == 200, (name, count, listed.text)
            assert len(listed.json()["items"]) == count["value"], (row.get("rep"), name, count)
            checked += 1
    assert checked == 5 * 7  # ana, ben, cy, inside, field: tasks, on_time, overdue, late…


async def test_funnel_and_pilots_over_the_api(http: httpx.AsyncClient) -> None:
    funnel = await get(http, "funnel", sop="new_lead_callback")
    first = next(s for s in funnel["steps"] if s["step"] == "first_call")["columns"][0]
    assert [first[n]["value"] for n in ("entries", "items", "on_time", "overdue", "open")] == [
        4, 4, 1, 2, 1,
    ]  # fmt: skip
    converted = next(s for s in funnel["steps"] if s["step"] == "converted")["columns"][0]
    assert converted["exits"]["converted"]["value"] == 1
    pilots = await get(http, "pilots", sop="script_pilot")
    (split,) = pilots["splits"]
    assert [v["variant"] for v in split["variants"]] == ["script_a", "script_b", "script_c"]
    assert split["significance"]["text"] == "too few runs to tell"


@pytest.mark.parametrize(
    ("route", "params", "status", "says"),
    [
        ("funnel", {"sop": "new_lead_calback"}, 404, "unknown SOP 'new_lead_calback'"),
        ("pilots", {"sop": "nope"}, 404, "unknown SOP 'nope'"),
        ("pilots", {"sop": "new_lead_callback"}, 422, "has no split step"),
        ("reps", {"since": "someday"}, 422, "since 'someday': use an ISO date"),
        ("funnel", {"sop": "new_lead_callback", "until": "2026-13-01"}, 422, "until '2026-13-01'"),
        ("reps", {"since": "2026-11-02", "until": "2026-11-01"}, 422, "is not before until"),
        ("reps", {"sine": "7d"}, 422, "sine"),
        ("funnel", {}, 422, "sop"),
    ],
)
async def test_bad_input_is_refused_naming_what_to_fix(
    http: httpx.AsyncClient, route: str, params: dict[str, str], status: int, says: str
) -> None:
    answer = await http.get(f"/api/v1/reports/{route}", params=params, headers=AUTH)
    assert answer.status_code == status, answer.text
    assert says in answer.text


async def test_the_token_is_required(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/reports/reps")).status_code == 401


async def test_a_supervisor_sees_their_teams(signed_in: Any) -> None:
    sue = Principal("sue", Role.supervisor, teams=frozenset({"field"}))
    async with signed_in(sue) as http:
        body = await get(http, "reps")
        assert [row["rep"] for row in body["reps"]] == ["cy"]
        assert [row["team"] for row in body["teams"]] == ["field"]
        refused = await http.get("/api/v1/reports/reps", params={"team": "inside"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "team 'inside' is not one of your teams"
        funnel = await get(http, "funnel", sop="new_lead_callback")
        assert funnel["versions"][0]["runs"]["value"] == 1  # r3, cy's


async def test_a_rep_sees_their_own_row_only(signed_in: Any) -> None:
    ben = Principal("u-ben", Role.rep, rep_id="ben")
    async with signed_in(ben) as http:
        body = await get(http, "reps")
        assert [row["rep"] for row in body["reps"]] == ["ben"] and body["teams"] == []
        for route in ("funnel", "pilots"):
            refused = await http.get(f"/api/v1/reports/{route}", params={"sop": "script_pilot"})
            assert refused.status_code == 403
            assert "supervisors and ops see it" in refused.json()["detail"]
