"""One run's page: its timeline, holds with their rule, receipts, outcomes and who reported
them, the score and every point lost, consent changes, the Temporal links; who may open it;
and the supervisor's controls (the actor is the signed-in user; the form needs the session's
CSRF token)."""

from __future__ import annotations

import csv
import io

from sopflow.gateway.auth import CSRF_FIELD
from workflows.contracts import ControlSignal

from .page_reader import column, read
from .world import UI, Site


def run_url(site: Site, name: str) -> str:
    return f"/dashboard/runs/{site.world.runs[name]}"


async def test_the_timeline_of_a_run(site: Site) -> None:
    answer = await site.browser("olga").get(run_url(site, "r2"))
    assert answer.status_code == 200
    shown = read(answer.text)
    steps = shown.tables["steps"]
    assert column(shown, "steps", 2) == [
        "enrolled",
        "assign",
        "deferred",
        "blocked",
        "outcome",
        "end",
    ]
    deferred = steps[2]
    assert deferred[9].text == "quiet_hours" and deferred[10].text == "quiet hours in New York"
    assert deferred[11].text == "until 2026-11-04T15:00:00+00:00"
    assign = steps[1]
    assert assign[4].text == "2026-11-04 14:00" and assign[5].text == "2026-11-04 14:30"
    assert [[c.text for c in row] for row in shown.tables["held"]] == [
        ["2026-11-04 14:01", "first_call", "deferred", "quiet_hours", "2026-11-04T15:00:00+00:00",
         "quiet hours in New York"],
        ["2026-11-04 14:02", "first_call", "blocked", "dnc", "", "on the internal list"],
    ]  # fmt: skip
    assert [[c.text for c in row] for row in shown.tables["outcomes"]] == [
        ["2026-11-05 03:00", "first_call", "connected", "ben"]
    ]
    losses = [[c.text for c in row] for row in shown.tables["losses"]]
    assert losses[0][:4] == ["first_call", "ben", "late", "0.5"]
    assert "reported 12h30m after it was due" in losses[0][4]
    assert losses[1][:4] == ["first_call", "ben", "out_of_window", "1"]
    assert [[c.text for c in row][:4] for row in shown.tables["consent"]] == [
        ["2026-11-04 16:00", "revoke", "sms", "sms_stop"]
    ]
    assert shown.tables["receipts"] == []
    history = UI.history(site.world.runs["r2"], "first-run")
    assert history == (
        "http://temporal-ui.test:8233/namespaces/default/workflows/"
        "sop%3Anew_lead_callback%3Ar2%3Ak/first-run/history"
    )
    assert ("Temporal history", history) in shown.links
    assert ("all its Temporal runs", UI.runs(site.world.runs["r2"])) in shown.links
    assert "finished (done)" in answer.text
    assert not [
        f for f in shown.forms if f["@action"].endswith("/control")
    ]  # finished: no controls


async def test_carrier_receipts_and_the_score(site: Site) -> None:
    shown = read((await site.browser("sue").get(run_url(site, "r1"))).text)
    ((at, touch, status, _),) = [[c.text for c in row] for row in shown.tables["receipts"]]
    assert (at, status) == ("2026-11-03 14:13", "delivered")
    assert touch.endswith(":sms")
    assert [row[3].text for row in shown.tables["score"]] == ["on_time", "on_time"]
    assert shown.tables["losses"] == []


async def test_a_run_page_as_csv(site: Site) -> None:
    answer = await site.browser("olga").get(
        run_url(site, "r2"), params={"format": "csv", "table": "losses"}
    )
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["Why"], r["Points"]) for r in rows] == [("late", "0.5"), ("out_of_window", "1.0")]


async def test_a_supervisor_opens_their_teams_runs_only(site: Site) -> None:
    sue, fay = site.browser("sue"), site.browser("fay")
    assert (await sue.get(run_url(site, "r2"))).status_code == 200
    assert (await fay.get(run_url(site, "r3"))).status_code == 200
    for who, name in ((sue, "r3"), (sue, "r6"), (fay, "r1"), (fay, "r6")):
        answer = await who.get(run_url(site, name))
        assert answer.status_code == 404, name
        assert answer.headers["content-type"].startswith("text/html")
        shown = read(answer.text)
        assert shown.errors == [f"unknown run {site.world.runs[name]!r}"]
    assert (await sue.get("/dashboard/runs/sop:nothing:here")).status_code == 404
    assert (await site.browser("olga").get(run_url(site, "r6"))).status_code == 200


async def test_controls_are_sent_as_the_signed_in_user(site: Site) -> None:
    sue = site.browser("sue")
    page = read((await sue.get(run_url(site, "r4"))).text)
    (form,) = [f for f in page.forms if f["@action"].endswith("/control")]
    assert form["@action"] == f"{run_url(site, 'r4')}/control" and form["@method"] == "post"
    assert form[CSRF_FIELD] == site.sessions["sue"].csrf
    before = len(site.temporal.signals)
    answer = await sue.post(
        form["@action"],
        data={CSRF_FIELD: form[CSRF_FIELD], "action": "pause", "reason": "checking the lead",
              "actor": "mallory"},
    )  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{run_url(site, 'r4')}?sent=pause"
    assert site.temporal.signals[before:] == [
        (site.world.runs["r4"], "control",
         ControlSignal(action="pause", actor="sue", reason="checking the lead")),
    ]  # fmt: skip
    shown = await sue.get(answer.headers["location"])
    assert "Pause sent to the run" in shown.text


async def test_control_refusals(site: Site) -> None:
    sue, fay = site.browser("sue"), site.browser("fay")
    csrf = site.sessions["sue"].csrf
    target = f"{run_url(site, 'r4')}/control"
    before = len(site.temporal.signals)

    async def post(who: object, data: dict[str, str], status: int) -> str:
        answer = await who.post(target, data=data)  # type: ignore[attr-defined]
        assert answer.status_code == status, answer.text[:300]
        return str(answer.text)

    refused = await post(sue, {"action": "pause", "reason": "x"}, 403)  # no token
    assert "CSRF token is missing or stale" in refused
    await post(sue, {CSRF_FIELD: "forged", "action": "pause", "reason": "x"}, 403)
    empty = read(await post(sue, {CSRF_FIELD: csrf, "action": "pause", "reason": ""}, 422))
    assert empty.errors == ["reason: String should have at least 1 character"]
    bad = read(await post(sue, {CSRF_FIELD: csrf, "action": "delete", "reason": "x"}, 422))
    assert bad.errors == ["action: Input should be 'pause', 'resume' or 'cancel'"]
    fay_csrf = site.sessions["fay"].csrf  # another team's run: as if it did not exist
    await post(fay, {CSRF_FIELD: fay_csrf, "action": "cancel", "reason": "x"}, 404)
    assert site.temporal.signals[before:] == []
    site.temporal.finished.add(site.world.runs["r4"])  # it ended meanwhile
    try:
        ended = read(await post(sue, {CSRF_FIELD: csrf, "action": "resume", "reason": "x"}, 409))
    finally:
        site.temporal.finished.discard(site.world.runs["r4"])
    assert ended.errors == ["the run has finished: nothing to control"]
    rep = site.browser("ana")
    answer = await rep.post(target, data={CSRF_FIELD: site.sessions["ana"].csrf, "action": "pause",
                                          "reason": "x"})  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/inbox"
    assert site.temporal.signals[before:] == []
