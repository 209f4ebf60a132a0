"""Ladder slots that are already past (`missed_slot`), and follow-ups that follow the attempts made.

The case from the field: a lead at 19:50 on a Friday reaches the callback ladder after its
day-1 slots (12:00, 17:00) have passed. Under `skip` it lost those attempts and, since the SMS
hung on slot 2, the SMS too; `shift` (the default) keeps all five attempts.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sopflow.sop import engine
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import ActionResult, OutcomeReported, SendMessage, Tick
from sopflow.sop.schema import Sop
from sopflow.sop.simulator import Script, ScriptedOutcome, Simulation, simulate
from sopflow.sop.validate import load_plan

ROOT = Path(__file__).resolve().parents[2]
NY = ZoneInfo("America/New_York")
CONTACT = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "lead_source": "web"}
FRIDAY_1950 = datetime(2026, 12, 4, 19, 50, tzinfo=NY)
NOBODY_ANSWERS = Script(default_outcome="no_answer")  # each report 5 minutes after the task


def callback(**ladder: Any) -> Plan:
    """The seed callback SOP, with these fields set on its ladder."""
    plan = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    if not ladder:
        return plan
    data = plan.sop.model_dump(mode="json", by_alias=True)
    for step in data["steps"]:
        if step["kind"] == "ladder":
            step.update(ladder)
    return compile_plan(Sop.model_validate(data))


def deployed_callback() -> Plan:
    """The callback plan a run started before this change carries in its workflow input."""
    history = json.loads((ROOT / "tests" / "replay" / "new_lead_callback.json").read_text())
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = base64.b64decode(started["input"]["payloads"][0]["data"])
    return Plan.model_validate(json.loads(payload)["plan"])


def local(at: datetime) -> str:
    return at.astimezone(NY).strftime("%a %d %H:%M")


def ladder(sim: Simulation, *actions: str) -> list[tuple[str, str]]:
    """(local time, action) of the ladder's timeline entries with these actions."""
    return [
        (local(e.at), e.action)
        for e in sim.timeline
        if e.step == "retry_calls" and e.action in actions
    ]


def assigned(sim: Simulation) -> list[tuple[str, str, int]]:
    """(local time it went out, local time it was planned for, attempt) of each ladder task."""
    rows = []
    for e in sim.timeline:
        if e.step == "retry_calls" and e.action == "assign":
            planned = (
                datetime.fromisoformat(e.detail["planned_at"]) if "planned_at" in e.detail else e.at
            )
            rows.append((local(e.at), local(planned), e.detail["attempt"]))
    return rows


SKIPPING_WINDOW = {"windows": {"call": {"hours": ["09:00-20:00"]}}, "outside_window": "skip"}
TUESDAY_0700 = datetime(2026, 12, 1, 7, 0, tzinfo=NY)


def _ladder_sop(policy: dict[str, Any] | None = None, **ladder: Any) -> Plan:
    """A task, then a ladder of call tasks with an SMS after the first attempt (made)."""
    step = {
        "id": "retry_calls",
        "kind": "ladder",
        "attempt": {
            "kind": "task",
            "title": "Call",
            "channel": "call",
            "due_within": "1h",
            "outcomes": ["connected", "no_answer"],
        },
        "slots": [{"day": 1, "at": "08:00"}, {"day": 1, "at": "10:00"}, {"day": 1, "at": "12:00"}],
        "stop_on": ["connected"],
        "followups": [{"after_attempt": 1, "kind": "sms", "body": "Hi {{ contact.first_name }}"}],
        **ladder,
    }
    first = {"id": "first_call", "kind": "task", "title": "Call", "due_within": "1h",
             "outcomes": ["no_answer"]}  # fmt: skip
    sop = {"id": "t", "version": 1, "name": "T", "owner": "qa", "entry": {"events": ["x"]},
           "policy": policy or {"windows": {"call": {"hours": ["09:00-20:00"]}}},
           "steps": [first, step]}  # fmt: skip
    return compile_plan(Sop.model_validate(sop))


