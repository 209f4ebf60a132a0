"""Contacts: first writes racing for a new contact all land, and a contact stays within its size
budget (64 KiB of JSON), refused before anything is written. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sopflow.errors import InvalidContactError, SopflowError
from sopflow.limits import CONTACT_BUDGET, json_size
from sopflow.store.consent import ConsentBook
from sopflow.store.contacts import contact_view
from sopflow.store.repository import Store

RACERS = 8


def race(write: Callable[[int], Any]) -> list[Any]:
    """`write(n)` on RACERS threads released at once; their results (re-raises a failure)."""
    barrier = threading.Barrier(RACERS)

    def run(n: int) -> Any:
        barrier.wait()
        return write(n)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(run, range(RACERS)))


def test_first_consents_racing_for_a_new_contact_all_land(store: Store) -> None:
    book = ConsentBook(store.engine)
    recorded = race(lambda _: book.record("c-new", "grant", channels=["sms"], method="web_form"))
    assert recorded.count(True) == 1  # the others changed nothing: answered `recorded: false`
    assert len(book.history("c-new")) == 1
    revoked = race(
        lambda n: book.record(f"c-{n % 2}", "revoke", method="sms_stop")  # two new contacts
    )
    assert revoked.count(True) == 2
    assert store.opted_out_at("c-0") is not None and store.opted_out_at("c-1") is not None


def test_first_events_racing_for_a_new_contact_all_land(store: Store) -> None:
    race(lambda n: store.upsert_contact({"id": "c-new", f"field_{n}": n}))
    row = store.contact("c-new")
    assert row is not None and row.fields == {f"field_{n}": n for n in range(RACERS)}
    race(lambda n: store.update_contact("c-other", {"score": n}, [f"tag-{n}"]))
    other = store.contact("c-other")
    assert other is not None and sorted(other.fields["tags"]) == [f"tag-{n}" for n in range(8)]


def test_a_contact_over_its_budget_is_refused_and_nothing_is_written(store: Store) -> None:
    chunk = "x" * 2000  # the gateway's longest text value
    fields = {f"note_{n}": chunk for n in range(30)}  # ~60 KiB: fits
    store.upsert_contact({"id": "c-1", "phone": "+12125550123", **fields})
    row = store.contact("c-1")
    assert row is not None and json_size(contact_view(row)) <= CONTACT_BUDGET
    more = {f"more_{n}": chunk for n in range(3)}
    with pytest.raises(InvalidContactError, match=r"contact 'c-1': with these fields the contact"):
        store.upsert_contact({"id": "c-1", "owner": "ana", **more})
    with pytest.raises(InvalidContactError, match=r"more than the 65536 \(64 KiB\) allowed"):
        store.update_contact("c-1", {"owner": "ana", **more}, ["vip"])
    kept = store.contact("c-1")
    assert kept is not None and kept.owner is None and kept.fields == fields
    store.upsert_contact({"id": "c-1", "note_0": "replaced"})  # a change that shrinks it: fine
    with pytest.raises(InvalidContactError, match="would be"):  # a new contact too big at once
        store.upsert_contact({"id": "c-2", **fields, **more})
    assert store.contact("c-2") is None


def test_a_consent_time_outside_the_sane_years_is_refused_before_writing(store: Store) -> None:
    book = ConsentBook(store.engine)
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))  # no UTC time exists
    late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    for at in (early, late):
        for action in ("grant", "revoke"):
            with pytest.raises(SopflowError, match="the year must be 1900 to 2200"):
                book.record("c-1", action, method="api", at=at)
    assert book.history("c-1") == [] and store.contact("c-1") is None
    edge = datetime(1900, 1, 1, tzinfo=timezone(timedelta(hours=14)))  # 1899 in UTC: storable
    assert book.record("c-1", "grant", method="api", at=edge)
    assert book.history("c-1")[0].at == edge
