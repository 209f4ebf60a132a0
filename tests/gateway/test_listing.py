"""GET /api/v1/runs and /api/v1/tasks on SQLite and PostgreSQL: every filter, keyset pages and
their edges, empty results, the token, and a 422 naming each bad parameter. The runs are written
as the worker writes them (Store.record_command), at times around now: the routes judge "late"
and "overdue" against the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from store_kinds import make_store

from sopflow.gateway.app import create_app
from sopflow.settings import Secret
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import AssignTask, Command, Finish, Record
from sopflow.sop.schema import AssignRule, Sop
from sopflow.store import listing
from sopflow.store.listing import Listing, RunFilters, TaskFilters
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

TOKEN = "listing-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOURCE = yaml.safe_load(
    (Path(__file__).parents[2] / "sop_definitions" / "new_lead_callback.yaml").read_text()
)
A1 = compile_plan(Sop.model_validate(SOURCE | {"version": 1}))
A2 = compile_plan(Sop.model_validate(SOURCE))  # version 2
B1 = compile_plan(Sop.model_validate(SOURCE | {"id": "other_sop", "version": 1}))
NOW = datetime.now(UTC).replace(microsecond=0)
# The finished runs' times are fixed: 09:00-16:00 in New York on a Tuesday, inside the SOP's
# call window, so no outcome is a window violation and their scores are exact. The open tasks
# are placed around now (the routes judge "overdue" by the clock).
BASE = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)


async def no_temporal() -> Any:
    raise AssertionError("listing needs no Temporal")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from make_store(request.param, tmp_path)


class Writer:
    """A run's step events written as the worker writes them."""

    def __init__(self, store: Store, plan: Plan, name: str, enrolled: datetime) -> None:
        self.store, self.plan, self.enrolled = store, plan, enrolled
        self.run_id = f"sop:{plan.sop.id}:{name}:k"
        self.seq = 0
        contact = {"id": name, "first_name": "Ann", "phone": "+12125550123"}
        store.upsert_contact(contact)
        store.start_run(
            self.run_id, "r", plan.sop.id, plan.sop.version, plan.digest, name, enrolled
        )
        self.record(Record(at=enrolled, step="first_call", key="enrolled", action="enrolled"))

    def record(self, command: Command, actor: str | None = None) -> None:
        self.store.record_command(self.run_id, "r", command, actor=actor)

    def task(self, rep: str | None, at: datetime, due: datetime) -> str:
        self.seq += 1
        key = f"first_call:{self.seq}"
        assign = AssignTask(
            at=at, step="first_call", key=key, title="Call the new lead", instructions="Call",
            assign=AssignRule(strategy="round_robin", team="inside"), due_at=due,
            planned_at=at, attempt=1, context={}, channel="call",
        )  # fmt: skip
        self.record(assign, actor=rep)
        return key

    def note(self, action: Any, at: datetime, **detail: Any) -> None:
        self.seq += 1
        key = f"first_call:{self.seq}:{action}"
        self.record(Record(at=at, step="first_call", key=key, action=action, detail=detail))

    def finish(self, at: datetime, result: str = "done") -> None:
        self.record(Finish(at=at, step="first_call", key="end", result=result))


@dataclass(frozen=True)
class World:
    runs: dict[str, str]  # name -> run id
    tasks: dict[str, str]  # name -> task key

    def ids(self, *names: str) -> list[str]:
        return [self.runs[n] for n in names]


