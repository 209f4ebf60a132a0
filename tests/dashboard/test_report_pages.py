"""The report pages (reps and teams, SOP funnel, pilots, referrals) against world.py's runs with
its pilots and referrals: each number is the reports API's (read back from the page's CSV), each
count leads to the listing rows behind it (all of them, or more when the count is marked), the
roles see what the API lets them see, and bad input is an HTML page saying what to fix."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from sopflow.compliance.funnel import Funnel
from sopflow.compliance.pilots import Pilots
from sopflow.compliance.teams_report import TeamsReport

from .page_reader import Page, read
from .test_pages import csv_of, page
from .world import PILOT_ARMS, WEEK, Site

API = {"Authorization": "Bearer dashboard-token"}  # world.py's app: the ops token
LISTING_TABLE = {"/dashboard/runs": "runs", "/dashboard/tasks": "tasks"}
# CSV column -> the reports API's key, per table
METRICS = {
    "Score": "score", "Tasks": "tasks", "On time": "on_time", "On time %": "on_time_pct",
    "Overdue": "overdue", "Overdue %": "overdue_pct", "Skipped": "skipped",
    "Skipped %": "skipped_pct", "Open": "open", "SLA met %": "sla_met_pct",
    "Violations": "violations", "Successes": "successes",
    "Touches per success": "touches_per_success",
}  # fmt: skip
REP_COLUMNS = {"Rep": "rep", "Name": "name", "Team": "team", **METRICS}
TEAM_COLUMNS = {"Team": "team", "Name": "name", "Reps": "reps", **METRICS}


async def api(site: Site, path: str, **params: str) -> dict[str, Any]:
    answer = await site.browser(None).get(path, params=params, headers=API)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def as_csv(value: Any) -> str:
    """A report's value as the page's CSV writes it (a count: its value)."""
    if isinstance(value, Mapping):
        value = value["value"]
    return "" if value is None else str(value)


def same_as_report(
    rows: list[dict[str, str]], report: list[dict[str, Any]], columns: Mapping[str, str]
) -> None:
    assert len(rows) == len(report)
    for row, expected in zip(rows, report, strict=True):
        assert {title: row[title] for title in columns} == {
            title: as_csv(expected[key]) for title, key in columns.items()
        }


async def counts_lead_to_their_rows(http: httpx.AsyncClient, shown: Page, table: str) -> int:
    """Follow every count of `table` to its listing: as many rows as it says, or (a marked count)
    at least as many. How many were followed."""
    followed = 0
    for row in shown.tables[table]:
        for cell in row:
            path = (cell.href or "").partition("?")[0]
            if path not in LISTING_TABLE:
                continue
            listing = await page(http, cell.href or "")
            found = len(listing.tables[LISTING_TABLE[path]])
            if cell.hint is None:
                assert found == int(cell.text), (cell.href, found)
            else:
                assert found >= int(cell.text), (cell.href, found)
                assert "holds these" in cell.hint
            followed += 1
    return followed


def options(html: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert select is not None
    return [v for v in re.findall(r'<option value="([^"]*)"', select.group(1)) if v]


# ------------------------------------------------------------------ reps and teams
async def test_reps_page_is_the_reports_api_and_every_count_leads_to_its_tasks(
    report_site: Site,
) -> None:
    ops = report_site.browser("olga")
    report = await api(report_site, "/api/v1/reports/reps")
    shown = await page(ops, "/dashboard/reps")
    assert shown.heading == "Reps and teams"
    reps = await csv_of(ops, "/dashboard/reps", format="csv", table="reps")
    same_as_report(reps, report["reps"], REP_COLUMNS)
    teams = await csv_of(ops, "/dashboard/reps", format="csv", table="teams")
    same_as_report(teams, report["teams"], TEAM_COLUMNS)
    ben = next(r for r in reps if r["Rep"] == "ben")
    assert (ben["Tasks"], ben["Overdue"], ben["Successes"]) == ("23", "3", "10")
    # A marked count (the listing has no filter for violations) says so in its title.
    (ben_row,) = [r for r in shown.tables["reps"] if r[0].text == "ben"]
    violations = ben_row[list(REP_COLUMNS).index("Violations")]
    assert violations.hint and violations.href and "rep=ben" in violations.href
    assert ben_row[list(REP_COLUMNS).index("Tasks")].hint is None
    assert await counts_lead_to_their_rows(ops, shown, "reps") == 5 * 7  # 7 counts a row
    assert await counts_lead_to_their_rows(ops, shown, "teams") == 2 * 7


async def test_reps_page_window_and_team(report_site: Site) -> None:
    ops = report_site.browser("olga")
    week = await csv_of(ops, "/dashboard/reps", format="csv", **WEEK)
    report = await api(report_site, "/api/v1/reports/reps", **WEEK)
    same_as_report(week, report["reps"], REP_COLUMNS)
    assert {r["Rep"]: r["Tasks"] for r in week if r["Tasks"] != "0"} == {"ana": "1", "ben": "1"}
    inside = await page(ops, "/dashboard/reps", team="inside", **WEEK)
    assert [r[0].text for r in inside.tables["reps"]] == ["ana", "ben", "sue"]
    assert [r[0].text for r in inside.tables["teams"]] == ["inside"]
    # The window goes with the links: the tasks of that week.
    (ana,) = [r for r in inside.tables["reps"] if r[0].text == "ana"]
    assert ana[4].href == "/dashboard/tasks?rep=ana&since=2026-11-01&until=2026-11-08"
    (form,) = [f for f in inside.forms if f["@action"] == "/dashboard/reps"]
    assert form["since"] == "2026-11-01"


async def test_reps_page_by_role(report_site: Site) -> None:
    sue = report_site.browser("sue")
    mine = await page(sue, "/dashboard/reps")
    assert [r[0].text for r in mine.tables["reps"]] == ["ana", "ben", "sue"]
    assert [r[0].text for r in mine.tables["teams"]] == ["inside"]
    assert options((await sue.get("/dashboard/reps")).text, "team") == ["inside"]
    refused = await page(sue, "/dashboard/reps", 403, team="field")
    assert refused.heading == "403 · Forbidden"
    assert refused.errors == ["team 'field' is not one of your teams"]
    assert (await page(sue, "/dashboard/reps", 403, team="nope")).errors == [
        "team 'nope' is not one of your teams"  # not whether another team exists
    ]
    # A rep: their own row, the same numbers as ops see for them, no team, no listing links.
    ana = report_site.browser("ana")
    answer = await ana.get("/dashboard/reps")
    own = read(answer.text)
    assert [r[0].text for r in own.tables["reps"]] == ["ana"]
    assert "teams" not in own.tables
    assert all(cell.href is None for cell in own.tables["reps"][0])
    ops_view = await csv_of(report_site.browser("olga"), "/dashboard/reps", format="csv")
    assert await csv_of(ana, "/dashboard/reps", format="csv") == [
        r for r in ops_view if r["Rep"] == "ana"
    ]
    assert [text for text, _ in own.links[:3]] == ["sopflow", "Inbox", "Reps"]
    assert '<select name="team">' not in answer.text


# ------------------------------------------------------------------ the funnel
async def test_funnel_page_versions_side_by_side_and_counts_lead_to_runs(site: Site) -> None:
    ops = site.browser("olga")
    params = {"sop": "new_lead_callback", **WEEK}
    report = await api(site, "/api/v1/reports/funnel", **params)
    shown = await page(ops, "/dashboard/funnel", **params)
    assert shown.heading == "SOP funnel: new_lead_callback"
    assert [[c.text for c in row] for row in shown.tables["versions"]] == [
        ["1", report["versions"][0]["digest"].rpartition(":")[2][:12], "2"],
        ["2", report["versions"][1]["digest"].rpartition(":")[2][:12], "2"],
    ]
    # Steps in plan order, a column group per version: five counts and the exits seen there.
    assert [r[0].text for r in shown.tables["steps"]] == [s["step"] for s in report["steps"]]
    assert shown.groups["steps"] == [("", 2), ("v1", 6), ("v2", 5)]
    steps = await csv_of(ops, "/dashboard/funnel", format="csv", table="steps", **params)
    for row, step in zip(steps, report["steps"], strict=True):
        for cell in step["columns"]:
            v = f"v{cell['version']}"
            assert {k: row[f"{v} {t}"] for k, t in (("entries", "Entries"), ("on_time", "On time"),
                    ("overdue", "Overdue"), ("skipped", "Skipped"), ("open", "Open"))} == {
                k: as_csv(cell[k]) for k in ("entries", "on_time", "overdue", "skipped", "open")
            }  # fmt: skip
            for result, count in cell["exits"].items():
                assert row[f"{v} → {result}"] == as_csv(count)
    first = next(r for r in steps if r["Step"] == "first_call")
    assert (first["v1 Entries"], first["v1 Overdue"], first["v1 → done"]) == ("2", "1", "2")
    assert (first["v2 Entries"], first["v2 Overdue"]) == ("2", "1")
    # Every count is linked; all but a version's runs are marked (no step filter in listings).
    (v1,) = [r for r in shown.tables["versions"] if r[0].text == "1"]
    assert v1[2].hint is None
    assert (
        v1[2].href
        == "/dashboard/runs?sop=new_lead_callback&version=1&since=2026-11-01&until=2026-11-08"
    )
    assert await counts_lead_to_their_rows(ops, shown, "versions") == 2
    counts = sum(5 + len(c["exits"]) for s in report["steps"] for c in s["columns"] if c)
    assert await counts_lead_to_their_rows(ops, shown, "steps") == counts


async def test_funnel_picker_and_a_supervisors_runs(report_site: Site) -> None:
    ops = report_site.browser("olga")
    answer = await ops.get("/dashboard/funnel")
    assert answer.status_code == 200
    assert sorted(options(answer.text, "sop")) == [
        "new_lead_callback", "other_sop", "referral_ask", "script_pilot",
    ]  # fmt: skip
    assert "Choose an SOP to see its funnel." in answer.text
    # A supervisor: the runs their teams worked on (ben's arms a and b, not cy's c).
    sue = await csv_of(report_site.browser("sue"), "/dashboard/funnel", format="csv",
                       table="versions", sop="script_pilot")  # fmt: skip
    everyone = await csv_of(ops, "/dashboard/funnel", format="csv", table="versions",
                            sop="script_pilot")  # fmt: skip
    assert [r["Runs"] for r in everyone] == [str(sum(f + 1 for f, _ in PILOT_ARMS.values()))]
    assert [r["Runs"] for r in sue] == [str(sum(f + 1 for f, _ in list(PILOT_ARMS.values())[:2]))]


# ------------------------------------------------------------------ pilots
async def test_pilots_page_per_arm_with_the_test_and_verdict(report_site: Site) -> None:
    ops = report_site.browser("olga")
    report = await api(report_site, "/api/v1/reports/pilots", sop="script_pilot")
    (split,) = report["splits"]
    answer = await ops.get("/dashboard/pilots", params={"sop": "script_pilot"})
    assert "<strong>pick_script</strong>: significant at 5%" in answer.text
    assert options(answer.text, "sop") == ["script_pilot"]  # the SOPs with a split step
    arms = await csv_of(ops, "/dashboard/pilots", format="csv", sop="script_pilot")
    judged = split["significance"]
    assert judged["verdict"] == "significant_at_5pct" and judged["test"] == "chi_square"
    for row, arm in zip(arms, split["variants"], strict=True):
        assert [row[t] for t in ("Split step", "Arm", "Runs", "Finished", "Successes")] == [
            "pick_script", arm["variant"], *(as_csv(arm[k]) for k in ("runs", "finished",
                                                                      "successes")),
        ]  # fmt: skip
        assert row["How it was judged"] == judged["why"]
    assert [(r["Arm"], r["Finished"], r["Successes"], r["Conversion %"]) for r in arms] == [
        (arm, str(f), str(c), str(round(100 * c / f, 1))) for arm, (f, c) in PILOT_ARMS.items()
    ]
    assert {(r["Test"], r["p-value"], r["Verdict"]) for r in arms} == {
        ("chi_square", str(judged["p_value"]), "significant at 5%")
    }
    shown = read(answer.text)
    assert await counts_lead_to_their_rows(ops, shown, "arms") == 3 * 3
    # A supervisor compares the arms of their teams' runs only: cy's script_c is not theirs.
    sue = await csv_of(report_site.browser("sue"), "/dashboard/pilots", format="csv",
                       sop="script_pilot")  # fmt: skip
    assert [(r["Arm"], r["Runs"], r["Verdict"]) for r in sue] == [
        ("script_a", "11", "too few runs to tell"),
        ("script_b", "11", "too few runs to tell"),
        ("script_c", "0", "too few runs to tell"),
    ]


# ------------------------------------------------------------------ referrals
async def test_referrals_page_is_the_referral_funnel(report_site: Site) -> None:
    ops = report_site.browser("olga")
    report = await api(report_site, "/api/v1/reports/referrals", period="week")
    rows = await csv_of(ops, "/dashboard/referrals", format="csv", period="week")
    expected = [*report["rows"], report["total"], report["not_asked"]]
    assert [r["Period (first enrolment)"] for r in rows] == [e["period"] for e in expected]
    for row, want in zip(rows, expected, strict=True):
        assert [row[t] for t in ("Loyal", "Asked", "Shared", "Visitors", "Signed up",
                                 "Converted")] == [
            str(want[k]) for k in ("loyal", "asked", "shared", "visits", "signed_up", "converted")
        ]  # fmt: skip
    assert (rows[0]["Period (first enrolment)"], rows[0]["Loyal"], rows[0]["Converted"]) == (
        "2026-W41", "2", "1",
    )  # fmt: skip
    assert rows[0]["Referral rate %"] == "50.0" and rows[0]["Visitors per sharer"] == "2.0"
    later = await csv_of(ops, "/dashboard/referrals", format="csv", since="2026-11-01")
    assert [r["Period (first enrolment)"] for r in later] == ["total", "(not asked)"]


@pytest.mark.parametrize(
    ("user", "path", "message"),
    [
        ("ana", "/dashboard/funnel", "an SOP's funnel counts other reps' runs"),
        ("ana", "/dashboard/pilots", "a pilot counts other reps' runs"),
        ("ana", "/dashboard/referrals", "the referral funnel counts every team's contacts"),
        ("sue", "/dashboard/referrals", "the referral funnel counts every team's contacts"),
    ],
)
async def test_reports_not_for_a_role_are_a_403_page(
    site: Site, user: str, path: str, message: str
) -> None:
    answer = await site.browser(user).get(path, params={"sop": "new_lead_callback"})
    assert answer.status_code == 403 and answer.headers["content-type"].startswith("text/html")
    shown = read(answer.text)
    assert shown.heading == "403 · Forbidden" and message in shown.errors[0]
    assert "Your role does not open this page." in answer.text


# ------------------------------------------------------------------ bad input, errors
@pytest.mark.parametrize(
    ("url", "params", "status", "message"),
    [
        ("/dashboard/reps", {"since": "yesterday"}, 422, "since 'yesterday': use an ISO date"),
        ("/dashboard/reps", {"since": "2026-11-05", "until": "2026-11-04"}, 422,
         "is not before until"),
        ("/dashboard/reps", {"colour": "red"}, 422, "colour: not a filter of this page"),
        ("/dashboard/reps", {"team": "nope"}, 404,
         "unknown team 'nope' (teams: field, inside)"),
        ("/dashboard/reps", {"format": "xml"}, 422, "format 'xml': the export format is csv"),
        ("/dashboard/reps", {"format": "csv", "table": "nope"}, 422,
         "table 'nope': this page has reps, teams"),
        ("/dashboard/funnel", {"sop": "nope"}, 404, "unknown SOP 'nope' (known: "),
        ("/dashboard/funnel", {"sop": "new_lead_callback", "until": "someday"}, 422,
         "until 'someday': use an ISO date"),
        ("/dashboard/funnel", {"sop": "x" * 65}, 422, "sop: String should have at most 64"),
        ("/dashboard/pilots", {"sop": "new_lead_callback"}, 422,
         "SOP 'new_lead_callback' has no split step"),
        ("/dashboard/pilots", {"sop": "nope"}, 404, "unknown SOP 'nope'"),
        ("/dashboard/referrals", {"period": "year"}, 422, "period: Input should be 'day'"),
        ("/dashboard/referrals", {"since": "soon"}, 422, "since 'soon': use an ISO date"),
    ],
)  # fmt: skip
async def test_bad_input_is_an_html_page_that_says_what_to_fix(
    site: Site, url: str, params: dict[str, str], status: int, message: str
) -> None:
    answer = await site.browser("olga").get(url, params=params)
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"].startswith("text/html")
    shown = read(answer.text)
    assert any(message in error for error in shown.errors), shown.errors
    if url in ("/dashboard/funnel", "/dashboard/pilots"):
        assert '<select name="sop"' in answer.text  # the picker stays, to choose again


async def test_dashboard_errors_are_pages_and_the_apis_stay_json(site: Site) -> None:
    sue = site.browser("sue")
    lost = await sue.get("/dashboard/no-such-page")
    assert lost.status_code == 404 and lost.headers["content-type"].startswith("text/html")
    assert read(lost.text).heading == "404 · Not Found"
    assert 'href="/dashboard/reps"' in lost.text  # the nav, to go on from
    api_ = site.browser(None)
    run = await api_.get("/api/v1/runs/sop:nothing:here", headers=API)
    assert (run.status_code, run.json()) == (404, {"detail": "unknown run 'sop:nothing:here'"})
    sop = await api_.get("/api/v1/reports/funnel", params={"sop": "nope"}, headers=API)
    assert sop.status_code == 404 and sop.json()["detail"].startswith("unknown SOP 'nope'")
    bad = await api_.get("/api/v1/runs", params={"limit": "500"}, headers=API)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]
    # A rep is still sent to their inbox, not shown an error.
    home = await site.browser("ana").get("/dashboard/runs")
    assert (home.status_code, home.headers["location"]) == (303, "/inbox")


async def test_reports_are_computed_off_the_event_loop(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    for kind in (TeamsReport, Funnel, Pilots):
        original = kind.report

        def spy(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            seen.append(threading.current_thread())
            return _original(*args, **kwargs)

        monkeypatch.setattr(kind, "report", spy)
    ops = site.browser("olga")
    await page(ops, "/dashboard/reps")
    await page(ops, "/dashboard/funnel", sop="new_lead_callback")
    await page(ops, "/dashboard/pilots", 422, sop="new_lead_callback")
    assert len(seen) == 3 and loop_thread not in seen


async def test_a_runs_rep_links_to_their_row_on_the_reps_page(site: Site) -> None:
    ops = site.browser("olga")
    run = await page(ops, f"/dashboard/runs/{site.world.runs['r1']}")
    (task,) = [row for row in run.tables["score"] if row[1].text == "task"]
    assert (task[2].text, task[2].href) == ("ana", "/dashboard/reps#rep-ana")
    reps = await ops.get("/dashboard/reps")
    assert '<tr id="rep-ana">' in reps.text and '<tr id="team-inside">' in reps.text