# ---------------------------------------------------------------- shift (the default)
def test_the_friday_1950_lead_keeps_all_five_attempts_and_its_sms() -> None:
    sim = simulate(callback(), CONTACT, FRIDAY_1950, NOBODY_ANSWERS)
    assert callback().step("retry_calls").missed_slot == "shift"  # the default
    shifted = [e for e in sim.timeline if e.action == "slot_shifted"]
    assert len(shifted) == 1 and shifted[0].detail == {
        "attempt": 1,
        "slot": "2026-12-04T17:00:00+00:00",  # Fri 12:00
        "to": "2026-12-05T17:00:00+00:00",  # Sat 12:00: every slot one day later
        "days": 1,
        "reason": "the slot passed before the ladder reached it",
    }
    assert assigned(sim) == [
        ("Sat 05 12:00", "Sat 05 12:00", 1),
        ("Sat 05 17:00", "Sat 05 17:00", 2),
        # Day 2 is now a Sunday, not a business day for calls: the window defers it, once.
        ("Mon 07 09:00", "Sun 06 18:00", 3),
        ("Mon 07 11:00", "Mon 07 11:00", 4),
        ("Mon 07 16:00", "Mon 07 16:00", 5),
    ]
    assert ladder(sim, "deferred", "sms", "slot_missed") == [
        ("Sat 05 17:05", "sms"),  # after the second attempt made
        ("Sun 06 18:00", "deferred"),
    ]
    assert sim.result == "no_contact"
    keys = [e.key for e in sim.timeline]
    assert len(keys) == len(set(keys))


def test_a_shift_lands_on_a_day_the_call_window_allows_so_nothing_defers_it_again() -> None:
    # Saturday night: Sunday is closed for calls, so the ladder starts Monday at 12:00 (days=2),
    # at its listed times, instead of Sunday 12:00 deferred to Monday 09:00.
    saturday = simulate(callback(), CONTACT, FRIDAY_1950 + timedelta(days=1), NOBODY_ANSWERS)
    assert [e.detail["days"] for e in saturday.timeline if e.action == "slot_shifted"] == [2]
    assert [(at, n) for at, _, n in assigned(saturday)] == [
        ("Mon 07 12:00", 1),
        ("Mon 07 17:00", 2),
        ("Tue 08 18:00", 3),
        ("Wed 09 11:00", 4),
        ("Wed 09 16:00", 5),
    ]
    assert not ladder(saturday, "deferred")
    # Christmas Eve 2026 (a Thursday): Christmas Day is a public holiday, so Saturday 12:00.
    eve = simulate(callback(), CONTACT, datetime(2026, 12, 24, 19, 50, tzinfo=NY), NOBODY_ANSWERS)
    assert [e.detail["days"] for e in eve.timeline if e.action == "slot_shifted"] == [2]
    assert assigned(eve)[0] == ("Sat 26 12:00", "Sat 26 12:00", 1)


def test_a_slot_a_late_deferral_made_past_is_shifted_once_with_the_ones_after_it() -> None:
    # No rep reports on the ladder: each task expires 2h after it is due. The Sunday attempt,
    # deferred to Monday 09:00, expires at 12:00, after Monday's 11:00 slot: slots 4 and 5 move
    # to Tuesday, once; the deferred attempt itself is not moved again.
    silent_ladder = Script(outcomes={"first_call": [ScriptedOutcome("no_answer")]})
    sim = simulate(callback(), CONTACT, FRIDAY_1950, silent_ladder)
    shifted = [e.detail for e in sim.timeline if e.action == "slot_shifted"]
    assert [(d["attempt"], d["days"]) for d in shifted] == [(1, 1), (4, 1)]
    assert [local(datetime.fromisoformat(d["to"])) for d in shifted] == [
        "Sat 05 12:00",
        "Tue 08 11:00",
    ]
    assert assigned(sim) == [
        ("Sat 05 12:00", "Sat 05 12:00", 1),
        ("Sat 05 17:00", "Sat 05 17:00", 2),
        ("Mon 07 09:00", "Sun 06 18:00", 3),
        ("Tue 08 11:00", "Tue 08 11:00", 4),
        ("Tue 08 16:00", "Tue 08 16:00", 5),
    ]
    assert ladder(sim, "sms", "deferred") == [("Sat 05 20:00", "sms"), ("Sun 06 18:00", "deferred")]