def build(store: Store) -> World:
    """Eight runs, enrolled an hour apart (r1 first): what each one tests is beside it."""
    for plan in (A1, A2, B1):
        store.deploy(plan)
    RepDirectory(store.engine).import_teams(
        [
            {"id": "inside", "name": "Inside", "reps": [{"id": "ana"}, {"id": "ben"}]},
            {"id": "field", "name": "Field", "reps": [{"id": "cy"}]},
        ]
    )
    at = [BASE + timedelta(hours=n) for n in range(8)]
    runs, tasks = {}, {}

    def run(name: str, plan: Plan, n: int) -> Writer:
        writer = Writer(store, plan, name, at[n])
        runs[name] = writer.run_id
        return writer

    r1 = run("r1", A1, 0)  # ana reported on time; finished
    tasks["r1"] = r1.task("ana", at[0], at[0] + timedelta(minutes=30))
    r1.note("outcome", at[0] + timedelta(minutes=10), outcome="connected", actor="ana")
    r1.finish(at[0] + timedelta(minutes=11))
    r2 = run("r2", A1, 1)  # ben reported 2 h late; finished
    tasks["r2"] = r2.task("ben", at[1], at[1] + timedelta(minutes=30))
    r2.note("outcome", at[1] + timedelta(hours=2, minutes=30), outcome="connected", actor="ben")
    r2.finish(at[1] + timedelta(hours=3))
    r3 = run("r3", A2, 2)  # cy's task is open and overdue: waits for the rep, late
    tasks["r3"] = r3.task("cy", NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    r4 = run("r4", A2, 3)  # ana's task is open, due tomorrow: waits for the rep, not late
    tasks["r4"] = r4.task("ana", NOW - timedelta(minutes=5), NOW + timedelta(days=1))
    r5 = run("r5", A1, 4)  # paused, then a touch fell due and was deferred: waits for resume
    r5.note("paused", at[4] + timedelta(minutes=1), actor="sue", reason="checking")
    r5.note("deferred", at[4] + timedelta(minutes=2), until=NOW.isoformat())
    r6 = run("r6", A1, 5)  # paused, resumed, then a touch deferred: waits for its window
    r6.note("paused", at[5] + timedelta(minutes=1), actor="sue", reason="checking")
    r6.note("resumed", at[5] + timedelta(minutes=2), actor="sue", reason="done")
    r6.note("deferred", at[5] + timedelta(minutes=3), until=NOW.isoformat())
    run("r7", B1, 6)  # only enrolled: the store does not know what it waits for
    r8 = run("r8", A1, 7)  # ben never reported: the task expired (missed); finished
    tasks["r8"] = r8.task("ben", at[7], at[7] + timedelta(minutes=30))
    r8.note("outcome", at[7] + timedelta(hours=2, minutes=30), outcome="expired", actor="sopflow")
    r8.finish(at[7] + timedelta(hours=3))
    return World(runs, tasks)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    world = build(store)
    app = create_app(store, no_temporal, Secret(TOKEN), "q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
        yield client, world


async def page(http: httpx.AsyncClient, route: str, **params: Any) -> dict[str, Any]:
    answer = await http.get(f"/api/v1/{route}", params=params, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def run_ids(http: httpx.AsyncClient, **params: Any) -> list[str]:
    body = await page(http, "runs", **params)
    assert body["next_cursor"] is None  # the whole answer fits in one page here
    return [row["run_id"] for row in body["items"]]


async def task_runs(http: httpx.AsyncClient, **params: Any) -> list[str]:
    body = await page(http, "tasks", **params)
    assert body["next_cursor"] is None
    return [row["run_id"] for row in body["items"]]


async def test_runs_newest_first_with_their_scores(
    api: tuple[httpx.AsyncClient, World],
) -> None:
    http, world = api
    body = await page(http, "runs")
    rows = {row["run_id"]: row for row in body["items"]}
    assert list(rows) == world.ids("r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1")
    r1, r2, r3 = (rows[world.runs[n]] for n in ("r1", "r2", "r3"))
    assert r1["enrolled_at"] == BASE.isoformat() and r1["result"] == "done"
    assert (r1["status"], r1["waiting_for"], r1["score"], r1["sla_met"]) == (
        "finished", None, 100.0, True,
    )  # fmt: skip
    assert (r1["tasks"], r1["late_tasks"], r1["reps"]) == (1, 0, ["ana"])
    assert (r2["score"], r2["sla_met"], r2["late_tasks"]) == (50.0, False, 1)  # late: half
    assert (r3["status"], r3["version"], r3["waiting_for"], r3["late_tasks"]) == (
        "running", 2, "rep", 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"sop": "other_sop"}, ["r7"]),
        ({"sop": "new_lead_callback", "version": 2}, ["r4", "r3"]),
        ({"status": "running"}, ["r7", "r6", "r5", "r4", "r3"]),
        ({"status": "finished"}, ["r8", "r2", "r1"]),
        ({"rep": "ana"}, ["r4", "r1"]),
        ({"team": "inside"}, ["r8", "r4", "r2", "r1"]),
        ({"team": "field"}, ["r3"]),
        ({"waiting_for": "rep"}, ["r4", "r3"]),
        ({"waiting_for": "resume"}, ["r5"]),
        ({"waiting_for": "window"}, ["r6"]),
        ({"waiting_for": "unknown"}, ["r7"]),
        ({"late": "true"}, ["r8", "r3", "r2"]),
        ({"late": "false"}, ["r7", "r6", "r5", "r4", "r1"]),
        ({"late": "true", "status": "running"}, ["r3"]),
        ({"since": (BASE + timedelta(hours=1)).isoformat()}, ["r8", "r7", "r6", "r5", "r4", "r3", "r2"]),
        ({"until": (BASE + timedelta(hours=1)).isoformat()}, ["r1"]),
        (
            {"since": (BASE + timedelta(hours=1)).isoformat(), "until": (BASE + timedelta(hours=3)).isoformat()},
            ["r3", "r2"],
        ),
        ({"since": "1d"}, []),  # a span back from now: every run is older
        ({"sop": "no_such_sop"}, []),
        ({"rep": "nobody"}, []),
    ],
)  # fmt: skip
async def test_each_run_filter(
    api: tuple[httpx.AsyncClient, World], params: dict[str, Any], expected: list[str]
) -> None:
    http, world = api
    assert await run_ids(http, **params) == world.ids(*expected)


