"""The referrals table on SQLite and PostgreSQL: visits counted once per visitor, sign-ups
recorded once with one referrer per contact (first wins, nothing recorded for a refusal),
conversions from events and imported purchases, what the runs must be told, and the funnel."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sopflow.contacts_import import import_contacts
from sopflow.errors import ConflictError, InvalidContactError, NotFoundError
from sopflow.limits import CONTACT_BUDGET, json_size
from sopflow.sop.validate import load_plan
from sopflow.store.models import Contact, Referral, StepEvent
from sopflow.store.referrals import (
    AlreadyReferred,
    ReferralBook,
    SelfReferral,
    new_contact_id,
)
from sopflow.store.repository import Store

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
EVE = {"id": "eve", "phone": "+12125550188", "first_name": "Eve", "last_name": "Adams"}


def rows(store: Store) -> list[Referral]:
    with Session(store.engine) as session:
        return list(session.scalars(select(Referral).order_by(Referral.id)))


def with_referrers(store: Store, *ids: str) -> ReferralBook:
    for contact_id in ids:
        store.upsert_contact({"id": contact_id, "first_name": contact_id.title()})
    return ReferralBook(store.engine)


def test_a_visit_counts_once_per_visitor(store: Store) -> None:
    book = with_referrers(store, "ann", "bob")
    first = book.visit("ann", None, "https://chat.example.com/" + "x" * 600, T0)
    assert first.counted and len(first.visitor) == 22
    assert not book.visit("ann", first.visitor, None, T0 + timedelta(hours=1)).counted
    assert book.visit("bob", first.visitor, None, T0).counted  # another referrer's page
    assert book.visit("ann", "not-one-of-ours", None, T0).counted  # a made-up id: a new one
    found = rows(store)
    assert [(r.referrer_id, r.visited_at) for r in found] == [
        ("ann", T0),  # the first visit's time is kept
        ("bob", T0),
        ("ann", T0),
    ]
    assert found[0].came_from is not None and len(found[0].came_from) == 500  # cut to fit
    assert found[2].visitor != "not-one-of-ours"


def test_an_unknown_referrer_records_nothing(store: Store) -> None:
    book = ReferralBook(store.engine)
    with pytest.raises(NotFoundError, match="unknown referrer 'ghost'"):
        book.visit("ghost", None, None, T0)
    with pytest.raises(NotFoundError, match="unknown referrer 'ghost'"):
        book.sign_up("ghost", EVE, None, T0)
    assert rows(store) == [] and store.contact("eve") is None


def test_a_sign_up_joins_its_visit_and_is_recorded_once(store: Store) -> None:
    book = with_referrers(store, "ann")
    visit = book.visit("ann", None, None, T0)
    done = book.sign_up("ann", EVE, visit.visitor, T0 + timedelta(minutes=3))
    assert done.new and done.referred_id == "eve"
    (row,) = rows(store)
    assert (row.visitor, row.visited_at, row.signed_up_at) == (
        visit.visitor,
        T0,
        T0 + timedelta(minutes=3),
    )
    contact = store.contact("eve")
    assert contact is not None and contact.phone == "+12125550188"
    assert contact.fields == {"first_name": "Eve", "last_name": "Adams"}
    again = book.sign_up("ann", {**EVE, "email": "eve@example.com"}, None, T0 + timedelta(days=1))
    assert (again.new, again.referral_id) == (False, done.referral_id)
    (same,) = rows(store)
    assert same.signed_up_at == T0 + timedelta(minutes=3)
    contact = store.contact("eve")
    assert contact is not None and "email" not in contact.fields  # the repeat changed nothing


def test_nobody_refers_themselves(store: Store) -> None:
    book = with_referrers(store, "ann")
    with pytest.raises(SelfReferral, match="nobody can refer themselves"):
        book.sign_up("ann", {"id": "ann", "phone": "+12125550100"}, None, T0)
    assert rows(store) == []
    contact = store.contact("ann")
    assert contact is not None and contact.phone is None
    # The CRM has a second contact on ann's number (sorted first): ann's number is still ann's.
    store.upsert_contact({"id": "ann", "phone": "+12125550123"})
    store.upsert_contact({"id": "aardvark", "phone": "+12125550123"})
    assert book.contact_with_phone("+12125550123") == "aardvark"
    with pytest.raises(SelfReferral):
        book.sign_up("ann", {"id": "aardvark", "phone": "+12125550123"}, None, T0)
    assert rows(store) == []


def test_the_first_referrer_wins_and_a_later_one_records_nothing(store: Store) -> None:
    book = with_referrers(store, "ann", "bob")
    book.sign_up("ann", EVE, None, T0)
    visit = book.visit("bob", None, None, T0)
    with pytest.raises(AlreadyReferred, match="referred by someone else first"):
        book.sign_up("bob", {**EVE, "email": "eve@example.com"}, visit.visitor, T0)
    assert [(r.referrer_id, r.referred_id) for r in rows(store)] == [
        ("ann", "eve"),
        ("bob", None),  # bob's visit, nothing more
    ]
    contact = store.contact("eve")
    assert contact is not None and "email" not in contact.fields
    assert AlreadyReferred().http_status == 409 and SelfReferral().http_status == 422


def test_two_referrers_at_once_one_wins(store: Store) -> None:
    book = with_referrers(store, "ann", "bob")
    start = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def sign_up(referrer: str) -> None:
        start.wait()
        try:
            outcomes[referrer] = book.sign_up(referrer, EVE, None, T0)
        except ConflictError as exc:
            outcomes[referrer] = exc

    threads = [threading.Thread(target=sign_up, args=(r,)) for r in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r for r, o in outcomes.items() if isinstance(o, AlreadyReferred)]
    assert len(refused) == 1
    (row,) = rows(store)
    assert row.referrer_id != refused[0] and row.referred_id == "eve"


def test_a_public_form_fills_in_a_known_contact_and_overwrites_nothing(store: Store) -> None:
    book = with_referrers(store, "ann")
    store.upsert_contact({"id": "cara", "phone": "+12125550177", "first_name": "Cara",
                          "email": "cara@example.com", "timezone": "Europe/Paris"})  # fmt: skip
    assert book.contact_with_phone("+12125550177") == "cara"
    given = {"id": "cara", "phone": "+12125550177", "first_name": "Mallory",
             "last_name": "Q", "email": "mallory@example.com"}  # fmt: skip
    book.sign_up("ann", given, None, T0)
    contact = store.contact("cara")
    assert contact is not None and contact.timezone == "Europe/Paris"
    assert contact.fields == {"first_name": "Cara", "email": "cara@example.com", "last_name": "Q"}


def test_a_sign_up_that_would_take_the_contact_over_its_budget_records_nothing(
    store: Store,
) -> None:
    book = with_referrers(store, "ann")
    notes = {f"note_{i}": "x" * 2000 for i in range(32)}
    notes["pad"] = "x" * (CONTACT_BUDGET - json_size({"id": "dan", **notes}) - 120)
    store.upsert_contact({"id": "dan", **notes})
    room = CONTACT_BUDGET - json_size({"id": "dan", **notes})
    assert 0 < room < 120
    with pytest.raises(InvalidContactError, match="the contact would be"):
        book.sign_up("ann", {"id": "dan", "first_name": "D" * room}, None, T0)
    assert rows(store) == []
    contact = store.contact("dan")
    assert contact is not None and "first_name" not in contact.fields


def test_one_device_bringing_two_people_counts_one_visit(store: Store) -> None:
    book = with_referrers(store, "ann")
    visit = book.visit("ann", None, None, T0)
    book.sign_up("ann", EVE, visit.visitor, T0)
    book.sign_up("ann", {"id": "fay", "phone": "+12125550199"}, visit.visitor, T0)
    book.sign_up("ann", {"id": "gus", "phone": "+12125550166"}, None, T0)  # no cookie, no visit
    book.sign_up("ann", {"id": "hal", "phone": "+12125550155"}, "x" * 200, T0)  # not ours
    assert [(r.referred_id, r.visitor is not None, r.visited_at) for r in rows(store)] == [
        ("eve", True, T0),
        ("fay", False, None),  # the device's visit is eve's
        ("gus", False, T0),  # the form was seen: its visit counts
        ("hal", False, T0),
    ]


def test_a_new_contact_id_is_the_same_for_the_same_phone() -> None:
    assert new_contact_id("+12125550188") == new_contact_id("+12125550188")
    assert new_contact_id("+12125550188") != new_contact_id("+12125550189")
    assert new_contact_id("+12125550188").startswith("ref-")


def test_an_order_converts_a_referral_once(store: Store) -> None:
    book = with_referrers(store, "ann")
    book.sign_up("ann", EVE, None, T0)
    assert not book.convert("ann", T0)  # nobody referred ann
    assert book.convert("eve", T0 + timedelta(days=2))
    assert not book.convert("eve", T0 + timedelta(days=3))  # the first purchase converts
    (row,) = rows(store)
    assert row.converted_at == T0 + timedelta(days=2)


def test_imported_purchases_after_the_sign_up_convert(store: Store) -> None:
    book = with_referrers(store, "ann")
    book.sign_up("ann", EVE, None, T0)
    book.sign_up("ann", {"id": "fay", "phone": "+12125550199"}, None, T0)

    def purchase(contact_id: str, at: datetime, order: str) -> dict[str, Any]:
        return {"id": contact_id, "purchases": [
            {"at": at.isoformat(), "amount": "10.00", "order_id": order}]}  # fmt: skip

    before = [(1, purchase("eve", T0 - timedelta(days=1), "o-1"))]
    import_contacts(store.engine, before, "crm.jsonl", [])
    assert book.convert_purchases() == 0  # bought before being referred: not the referral's
    later = purchase("eve", T0 + timedelta(days=4), "o-2")
    later["purchases"] += purchase("eve", T0 + timedelta(days=2), "o-3")["purchases"]
    after = [
        (1, later),
        (2, {"id": "fay", "visits": [{"at": (T0 + timedelta(days=1)).isoformat()}]}),
    ]
    import_contacts(store.engine, after, "crm.jsonl", [])
    assert book.convert_purchases() == 1
    assert book.convert_purchases() == 0
    eve, fay = rows(store)
    assert eve.converted_at == T0 + timedelta(days=2)  # the first purchase after the sign-up
    assert fay.converted_at is None  # a visit is no purchase


def test_what_the_runs_must_be_told_and_marking_it_told(store: Store) -> None:
    book = with_referrers(store, "ann")
    book.visit("ann", None, None, T0)
    assert book.pending() == []  # a visit alone is no news
    book.sign_up("ann", EVE, None, T0)
    book.sign_up("ann", {"id": "fay", "phone": "+12125550199"}, None, T0)
    book.convert("eve", T0)
    news = book.pending()
    assert [(n.referred_id, n.event_type) for n in news] == [
        ("eve", "referral.signed_up"),
        ("eve", "referral.converted"),
        ("fay", "referral.signed_up"),
    ]
    assert news[0].data() == {"referred_contact_id": "eve", "referred_name": "Eve"}
    assert news[2].data() == {"referred_contact_id": "fay"}  # no name given
    assert news[0].idempotency_key == f"sopflow:referral.signed_up:{news[0].referral_id}"
    assert len({n.idempotency_key for n in news}) == 3
    for told in news[:2]:
        book.told(told, T0)
    assert [(n.referred_id, n.news) for n in book.pending()] == [("fay", "signed_up")]
    assert book.pending(limit=0) == []


def run_with_ask(
    store: Store, contact_id: str, at: datetime, action: str | None, step: str = "ask_sms"
) -> None:
    """A run of the seed referral SOP for the contact, enrolled at `at`; `action`: the step
    event its ask left (sms: sent; blocked: the gate held it; None: no ask yet)."""
    plan = store.latest_plan("referral_ask")
    workflow_id = f"sop:referral_ask:{contact_id}:{at.isoformat()}"
    store.start_run(workflow_id, "r", "referral_ask", 3, plan.digest, contact_id, at)
    if action is not None:
        with Session(store.engine) as session, session.begin():
            session.add(
                StepEvent(workflow_id=workflow_id, temporal_run_id="r", key=f"{step}:1",
                          step=step, kind="sms", action=action, executed_at=at)
            )  # fmt: skip


def test_the_funnel_from_runs_step_events_and_referrals(store: Store) -> None:
    store.deploy(load_plan(ROOT / "sop_definitions" / "referral_ask.yaml"))
    store.deploy(load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml"))
    book = with_referrers(store, "m1", "m2", "m3", "a1", "lead", "hand")
    march, april = datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 4, 6, tzinfo=UTC)
    run_with_ask(store, "m1", march, "sms")
    run_with_ask(store, "m1", april, "sms")  # asked again later: still March's cohort
    run_with_ask(store, "m2", march, "whatsapp", "ask_whatsapp")
    run_with_ask(store, "m3", march, "blocked")  # the gate held the ask: loyal, not reached
    run_with_ask(store, "a1", april, "sms")
    store.start_run("sop:cb:lead", "r", "new_lead_callback", 2,
                    store.latest_plan("new_lead_callback").digest, "lead", march)  # fmt: skip
    for visitor in range(3):
        book.visit("m1", f"{visitor:022d}", None, march)
    book.visit("m1", f"{0:022d}", None, april)  # a repeat visit: not counted again
    book.sign_up("m1", EVE, f"{0:022d}", march)
    book.sign_up("m1", {"id": "fay", "phone": "+12125550199"}, f"{1:022d}", march)
    book.convert("eve", april)
    book.visit("m3", None, None, april)  # m3's link reached someone by hand
    book.visit("hand", None, None, april)
    report = book.funnel("month")
    march_row, april_row = (row.view() for row in report.rows)
    assert march_row == {
        "period": "2026-03", "loyal": 3, "asked": 2, "shared": 1, "visits": 3,
        "signed_up": 2, "converted": 1, "referral_rate": 0.5, "visits_per_sharer": 3.0,
        "signup_rate": 2 / 3, "page_conversion": 1 / 3,
    }  # fmt: skip
    assert (april_row["loyal"], april_row["asked"], april_row["shared"]) == (1, 1, 0)
    assert (report.not_asked.shared, report.not_asked.visits) == (2, 2)  # m3's and hand's
    assert (report.total.loyal, report.total.asked, report.total.converted) == (4, 3, 1)
    since = book.funnel("day", datetime(2026, 4, 1, tzinfo=UTC))
    assert [row.period for row in since.rows] == ["2026-04-06"]
    assert since.not_asked.visits == 2
    with Session(store.engine) as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 8


def test_no_sop_asking_means_an_empty_funnel(store: Store) -> None:
    book = with_referrers(store, "ann")
    book.visit("ann", None, None, T0)
    report = book.funnel("week")
    assert report.rows == [] and report.total.loyal == 0 and report.not_asked.visits == 1