@pytest.mark.parametrize(
    ("start", "offsets"),
    [
        # Spring forward on Sunday 8 March 2026 at 02:00: EST (-5) before, EDT (-4) after.
        (datetime(2026, 3, 6, 20, 0, tzinfo=NY), [-5, -4, -4, -4]),
        # Fall back on Sunday 1 November 2026 at 02:00: EDT before, EST after.
        (datetime(2026, 10, 30, 20, 0, tzinfo=NY), [-4, -5, -5, -5]),
    ],
    ids=["spring_forward", "fall_back"],
)
def test_shifted_slots_keep_their_local_times_across_a_dst_change(
    start: datetime, offsets: list[int]
) -> None:
    slots = [
        {"day": 1, "at": "12:00"},
        {"day": 2, "at": "09:30"},
        {"day": 3, "at": "18:00"},
        {"day": 4, "at": "11:00"},
    ]
    # A Friday 20:00 start: Friday's 12:00 has passed, so every slot moves one day, and the
    # clocks change between the first shifted slot (Saturday) and the second (Sunday).
    sim = simulate(_ladder_sop(slots=slots), CONTACT, start, NOBODY_ANSWERS)
    assert [e.detail["days"] for e in sim.timeline if e.action == "slot_shifted"] == [1]
    went_out = [e.at.astimezone(NY) for e in sim.timeline if e.step == "retry_calls"
                and e.action == "assign"]  # fmt: skip
    assert [f"{t:%a %H:%M}" for t in went_out] == [
        "Sat 12:00",
        "Sun 09:30",
        "Mon 18:00",
        "Tue 11:00",
    ]
    assert [t.utcoffset() for t in went_out] == [timedelta(hours=h) for h in offsets]


def test_a_slot_due_exactly_now_is_not_past() -> None:
    # The first task's report lands at 10:00 sharp, the time of the ladder's first slot.
    plan = _ladder_sop(slots=[{"day": 1, "at": "10:00"}, {"day": 1, "at": "12:00"}])
    sim = simulate(plan, CONTACT, datetime(2026, 12, 1, 9, 55, tzinfo=NY), NOBODY_ANSWERS)
    assert ladder(sim, "slot_shifted", "slot_missed") == []
    assert [at for at, _, _ in assigned(sim)] == ["Tue 01 10:00", "Tue 01 12:00"]


# ---------------------------------------------------------------- skip and run_now
def test_skip_still_loses_the_past_slots_but_the_sms_follows_the_second_attempt_made() -> None:
    sim = simulate(callback(missed_slot="skip"), CONTACT, FRIDAY_1950, NOBODY_ANSWERS)
    assert [(e.detail["attempt"], local(datetime.fromisoformat(e.detail["slot"])))
            for e in sim.timeline if e.action == "slot_missed"] == [
        (1, "Fri 04 12:00"), (2, "Fri 04 17:00"), (5, "Sun 06 16:00")
    ]  # fmt: skip
    assert [(at, n) for at, _, n in assigned(sim)] == [("Sat 05 18:00", 3), ("Mon 07 09:00", 4)]
    # Attempts 3 and 4 are the first two made: the SMS comes after attempt 4, not never.
    assert ladder(sim, "sms") == [("Mon 07 09:05", "sms")]
    assert not [e for e in sim.timeline if e.action == "slot_shifted"]


def test_run_now_runs_a_past_slot_at_once() -> None:
    sim = simulate(callback(missed_slot="run_now"), CONTACT, FRIDAY_1950, NOBODY_ANSWERS)
    assert assigned(sim)[:2] == [
        ("Fri 04 19:55", "Fri 04 12:00", 1),
        ("Sat 05 09:00", "Fri 04 17:00", 2),  # 20:00: the call window had closed
    ]
    assert len(assigned(sim)) == 5
    assert ladder(sim, "sms") == [("Sat 05 09:05", "sms")]
    assert not [e for e in sim.timeline if e.action in ("slot_missed", "slot_shifted")]


# ---------------------------------------------------------------- follow-ups count attempts made
@pytest.mark.parametrize(
    ("count", "sms_at"), [("attempts_made", "Tue 01 10:05"), ("slots", "Tue 01 08:00")]
)
def test_a_touch_the_window_skips_is_not_an_attempt_made(count: str, sms_at: str) -> None:
    # 08:00 is outside the 09:00-20:00 call window and the policy skips: no call was made.
    # `followups_count: slots` (plans compiled before) still sends after slot 1, made or not.
    plan = _ladder_sop(SKIPPING_WINDOW, followups_count=count)
    sim = simulate(plan, CONTACT, TUESDAY_0700, NOBODY_ANSWERS)
    assert ladder(sim, "skipped") == [("Tue 01 08:00", "skipped")]
    assert [at for at, _, _ in assigned(sim)] == ["Tue 01 10:00", "Tue 01 12:00"]
    assert ladder(sim, "sms") == [(sms_at, "sms")]