async def test_tasks_carry_the_scorers_verdict(api: tuple[httpx.AsyncClient, World]) -> None:
    http, world = api
    body = await page(http, "tasks")
    rows = {row["run_id"]: row for row in body["items"]}
    # Newest assignment first: r4's task was given 5 minutes ago, r3's 2 hours ago.
    assert list(rows) == world.ids("r4", "r3", "r8", "r2", "r1")
    r3, r8, r2 = (rows[world.runs[n]] for n in ("r3", "r8", "r2"))
    assert {k: r3[k] for k in ("status", "late", "overdue", "waiting_for")} == {
        "status": "pending", "late": True, "overdue": True, "waiting_for": "rep",
    }  # fmt: skip
    assert (r3["rep"], r3["team"], r3["key"], r3["title"]) == (
        "cy", "field", world.tasks["r3"], "Call the new lead",
    )  # fmt: skip
    assert (r8["status"], r8["late"], r8["overdue"], r8["run_status"]) == (
        "missed", True, False, "finished",
    )  # fmt: skip
    assert r2["status"] == "late" and r2["late_by_seconds"] == 2 * 3600
    assert "reported 2h after it was due" in r2["reason"]
    assert rows[world.runs["r4"]]["overdue"] is False


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"status": "pending"}, ["r4", "r3"]),
        ({"status": "on_time"}, ["r1"]),
        ({"status": "late"}, ["r2"]),
        ({"status": "missed"}, ["r8"]),
        ({"status": "excused"}, []),
        ({"late": "true"}, ["r3", "r8", "r2"]),
        ({"late": "false"}, ["r4", "r1"]),
        ({"rep": "ben"}, ["r8", "r2"]),
        ({"team": "field"}, ["r3"]),
        ({"team": "inside"}, ["r4", "r8", "r2", "r1"]),
        ({"sop": "new_lead_callback", "version": 1}, ["r8", "r2", "r1"]),
        ({"sop": "other_sop"}, []),
        ({"waiting_for": "rep"}, ["r4", "r3"]),
        ({"waiting_for": "resume"}, []),
        ({"since": (NOW - timedelta(hours=3)).isoformat()}, ["r4", "r3"]),
        ({"since": "1h"}, ["r4"]),
        ({"until": (BASE + timedelta(hours=7)).isoformat()}, ["r2", "r1"]),
    ],
)  # fmt: skip
async def test_each_task_filter(
    api: tuple[httpx.AsyncClient, World], params: dict[str, Any], expected: list[str]
) -> None:
    http, world = api
    assert await task_runs(http, **params) == world.ids(*expected)


async def walk(http: httpx.AsyncClient, route: str, **params: Any) -> list[list[str]]:
    """Every page of a listing, following next_cursor; the run ids of each page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        body = await page(http, route, **params, **({"cursor": cursor} if cursor else {}))
        pages.append([row["run_id"] for row in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "the cursor does not advance"


@pytest.mark.parametrize("limit, sizes", [(1, [1] * 8), (3, [3, 3, 2]), (4, [4, 4]), (8, [8])])
async def test_pages_cover_every_run_once(
    api: tuple[httpx.AsyncClient, World], limit: int, sizes: list[int]
) -> None:
    """limit 4 of 8: the second page is full and the last (no empty third page)."""
    http, _ = api
    pages = await walk(http, "runs", limit=limit)
    assert [len(p) for p in pages] == sizes
    assert [i for p in pages for i in p] == await run_ids(http)


async def test_pages_of_a_scorer_filter(api: tuple[httpx.AsyncClient, World]) -> None:
    http, world = api
    assert await walk(http, "runs", late="true", limit=1) == [
        [r] for r in world.ids("r8", "r3", "r2")
    ]
    tasks = await walk(http, "tasks", status="pending", limit=1)
    assert tasks == [[r] for r in world.ids("r4", "r3")]
    assert await walk(http, "tasks", limit=2) == [world.ids("r4", "r3"), world.ids("r8", "r2"), world.ids("r1")]  # fmt: skip


async def test_a_cursor_is_stable_while_runs_are_added(
    api: tuple[httpx.AsyncClient, World], store: Store
) -> None:
    http, world = api
    first = await page(http, "runs", limit=3)
    Writer(store, A1, "newer", NOW)  # enrolled after the first page was read
    second = await page(http, "runs", limit=3, cursor=first["next_cursor"])
    assert [r["run_id"] for r in second["items"]] == world.ids("r5", "r4", "r3")


def test_runs_enrolled_at_the_same_instant_page_by_id(store: Store) -> None:
    store.deploy(A1)
    made = sorted(Writer(store, A1, f"t{n}", BASE).run_id for n in range(5))
    lister = Listing(store.engine)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        got = lister.runs(RunFilters(), 2, cursor, NOW)
        seen += [row["run_id"] for row in got.items]
        cursor = got.next_cursor
    assert cursor is None and seen == made[::-1]


def test_a_short_page_says_where_to_go_on(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scorer judges at most SCAN_LIMIT candidates a request: a filter that matches few of
    them gives short pages with a cursor, and following it finds every match once."""
    world = build(store)
    monkeypatch.setattr(listing, "SCAN_LIMIT", 2)
    monkeypatch.setattr(listing, "_CHUNK", 2)
    lister = Listing(store.engine)
    pages: list[list[str]] = []
    cursor = None
    while True:
        got = lister.tasks(TaskFilters(late=False), 10, cursor, NOW)
        pages.append([row["run_id"] for row in got.items])
        if (cursor := got.next_cursor) is None:
            break
    assert [len(p) for p in pages] == [1, 0, 1]  # 5 tasks, 2 judged a request
    assert [r for p in pages for r in p] == world.ids("r4", "r1")


