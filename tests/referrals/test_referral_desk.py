"""Telling referrers' runs (the gateway's ReferralDesk) when the event intake fails: what could
not be told stays pending and is told the next time; what nothing listens for is not retried."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from sopflow.errors import ConfigurationError, InvalidEventError
from sopflow.gateway.referral_pages import Announced, ReferralDesk
from sopflow.store.referrals import ReferralBook
from sopflow.store.repository import Store

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


class Intake:
    """The event intake as the desk sees it, failing as told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str, dict[str, Any], str]] = []
        self.failures: list[BaseException] = []

    async def __call__(self, type_: str, contact_id: str, data: dict[str, Any], key: str) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.told.append((type_, contact_id, data, key))


def signed_up(store: Store, *people: str) -> ReferralBook:
    store.upsert_contact({"id": "ann"})
    book = ReferralBook(store.engine)
    for n, person in enumerate(people):
        book.sign_up("ann", {"id": person, "phone": f"+1212555010{n}"}, None, T0)
    return book


async def test_news_is_told_once_in_order(store: Store) -> None:
    book, intake = signed_up(store, "eve", "fay"), Intake()
    desk = ReferralDesk(book, intake)
    book.convert("eve", T0)
    assert await desk.announce() == Announced(3, 0)
    assert [(t, data["referred_contact_id"]) for t, _, data, _ in intake.told] == [
        ("referral.signed_up", "eve"),
        ("referral.converted", "eve"),
        ("referral.signed_up", "fay"),
    ]
    assert {contact for _, contact, _, _ in intake.told} == {"ann"}  # the referrer's runs
    assert await desk.announce() == Announced(0, 0)
    assert len(intake.told) == 3


async def test_what_fails_to_be_told_is_told_the_next_time(store: Store) -> None:
    book, intake = signed_up(store, "eve", "fay"), Intake()
    desk = ReferralDesk(book, intake)
    intake.failures = [ConfigurationError("cannot reach Temporal at localhost:7233")]
    assert await desk.announce() == Announced(0, 2)  # Temporal down: nothing is lost
    intake.failures = [RuntimeError("the store hiccupped")]
    assert await desk.announce() == Announced(0, 2)
    assert await desk.announce() == Announced(2, 0)
    assert [data["referred_contact_id"] for _, _, data, _ in intake.told] == ["eve", "fay"]


async def test_a_key_held_elsewhere_is_skipped_and_the_rest_told(store: Store) -> None:
    book, intake = signed_up(store, "eve", "fay"), Intake()
    desk = ReferralDesk(book, intake)
    intake.failures = [HTTPException(409, "still being processed")]  # another gateway has it
    assert await desk.announce() == Announced(1, 0)
    assert [n.referred_id for n in book.pending()] == ["eve"]  # told by that other attempt


async def test_news_nobody_listens_for_is_not_retried(store: Store) -> None:
    book, intake = signed_up(store, "eve"), Intake()
    desk = ReferralDesk(book, intake)
    intake.failures = [InvalidEventError("no deployed SOP uses the event 'referral.signed_up'")]
    assert await desk.announce() == Announced(1, 0)
    assert book.pending() == [] and intake.told == []


async def test_a_purchase_converts_and_is_told(store: Store) -> None:
    book, intake = signed_up(store, "eve"), Intake()
    desk = ReferralDesk(book, intake)
    assert await desk.purchased("eve")
    assert not await desk.purchased("eve")  # converted already
    assert not await desk.purchased("ann")  # nobody referred ann
    assert [t for t, _, _, _ in intake.told] == ["referral.signed_up", "referral.converted"]
    assert await desk.imported() == 0
