"""Email's one-click unsubscribe on the gateway (RFC 8058): a signed link, a POST that records the
opt-out of email, a GET that only shows a page, forged links refused."""

from __future__ import annotations

from typing import Any

import httpx

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.store.consent import ConsentBook

LINKS = UnsubscribeLinks("http://sopflow", b"gateway-test-key")
SOP = {
    "id": "mail", "version": 1, "name": "Mail", "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "steps": [{"id": "hello", "kind": "email", "subject": "Hi", "body": "Welcome."}],
}  # fmt: skip
ONE_CLICK = {"content": b"List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}  # fmt: skip


def path(contact_id: str) -> str:
    return httpx.URL(LINKS.url(contact_id)).path


async def test_one_click_records_an_opt_out_of_email_only(gateway: Any) -> None:
    async with gateway(SOP, "t", links=LINKS) as (http, store):
        consent = ConsentBook(store.engine)
        page = await http.get(path("c-1"))
        assert page.status_code == 200 and "<button>Unsubscribe</button>" in page.text
        assert consent.history("c-1") == []  # a GET (a link scanner, a preview) changes nothing
        answer = await http.post(path("c-1"), **ONE_CLICK)  # type: ignore[arg-type]
        assert answer.status_code == 200 and "unsubscribed" in answer.text
        (event,) = consent.history("c-1")
        assert (event.action, event.channels, event.method) == (
            "revoke",
            ["email"],
            "email_one_click",
        )
        assert consent.opted_out_since("c-1", "email") is not None
        assert consent.opted_out_since("c-1", "sms") is None  # texts and calls go on
        again = await http.post(path("c-1"), **ONE_CLICK)  # type: ignore[arg-type]
        assert again.status_code == 200 and len(consent.history("c-1")) == 1  # the first kept
        form = await http.post(path("c-2"), data={"List-Unsubscribe": "One-Click"})  # the page
        assert form.status_code == 200 and consent.opted_out_since("c-2", "email") is not None


async def test_forged_or_damaged_links_are_refused_and_change_nothing(gateway: Any) -> None:
    async with gateway(SOP, "t", links=LINKS) as (http, store):
        other = UnsubscribeLinks("http://sopflow", b"someone else's key")
        good = path("c-1")
        for bad in (
            httpx.URL(other.url("c-1")).path,
            good[:-3],
            good.split(".")[0],
            "/unsubscribe/x.y",
        ):
            answer = await http.post(bad, **ONE_CLICK)  # type: ignore[arg-type]
            assert answer.status_code == 404, bad
            assert answer.json()["detail"] == "this unsubscribe link is not valid"
            assert (await http.get(bad)).status_code == 404
        huge = await http.post(good, content=b"x" * 5000)
        assert huge.status_code == 413
        assert ConsentBook(store.engine).history("c-1") == []


async def test_without_links_the_gateway_offers_no_unsubscribe(gateway: Any) -> None:
    async with gateway(SOP, "t") as (http, _):
        assert (await http.post(path("c-1"), **ONE_CLICK)).status_code == 404  # type: ignore[arg-type]