async def test_the_listings_need_the_token(api: tuple[httpx.AsyncClient, World]) -> None:
    http, _ = api
    for route in ("/api/v1/runs", "/api/v1/tasks"):
        assert (await http.get(route)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get(route, headers=wrong)).status_code == 401


@pytest.mark.parametrize(
    "route, params, fragment",
    [
        ("runs", {"status": "paused"}, "Input should be 'running' or 'finished'"),
        ("tasks", {"status": "running"}, "Input should be 'on_time', 'late', 'missed', 'excused' or 'pending'"),
        ("runs", {"waiting_for": "carrier"}, "Input should be 'rep', 'resume', 'window' or 'unknown'"),
        ("runs", {"late": "maybe"}, "Input should be a valid boolean"),
        ("runs", {"limit": "0"}, "Input should be greater than or equal to 1"),
        ("tasks", {"limit": "201"}, "Input should be less than or equal to 200"),
        ("runs", {"version": "two", "sop": "x"}, "Input should be a valid integer"),
        ("runs", {"version": "2"}, "version: give sop too (version numbers are per SOP)"),
        ("runs", {"stauts": "running"}, "Extra inputs are not permitted"),
        ("runs", {"since": "last tuesday"}, "since 'last tuesday': use an ISO date (2026-11-01), a date-time, or a span like 7d"),
        ("tasks", {"until": "2026-13-40"}, "until '2026-13-40': use an ISO date"),
        ("runs", {"since": "1500-01-01"}, "since '1500-01-01': the year must be 1900 to 2200"),
        ("runs", {"since": "2026-11-02", "until": "2026-11-01"}, "since 2026-11-02T00:00:00+00:00 is not before until 2026-11-01T00:00:00+00:00"),
        ("runs", {"cursor": "not-a-cursor"}, "cursor: not a cursor of the runs listing: pass `next_cursor` back"),
        ("runs", {"rep": "r" * 65}, "String should have at most 64 characters"),
    ],
)  # fmt: skip
async def test_bad_parameters_are_a_422_that_names_them(
    api: tuple[httpx.AsyncClient, World], route: str, params: dict[str, str], fragment: str
) -> None:
    http, _ = api
    answer = await http.get(f"/api/v1/{route}", params=params, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert fragment in answer.text
    detail = answer.json()["detail"]
    if isinstance(detail, list):  # FastAPI's: the parameter is in `loc`
        assert detail[0]["loc"][:2] == ["query", next(iter(params))]


async def test_a_cursor_of_one_listing_is_refused_by_the_other(
    api: tuple[httpx.AsyncClient, World],
) -> None:
    http, _ = api
    runs_cursor = (await page(http, "runs", limit=1))["next_cursor"]
    answer = await http.get("/api/v1/tasks", params={"cursor": runs_cursor}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        "cursor: not a cursor of the tasks listing: pass `next_cursor` back"
    )


async def test_an_empty_store_lists_nothing(store: Store) -> None:
    app = create_app(store, no_temporal, Secret(TOKEN), "q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as http:
        for route in ("runs", "tasks"):
            assert await page(http, route) == {"items": [], "next_cursor": None}
