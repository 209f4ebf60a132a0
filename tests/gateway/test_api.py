"""The REST API against a real Temporal dev server and a real store, through HTTP (httpx + ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from sopflow.sop.protocol import RunState

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOP = {
    "id": "call_new_lead",
    "version": 1,
    "name": "Call",
    "owner": "qa",
    "entry": {
        "events": ["lead.created"],
        "conditions": [{"field": "contact.phone", "exists": True}],
    },
    "contact_fields": {
        "appointment_at": {"type": "datetime"},
        "source": {"type": "string", "required": True},
    },
    "steps": [
        {
            "id": "call_lead",
            "kind": "task",
            "title": "Call",
            "due_within": "30m",
            "outcomes": ["connected", "booked"],
            "outcome_fields": {"booked": ["appointment_at"]},
            "on_outcome": {"booked": "won"},
        },
        {"id": "lost", "kind": "end", "result": "lost"},
        {"id": "won", "kind": "end", "result": "converted"},
    ],
}
LEAD = {"id": "c-1", "first_name": "Ann", "phone": "+1 212 555 0123", "source": "web"}


@pytest.fixture
async def api(gateway: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway(SOP, TOKEN) as (http, _):
        yield http


def event(key: str = "evt-1", **changes: Any) -> dict[str, Any]:
    return {"type": "lead.created", "contact": LEAD, "idempotency_key": key} | changes


async def enrol(api: httpx.AsyncClient, key: str) -> str:
    """Enrol the lead under `key`; the run id."""
    answer = await api.post("/api/v1/events", json=event(key), headers=AUTH)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["enrolled"][0]["run_id"])


async def test_every_route_needs_the_token(api: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert (await api.post("/api/v1/events", json=event(), headers=headers)).status_code == 401
        assert (await api.get("/api/v1/runs/x", headers=headers)).status_code == 401


async def test_an_event_enrols_once_per_idempotency_key(
    api: httpx.AsyncClient, live_env: WorkflowEnvironment, task_queue: str
) -> None:
    first = await api.post("/api/v1/events", json=event(), headers=AUTH)
    assert first.status_code == 202, first.text
    enrolled = first.json()["enrolled"]
    assert enrolled == [
        {"run_id": "sop:call_new_lead:c-1:evt-1", "sop": "call_new_lead", "version": 1}
    ]
    again = await api.post("/api/v1/events", json=event(), headers=AUTH)
    assert again.status_code == 202 and again.json() == first.json()
    assert first.json()["delivered"] == [] and first.json()["skipped"] == []
    runs = [
        w async for w in live_env.client.list_workflows(f"WorkflowId = '{enrolled[0]['run_id']}'")
    ]
    assert len(runs) == 1


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (
            event(type="lead.deleted"),
            422,
            "no deployed SOP uses the event 'lead.deleted' (known events: lead.created, opted_in, opted_out, reply)",
        ),
        (event(contact=LEAD | {"phone": "+1555"}), 422, "invalid phone number '+1555'"),
        (
            event(contact={"id": "c-2", "phone": "+12125550123"}),
            422,
            "SOP 'call_new_lead' needs source",
        ),
        (event(contact={"phone": "+12125550123"}), 422, "`id` is required"),
        (event(idempotency_key=""), 422, "idempotency_key"),
        ({"type": "lead.created"}, 422, "contact"),
    ],
)
async def test_bad_events_get_a_clear_4xx_and_start_nothing(
    api: httpx.AsyncClient,
    live_env: WorkflowEnvironment,
    body: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    response = await api.post("/api/v1/events", json=body, headers=AUTH)
    assert response.status_code == status
    assert fragment in response.text


async def test_a_contact_id_longer_than_the_store_keeps_is_a_422(api: httpx.AsyncClient) -> None:
    long_id = "c" * 65
    answer = await api.post(
        "/api/v1/events", json=event("evt-long", contact={**LEAD, "id": long_id}), headers=AUTH
    )
    assert answer.status_code == 422 and "longer than 64 characters" in answer.text
    consent = {"action": "grant", "method": "web_form"}
    too_long = await api.post(f"/api/v1/contacts/{long_id}/consent", json=consent, headers=AUTH)
    assert too_long.status_code == 422


async def test_malformed_json_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/v1/events", content=b"{not json", headers=AUTH | {"Content-Type": "application/json"}
    )
    assert response.status_code == 422


async def awaiting_outcome(env: WorkflowEnvironment, run_id: str) -> RunState:
    handle = env.client.get_workflow_handle(run_id)
    for _ in range(100):
        state = await handle.query("state", result_type=RunState)
        if state is not None and state.phase == "awaiting_outcome":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError("the run never waited for an outcome")


async def test_outcomes_are_validated_and_the_run_shows_every_step(
    api: httpx.AsyncClient, live_env: WorkflowEnvironment
) -> None:
    run_id = await enrol(api, "evt-9")
    await awaiting_outcome(live_env, run_id)
    url = f"/api/v1/runs/{run_id}/outcomes"
    bad = await api.post(url, json={"step": "call_lead", "outcome": "voicemail"}, headers=AUTH)
    assert bad.status_code == 422 and "not allowed for step 'call_lead'" in bad.text
    missing = await api.post(url, json={"step": "call_lead", "outcome": "booked"}, headers=AUTH)
    assert missing.status_code == 422 and "needs appointment_at" in missing.text
    for system in ("carrier", "sopflow"):  # nobody reports as the carrier or the engine
        posing = await api.post(
            url, json={"step": "call_lead", "outcome": "connected", "actor": system}, headers=AUTH
        )
        assert posing.status_code == 422 and f"actor '{system}' is reserved" in posing.text
    good = await api.post(
        url,
        headers=AUTH,
        json={
            "step": "call_lead",
            "outcome": "booked",
            "data": {"appointment_at": "2026-12-05T11:00:00+00:00"},
        },
    )
    assert good.status_code == 200 and good.json() == {"accepted": True, "message": ""}
    await live_env.client.get_workflow_handle(run_id).result()
    run = (await api.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()
    assert run["status"] == "finished" and run["result"] == "converted" and run["version"] == 1
    actions = [s["action"] for s in run["steps"]]
    assert actions == ["enrolled", "assign", "outcome", "end"]
    outcome = run["steps"][2]
    assert outcome["outcome"] == "booked" and outcome["actor"] == "admin"  # the token's user
    assign = run["steps"][1]
    assert assign["due_at"] is not None and assign["planned_at"] is not None
    # The run's adherence: the task was reported right away, so on time and the SLA is met.
    score = (await api.get(f"/api/v1/runs/{run_id}/score", headers=AUTH)).json()
    assert score["score"] == 100.0 and score["sla_met"] is True and score["losses"] == []
    assert [(i["step"], i["status"]) for i in score["items"]] == [("call_lead", "on_time")]
    report = await api.get("/api/v1/reports/compliance?by=sop&since=1d", headers=AUTH)
    assert report.status_code == 200
    (row,) = report.json()["rows"]
    assert (row["group"], row["runs"], row["on_time"], row["score"]) == (
        "call_new_lead",
        1,
        1,
        100.0,
    )


async def test_a_refused_outcome_says_why_in_the_validators_words(
    api: httpx.AsyncClient, live_env: WorkflowEnvironment
) -> None:
    """The update validator raises ValueError; the API must not show the class name."""
    run_id = await enrol(api, "evt-refused")
    await awaiting_outcome(live_env, run_id)
    response = await api.post(
        f"/api/v1/runs/{run_id}/outcomes",
        json={"step": "lost", "outcome": "connected"},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": "step 'lost' is not waiting for an outcome "
        "(the run is at 'call_lead', awaiting_outcome)"
    }


async def test_reports_refuse_bad_parameters(api: httpx.AsyncClient) -> None:
    by = await api.get("/api/v1/reports/compliance?by=colour", headers=AUTH)
    assert by.status_code == 422 and "rep" in by.text
    since = await api.get("/api/v1/reports/compliance?since=last+tuesday", headers=AUTH)
    assert since.status_code == 422 and "use an ISO date" in since.text
    assert (await api.get("/api/v1/runs/nope/score", headers=AUTH)).status_code == 404
    assert (await api.get("/api/v1/reports/compliance")).status_code == 401


async def test_unknown_runs_are_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/runs/nope", headers=AUTH)).status_code == 404
    response = await api.post(
        "/api/v1/runs/nope/outcomes",
        headers=AUTH,
        json={"step": "call_lead", "outcome": "booked"},
    )
    assert response.status_code == 404 and "unknown run 'nope'" in response.text


async def test_supervisors_pause_and_cancel_runs_and_the_record_says_who_and_why(
    api: httpx.AsyncClient, live_env: WorkflowEnvironment
) -> None:
    run_id = await enrol(api, "evt-c")
    url = f"/api/v1/runs/{run_id}/control"
    paused = await api.post(url, json={"action": "pause", "reason": "complaint"}, headers=AUTH)
    assert paused.status_code == 202
    invalid = await api.post(url, json={"action": "explode"}, headers=AUTH)
    assert invalid.status_code == 422
    cancel = await api.post(
        url, json={"action": "cancel", "reason": "duplicate lead"}, headers=AUTH
    )
    assert cancel.status_code == 202
    await live_env.client.get_workflow_handle(run_id).result()
    run = (await api.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()
    assert run["status"] == "finished" and run["result"] == "cancelled"
    by_action = {s["action"]: s for s in run["steps"]}
    assert by_action["paused"]["actor"] == "admin" and by_action["paused"]["reason"] == "complaint"
    assert (
        by_action["cancelled"]["actor"] == "admin"
        and by_action["cancelled"]["reason"] == "duplicate lead"
    )
    late = await api.post(url, json={"action": "resume"}, headers=AUTH)
    assert late.status_code == 404 and "unknown or finished run" in late.text
    # A report that comes too late (or lands as the run closes) is a conflict, not "unknown".
    report = {"step": "call_lead", "outcome": "connected"}
    too_late = await api.post(f"/api/v1/runs/{run_id}/outcomes", json=report, headers=AUTH)
    assert too_late.status_code == 409, too_late.text
    assert too_late.json() == {"detail": "the run has finished: it takes no more reports"}


async def run_events(api: httpx.AsyncClient, run_id: str, action: str, count: int) -> list[Any]:
    """The run's step events with `action`, once there are `count` of them (records are async)."""
    for _ in range(100):
        steps = (await api.get(f"/api/v1/runs/{run_id}", headers=AUTH)).json()["steps"]
        found = [s for s in steps if s["action"] == action]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {action!r} step event in {run_id}")


