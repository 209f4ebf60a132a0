"""The referral landing page and the referral news on a real gateway, store, worker and Temporal
dev server: the seed referral_ask SOP end to end (ask with a signed link → visit → sign-up →
the referrer recorded on the friend → the friend's order → the referrer thanked), refusals that
record nothing, and the report over the API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from referral_support import AUTH, LINKS, Gateway
from sqlalchemy import select
from sqlalchemy.orm import Session

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.referrals import ReferralLinks
from sopflow.store.models import InboundEvent, Referral
from sopflow.store.referrals import new_contact_id
from sopflow.store.repository import Store

REFERRAL = ReferralLinks.sharing(LINKS)
EVE_PHONE = "+12125550188"
EVE = new_contact_id(EVE_PHONE)


def daytime_zone() -> str:
    """A zone where it is 10:00-17:00 now: the SOP texts 09:00-20:00 local, and the test must
    not wait for tomorrow morning."""
    now = datetime.now(UTC)
    for offset in range(-12, 13):
        name = f"Etc/GMT{-offset:+d}"  # POSIX signs: Etc/GMT-3 is UTC+3
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 17:
            return name
    raise AssertionError("some zone is always in the afternoon")


async def eventually(check: Callable[[], Any], what: str) -> Any:
    for _ in range(300):  # 30 s
        if found := check():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def referrals(store: Store) -> list[Referral]:
    with Session(store.engine) as session:
        return list(session.scalars(select(Referral).order_by(Referral.id)))


def path(contact_id: str) -> str:
    return httpx.URL(REFERRAL.url(contact_id)).path


async def enrol_ann(http: httpx.AsyncClient) -> str:
    event = {
        "type": "survey.completed",
        "idempotency_key": "survey-1",
        "contact": {"id": "ann", "first_name": "Ann", "phone": "+12125550123",
                    "timezone": daytime_zone()},
        "data": {"score": 10},
    }  # fmt: skip
    answer = await http.post("/api/v1/events", json=event, headers=AUTH)
    assert answer.status_code == 202, answer.text
    (run,) = answer.json()["enrolled"]
    return str(run["run_id"])


async def test_the_referral_sop_end_to_end(referral_gateway: Gateway) -> None:
    async with referral_gateway() as stack:
        http, store, sent = stack.http, stack.store, stack.provider.sent
        run_id = await enrol_ann(http)
        ask = await eventually(lambda: [t for _, ch, _, t in sent if ch == "sms"], "the ask")
        link = REFERRAL.url("ann")
        assert f"Share your link {link} and" in ask[0]  # signed by the worker, the gateway's key

        page = await http.get(path("ann"), headers={"Referer": "https://chat.example.com/"})
        assert page.status_code == 200 and "Ann invited you" in page.text
        assert "sopflow_visitor" in page.cookies
        assert not re.search(r"<(script|link|img)\b", page.text)  # no external assets
        signed = await http.post(
            path("ann"), data={"name": "Eve Adams", "phone": "+1 212 555 0188", "email": ""}
        )
        assert signed.status_code == 200 and "Thank you, Eve!" in signed.text

        # The run heard referral.signed_up: its update step records the referrer on Eve.
        def recorded() -> bool:
            eve = store.contact(EVE)
            return eve is not None and eve.fields.get("referred_by") == "ann"

        await eventually(recorded, "the referrer on the referred contact")
        eve = store.contact(EVE)
        assert eve is not None and eve.phone == EVE_PHONE and "referred" in eve.fields["tags"]
        assert eve.fields["first_name"] == "Eve" and eve.fields["last_name"] == "Adams"

        order = {"type": "order.created", "idempotency_key": "order-1",
                 "contact": {"id": EVE}, "data": {"order_count": 1}}  # fmt: skip
        answer = await http.post("/api/v1/events", json=order, headers=AUTH)
        assert answer.status_code == 202, answer.text
        assert answer.json()["enrolled"] == []  # a first order: Eve is not asked (yet)

        def finished() -> bool:
            run = store.run(run_id)
            return run is not None and run.status == "finished"

        await eventually(finished, "the referrer's run to finish")
        run = store.run(run_id)
        assert run is not None and run.result == "converted"
        thanks = [t for _, ch, _, t in sent if ch == "sms"][-1]
        assert "Good news, Ann: Eve just became a customer thanks to you." in thanks

        (row,) = referrals(store)
        assert row.referrer_id == "ann" and row.referred_id == EVE
        assert row.came_from == "https://chat.example.com/"
        assert row.visited_at and row.signed_up_at and row.converted_at
        assert row.signup_told_at and row.conversion_told_at
        with Session(store.engine) as session:
            told = session.scalars(select(InboundEvent).where(InboundEvent.contact_id == "ann"))
            assert sorted(e.type for e in told) == [
                "referral.converted",
                "referral.signed_up",
                "survey.completed",
            ]

        report = await http.get("/api/v1/reports/referrals?period=day", headers=AUTH)
        assert report.status_code == 200, report.text
        total = report.json()["total"]
        assert {k: total[k] for k in ("loyal", "asked", "shared", "visits", "signed_up",
                                      "converted")} == dict.fromkeys(
            ("loyal", "asked", "shared", "visits", "signed_up", "converted"), 1
        )  # fmt: skip
        assert report.json()["rows"][0]["period"] == datetime.now(UTC).strftime("%Y-%m-%d")


async def test_forged_and_unknown_codes_get_a_404_page_and_record_nothing(
    referral_gateway: Gateway,
) -> None:
    async with referral_gateway() as stack:
        http, store = stack.http, stack.store
        store.upsert_contact({"id": "ann", "first_name": "Ann"})
        good = path("ann")
        other = ReferralLinks("http://sopflow", b"another deployment's key")
        for bad in (httpx.URL(other.url("ann")).path, good[:-1], good + "x", "/r/!!"):
            for answer in (await http.get(bad), await http.post(bad, data={"name": "Eve"})):
                assert answer.status_code == 404, bad
                assert "This referral link was cut or changed" in answer.text
        for answer in (await http.get(path("nobody")), await http.post(path("nobody"))):
            assert answer.status_code == 404
            assert "This referral link belongs to nobody we know any more." in answer.text
        assert referrals(store) == [] and store.contact("nobody") is None
        assert (await http.get(good)).status_code == 200
        assert len(referrals(store)) == 1


async def test_repeat_visits_count_once_per_visitor(referral_gateway: Gateway) -> None:
    async with referral_gateway() as stack:
        http, store = stack.http, stack.store
        store.upsert_contact({"id": "ann"})
        for _ in range(3):
            page = await http.get(path("ann"))
            assert page.status_code == 200 and "A friend invited you" in page.text
        cookie = page.cookies.get("sopflow_visitor") or http.cookies["sopflow_visitor"]
        assert f'name="visitor" value="{cookie}"' in page.text  # the form carries it too
        http.cookies.clear()
        await http.get(path("ann"))  # another browser
        assert [r.visitor == cookie for r in referrals(store)] == [True, False]


async def test_sign_ups_are_idempotent_and_refusals_record_nothing(
    referral_gateway: Gateway,
) -> None:
    async with referral_gateway() as stack:
        http, store = stack.http, stack.store
        store.upsert_contact({"id": "ann", "phone": "+12125550123"})
        store.upsert_contact({"id": "bob"})
        form = {"name": "Eve", "phone": EVE_PHONE, "email": "eve@example.com"}
        for _ in range(2):
            answer = await http.post(path("ann"), data=form)
            assert answer.status_code == 200 and "Thank you, Eve!" in answer.text
        assert [(r.referrer_id, r.referred_id) for r in referrals(store)] == [("ann", EVE)]
        with Session(store.engine) as session:
            keys = list(session.scalars(select(InboundEvent.key)))
        assert keys == [f"sopflow:referral.signed_up:{referrals(store)[0].id}"]  # told once

        refusals = [
            ("bob", form, 409, "this person was referred by someone else first"),
            ("ann", {**form, "phone": "+12125550123"}, 422, "nobody can refer themselves"),
            ("ann", {"name": "Zed", "phone": "555-0100"}, 422,
             "invalid phone number &#39;555-0100&#39;: use E.164, e.g. +12125550123"),
            ("ann", {"name": "Zed", "phone": "+12125550111", "email": "zed@"}, 422,
             "invalid email"),
            ("ann", {"phone": "+12125550111"}, 422, "name: please give your name"),
            ("ann", {"name": "Zed"}, 422, "phone: please give your mobile number"),
            ("ann", {"name": "Z" * 101, "phone": "+12125550111"}, 422,
             "name: 101 characters, more than the 100 allowed"),
        ]  # fmt: skip
        for referrer, given, status, reason in refusals:
            answer = await http.post(path(referrer), data=given)
            assert answer.status_code == status, (given, answer.text)
            assert reason in answer.text, answer.text
            assert 'name="phone"' in answer.text  # the form again, to fix
        assert len(referrals(store)) == 1
        assert store.contact(new_contact_id("+12125550111")) is None
        eve = store.contact(EVE)
        assert eve is not None and eve.fields["email"] == "eve@example.com"
        too_big = await http.post(path("ann"), content=b"name=" + b"x" * 5000)
        assert too_big.status_code == 413


async def test_an_imported_purchase_converts_over_the_api(referral_gateway: Gateway) -> None:
    async with referral_gateway() as stack:
        http, store = stack.http, stack.store
        store.upsert_contact({"id": "ann"})
        await http.post(path("ann"), data={"name": "Eve", "phone": EVE_PHONE})
        purchase = {"at": datetime.now(UTC).isoformat(), "amount": "25.00", "order_id": "o-9"}
        body = {"contacts": [{"id": EVE, "purchases": [purchase]}]}
        answer = await http.post("/api/v1/contacts/import", json=body, headers=AUTH)
        assert answer.status_code == 200 and answer.json()["purchases"] == 1
        (row,) = referrals(store)
        assert row.converted_at is not None and row.conversion_told_at is not None
        again = await http.post("/api/v1/referrals/announce", headers=AUTH)
        assert again.json() == {"told": 0, "pending": 0}
        assert (await http.post("/api/v1/referrals/announce")).status_code == 401


async def test_the_report_api_checks_its_parameters(referral_gateway: Gateway) -> None:
    async with referral_gateway() as stack:
        http = stack.http
        empty = await http.get("/api/v1/reports/referrals", headers=AUTH)
        assert empty.status_code == 200
        assert empty.json()["period"] == "month" and empty.json()["rows"] == []
        bad = await http.get("/api/v1/reports/referrals?period=year", headers=AUTH)
        assert bad.status_code == 422 and "'day', 'week' or 'month'" in bad.text
        since = await http.get("/api/v1/reports/referrals?since=someday", headers=AUTH)
        assert since.status_code == 422
        assert since.json()["detail"].startswith("since 'someday': use an ISO date")
        assert (await http.get("/api/v1/reports/referrals")).status_code == 401


async def test_without_links_there_is_no_landing_page(referral_gateway: Gateway) -> None:
    async with referral_gateway(links=None) as stack:
        stack.store.upsert_contact({"id": "ann"})
        assert (await stack.http.get(path("ann"))).status_code == 404
        report = await stack.http.get("/api/v1/reports/referrals", headers=AUTH)
        assert report.status_code == 200


def test_unsubscribe_and_referral_links_share_the_deployment_key() -> None:
    shared = UnsubscribeLinks("http://sopflow", LINKS.key)
    assert ReferralLinks.sharing(shared).code("ann") == REFERRAL.code("ann")