def test_a_past_slot_run_now_and_skipped_by_the_window_is_not_counted_as_made() -> None:
    # The ladder starts at 08:05, after its 08:00 slot; run_now tries it at once and the window
    # skips it. The run was still in the first task's phase: that must not pass for this touch.
    late = Script(
        outcomes={"first_call": [ScriptedOutcome("no_answer", timedelta(minutes=65))]},
        default_outcome="no_answer",
    )
    sim = simulate(_ladder_sop(SKIPPING_WINDOW, missed_slot="run_now"), CONTACT, TUESDAY_0700, late)
    assert ladder(sim, "skipped") == [("Tue 01 08:05", "skipped")]
    assert ladder(sim, "sms") == [("Tue 01 10:05", "sms")]


def test_blocked_and_failed_touches_are_not_attempts_made() -> None:
    plan = _ladder_sop(slots=[{"day": 1, "at": f"{hour}:00"} for hour in (10, 11, 12, 13)])
    at = datetime(2026, 12, 1, 9, 30, tzinfo=NY)
    state = engine.start(plan, CONTACT, ["America/New_York"], at).state
    sends = []
    for status, made in (("done", 0), ("blocked", 0), ("failed", 0), ("done", 1), ("done", 2)):
        if state.wake_at is not None:  # the ladder waits for its next slot
            at = state.wake_at
            state = engine.handle(plan, state, Tick(at=at)).state
        assert state.pending is not None
        t = engine.handle(plan, state, ActionResult(at=at, key=state.pending, status=status))
        if status == "done":
            outcome = OutcomeReported(at=at, step=t.state.step or "", outcome="no_answer")
            t = engine.handle(plan, t.state, outcome)
        sends += [c for c in t.commands if isinstance(c, SendMessage)]
        if sends and t.state.pending == sends[-1].key:  # the follow-up goes out
            t = engine.handle(plan, t.state, ActionResult(at=at, key=sends[-1].key, status="done"))
        state = t.state
        if state.step == "retry_calls":
            assert state.attempts_made == made, status
    # Attempt 3 was the first made (1 and 2 were blocked and failed): the SMS followed it.
    assert [(s.step, s.key) for s in sends] == [("retry_calls", "retry_calls:1:3:f0")]
    assert state.result == "completed"


# ---------------------------------------------------------------- plans deployed before
def test_a_plan_deployed_before_keeps_its_digest_and_skips_as_it_did() -> None:
    old = deployed_callback()
    step = old.step("retry_calls")
    # Its JSON spells out missed_slot: skip, and it predates followups_count: it counts slots.
    assert (step.missed_slot, step.followups_count) == ("skip", "slots")
    deployed = "sha256:95bed39b5eb31388d8c741f2b1170dabba5ca21457cd6fd10f4accf4bfe8bf22"
    assert compile_plan(old.sop).digest == old.digest == deployed
    # So a run in flight replays the same commands: the late lead still loses two slots and,
    # the SMS hanging on slot 2, gets none (what new plans fix).
    sim = simulate(old, CONTACT, FRIDAY_1950, NOBODY_ANSWERS)
    assert [e.detail["attempt"] for e in sim.timeline if e.action == "slot_missed"] == [1, 2, 5]
    assert not ladder(sim, "sms", "slot_shifted")


def test_the_same_sop_relying_on_the_defaults_compiles_to_a_new_digest() -> None:
    old = deployed_callback()
    data = old.sop.model_dump(mode="json", by_alias=True)
    ladder_step = next(s for s in data["steps"] if s["kind"] == "ladder")
    explicit_skip = {**ladder_step, "followups_count": "attempts_made"}
    defaults = {k: v for k, v in ladder_step.items() if k not in ("missed_slot", "followups_count")}
    digests = set()
    for variant in (explicit_skip, defaults):
        data["steps"] = [variant if s["kind"] == "ladder" else s for s in data["steps"]]
        digests.add(compile_plan(Sop.model_validate(data)).digest)
    assert len(digests) == 2 and old.digest not in digests  # each meaning its own digest


def test_followups_count_is_left_out_of_the_digest_of_a_ladder_without_followups() -> None:
    counts = {
        _ladder_sop(followups=[], followups_count=count).digest
        for count in ("attempts_made", "slots")
    }
    assert len(counts) == 1


def test_a_new_plan_round_trips_through_its_json_unchanged() -> None:
    plan = callback()
    again = Plan.model_validate(json.loads(plan.model_dump_json()))
    assert again == plan and again.step("retry_calls").followups_count == "attempts_made"