async def test_contact_events_reach_running_runs_once_per_key(
    api: httpx.AsyncClient, live_env: WorkflowEnvironment
) -> None:
    run_id = await enrol(api, "evt-r")
    reply = {"type": "reply", "contact": {"id": "c-1"}, "data": {"text": "call me at 5"}}
    first = await api.post("/api/v1/events", json=reply | {"idempotency_key": "in-1"}, headers=AUTH)
    assert first.status_code == 202, first.text
    assert first.json() == {"enrolled": [], "delivered": [run_id], "skipped": []}
    again = await api.post("/api/v1/events", json=reply | {"idempotency_key": "in-1"}, headers=AUTH)
    assert again.json() == first.json()
    await run_events(api, run_id, "event", 1)
    await asyncio.sleep(0.5)  # a duplicate signal would be recorded by now
    assert len(await run_events(api, run_id, "event", 1)) == 1
    history = await live_env.client.get_workflow_handle(run_id).fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert len(signals) == 1


async def test_an_opt_out_ends_runs_and_stops_new_enrolments_until_opt_in(
    api: httpx.AsyncClient, live_env: WorkflowEnvironment
) -> None:
    run_id = await enrol(api, "evt-o1")
    stop = {"type": "opted_out", "contact": {"id": "c-1"}, "idempotency_key": "stop-1"}
    answer = await api.post("/api/v1/events", json=stop, headers=AUTH)
    assert answer.status_code == 202 and answer.json()["delivered"] == [run_id]
    result = await live_env.client.get_workflow_handle(run_id).result()
    assert result["result"] == "opted_out"
    blocked = await api.post("/api/v1/events", json=event("evt-o2"), headers=AUTH)
    body = blocked.json()
    assert body["enrolled"] == [] and body["skipped"][0]["sop"] == "call_new_lead"
    assert "the contact opted out at" in body["skipped"][0]["reason"]
    start = {"type": "opted_in", "contact": {"id": "c-1"}, "idempotency_key": "start-1"}
    assert (await api.post("/api/v1/events", json=start, headers=AUTH)).json()["delivered"] == []
    again = await api.post("/api/v1/events", json=event("evt-o3"), headers=AUTH)
    assert [r["sop"] for r in again.json()["enrolled"]] == ["call_new_lead"]


