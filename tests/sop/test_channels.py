"""Channels: each says once where its address comes from, which footers its text carries and what
inbound words mean; email is one adapter plus one literal, previewed as production sends it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from sopflow.channels.adapters import EMAIL, SMS, WHATSAPP, adapter
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.gate import ContactFacts, TouchRequest, check_touch
from sopflow.compliance.preflight import Cleared, Refused, clear
from sopflow.enrolment import normalise_contact
from sopflow.errors import InvalidContactError
from sopflow.sop.checks import check_sop
from sopflow.sop.plan import compile_plan
from sopflow.sop.protocol import SendMessage
from sopflow.sop.rep_view import SAMPLE_REP
from sopflow.sop.schema import Channel, Sop
from sopflow.sop.simulator import simulate

LINKS = UnsubscribeLinks("https://sopflow.example.com/", b"k" * 32)
NOON = datetime(2026, 12, 7, 17, 0, tzinfo=UTC)  # Monday noon in New York


def email_sop(**step: Any) -> Sop:
    return Sop.model_validate(
        {
            "id": "mail", "version": 1, "name": "Mail", "owner": "qa",
            "entry": {"events": ["lead.created"]},
            "policy": {
                "timezone": {"default": "America/New_York"},
                "windows": {"email": {"hours": ["09:00-17:00"], "days": "business"}},
            },
            "steps": [
                {"id": "hello", "kind": "email", "subject": "Hi {{ contact.first_name }}",
                 "body": "Welcome.", "on_failed": "nope", **step},
                {"id": "done", "kind": "end", "result": "sent"},
                {"id": "nope", "kind": "end", "result": "not_sent"},
            ],
        }
    )  # fmt: skip


def test_every_channel_has_an_adapter() -> None:
    for channel in get_args(Channel):
        assert adapter(channel).channel == channel


def test_addresses_come_from_the_contact_field_each_channel_uses() -> None:
    contact = {"phone": "(212) 555-0123", "email": "Ann@Example.COM"}
    assert SMS.address({"phone": "+1 212 555 0123"}) == "+12125550123"
    assert SMS.address(contact) is None  # not E.164
    assert EMAIL.address(contact) == "Ann@example.com"
    assert EMAIL.address({"email": "zoë@example.com"}) is None  # would need SMTPUTF8
    assert EMAIL.missing_address({}) == "the contact has no email (email needs an email address)"
    assert "is not an email address" in EMAIL.missing_address({"email": "nope"})


def test_keywords_and_footers_belong_to_their_channel() -> None:
    assert SMS.keyword(" stop ") == "stop" and WHATSAPP.keyword("退订") == "stop"
    assert SMS.keyword("stop please") is None and EMAIL.keyword("STOP") is None
    assert SMS.footers(["回T退订"], "https://x") == ["回T退订"]
    assert EMAIL.footers(["回T退订"], "https://x") == ["Unsubscribe: https://x"]


def test_unsubscribe_links_are_signed_and_cannot_be_forged() -> None:
    url = LINKS.url("c-42")
    token = url.rsplit("/", 1)[1]
    assert url.startswith("https://sopflow.example.com/unsubscribe/")
    assert LINKS.contact_for(token) == "c-42"
    other = UnsubscribeLinks(LINKS.public_url, b"another key")
    assert other.contact_for(token) is None
    forged = LINKS.token("c-43").split(".")[0] + "." + token.split(".")[1]
    for bad in (forged, token[:-2], "", ".", "!!!.abc", token.split(".")[0]):
        assert LINKS.contact_for(bad) is None, bad


def test_a_subject_is_required_for_email_and_refused_elsewhere() -> None:
    with pytest.raises(ValidationError, match="an email needs a `subject`"):
        email_sop(subject=None)
    with pytest.raises(ValidationError, match="`subject` is for email messages only"):
        email_sop(kind="sms")


def _send(contact: dict[str, Any]) -> SendMessage:
    return SendMessage(
        at=NOON, step="hello", key="hello:1:0", channel="email", body="Welcome.",
        planned_at=NOON, context={"contact": contact}, subject="Hi",
    )  # fmt: skip


def test_preflight_addresses_an_email_and_appends_its_unsubscribe_link() -> None:
    ready = clear(
        _send({"id": "c-1", "email": "ann@example.com"}), None, SAMPLE_REP, "r", None, LINKS
    )
    assert isinstance(ready, Cleared)
    assert ready.rendered["to"] == "ann@example.com" and ready.rendered["subject"] == "Hi"
    assert ready.rendered["unsubscribe_url"] == LINKS.url("c-1")
    assert ready.rendered["text"] == f"Welcome.\n\nUnsubscribe: {LINKS.url('c-1')}"
    missing = clear(_send({"id": "c-1"}), None, SAMPLE_REP, "r", None, LINKS)
    assert isinstance(missing, Refused) and missing.status == "failed"
    assert missing.reason == "the contact has no email (email needs an email address)"
    unconfigured = clear(_send({"id": "c-1", "email": "ann@example.com"}), None, SAMPLE_REP, "r")
    assert isinstance(unconfigured, Refused) and "public URL" in unconfigured.reason


def test_a_phone_do_not_contact_list_does_not_bar_email_and_an_email_opt_out_does() -> None:
    request = TouchRequest(
        channel="email", at=NOON, zones=["America/New_York"], regions=[], sop="s"
    )
    assert check_touch(request, ContactFacts(do_not_contact="national_dnc"), []).allowed
    sms = TouchRequest(channel="sms", at=NOON, zones=["America/New_York"], regions=[], sop="s")
    assert not check_touch(sms, ContactFacts(do_not_contact="national_dnc"), []).allowed
    opted = ContactFacts(opted_out={"email": NOON})
    assert check_touch(request, opted, []).rule == "opt_out_channel"  # this one only
    assert check_touch(sms, opted, []).allowed
    everywhere = ContactFacts(opted_out={"all": NOON})
    assert check_touch(request, everywhere, []).rule == "opt_out"  # the run ends


def test_the_preview_shows_the_email_production_sends_and_its_failure_path() -> None:
    plan = compile_plan(email_sop())
    contact = {"id": "c-1", "first_name": "Ann", "email": "ann@example.com"}
    evening = datetime(2026, 12, 4, 23, 30, tzinfo=UTC)  # Friday 18:30 in New York
    sim = simulate(plan, contact, evening, links=LINKS)
    sent = next(e for e in sim.timeline if e.action == "email")
    assert sent.at == datetime(2026, 12, 7, 14, 0, tzinfo=UTC)  # Monday 09:00, the email window
    assert sent.detail["subject"] == "Hi Ann" and sent.detail["to"] == "ann@example.com"
    assert sent.detail["text"].endswith(f"Unsubscribe: {LINKS.url('c-1')}")
    assert sim.result == "sent"
    no_address = simulate(plan, {"id": "c-2", "first_name": "Bo"}, NOON, links=LINKS)
    assert no_address.result == "not_sent"
    opted = simulate(
        plan, contact, NOON, links=LINKS, facts=ContactFacts(opted_out={"email": NOON})
    )
    assert [e.action for e in opted.timeline if e.step == "hello"][-1] == "blocked"
    assert opted.result == "not_sent"  # out of email only: the SOP takes the failure path


def test_intake_normalises_an_email_and_refuses_one_that_is_not() -> None:
    assert normalise_contact({"id": "c", "email": "Ann@Example.COM"})["email"] == "Ann@example.com"
    with pytest.raises(InvalidContactError, match="invalid email 'ann@'"):
        normalise_contact({"id": "c", "email": "ann@"})


def test_an_email_subject_is_checked_like_its_body() -> None:
    unguarded = [(loc, message) for loc, message in check_sop(email_sop())]
    assert [loc for loc, m in unguarded if "contact.first_name" in m] == [
        ("steps", 0, "subject")
    ], unguarded
    guarded = email_sop(subject="Hi {{ contact.first_name | default('there') }}")
    assert check_sop(guarded) == []
