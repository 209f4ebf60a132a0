"""Every seed SOP validates, and its simulated timeline is what the ops author expects."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sopflow.enrolment import enrolment_for
from sopflow.errors import InvalidContactError
from sopflow.referrals import ReferralLinks
from sopflow.sop import engine, splits
from sopflow.sop.plan import Plan
from sopflow.sop.simulator import (
    PREVIEW_LINKS,
    Script,
    ScriptedEvent,
    ScriptedOutcome,
    Simulation,
    simulate,
)
from sopflow.sop.validate import load_plan, validate_paths

ROOT = Path(__file__).resolve().parents[2] / "sop_definitions"
NY = ZoneInfo("America/New_York")


def plan(name: str) -> Plan:
    return load_plan(ROOT / f"{name}.yaml")


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def steps(sim: Simulation, *actions: str) -> list[tuple[str, str, str]]:
    """(local time, step, action) for the timeline entries with the given actions."""
    return [
        (e.at.astimezone(NY).strftime("%a %d %H:%M"), e.step, e.action)
        for e in sim.timeline
        if not actions or e.action in actions
    ]


CONTACT = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}


def test_every_file_in_sop_definitions_validates() -> None:
    plans, problems = validate_paths([ROOT])
    assert problems == []
    assert {p.sop.id for p in plans.values()} == {
        "new_lead_callback",
        "store_visit_reminder",
        "vip_six_touches",
        "referral_ask",
        "script_pilot",
        "lead_triage",  # layering by segment (tests/sop/test_segment_routing.py)
        "lead_nurture",
    }


def test_callback_silent_rep_escalates_then_runs_five_attempts_at_local_slots() -> None:
    sim = simulate(plan("new_lead_callback"), CONTACT, local(2026, 12, 1, 9, 10))
    assert steps(sim, "assign", "remind", "notify_supervisor", "reassign", "sms", "end") == [
        ("Tue 01 09:10", "first_call", "assign"),
        ("Tue 01 09:40", "first_call", "remind"),
        ("Tue 01 09:55", "first_call", "notify_supervisor"),
        ("Tue 01 10:10", "first_call", "reassign"),
        ("Tue 01 12:00", "retry_calls", "assign"),
        ("Tue 01 13:00", "retry_calls", "remind"),
        ("Tue 01 17:00", "retry_calls", "assign"),
        ("Tue 01 18:00", "retry_calls", "remind"),
        ("Tue 01 20:00", "retry_calls", "sms"),  # after the second failed attempt
        ("Wed 02 18:00", "retry_calls", "assign"),
        ("Wed 02 19:00", "retry_calls", "remind"),
        ("Thu 03 11:00", "retry_calls", "assign"),
        ("Thu 03 12:00", "retry_calls", "remind"),
        ("Thu 03 16:00", "retry_calls", "assign"),
        ("Thu 03 17:00", "retry_calls", "remind"),
        ("Thu 03 19:00", "no_contact", "end"),
    ]
    assert sim.result == "no_contact"
    assigned = [e for e in sim.timeline if e.action == "assign" and e.step == "retry_calls"]
    assert [e.detail["attempt"] for e in assigned] == [1, 2, 3, 4, 5]
    keys = [e.key for e in sim.timeline]
    assert len(keys) == len(set(keys))  # every command can be stored exactly once


def test_callback_connected_on_third_attempt_books_and_enrols_the_reminder() -> None:
    booking = {
        "appointment_at": "2026-12-05T11:00:00-05:00",
        "store_name": "Downtown",
        "store_address": "12 Market St",
    }
    script = Script(
        outcomes={
            "first_call": [ScriptedOutcome("no_answer", timedelta(minutes=12))],
            "retry_calls": [
                ScriptedOutcome("busy"),
                ScriptedOutcome("no_answer"),
                ScriptedOutcome("booked", timedelta(minutes=3), booking),
            ],
        }
    )
    sim = simulate(plan("new_lead_callback"), CONTACT, local(2026, 12, 1, 9, 10), script)
    outcomes = [
        (e.step, e.detail["outcome"], e.detail["on_time"])
        for e in sim.timeline
        if e.action == "outcome"
    ]
    assert outcomes == [
        ("first_call", "no_answer", True),
        ("retry_calls", "busy", True),
        ("retry_calls", "no_answer", True),
        ("retry_calls", "booked", True),
    ]
    enrol = next(e for e in sim.timeline if e.action == "enroll")
    assert enrol.detail == {
        "sop": "store_visit_reminder",
        "data": {
            "appointment_at": "2026-12-05T11:00:00-05:00",
            "store_name": "Downtown",
            "store_address": "12 Market St",
        },
    }
    assert steps(sim, "enroll")[0][0] == "Wed 02 18:03"
    assert sim.result == "converted"
    assert len([e for e in sim.timeline if e.action == "assign"]) == 4  # the ladder stopped


def test_callback_lead_on_saturday_night_is_deferred_to_monday_morning() -> None:
    sim = simulate(
        plan("new_lead_callback"),
        CONTACT,
        local(2026, 12, 5, 22, 30),
        Script(default_outcome="connected"),
    )
    deferred = next(e for e in sim.timeline if e.action == "deferred")
    assert "outside the call window 09:00-20:00" in deferred.detail["reason"]
    # Sunday is not a business day in this SOP: Monday 09:00.
    assert steps(sim, "assign")[0] == ("Mon 07 09:00", "first_call", "assign")


def test_callback_opt_out_during_the_ladder_stops_everything() -> None:
    script = Script(
        outcomes={"first_call": [ScriptedOutcome("no_answer")]},
        events=[ScriptedEvent(timedelta(hours=5), "opted_out")],
    )
    sim = simulate(plan("new_lead_callback"), CONTACT, local(2026, 12, 1, 9, 10), script)
    assert sim.result == "opted_out"
    assert steps(sim, "assign") == [
        ("Tue 01 09:10", "first_call", "assign"),
        ("Tue 01 12:00", "retry_calls", "assign"),
    ]


def test_callback_connected_then_booked_event_enrols_the_reminder() -> None:
    booking = {
        "appointment_at": "2026-12-04T10:00",
        "store_name": "Downtown",
        "store_address": "1 Main St",
    }
    script = Script(
        outcomes={"first_call": [ScriptedOutcome("connected")]},
        events=[ScriptedEvent(timedelta(days=2), "booked", booking)],
    )
    sim = simulate(plan("new_lead_callback"), CONTACT, local(2026, 12, 1, 9, 10), script)
    assert sim.result == "converted"
    enrol = next(e for e in sim.timeline if e.action == "enroll")
    assert enrol.detail["data"] == booking


def test_a_booking_without_its_store_shows_why_the_reminder_cannot_be_enrolled() -> None:
    script = Script(
        outcomes={"first_call": [ScriptedOutcome("connected")]},
        events=[ScriptedEvent(timedelta(days=2), "booked", {"appointment_at": "2026-12-04T10:00"})],
    )
    sim = simulate(plan("new_lead_callback"), CONTACT, local(2026, 12, 1, 9, 10), script)
    # A "booked" event need not carry the booking, so book_visit reads it with default('') and
    # renders; the reminder's intake then refuses the contact, naming the field, which is what
    # production records (effect_failed). The preview does not run the target SOP's intake.
    enrol = next(e for e in sim.timeline if e.action == "enroll")
    assert enrol.step == "book_visit" and enrol.detail["data"]["store_name"] == ""
    with pytest.raises(InvalidContactError, match="store_name"):
        enrolment_for(plan("store_visit_reminder"), {**CONTACT, **enrol.detail["data"]}, "k")


REMINDER_CONTACT = {
    "id": "c-2",
    "first_name": "Bo",
    "phone": "+12125550123",
    "appointment_at": "2026-12-03T15:00",
    "store_name": "Example Home Downtown",
    "store_address": "12 Market St",
    "store_note": "Bring a mask.",
}


def test_store_visit_reminder_day_before_two_hours_before_and_thank_you() -> None:
    script = Script(events=[ScriptedEvent(timedelta(days=2, hours=5, minutes=30), "visited")])
    sim = simulate(
        plan("store_visit_reminder"), REMINDER_CONTACT, local(2026, 12, 1, 10, 0), script
    )
    assert steps(sim, "sms", "end") == [
        ("Wed 02 10:00", "day_before_sms", "sms"),
        ("Thu 03 13:00", "two_hours_sms", "sms"),
        ("Thu 03 15:30", "thank_you", "sms"),
        ("Thu 03 15:30", "visited", "end"),
    ]
    text = next(
        e.detail["text"] for e in sim.timeline if e.step == "day_before_sms" and e.action == "sms"
    )
    assert "tomorrow at 15:00" in text and "12 Market St" in text and "Bring a mask." in text


def test_store_visit_booked_the_same_morning_skips_to_the_two_hour_reminder() -> None:
    sim = simulate(plan("store_visit_reminder"), REMINDER_CONTACT, local(2026, 12, 3, 9, 0))
    assert steps(sim, "sms", "wait_past", "end") == [
        ("Thu 03 09:00", "wait_day_before", "wait_past"),
        ("Thu 03 13:00", "two_hours_sms", "sms"),
        ("Thu 03 19:00", "missed_visit", "sms"),
        ("Thu 03 19:00", "no_show", "end"),
    ]


def test_store_visit_early_appointment_reminder_is_deferred_to_the_sms_window() -> None:
    contact = REMINDER_CONTACT | {"appointment_at": "2026-12-03T08:30"}
    sim = simulate(plan("store_visit_reminder"), contact, local(2026, 12, 1, 10, 0))
    deferred = next(e for e in sim.timeline if e.action == "deferred")
    assert deferred.step == "two_hours_sms" and "08:00-21:00" in deferred.detail["reason"]
    assert ("Thu 03 08:00", "two_hours_sms", "sms") in steps(sim, "sms")


def test_vip_six_touches_a_year_including_anniversary_and_birthday() -> None:
    contact = {
        "id": "v-1",
        "first_name": "Cy",
        "phone": "+12125550123",
        "tags": ["vip"],
        "birthday": "1985-05-20",
        "member_since": "2021-12-01",
    }
    sim = simulate(plan("vip_six_touches"), contact, local(2026, 12, 1, 10, 15))
    touches = [
        (e.at.astimezone(NY), e.step) for e in sim.timeline if e.action in ("sms", "whatsapp")
    ]
    assert [(t.strftime("%Y-%m-%d %H:%M"), step) for t, step in touches] == [
        ("2026-12-01 10:15", "anniversary"),
        ("2027-01-31 11:00", "designed_touch"),
        ("2027-04-02 11:00", "designed_touch"),
        ("2027-05-20 10:30", "birthday_gift"),
        ("2027-07-20 11:00", "designed_touch"),
        ("2027-09-19 11:00", "designed_touch"),
    ]
    gaps = [(b[0] - a[0]).days for a, b in itertools.pairwise(touches)]
    assert all(40 <= gap <= 62 for gap in gaps)
    texts = [
        e.detail["text"]
        for e in sim.timeline
        if e.step == "designed_touch" and e.action == "whatsapp"
    ]
    assert len(set(texts)) == 4  # a different designed moment each period
    assert sim.result == "completed"


def test_referral_ask_records_the_referrer_and_thanks_on_conversion() -> None:
    p = plan("referral_ask")
    contact = {"id": "r-1", "first_name": "Di", "phone": "+12125550123"}
    assert engine.entry_matches(p, "survey.completed", contact, {"score": 9})
    assert not engine.entry_matches(p, "survey.completed", contact, {"score": 8})
    assert engine.entry_matches(p, "order.created", contact, {"order_count": 2})
    assert not engine.entry_matches(p, "order.created", contact, {"order_count": 1})
    script = Script(
        events=[
            ScriptedEvent(timedelta(days=3), "referral.signed_up", {"referred_contact_id": "c-77"}),
            ScriptedEvent(timedelta(days=10), "referral.converted", {"referred_name": "Eve"}),
        ]
    )
    sim = simulate(p, contact, local(2026, 12, 1, 12, 0), script)
    ask = next(e for e in sim.timeline if e.step == "ask_sms")
    # The personal link is signed (with the preview's key here): sopflow/referrals.py
    link = ReferralLinks.sharing(PREVIEW_LINKS).url("r-1")
    assert f"Share your link {link} and" in ask.detail["text"]
    update = next(e for e in sim.timeline if e.action == "update")
    assert update.detail == {
        "target": "c-77",
        "set": {"referred_by": "r-1"},
        "add_tags": ["referred"],
    }
    thanks = next(e for e in sim.timeline if e.step == "thank_referrer" and e.action == "sms")
    assert "Eve just became a customer" in thanks.detail["text"]
    assert sim.result == "converted"


def test_referral_ask_uses_whatsapp_when_the_contact_opted_in() -> None:
    contact = {
        "id": "r-2",
        "first_name": "Fa",
        "phone": "+12125550123",
        "whatsapp_opt_in": True,
    }
    sim = simulate(plan("referral_ask"), contact, local(2026, 12, 1, 12, 0))
    assert [e.action for e in sim.timeline if e.action in ("sms", "whatsapp")] == ["whatsapp"]
    assert sim.result == "no_referral"


@pytest.mark.parametrize(
    "outcome, result",
    [("booked", "converted"), ("interested", "interested"), ("no_answer", "lost")],
)
def test_script_pilot_routes_each_outcome_and_records_the_variant(
    outcome: str, result: str
) -> None:
    p = plan("script_pilot")
    contact = {"id": "p-1", "first_name": "Gus", "phone": "+12125550123", "tags": ["pilot"]}
    sim = simulate(p, contact, local(2026, 12, 1, 10, 0), Script(default_outcome=outcome))
    variant = next(e.detail["variant"] for e in sim.timeline if e.action == "variant")
    assert variant in {"script_a", "script_b", "script_c"}
    assert any(e.step == f"call_{variant[-1]}" and e.action == "assign" for e in sim.timeline)
    assert sim.result == result


def test_script_pilot_splits_300_leads_evenly_and_deterministically() -> None:
    """The hash fallback (previews, runs without a store); tests/sop/test_split_arms.py has the
    balanced assignment runs get in production."""
    p = plan("script_pilot")
    step = p.step("pick_script")
    counts: dict[str, int] = {}
    for i in range(300):
        name = splits.split_variant(p, step, f"lead-{i}")  # type: ignore[arg-type]
        assert name == splits.split_variant(p, step, f"lead-{i}")  # type: ignore[arg-type]
        counts[name] = counts.get(name, 0) + 1
    assert set(counts) == {"script_a", "script_b", "script_c"}
    assert all(75 <= n <= 125 for n in counts.values()), counts


def test_a_contact_without_the_appointment_date_ends_invalid_contact_with_the_reason() -> None:
    contact = REMINDER_CONTACT | {"appointment_at": ""}
    sim = simulate(plan("store_visit_reminder"), contact, local(2026, 12, 1, 10, 0))
    error = next(e for e in sim.timeline if e.action == "error")
    assert "missing field 'appointment_at'" in error.detail["reason"]
    assert sim.result == "invalid_contact"


def test_a_report_that_comes_after_expiry_is_dropped_once_and_repeats_nothing() -> None:
    """Regression: a dropped late report used to replay the previous transition's commands."""
    late = Script(outcomes={"first_call": [ScriptedOutcome("connected", timedelta(hours=8))]})
    sim = simulate(plan("new_lead_callback"), CONTACT, datetime(2026, 12, 1, 15, tzinfo=NY), late)
    keys = [entry.key for entry in sim.timeline if entry.key]
    assert len(keys) == len(set(keys))
    assert [e.action for e in sim.timeline].count("outcome_dropped") == 1
    assert len(sim.commands) == len(keys)