async def test_consent_is_recorded_and_shown_per_channel(api: httpx.AsyncClient) -> None:
    url = "/api/v1/contacts/c-7/consent"
    given = {
        "action": "grant",
        "channels": ["sms"],
        "method": "web_form",
        "disclosure_text": "Texts from Acme; reply STOP to end",
        "disclosure_version": "v3",
        "at": "2026-11-20T10:00:00Z",
    }
    first = await api.post(url, json=given, headers=AUTH)
    assert first.status_code == 201 and first.json()["recorded"] is True
    assert first.json()["channels"] == {
        "sms": {"action": "grant", "since": "2026-11-20T10:00:00+00:00"}
    }
    assert (await api.post(url, json=given, headers=AUTH)).json()["recorded"] is False
    bad = await api.post(url, json={**given, "channels": ["fax"]}, headers=AUTH)
    assert bad.status_code == 422 and "unknown channel 'fax'" in bad.text
    naive = await api.post(url, json={**given, "at": "2026-11-20T10:00:00"}, headers=AUTH)
    assert naive.status_code == 422 and "timezone" in naive.text
    # "No more calls, please" is an opt-out of calls only: texts stay allowed.
    calls = {
        "type": "opted_out",
        "contact": {"id": "c-7"},
        "data": {"channels": ["call"], "method": "rep_call"},
        "idempotency_key": "no-calls-7",
    }
    assert (await api.post("/api/v1/events", json=calls, headers=AUTH)).status_code == 202
    shown = (await api.get(url, headers=AUTH)).json()
    assert (
        set(shown["channels"]) == {"sms", "call"}
        and shown["channels"]["call"]["action"] == "revoke"
    )
    assert [h["method"] for h in shown["history"]] == ["web_form", "rep_call"]
    assert shown["history"][0]["disclosure_version"] == "v3"
    assert shown["history"][0]["actor"] == "admin"  # the token's user, not a field of the body
    posing = await api.post(url, json={**given, "actor": "form-12"}, headers=AUTH)
    assert posing.status_code == 422 and "actor 'form-12' is not you" in posing.text
    wrong = {**calls, "data": {"channels": ["pager"]}, "idempotency_key": "no-pager"}
    refused = await api.post("/api/v1/events", json=wrong, headers=AUTH)
    assert refused.status_code == 422 and "unknown channel 'pager'" in refused.text


async def test_a_contact_event_for_an_unknown_contact_changes_nothing_else(
    api: httpx.AsyncClient,
) -> None:
    reply = {"type": "reply", "contact": {"id": "c-404"}, "idempotency_key": "in-404"}
    answer = await api.post("/api/v1/events", json=reply, headers=AUTH)
    assert answer.status_code == 202
    assert answer.json() == {"enrolled": [], "delivered": [], "skipped": []}
