"""Consent records, per-channel opt-outs, do-not-contact lists and the facts the gate gets,
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from activities.store_effects import StoreEffects
from sopflow.errors import SopflowError
from sopflow.providers.loopback import LoopbackProvider
from sopflow.sop.protocol import AssignTask, SendMessage
from sopflow.sop.schema import CHANNELS, AssignRule
from sopflow.store.consent import ConsentBook
from sopflow.store.repository import Store
from workflows.contracts import CommandInput

AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
PHONE = "+12125550123"


def test_consent_is_recorded_with_who_how_and_the_disclosure(store: Store) -> None:
    book = ConsentBook(store.engine)
    assert book.record(
        "c-1",
        "grant",
        channels=["sms", "whatsapp"],
        method="web_form",
        at=AT,
        disclosure_text="I agree to receive texts from Acme. Reply STOP to end.",
        disclosure_version="2026-10",
        actor="lead-form",
    )
    facts = book.facts("c-1", PHONE, AT, timedelta(0))
    assert facts.consented == {"sms", "whatsapp"} and facts.opted_out == {}
    (event,) = book.history("c-1")
    assert (event.method, event.disclosure_version, event.actor) == (
        "web_form",
        "2026-10",
        "lead-form",
    )
    assert event.at == AT and event.channels == ["sms", "whatsapp"]


def test_an_opt_out_covers_every_channel_unless_the_contact_names_one(store: Store) -> None:
    book = ConsentBook(store.engine)
    book.record("c-1", "revoke", method="sms_stop", at=AT)  # STOP: every channel
    assert set(book.facts("c-1", PHONE, AT, timedelta(0)).opted_out) == {
        "sms",
        "whatsapp",
        "call",
        "email",
    }
    assert store.opted_out_at("c-1") == AT
    book.record("c-2", "revoke", channels=["call"], method="api", at=AT)  # "no calls, texts ok"
    facts = book.facts("c-2", PHONE, AT, timedelta(0))
    assert facts.opted_out == {"call": AT} and store.opted_out_at("c-2") is None


def test_a_repeated_stop_keeps_the_first_time_and_start_opts_back_in(store: Store) -> None:
    book = ConsentBook(store.engine)
    assert book.record("c-1", "revoke", method="sms_stop", at=AT)
    assert not book.record("c-1", "revoke", method="sms_stop", at=AT + timedelta(hours=1))
    assert book.opted_out_since("c-1", "sms") == AT
    assert len(book.history("c-1")) == 1
    store.upsert_contact({"id": "c-1", "phone": PHONE})  # a CRM update keeps the opt-out
    assert store.opted_out_at("c-1") == AT
    assert book.record(
        "c-1", "grant", channels=["sms"], method="sms_start", at=AT + timedelta(days=1)
    )
    assert book.opted_out_since("c-1", "sms") is None
    assert book.opted_out_since("c-1", "call") == AT  # START on SMS does not re-open calls
    assert store.opted_out_at("c-1") is None  # no longer opted out of everything


def test_bad_consent_input_is_refused_and_nothing_is_written(store: Store) -> None:
    book = ConsentBook(store.engine)
    with pytest.raises(SopflowError, match="use grant or revoke"):
        book.record("c-1", "maybe", method="api")
    with pytest.raises(SopflowError, match="unknown channel 'fax'"):
        book.record("c-1", "revoke", channels=["fax"], method="api")
    assert book.history("c-1") == []


def test_do_not_contact_lists_import_and_match_any_spelling(store: Store, tmp_path: Path) -> None:
    book = ConsentBook(store.engine)
    csv = tmp_path / "dnc.csv"
    csv.write_text("phone,added\n+1 212 555 0123,2026-01-01\n+33142685300,\n+12125550123,\n")
    assert book.import_list(csv, "national") == 2  # the repeated number once
    assert book.import_list(csv, "national") == 0
    assert book.listed("(212) 555-0123") is None  # not E.164: cannot be matched safely
    assert book.listed("+1 (212) 555-0123") == "national"
    assert book.facts("c-1", PHONE, AT, timedelta(0)).do_not_contact == "national"
    assert book.facts("c-1", "+12125550199", AT, timedelta(0)).do_not_contact is None


def test_a_bad_line_in_a_list_imports_nothing(store: Store, tmp_path: Path) -> None:
    book = ConsentBook(store.engine)
    csv = tmp_path / "dnc.csv"
    csv.write_text("+12125550123\n+1212\n")
    with pytest.raises(SopflowError, match=r"line 2: invalid phone number '\+1212'"):
        book.import_list(csv, "national")
    assert book.listed(PHONE) is None
    with pytest.raises(SopflowError, match="cannot read"):
        book.import_list(tmp_path / "absent.csv", "national")


def _message(key: str, at: datetime) -> SendMessage:
    return SendMessage(
        at=at,
        step="hi",
        key=key,
        channel="sms",
        body="Hi",
        planned_at=at,
        context={"contact": {"id": "c-1", "phone": PHONE}},
    )


def _input(command: SendMessage | AssignTask, sop: str = "promo") -> CommandInput:
    return CommandInput(
        workflow_id=f"sop:{sop}:c-1:k",
        run_id="r",
        sop=sop,
        version=1,
        digest="d",
        command=command,
        contact_id="c-1",
        enrolled_at=AT,
    )


async def test_recent_touches_by_every_sop_count_for_caps(store: Store) -> None:
    effects = StoreEffects(store, LoopbackProvider())
    for n, sop in enumerate(["promo", "promo", "other"]):
        params = _input(_message(f"hi:{n}:0", AT + timedelta(hours=n)), sop)
        await effects.perform(params.idempotency_key, params, {"text": "Hi", "to": PHONE})
    later = AT + timedelta(hours=30)
    facts = await effects.contact_facts(_input(_message("x", later)), later, timedelta(hours=29.5))
    # Inside the lookback: the second "promo" text and the "other" one, by executed time.
    assert sorted((t.sop, t.channel) for t in facts.touches) == [("other", "sms"), ("promo", "sms")]


async def test_an_opt_out_landing_after_the_gate_stops_the_send(store: Store) -> None:
    """The gate looked and allowed the text; STOP arrived before the provider call."""
    provider = LoopbackProvider()
    effects = StoreEffects(store, provider)
    params = _input(_message("hi:1:0", AT))
    ConsentBook(store.engine).record("c-1", "revoke", method="sms_stop", at=AT)
    result = await effects.perform(params.idempotency_key, params, {"text": "Hi", "to": PHONE})
    assert (result.status, result.detail) == ("blocked", {"rule": "opt_out"})
    assert "as the touch was going out" in result.reason
    again = await effects.perform(
        params.idempotency_key, params, {"text": "Hi", "to": PHONE}
    )  # a retry
    assert again.status == "blocked" and provider.sent == []


async def test_rep_notices_still_reach_reps_of_an_opted_out_contact(store: Store) -> None:
    from sopflow.store.reps import RepDirectory

    RepDirectory(store.engine).import_teams(
        [{"id": "t", "name": "T", "reps": [{"id": "ana", "name": "Ana", "phone": "+12125550101"}]}]
    )
    provider = LoopbackProvider()
    effects = StoreEffects(store, provider)
    ConsentBook(store.engine).record("c-1", "revoke", method="sms_stop", at=AT)
    task = AssignTask(
        at=AT,
        step="call",
        key="call:1:1",
        title="Call",
        instructions="",
        assign=AssignRule(strategy="round_robin", team="t"),
        due_at=AT,
        planned_at=AT,
        attempt=1,
        context={"contact": {"id": "c-1"}},
    )
    params = _input(task)
    await effects.perform(params.idempotency_key, params, {"title": "Call", "instructions": ""})
    assert [to for _, _, to, _ in provider.sent] == ["+12125550101"]


def test_a_stop_received_after_a_grant_wins_whatever_time_the_grant_claims(store: Store) -> None:
    book = ConsentBook(store.engine)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    assert book.record("c-1", "grant", method="web_form", at=future)
    assert book.record("c-1", "revoke", method="sms_stop")  # STOP, received later
    facts = book.facts("c-1", PHONE, AT, timedelta(0))
    assert set(facts.opted_out) == set(CHANNELS) and facts.consented == frozenset()
    since = store.opted_out_at("c-1")
    assert since is not None and since < future
    assert book.history("c-1")[0].at == future  # the claim stays for the audit
    # A grant received after the STOP re-opens, even one claiming an earlier time (START).
    assert book.record("c-1", "grant", channels=["sms"], method="sms_start", at=AT)
    assert book.opted_out_since("c-1", "sms") is None and book.opted_out_since("c-1", "call")


def test_a_future_dated_opt_out_is_in_force_from_when_it_was_received(store: Store) -> None:
    book = ConsentBook(store.engine)
    before = datetime.now(UTC)
    assert book.record("c-1", "revoke", method="api", at=datetime(2099, 1, 1, tzinfo=UTC))
    since = book.opted_out_since("c-1", "sms")
    assert since is not None and before <= since <= datetime.now(UTC)
    assert store.opted_out_at("c-1") == since


def test_an_opt_out_with_text_the_database_cannot_keep_is_recorded_cleaned(store: Store) -> None:
    """PostgreSQL refuses NULs and over-long VARCHARs: the opt-out must not fail on every retry."""
    book = ConsentBook(store.engine)
    assert book.record(
        "c-1",
        "revoke",
        method="sms\x00_stop" + "x" * 500,
        actor="a" * 100,
        disclosure_version="\x00" * 3,
        disclosure_text="t" * 5000,
    )
    assert store.opted_out_at("c-1") is not None
    (event,) = book.history("c-1")
    assert event.method == ("sms_stop" + "x" * 500)[:40] and event.actor == "a" * 64
    assert event.disclosure_version == "" and len(event.disclosure_text or "") == 2000


def test_a_grant_with_text_the_database_cannot_keep_is_refused_before_writing(
    store: Store,
) -> None:
    """Consent evidence must be exact: a clipped disclosure would misstate what was agreed."""
    book = ConsentBook(store.engine)
    with pytest.raises(SopflowError, match="disclosure_text is longer than 2000 characters"):
        book.record("c-1", "grant", method="web_form", disclosure_text="t" * 2001)
    with pytest.raises(SopflowError, match="method contains a NUL character"):
        book.record("c-1", "grant", method="web\x00form")
    with pytest.raises(SopflowError, match="contact id is longer than 64"):
        book.record("c" * 65, "revoke", method="sms_stop")  # no contact can have this id
    assert book.history("c-1") == [] and store.contact("c-1") is None


def test_a_list_name_that_cannot_be_kept_is_refused_and_a_long_source_is_cut(
    store: Store,
) -> None:
    book = ConsentBook(store.engine)
    with pytest.raises(SopflowError, match="list name is longer than 64"):
        book.add_to_list([PHONE], "n" * 65)
    with pytest.raises(SopflowError, match="list name contains a NUL"):
        book.add_to_list([PHONE], "nat\x00ional")
    assert book.add_to_list([PHONE], "national", source="/" + "d" * 300 + "\x00")
    assert book.listed(PHONE) == "national"
