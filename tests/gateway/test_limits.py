"""The gateway's limits: the token (never empty), body sizes and the token checked before a body is
read, free-form input refused before it is stored, CPU work off the event loop, plans cached."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sopflow.errors import ConfigurationError
from sopflow.gateway.app import create_app
from sopflow.gateway.guards import MAX_API_BODY
from sopflow.gateway.inputs import MAX_TEXT
from sopflow.limits import CONTACT_BUDGET, EVENT_DATA_BUDGET, json_size
from sopflow.settings import Secret, Settings
from sopflow.sop import engine
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store, connect

TOKEN = "limits-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SOP: dict[str, Any] = {
    "id": "call_new_lead",
    "version": 1,
    "name": "Call",
    "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "contact_fields": {"appointment_at": {"type": "datetime"}, "birthday": {"type": "date"}},
    "steps": [
        {"id": "call_lead", "kind": "task", "title": "Call", "due_within": "30m",
         "outcomes": ["connected"], "on_outcome": {"connected": "done"}},
        {"id": "done", "kind": "end", "result": "converted"},
    ],
}  # fmt: skip
LEAD = {"id": "c-1", "phone": "+12125550123"}
CHUNK = 64 * 1024


def event(contact: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    body = {"type": "lead.created", "contact": contact or LEAD, "idempotency_key": "evt-1"}
    return body | changes


async def no_temporal() -> Any:
    raise AssertionError("a refused request reached Temporal")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    yield store
    store.engine.dispose()


@pytest.fixture
async def http(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway without Temporal: every request here is refused before it needs a run."""
    app = create_app(store, no_temporal, Secret(TOKEN), "q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
        yield client


class Body:
    """A chunked request body that counts the chunks the gateway read."""

    def __init__(self, chunks: int) -> None:
        self.chunks, self.read = chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield b" " * CHUNK


# ------------------------------------------------------------------ the token
def test_an_empty_token_refuses_to_start_and_says_where_it_came_from(tmp_path: Path) -> None:
    from sopflow.up import api_token

    for blank in ("", "  \n"):
        with pytest.raises(ConfigurationError, match="SOPFLOW_API_TOKEN is set but empty"):
            Settings.from_env({"SOPFLOW_API_TOKEN": blank, "SOPFLOW_DATA_DIR": str(tmp_path)})
    settings = Settings.from_env({"SOPFLOW_DATA_DIR": str(tmp_path)})
    assert len(api_token(settings).reveal()) > 20  # none kept yet: one is generated
    (tmp_path / "api_token").write_text(" \n")
    with pytest.raises(ConfigurationError, match=f"{tmp_path / 'api_token'} is empty"):
        api_token(settings)
    store = Store(connect("sqlite://"))
    with pytest.raises(ConfigurationError, match="the API token is empty"):
        create_app(store, no_temporal, Secret(" "), "q")


# ------------------------------------------------------------------ bodies
async def test_without_the_token_a_body_is_never_read(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        body = Body(chunks=50)
        answer = await http.post("/api/v1/events", content=body, headers=headers)
        assert answer.status_code == 401 and body.read == 0, (answer.text, body.read)
    malformed = await http.post("/api/v1/events", content=b"{not json")
    assert malformed.status_code == 401  # not a 422 that reveals the route parses it


async def test_a_body_over_the_cap_is_a_413_and_is_not_read_past_it(
    http: httpx.AsyncClient,
) -> None:
    declared = await http.post("/api/v1/events", content=b" " * (MAX_API_BODY + 1), headers=AUTH)
    assert declared.status_code == 413 and "over 1048576 bytes" in declared.text
    chunked = Body(chunks=200)  # 12.5 MiB without a Content-Length
    answer = await http.post("/api/v1/events", content=chunked, headers=AUTH)
    assert answer.status_code == 413
    assert chunked.read == MAX_API_BODY // CHUNK + 1  # stopped at the first chunk past the cap


async def test_a_chunked_webhook_over_its_cap_is_a_413(store: Store) -> None:
    from sopflow.gateway.twilio_hooks import MAX_BODY, TwilioHooks

    app = create_app(store, no_temporal, Secret(TOKEN), "q", TwilioHooks("tw", "http://x"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
        body = Body(chunks=20)
        answer = await client.post(
            "/twilio/inbound",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 413 and body.read == MAX_BODY // CHUNK + 1


# ------------------------------------------------------------------ free-form input
@pytest.mark.parametrize(
    "body, fragment",
    [
        (event({**LEAD, "notes": "x" * (MAX_TEXT + 1)}), "contact.notes: 2001 characters"),
        (event({**LEAD, "notes": "a\x00b"}), "contact.notes: contains a NUL character"),
        (event({**LEAD, "k" * 65: 1}), "is longer than 64"),
        (event({**LEAD, "id": "c\x00"}), "contact.id: contains a NUL"),
        (event(data={"deep": [[[[[[[[["x"]]]]]]]]]}), "data.deep[0]"),
        (event(data={"page": {"ref": "\x00"}}), "data.page.ref: contains a NUL"),
        (event({**LEAD, "owner": "o" * 65}), "`owner` must be a rep id of at most 64"),
        (event(type="opted_out", data={"method": "m" * 41}), "data.method: a text of 1 to 40"),
        (event(type="opted_out", data={"channels": [{"sms": 1}]}), "data.channels: a list"),
        (event({**LEAD, "appointment_at": "0001-01-01"}), "'appointment_at' is '0001-01-01'"),
        (event({**LEAD, "appointment_at": "9999-12-31T23:59:59"}), "year must be 1900 to 2200"),
        (event({**LEAD, "birthday": "1899-12-31"}), "field 'birthday'"),
        (event({**LEAD, "appointment_at": "next tuesday"}), "not an ISO 8601 datetime"),
        (event({**LEAD, "appointment_at": 20260301}), "field 'appointment_at' is 20260301"),
    ],
)
async def test_bad_event_fields_are_a_422_naming_the_field_and_store_nothing(
    http: httpx.AsyncClient, store: Store, body: dict[str, Any], fragment: str
) -> None:
    answer = await http.post("/api/v1/events", json=body, headers=AUTH)
    assert answer.status_code == 422 and fragment in answer.text, answer.text
    assert store.contact("c-1") is None and store.contact("c\x00") is None


async def test_nan_and_lone_surrogates_are_a_422(http: httpx.AsyncClient) -> None:
    """Python's JSON parser takes both; neither can be stored (nor encoded in the 422)."""
    raw = b'{"type": "lead.created", "idempotency_key": "k", "contact": {"id": "c-1"}, "data": '
    for data, fragment in [
        (b'{"score": NaN}}', "data.score: nan is not a number"),
        (b'{"name": "\\ud800"}}', "data.name: is not valid Unicode text"),
    ]:
        answer = await http.post(
            "/api/v1/events",
            content=raw + data,
            headers=AUTH | {"Content-Type": "application/json"},
        )
        assert answer.status_code == 422 and fragment in answer.text, answer.text


async def test_consent_outcomes_and_controls_refuse_nul_and_over_long_text(
    http: httpx.AsyncClient, store: Store
) -> None:
    consent = {"action": "revoke", "method": "web_form"}
    refused = [
        ("/api/v1/contacts/c-1/consent", consent | {"method": "m" * 41}, "at most 40"),
        ("/api/v1/contacts/c-1/consent", consent | {"method": "web\x00"}, "NUL"),
        ("/api/v1/contacts/c-1/consent", consent | {"actor": "a" * 65}, "at most 64"),
        ("/api/v1/contacts/c-1/consent", consent | {"disclosure_text": "\x00"}, "NUL"),
        ("/api/v1/contacts/c%00/consent", consent, "NUL"),
        (
            "/api/v1/runs/r/outcomes",
            {"step": "s", "outcome": "o", "actor": "a", "note": "n" * 2001},
            "at most 2000",
        ),
        ("/api/v1/runs/r/outcomes", {"step": "s\x00", "outcome": "o", "actor": "a"}, "NUL"),
        (
            "/api/v1/runs/r/outcomes",
            {"step": "s", "outcome": "o", "actor": "a", "data": {"why": "\x00"}},
            "data.why",
        ),
        ("/api/v1/runs/r/control", {"action": "pause", "actor": "a" * 65}, "at most 64"),
        ("/api/v1/runs/r/control", {"action": "pause", "actor": "a", "reason": "r" * 501}, "500"),
        ("/api/v1/runs/r%00/control", {"action": "pause", "actor": "a"}, "NUL"),
    ]
    for path, body, fragment in refused:
        answer = await http.post(path, json=body, headers=AUTH)
        assert answer.status_code == 422 and fragment in answer.text, (path, answer.text)
    report = await http.get("/api/v1/reports/compliance?sop=x%00", headers=AUTH)
    assert report.status_code == 422
    shown = await http.get("/api/v1/contacts/c-1/consent", headers=AUTH)
    assert shown.json()["history"] == []


# ------------------------------------------------------------------ client dates
OVERFLOWING = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"]  # no UTC time exists


@pytest.mark.parametrize("at", OVERFLOWING)
async def test_a_consent_time_with_no_utc_equivalent_is_a_422(
    http: httpx.AsyncClient, store: Store, at: str
) -> None:
    body = {"action": "grant", "method": "web_form", "at": at}
    answer = await http.post("/api/v1/contacts/c-1/consent", json=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert "at: " in answer.text and "the year must be 1900 to 2200" in answer.text
    edge = body | {"at": "1900-01-01T00:00:00+14:00"}  # 1899 in UTC: still storable
    assert (await http.post("/api/v1/contacts/c-1/consent", json=edge, headers=AUTH)).is_success
    (given,) = (await http.get("/api/v1/contacts/c-1/consent", headers=AUTH)).json()["history"]
    assert given["at"] == "1899-12-31T10:00:00+00:00"


async def test_report_since_outside_the_sane_years_is_a_422(http: httpx.AsyncClient) -> None:
    for since, fragment in [
        (OVERFLOWING[0], "the year must be 1900 to 2200"),
        (OVERFLOWING[1], "the year must be 1900 to 2200"),
        ("100000d", "the year must be 1900 to 2200"),  # a span back to 1752
        ("9999999w", "use an ISO date"),  # back before year 1
        ("99999999999d", "use an ISO date"),
    ]:
        answer = await http.get("/api/v1/reports/compliance", params={"since": since}, headers=AUTH)
        assert answer.status_code == 422 and fragment in answer.text, (since, answer.text)


@pytest.mark.parametrize("at", OVERFLOWING)
async def test_dates_in_event_and_outcome_data_are_checked_as_contact_dates(
    http: httpx.AsyncClient, store: Store, at: str
) -> None:
    """Runs merge the data into their contact and schedule from it (appointment_at): a date
    with no UTC time would fail the run for good, long after the API said yes."""
    data = {"appointment_at": at, "note": "booked by phone"}
    for kind in ("lead.created", "reply"):  # enrols, or only reaches running runs
        answer = await http.post("/api/v1/events", json=event(type=kind, data=data), headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert "contact 'c-1': data field 'appointment_at'" in answer.text
        assert "the year must be 1900 to 2200" in answer.text
    assert store.contact("c-1") is None
    plan = store.latest_plan("call_new_lead")
    run_id = "sop:call_new_lead:c-1:evt-1"
    store.start_run(run_id, "r-1", plan.sop.id, 1, plan.digest, "c-1", datetime.now(UTC))
    report = {"step": "call_lead", "outcome": "connected", "data": data}
    answer = await http.post(f"/api/v1/runs/{run_id}/outcomes", json=report, headers=AUTH)
    assert answer.status_code == 422 and "data field 'appointment_at'" in answer.text


# ------------------------------------------------------------------ size budgets
def filled(size: int, prefix: str = "f") -> dict[str, str]:
    """An object of about `size` bytes of JSON, every value at the longest text allowed."""
    count = size // (MAX_TEXT + 12) + 1
    return {f"{prefix}{n:04}": "x" * MAX_TEXT for n in range(count)}


async def test_event_and_outcome_data_over_16_kib_and_contacts_over_64_kib_are_a_422(
    http: httpx.AsyncClient, store: Store
) -> None:
    over = f"more than the {EVENT_DATA_BUDGET} (16 KiB) allowed"
    big = filled(EVENT_DATA_BUDGET)
    answer = await http.post("/api/v1/events", json=event(data=big), headers=AUTH)
    assert answer.status_code == 422 and f"data: {json_size(big)} bytes as JSON, {over}" in (
        answer.text
    )
    contact = {**LEAD, **filled(CONTACT_BUDGET)}
    answer = await http.post("/api/v1/events", json=event(contact), headers=AUTH)
    assert answer.status_code == 422 and "contact: " in answer.text
    assert f"more than the {CONTACT_BUDGET} (64 KiB) allowed" in answer.text
    report = {"step": "call_lead", "outcome": "connected", "data": big}
    answer = await http.post("/api/v1/runs/r/outcomes", json=report, headers=AUTH)
    assert answer.status_code == 422 and over in answer.text
    assert store.contact("c-1") is None


async def test_an_event_that_would_take_the_stored_contact_over_64_kib_changes_nothing(
    http: httpx.AsyncClient, store: Store
) -> None:
    stored = {**LEAD, **filled(CONTACT_BUDGET - 8 * 1024)}
    store.upsert_contact(stored)
    more = {**LEAD, **filled(10 * 1024, prefix="g")}  # fits alone, not with what is stored
    answer = await http.post("/api/v1/events", json=event(more, type="reply"), headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert "contact 'c-1': with these fields the contact would be" in answer.text
    row = store.contact("c-1")
    assert row is not None and not any(k.startswith("g") for k in row.fields)
    assert store.event_begin("evt-1", "reply", "c-1", {}).token is not None  # key released


# ------------------------------------------------------------------ the event loop
async def test_slow_entry_conditions_do_not_stall_healthz(
    gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entry conditions, contact checks and templates are CPU work: a slow one runs in a thread,
    and /healthz keeps answering meanwhile."""

    def slow(*_: Any) -> bool:
        time.sleep(1.0)  # a pathological condition, on whichever thread runs it
        return False

    monkeypatch.setattr(engine, "entry_matches", slow)
    async with gateway(SOP, TOKEN) as (http, _):
        posting = asyncio.create_task(http.post("/api/v1/events", json=event(), headers=AUTH))
        answered: list[float] = [time.monotonic()]
        while not posting.done():
            health = await asyncio.wait_for(http.get("/healthz"), timeout=5)
            assert health.status_code == 200
            answered.append(time.monotonic())
            await asyncio.sleep(0.02)
        assert (await posting).status_code == 202
    gaps = [later - earlier for earlier, later in itertools.pairwise(answered)]
    assert len(gaps) > 5 and max(gaps) < 0.5, max(gaps)


# ------------------------------------------------------------------ plans
async def test_plans_are_loaded_once_per_ttl_and_new_deployments_are_seen_after_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = 0
    latest_plans = store.latest_plans

    def counted() -> Any:
        nonlocal loads
        loads += 1
        return latest_plans()

    monkeypatch.setattr(store, "latest_plans", counted)
    app = create_app(store, no_temporal, Secret(TOKEN), "q", plans_ttl=0.5)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as http:

        async def unknown() -> httpx.Response:  # refused either way: nothing reaches Temporal
            body = event({**LEAD, "appointment_at": "0001-01-01"}, type="lead.won")
            return await http.post("/api/v1/events", json=body, headers=AUTH)

        answers = await asyncio.gather(*(unknown() for _ in range(10)))
        assert {a.status_code for a in answers} == {422} and loads == 1
        store.deploy(compile_plan(Sop.model_validate(SOP | {"version": 2, "entry": {
            "events": ["lead.created", "lead.won"]}})))  # fmt: skip
        assert "no deployed SOP uses the event 'lead.won'" in (await unknown()).text
        await asyncio.sleep(0.6)
        assert "year must be 1900" in (await unknown()).text  # v2 knows the event now
        assert loads == 2
