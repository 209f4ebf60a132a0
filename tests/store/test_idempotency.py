"""Idempotency keys of inbound events: claimed once, taken over after a lease, and answered or
released only by the attempt holding the claim. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from sopflow.errors import InvalidContactError, InvalidEventError
from sopflow.store.consent import ConsentBook
from sopflow.store.models import InboundEvent
from sopflow.store.repository import CLAIM_LEASE, Store, run_row


def _age_claim(store: Store, key: str, age: timedelta) -> None:
    with Session(store.engine) as session, session.begin():
        row = session.get(InboundEvent, key)
        assert row is not None
        row.received_at = datetime.now(UTC) - age


def _claimed(store: Store, key: str) -> str:
    token, answer = store.event_begin(key, "lead", "c-1", {})
    assert token is not None and answer is None
    return token


def test_an_idempotency_key_the_database_cannot_keep_is_refused(store: Store) -> None:
    with pytest.raises(InvalidEventError, match="idempotency key is longer than 200"):
        store.event_begin("k" * 201, "lead", "c-1", {})
    with pytest.raises(InvalidEventError, match="event type contains a NUL"):
        store.event_begin("k", "le\x00ad", "c-1", {})
    assert store.event_begin("k", "lead", "c-1", {"text": "a\x00b"}).token is not None


def test_a_claim_whose_process_died_is_taken_over_after_its_lease(store: Store) -> None:
    first = _claimed(store, "k1")
    assert store.event_begin("k1", "lead", "c-1", {}) == (None, None)  # in progress: 409
    _age_claim(store, "k1", CLAIM_LEASE - timedelta(seconds=10))
    assert store.event_begin("k1", "lead", "c-1", {}) == (None, None)  # still within its lease
    _age_claim(store, "k1", CLAIM_LEASE + timedelta(seconds=1))  # its process crashed
    retry = _claimed(store, "k1")  # the retry takes over, with a token of its own
    assert retry != first
    assert store.event_begin("k1", "lead", "c-1", {}) == (None, None)  # a fresh lease
    assert store.event_finish("k1", retry, {"ok": True})
    _age_claim(store, "k1", CLAIM_LEASE * 10)
    assert store.event_begin("k1", "lead", "c-1", {}) == (None, {"ok": True})  # answered: kept


def test_a_slow_attempt_cannot_answer_or_release_the_claim_that_took_over_from_it(
    store: Store,
) -> None:
    slow = _claimed(store, "k1")
    _age_claim(store, "k1", CLAIM_LEASE + timedelta(seconds=1))  # it outlives its lease
    retry = _claimed(store, "k1")
    # The slow attempt ends now, one way or the other: neither touches the retry's claim.
    assert not store.event_abandon("k1", slow)
    assert not store.event_finish("k1", slow, {"from": "slow"})
    assert store.event_begin("k1", "lead", "c-1", {}) == (None, None)  # still the retry's
    assert store.event_finish("k1", retry, {"from": "retry"})
    assert store.event_begin("k1", "lead", "c-1", {}) == (None, {"from": "retry"})
    assert not store.event_abandon("k1", retry)  # answered: kept for good

    released = _claimed(store, "k2")
    _age_claim(store, "k2", CLAIM_LEASE + timedelta(seconds=1))
    taken = _claimed(store, "k2")
    assert not store.event_abandon("k2", released)
    assert store.event_abandon("k2", taken)  # the holder's failure forgets the key…
    assert _claimed(store, "k2") not in (released, taken)  # …so the next attempt is fresh


def test_two_retries_racing_for_a_stale_claim_cannot_both_take_it(store: Store) -> None:
    _claimed(store, "k1")
    _age_claim(store, "k1", CLAIM_LEASE * 2)
    attempts = 8
    barrier = threading.Barrier(attempts)

    def retry(_: int) -> str | None:
        barrier.wait()
        return store.event_begin("k1", "lead", "c-1", {}).token

    with ThreadPoolExecutor(attempts) as pool:
        tokens = list(pool.map(retry, range(attempts)))
    (winner,) = [t for t in tokens if t is not None]
    assert store.event_finish("k1", winner, {"ok": True})


def test_the_claim_and_the_contact_are_one_transaction(store: Store) -> None:
    """Intake claims the key and stores the contact together; a contact the store refuses
    leaves the key unclaimed, so the corrected retry is processed."""
    too_big = {"id": "c-1", "phone": "+12125550101", "notes": "x" * 70_000}
    with pytest.raises(InvalidContactError, match="c-1"):
        store.event_begin_with_contact("k1", "lead", too_big, {})
    assert store.contact("c-1") is None
    (token, answer), opted_out_at = store.event_begin_with_contact(
        "k1", "lead", {"id": "c-1", "phone": "+12125550101", "first_name": "Ann"}, {}
    )
    assert token is not None and answer is None and opted_out_at is None
    stored = store.contact("c-1")
    assert stored is not None and stored.phone == "+12125550101"
    assert stored.fields == {"first_name": "Ann"}
    # Seen before: the contact is not merged again, and the answer is the first one's.
    again = store.event_begin_with_contact("k1", "lead", {"id": "c-1", "first_name": "Bo"}, {})
    assert again == ((None, None), None)
    assert store.contact("c-1").fields == {"first_name": "Ann"}  # type: ignore[union-attr]

    ConsentBook(store.engine).record("c-1", "revoke", channels=["all"], method="test")
    (_, _), opted_out_at = store.event_begin_with_contact("k2", "lead", {"id": "c-1"}, {})
    assert opted_out_at is not None  # what intake skips enrolments by


def test_the_runs_an_event_started_are_recorded_with_its_answer(store: Store) -> None:
    """Even by an attempt whose claim was taken over: the runs it started exist."""
    slow = _claimed(store, "k1")
    _age_claim(store, "k1", CLAIM_LEASE + timedelta(seconds=1))
    retry = _claimed(store, "k1")
    at = datetime.now(UTC)
    mine = run_row("sop:a:c-1", "r1", "a", 1, "sha256:x", "c-1", at)
    assert not store.event_finish("k1", slow, {"from": "slow"}, [mine])
    assert store.run("sop:a:c-1") is not None
    both = [mine, run_row("sop:b:c-1", "r2", "b", 1, "sha256:y", "c-1", at)]
    assert store.event_finish("k1", retry, {"from": "retry"}, both)  # a row twice is fine
    assert sorted(store.running_runs("c-1")) == ["sop:a:c-1", "sop:b:c-1"]
