"""The overview, runs, tasks and events pages against the known runs of conftest.py: figures,
the click-through of every figure to the rows behind it, filters and their errors, pages,
CSV exports, and what each role sees."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sopflow.store.repository import Store

from .page_reader import Page, column, read
from .world import WEEK, Site, open_site


@pytest.fixture(scope="module")
async def postgres_site(postgres_store: Store) -> AsyncIterator[Site]:
    async for opened in open_site(postgres_store):
        yield opened


@pytest.fixture(params=["site", "postgres_site"])
def any_site(request: pytest.FixtureRequest) -> Site:
    """The site on SQLite, then on PostgreSQL (the overview's SQL differs between them)."""
    found: Site = request.getfixturevalue(request.param)
    return found


async def page(http: httpx.AsyncClient, url: str, expect: int = 200, **params: str) -> Page:
    answer = await http.get(url, params=params or None)
    assert answer.status_code == expect, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    return read(answer.text)


def runs_of(site: Site, page_: Page, table: str = "runs") -> list[str]:
    """The runs a table lists, by their names in world.py (events: the run is column 1)."""
    names = {run_id: name for name, run_id in site.world.runs.items()}
    return [names[run_id] for run_id in column(page_, table, 1 if table == "events" else 0)]


async def test_overview_figures_as_ops(any_site: Site) -> None:
    ops = any_site.browser("olga")
    overview = await page(ops, "/dashboard", **WEEK)
    assert {label: value for label, (value, _) in overview.cards.items()} == {
        "Enrolments": "5",
        "Touches": "3",
        "Overdue now": "1",
        "Late tasks": "2",
        "SLA met": "50%",
        "Violations": "1",
        "Held back": "3",
    }
    assert [[c.text for c in row] for row in overview.tables["touches"]] == [
        ["2026-11-03", "sms", "1"],
        ["2026-11-05", "sms", "1"],
        ["2026-11-06", "sms", "1"],
    ]
    assert [[c.text for c in row] for row in overview.tables["held"]] == [
        ["blocked", "dnc", "1"],
        ["deferred", "quiet_hours", "1"],
        ["deferred", "window", "1"],
    ]
    assert [[c.text for c in row] for row in overview.tables["enrolments"]] == [
        ["new_lead_callback", "4"],
        ["other_sop", "1"],
    ]
    (violation,) = overview.tables["violations"]
    assert violation[1].text == any_site.world.runs["r2"]
    assert violation[5].text == "out_of_window" and "22:00" in violation[6].text
    # The chart: one bar segment per day with touches, each linking to that day's touches.
    assert [(b["series"], b["value"]) for b in overview.bars] == [("sms", "1")] * 3
    first = parse_qs(urlsplit(overview.bars[0]["href"]).query)
    assert first["kind"] == ["touch"] and first["channel"] == ["sms"]
    assert first["since"] == ["2026-11-03"] and first["until"] == ["2026-11-04"]


async def test_every_overview_figure_clicks_through_to_what_is_behind_it(site: Site) -> None:
    ops = site.browser("olga")
    overview = await page(ops, "/dashboard", **WEEK)

    async def behind(label: str) -> Page:
        return await page(ops, overview.cards[label][1])

    assert runs_of(site, await behind("Enrolments")) == ["r6", "r4", "r3", "r2", "r1"]
    assert runs_of(site, await behind("Late tasks")) == ["r3", "r2"]
    assert runs_of(site, await behind("SLA met")) == ["r6", "r4", "r3", "r2", "r1"]
    assert runs_of(site, await behind("Overdue now"), "tasks") == ["r3"]
    touches = await behind("Touches")
    assert runs_of(site, touches, "events") == ["r6", "r3", "r1"]
    assert overview.cards["Violations"][1] == "#violations"
    assert overview.cards["Held back"][1] == "#held"
    # Each held-back count: the events of that rule, each linking to its run.
    quiet = next(row for row in overview.tables["held"] if row[1].text == "quiet_hours")
    held = await page(ops, quiet[2].href or "")
    assert runs_of(site, held, "events") == ["r2"]
    assert held.tables["events"][0][8].text == "quiet_hours"
    assert held.tables["events"][0][1].href == f"/dashboard/runs/{site.world.runs['r2']}"
    window = next(row for row in overview.tables["held"] if row[1].text == "window")
    assert runs_of(site, await page(ops, window[2].href or ""), "events") == ["r3"]
    # A chart bar: that day's SMS only.
    bar = next(b for b in overview.bars if "2026-11-05" in b["href"])
    assert runs_of(site, await page(ops, bar["href"]), "events") == ["r3"]
    # The enrolments of one SOP.
    other = next(row for row in overview.tables["enrolments"] if row[0].text == "other_sop")
    assert runs_of(site, await page(ops, other[1].href or "")) == ["r6"]


async def test_a_supervisor_sees_their_teams_runs_only(site: Site) -> None:
    sue = site.browser("sue")
    overview = await page(sue, "/dashboard", **WEEK)
    figures = {label: value for label, (value, _) in overview.cards.items()}
    assert figures["Enrolments"] == "3"  # r1, r2, r4: not cy's r3 (field), not r6 (no task)
    assert figures["Touches"] == "1"  # r1's SMS
    assert figures["Overdue now"] == "0"
    assert figures["Late tasks"] == "1"
    assert figures["Held back"] == "2"
    assert runs_of(site, await page(sue, "/dashboard/runs")) == ["r4", "r2", "r1", "r5"]
    # Asking for another team's runs finds none: the scope is in the query, not the links.
    assert runs_of(site, await page(sue, "/dashboard/runs", team="field")) == []
    assert runs_of(site, await page(sue, "/dashboard/tasks", rep="cy"), "tasks") == []
    events = await page(sue, "/dashboard/events", kind="deferred", **WEEK)
    assert runs_of(site, events, "events") == ["r2"]
    fay = site.browser("fay")
    assert runs_of(site, await page(fay, "/dashboard/runs")) == ["r3"]
    csv_rows = await csv_of(fay, "/dashboard/runs", format="csv")
    assert [row["Run"] for row in csv_rows] == [site.world.runs["r3"]]


async def test_runs_filters_and_pages(site: Site) -> None:
    ops = site.browser("olga")
    assert runs_of(
        site, await page(ops, "/dashboard/runs", sop="new_lead_callback", version="2")
    ) == [
        "r4",
        "r3",
    ]
    assert runs_of(site, await page(ops, "/dashboard/runs", status="finished")) == [
        "r2",
        "r1",
        "r5",
    ]
    assert runs_of(site, await page(ops, "/dashboard/runs", rep="ana")) == ["r4", "r1", "r5"]
    assert runs_of(site, await page(ops, "/dashboard/runs", team="field")) == ["r3"]
    assert runs_of(site, await page(ops, "/dashboard/runs", waiting_for="rep")) == ["r4", "r3"]
    assert runs_of(site, await page(ops, "/dashboard/runs", late="false", status="running")) == [
        "r6",
        "r4",
    ]
    dated = await page(ops, "/dashboard/runs", since="2026-11-04", until="2026-11-05T15:00")
    assert runs_of(site, dated) == ["r3", "r2"]
    # Blank fields of the GET form are "any".
    blank = await page(ops, "/dashboard/runs", sop="", late="", status="finished")
    assert runs_of(site, blank) == ["r2", "r1", "r5"]
    # Pages: the next-page link carries the filters and the cursor.
    first = await page(ops, "/dashboard/runs", limit="2", status="finished")
    assert runs_of(site, first) == ["r2", "r1"]
    (next_link,) = [h for text, h in first.links if text.startswith("Next page")]
    assert parse_qs(urlsplit(next_link).query)["status"] == ["finished"]
    second = await page(ops, next_link)
    assert runs_of(site, second) == ["r5"]
    assert not [h for text, h in second.links if text.startswith("Next page")]
    # The form is filled with what was asked.
    filled = await page(ops, "/dashboard/runs", sop="new_lead_callback", since="7d")
    (form,) = [f for f in filled.forms if f["@action"] == "/dashboard/runs"]
    assert (form["sop"], form["since"], form["rep"]) == ("new_lead_callback", "7d", "")


async def test_tasks_page_filters(site: Site) -> None:
    ops = site.browser("olga")
    open_tasks = await page(ops, "/dashboard/tasks", status="pending")
    assert runs_of(site, open_tasks, "tasks") == ["r4", "r3"]
    late = await page(ops, "/dashboard/tasks", late="true")
    assert sorted(runs_of(site, late, "tasks")) == ["r2", "r3"]
    assert runs_of(
        site, await page(ops, "/dashboard/tasks", team="inside", status="late"), "tasks"
    ) == ["r2"]


@pytest.mark.parametrize(
    ("url", "params", "message"),
    [
        (
            "/dashboard/runs",
            {"version": "0"},
            "version: Input should be greater than or equal to 1",
        ),
        (
            "/dashboard/runs",
            {"version": "2"},
            "version: give sop too (version numbers are per SOP)",
        ),
        ("/dashboard/runs", {"late": "maybe"}, "late: Input should be a valid boolean"),
        ("/dashboard/runs", {"status": "lost"}, "status: Input should be 'running' or 'finished'"),
        ("/dashboard/runs", {"since": "yesterday"}, "since 'yesterday': use an ISO date"),
        ("/dashboard/runs", {"since": "2026-11-05", "until": "2026-11-04"}, "is not before until"),
        ("/dashboard/runs", {"colour": "red"}, "colour: not a filter of this page"),
        ("/dashboard/runs", {"cursor": "bogus"}, "cursor: not a cursor of the runs listing"),
        ("/dashboard/runs", {"limit": "500"}, "limit: Input should be less than or equal to 200"),
        ("/dashboard/tasks", {"status": "done"}, "status: Input should be 'on_time'"),
        ("/dashboard/tasks", {"waiting_for": "god"}, "waiting_for: Input should be 'rep'"),
        ("/dashboard", {"since": "last week"}, "since 'last week': use an ISO date"),
        ("/dashboard", {"until": "3000-01-01"}, "until '3000-01-01'"),
        ("/dashboard", {"sop": "x"}, "sop: not a filter of this page"),
        ("/dashboard/events", {}, "kind: Field required"),
        ("/dashboard/events", {"kind": "sent"}, "kind: Input should be 'touch'"),
        ("/dashboard/runs", {"format": "xml"}, "format 'xml': the export format is csv"),
        (
            "/dashboard",
            {"format": "csv", "table": "nope"},
            "table 'nope': this page has enrolments",
        ),
    ],
)
async def test_bad_filters_are_a_422_page_that_says_what_to_fix(
    site: Site, url: str, params: dict[str, str], message: str
) -> None:
    shown = await page(site.browser("olga"), url, 422, **params)
    assert any(message in error for error in shown.errors), shown.errors


async def test_csv_exports(site: Site) -> None:
    ops = site.browser("olga")
    rows = await csv_of(ops, "/dashboard/runs", status="finished", format="csv")
    assert [r["Run"] for r in rows] == [site.world.runs[n] for n in ("r2", "r1", "r5")]
    assert rows[0]["Enrolled (UTC)"] == "2026-11-04T14:00:00+00:00"
    assert rows[0]["Late tasks"] == "1" and rows[0]["SLA met"] == "false"
    assert rows[0]["Score"] == "0.0"  # late (half) and a violation (one point)
    # An export gathers every page, not only the first.
    paged = await csv_of(ops, "/dashboard/runs", limit="1", format="csv")
    assert len(paged) == 6
    held = await csv_of(ops, "/dashboard", format="csv", table="held", **WEEK)
    assert held == [
        {"What": "blocked", "Rule": "dnc", "Touches": "1"},
        {"What": "deferred", "Rule": "quiet_hours", "Touches": "1"},
        {"What": "deferred", "Rule": "window", "Touches": "1"},
    ]
    tasks = await csv_of(ops, "/dashboard/tasks", format="csv", status="pending")
    assert [t["Rep"] for t in tasks] == ["ana", "cy"]
    # Every table on a page offers its CSV link.
    overview = await page(ops, "/dashboard", **WEEK)
    exports = [h for text, h in overview.links if text == "CSV"]
    assert sorted(parse_qs(urlsplit(h).query)["table"][0] for h in exports) == [
        "enrolments",
        "held",
        "touches",
        "violations",
    ]
    assert all(parse_qs(urlsplit(h).query)["since"] == ["2026-11-01"] for h in exports)


async def csv_of(http: httpx.AsyncClient, url: str, **params: str) -> list[dict[str, str]]:
    answer = await http.get(url, params=params)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(answer.text)))


async def test_a_rep_is_sent_to_the_inbox_and_strangers_to_sign_in(site: Site) -> None:
    for path in ("/dashboard", "/dashboard/runs", f"/dashboard/runs/{site.world.runs['r1']}"):
        answer = await site.browser("ana").get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/inbox", path
    answer = await site.browser(None).get("/dashboard/runs", params={"late": "true"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fdashboard%2Fruns%3Flate%3Dtrue"


async def test_the_nav_marks_the_page_and_links_the_reports(site: Site) -> None:
    answer = await site.browser("sue").get("/dashboard/tasks")
    assert '<a href="/dashboard/tasks" aria-current="page">Tasks</a>' in answer.text
    for report in ("Reps", "Funnel", "Pilots", "Referrals"):
        assert f'<a href="/dashboard/{report.lower()}">{report}</a>' in answer.text
    assert "sue · supervisor · inside" in answer.text
    css = await site.browser("sue").get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
