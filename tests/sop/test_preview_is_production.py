"""The preview runs what production runs: the gate and the law's rules, the footers, task due
times inside the windows, one `rep` for every template, failures routed the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sopflow.compliance.gate import ContactFacts
from sopflow.compliance.rules import load_rules
from sopflow.errors import SopflowError
from sopflow.sop import clock
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.rep_view import REP_FIELDS, SAMPLE_REP, UNASSIGNED_REP
from sopflow.sop.schema import Sop
from sopflow.sop.simulator import Script, ScriptedOutcome, simulate
from sopflow.sop.templates import KNOWN_FIELDS, render, template_problems
from sopflow.sop.validate import load_plan
from sopflow.store.reps import RepInfo

ROOT = Path(__file__).resolve().parents[2]
NEW_YORK, MIAMI = ZoneInfo("America/New_York"), ZoneInfo("America/New_York")
RULES = load_rules()


def sop_plan(steps: list[dict[str, Any]], **extra: Any) -> Plan:
    raw = {
        "id": "probe",
        "version": 1,
        "name": "Probe",
        "owner": "qa",
        "entry": {"events": ["lead.created"]},
        "steps": steps,
        **extra,
    }
    return compile_plan(Sop.model_validate(raw))


# ------------------------------------------------------------------ one rep view
def test_every_rep_the_templates_can_see_has_the_same_fields() -> None:
    stored = RepInfo("ana", "Ana Lima", None, "inside_sales", email="ana@example.com")
    views = [stored.template_view(), dict(UNASSIGNED_REP), dict(SAMPLE_REP)]
    assert KNOWN_FIELDS["rep"] == REP_FIELDS
    assert all(view.keys() == REP_FIELDS for view in views)
    source = " ".join(f"{{{{ rep.{name} }}}}" for name in sorted(REP_FIELDS))
    assert template_problems(source, set()) == []
    for view in views:  # validates, so renders for whoever holds the task (or nobody)
        render(source, {"rep": view})
    assert stored.template_view()["email"] == "ana@example.com"
    assert stored.template_view()["team"] == "inside_sales"
    assert UNASSIGNED_REP["phone"] == ""


# ------------------------------------------------------------------ the law in the preview
CALLBACK = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
FLORIDA_LEAD = {"id": "fl-1", "first_name": "Flo", "phone": "+13055550123", "lead_source": "web"}


def test_a_florida_lead_is_previewed_under_florida_law() -> None:
    start = datetime(2026, 12, 4, 19, 50, tzinfo=MIAMI)  # a Friday, 10 minutes before 20:00
    sim = simulate(CALLBACK, FLORIDA_LEAD, start, Script(default_outcome="no_answer"), rules=RULES)
    touches = [e for e in sim.timeline if e.action in ("assign", "sms", "call")]
    assert touches
    for entry in touches:  # nothing reaches the lead at or after 20:00 local, or before 08:00
        local = entry.at.astimezone(MIAMI)
        assert 8 <= local.hour < 20, entry
    for first in touches:  # at most 3 touches on the subject in any 24 hours
        window = [t for t in touches if first.at <= t.at < first.at + timedelta(hours=24)]
        assert len(window) <= 3, [(t.at.isoformat(), t.action) for t in window]
    deferrals = [e for e in sim.timeline if e.action == "deferred" and e.detail.get("by")]
    assert any(d.detail["rule"] == "us_fl_telephone_solicitation" for d in deferrals)
    without_law = simulate(CALLBACK, FLORIDA_LEAD, start, Script(default_outcome="no_answer"))
    assert [e.at for e in without_law.timeline] != [e.at for e in sim.timeline]


def test_the_first_call_task_of_a_florida_lead_at_1950_is_due_the_next_morning() -> None:
    start = datetime(2026, 12, 3, 19, 50, tzinfo=MIAMI)  # a Thursday
    sim = simulate(CALLBACK, FLORIDA_LEAD, start, rules=RULES)
    task = next(e for e in sim.timeline if e.action == "assign")
    assert task.at == start.astimezone(UTC)
    # 10 minutes of the 30-minute SLA before 20:00, 20 after the SOP's 09:00 the next day.
    due = datetime(2026, 12, 4, 9, 20, tzinfo=MIAMI)
    assert datetime.fromisoformat(task.detail["due_at"]) == due
    overdue = next(e for e in sim.timeline if e.action == "overdue")
    assert overdue.at == due


def test_the_law_closes_a_task_window_the_sop_leaves_open() -> None:
    plan = sop_plan(
        [
            {"id": "call", "kind": "task", "title": "Call", "channel": "call",
             "due_within": "30m", "outcomes": ["done"]},
            {"id": "end", "kind": "end", "result": "done"},
        ],
        policy={"windows": {"call": {"hours": ["08:00-21:00"]}},
                "timezone": {"default": "America/New_York"}},
    )  # fmt: skip
    start = datetime(2026, 12, 3, 19, 50, tzinfo=MIAMI)
    lawful = simulate(plan, FLORIDA_LEAD, start, rules=RULES)
    task = next(e for e in lawful.timeline if e.action == "assign")
    # Florida: 08:00-20:00, so 10 minutes tonight and 20 from 08:00 tomorrow.
    assert datetime.fromisoformat(task.detail["due_at"]) == datetime(
        2026, 12, 4, 8, 20, tzinfo=MIAMI
    )
    # The engine took the gate's due time: the task falls overdue then, not at 20:20.
    overdue = next(e for e in lawful.timeline if e.action == "overdue")
    assert overdue.at == datetime(2026, 12, 4, 8, 20, tzinfo=MIAMI)
    new_york = simulate(plan, {**FLORIDA_LEAD, "phone": "+12125550123"}, start, rules=RULES)
    task = next(e for e in new_york.timeline if e.action == "assign")
    assert datetime.fromisoformat(task.detail["due_at"]) == datetime(
        2026, 12, 3, 20, 20, tzinfo=NEW_YORK
    )  # US federal law allows until 21:00, as does the SOP


def test_a_task_near_closing_time_is_due_when_the_window_reopens() -> None:
    plan = sop_plan(
        [
            {"id": "call", "kind": "task", "title": "Call", "channel": "call",
             "due_within": "15m", "outcomes": ["done"]},
            {"id": "end", "kind": "end", "result": "done"},
        ],
        policy={"windows": {"call": {"hours": ["09:00-18:00"], "days": "business"}},
                "timezone": {"default": "America/New_York"}},
    )  # fmt: skip
    start = datetime(
        2026, 12, 4, 17, 55, tzinfo=NEW_YORK
    )  # Friday: the next business day is Monday
    sim = simulate(plan, {"id": "c"}, start)
    task = next(e for e in sim.timeline if e.action == "assign")
    assert datetime.fromisoformat(task.detail["due_at"]) == datetime(
        2026, 12, 7, 9, 10, tzinfo=NEW_YORK
    )


def test_window_time_stops_outside_every_window_and_zone() -> None:
    day = clock.Calendar(frozenset(range(7)))
    nine_to_six = compile_plan(
        Sop.model_validate(
            {"id": "w", "version": 1, "name": "W", "owner": "qa",
             "entry": {"events": ["e"]},
             "policy": {"windows": {"call": {"hours": ["09:00-13:00", "13:00-18:00"]}}},
             "steps": [{"id": "end", "kind": "end", "result": "x"}]}
        )
    ).sop.policy.windows["call"]  # fmt: skip
    start = datetime(2026, 12, 1, 12, 50, tzinfo=NEW_YORK)
    # Touching ranges are one stretch; a 5h SLA from 12:50 ends at 17:50 the same day.
    due = clock.add_window_time(
        start, timedelta(hours=5), ["America/New_York"], [(nine_to_six, day)]
    )
    assert due == datetime(2026, 12, 1, 17, 50, tzinfo=NEW_YORK)
    # Two zones: the window must be open in both (New York closes at 18:00, Los Angeles opens
    # at 09:00 = 12:00 New York), so only 12:00-18:00 New York time counts.
    zones = ["America/New_York", "America/Los_Angeles"]
    start = datetime(2026, 12, 1, 17, 0, tzinfo=NEW_YORK)
    due = clock.add_window_time(start, timedelta(hours=2), zones, [(nine_to_six, day)])
    assert due == datetime(2026, 12, 2, 13, 0, tzinfo=NEW_YORK)
    assert clock.add_window_time(start, timedelta(hours=2), zones, []) == start + timedelta(hours=2)


def test_the_china_footer_shows_in_the_preview() -> None:
    plan = sop_plan([{"id": "hello", "kind": "sms", "body": "会员日：全场八折，欢迎到店。"}])
    contact = {"id": "cn-1", "phone": "+8613800138000"}
    start = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    sim = simulate(plan, contact, start, rules=RULES)
    sms = next(e for e in sim.timeline if e.action == "sms")
    assert sms.detail["text"].endswith("回T退订")
    without_rules = simulate(plan, contact, start)
    sms = next(e for e in without_rules.timeline if e.action == "sms")
    assert not sms.detail["text"].endswith("回T退订")


def test_consent_and_opt_outs_given_to_the_preview_block_as_in_production() -> None:
    plan = sop_plan([{"id": "hello", "kind": "sms", "body": "Hello"},
                     {"id": "bye", "kind": "end", "result": "sent"}])  # fmt: skip
    start = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    contact = {"id": "c", "phone": "+12125550123"}
    everywhere = ContactFacts(opted_out={"all": start - timedelta(days=1)})
    sim = simulate(plan, contact, start, facts=everywhere)
    assert [e.action for e in sim.timeline if e.action in ("sms", "blocked")] == ["blocked"]
    assert sim.result == "opted_out"  # out of every channel: the run ends
    texts_only = ContactFacts(opted_out={"sms": start - timedelta(days=1)})
    sim = simulate(plan, contact, start, facts=texts_only)
    blocked = [e for e in sim.timeline if e.action in ("sms", "blocked")]
    assert [(e.action, e.detail["rule"]) for e in blocked] == [("blocked", "opt_out_channel")]
    assert sim.result == "sent"  # out of texts only: the touch fails over, the run goes on


# ------------------------------------------------------------------ failures, both shells alike
def test_an_update_that_cannot_render_is_recorded_and_the_run_goes_on() -> None:
    plan = sop_plan(
        [
            {"id": "mark", "kind": "update", "target": "{{ event.friend_id }}",
             "set": {"referred_by": "{{ contact.id }}"}},
            {"id": "hello", "kind": "sms", "body": "Hello"},
            {"id": "bye", "kind": "end", "result": "sent"},
        ]
    )  # fmt: skip
    sim = simulate(
        plan, {"id": "c", "phone": "+12125550123"}, datetime(2026, 12, 1, 15, tzinfo=UTC)
    )
    failed = next(e for e in sim.timeline if e.action == "effect_failed")
    assert failed.step == "mark" and "friend_id" in failed.detail["reason"]
    assert [e.action for e in sim.timeline if e.action == "sms"] == ["sms"]
    assert sim.result == "sent"


def test_a_message_that_cannot_render_fails_the_touch_and_takes_its_failure_path() -> None:
    plan = sop_plan(
        [
            {"id": "hello", "kind": "sms", "body": "{{ event.code }}", "on_failed": "broken"},
            {"id": "bye", "kind": "end", "result": "sent"},
            {"id": "broken", "kind": "end", "result": "not_sent"},
        ]
    )  # fmt: skip
    sim = simulate(
        plan, {"id": "c", "phone": "+12125550123"}, datetime(2026, 12, 1, 15, tzinfo=UTC)
    )
    assert sim.result == "not_sent"
    failed = next(e for e in sim.timeline if e.action == "failed")
    assert "template failed to render" in failed.detail["reason"]


# ------------------------------------------------------------------ scripted outcomes
def test_outcomes_production_would_refuse_are_refused_before_the_preview_runs() -> None:
    contact = {"id": "c", "phone": "+12125550123", "first_name": "Ann", "lead_source": "web"}
    start = datetime(2026, 12, 1, 15, tzinfo=UTC)
    for outcomes, message in [
        ({"first_call": [ScriptedOutcome("booked")]}, "'first_call' needs appointment_at"),
        ({"first_call": [ScriptedOutcome("maybe")]}, "'maybe' is not allowed for step"),
        ({"follow_up": [ScriptedOutcome("connected")]}, "wait_for step: it takes no outcome"),
        ({"nowhere": [ScriptedOutcome("connected")]}, "unknown step 'nowhere'"),
    ]:
        with pytest.raises(SopflowError, match=message):
            simulate(CALLBACK, contact, start, Script(outcomes=outcomes))


def test_outcomes_the_run_cannot_take_when_they_come_are_reported() -> None:
    contact = {"id": "c", "phone": "+12125550123", "first_name": "Ann", "lead_source": "web"}
    script = Script(
        outcomes={
            # after the task expired (due 30m + 2h): the engine's reason, as the API would say
            "first_call": [ScriptedOutcome("connected", timedelta(hours=5))],
            "retry_calls": [ScriptedOutcome("busy")] * 9,  # more than the ladder's attempts
        }
    )
    sim = simulate(CALLBACK, contact, datetime(2026, 12, 1, 15, tzinfo=UTC), script)
    dropped = next(e for e in sim.timeline if e.action == "outcome_dropped")
    assert "is not waiting for an outcome" in dropped.detail["reason"]
    assert any(d.startswith("first_call=connected") for d in sim.dropped), sim.dropped
    assert any("retry_calls=busy: never used" in d for d in sim.dropped), sim.dropped


@pytest.mark.parametrize("start_hour", [9, 19])
def test_the_preview_never_places_a_task_due_outside_its_window(start_hour: int) -> None:
    start = datetime(2026, 12, 2, start_hour, 50, tzinfo=NEW_YORK)
    sim = simulate(CALLBACK, FLORIDA_LEAD, start, Script(default_outcome="no_answer"), rules=RULES)
    for entry in sim.timeline:
        if entry.action == "assign":
            due = datetime.fromisoformat(entry.detail["due_at"]).astimezone(MIAMI)
            assert (8, 0) <= (due.hour, due.minute) <= (20, 0), entry
