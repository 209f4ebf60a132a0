"""The touch gate: opt-out and contact windows re-checked at the moment of sending."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from temporalio.testing import ActivityEnvironment

from activities.sop_activities import MemoryEffects, SopActivities
from sopflow.compliance.gate import ContactFacts, TouchRequest, Verdict, check_touch
from sopflow.compliance.rules import load_rules
from sopflow.sop.protocol import AssignTask, Command, SendMessage
from sopflow.sop.schema import AssignRule, ContactPolicy
from workflows.contracts import CommandInput

NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")
POLICY = ContactPolicy.model_validate(
    {"windows": {"sms": {"hours": ["09:00-20:00"]}, "call": {"hours": ["10:00-18:00"]}}}
)
EVENING = datetime(2026, 12, 1, 20, 30, tzinfo=NY)  # a Tuesday, after the SMS window in New York
NYC = ["America/New_York"]


def gate(
    channel: str,
    at: datetime,
    zones: list[str],
    policy: ContactPolicy | None,
    opted: datetime | None,
) -> Verdict:
    """The SOP-window-and-opt-out part of the gate (no legal rules)."""
    request = TouchRequest(channel=channel, at=at, zones=zones, regions=[], sop="t", policy=policy)
    return check_touch(request, ContactFacts(opted_out={"all": opted} if opted else {}))


def test_inside_the_window_is_allowed() -> None:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    assert gate("sms", at, ["America/New_York"], POLICY, None).allowed


def test_after_hours_is_blocked_until_the_next_opening() -> None:
    verdict = gate("sms", EVENING, ["America/New_York"], POLICY, None)
    assert not verdict.allowed and verdict.rule == "window"
    assert verdict.retry_at == datetime(2026, 12, 2, 9, 0, tzinfo=NY)
    assert "outside the sms window 09:00-20:00" in verdict.reason and "New_York" in verdict.reason


def test_a_number_spanning_zones_waits_for_all_of_them() -> None:
    at = datetime(2026, 12, 1, 10, 30, tzinfo=NY)  # 07:30 in Los Angeles
    verdict = gate("sms", at, ["America/New_York", "America/Los_Angeles"], POLICY, None)
    assert verdict.retry_at == datetime(2026, 12, 1, 9, 0, tzinfo=LA)
    assert "Los_Angeles" in verdict.reason


def test_opt_out_blocks_every_channel_for_good() -> None:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    opted = datetime(2026, 11, 30, tzinfo=UTC)
    for channel in ("sms", "whatsapp", "call"):
        verdict = gate(channel, at, ["America/New_York"], POLICY, opted)
        assert (verdict.allowed, verdict.rule, verdict.retry_at) == (False, "opt_out", None)
        assert opted.isoformat() in verdict.reason


def test_channels_without_a_window_and_unknown_zones_are_not_blocked() -> None:
    assert gate("whatsapp", EVENING, ["America/New_York"], POLICY, None).allowed
    assert gate("sms", EVENING, [], POLICY, None).allowed
    assert gate("sms", EVENING, ["America/New_York"], None, None).allowed


def _params(command: Command, workflow_id: str) -> CommandInput:
    return CommandInput(
        workflow_id=workflow_id,
        run_id="r",
        sop="t",
        version=1,
        command=command,
        contact_id="c-1",
        zones=["America/New_York"],
        policy=POLICY,
    )


def _sms(at: datetime) -> CommandInput:
    command = SendMessage(
        at=at,
        step="hi",
        key="hi:1:0",
        channel="sms",
        body="Hi {{ contact.first_name }}",
        planned_at=at,
        context={"contact": {"id": "c-1", "first_name": "Ann", "phone": "+12125550123"}},
    )
    return _params(command, "sop:t:c-1:k")


def _env(scheduled: datetime) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, current_attempt_scheduled_time=scheduled)
    return env


async def test_a_touch_that_runs_late_is_blocked_not_sent() -> None:
    """Issued inside the window, the attempt runs after 20:00 (a retry, a backlog): not sent."""
    effects = MemoryEffects()
    issued = datetime(2026, 12, 1, 19, 59, tzinfo=NY)
    late = issued + timedelta(minutes=31)
    result = await _env(late).run(SopActivities(effects).perform, _sms(issued))
    assert result.status == "blocked" and result.detail == {"rule": "window"}
    assert result.retry_at == datetime(2026, 12, 2, 9, 0, tzinfo=NY)
    assert effects.performed == {}


async def test_an_opt_out_after_planning_blocks_the_send() -> None:
    effects = MemoryEffects()
    at = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    effects.opted_out["c-1"] = at - timedelta(minutes=1)
    result = await _env(at).run(SopActivities(effects).perform, _sms(at))
    assert (result.status, result.detail, result.retry_at) == ("blocked", {"rule": "opt_out"}, None)
    assert effects.performed == {}


async def test_inside_the_window_the_touch_is_performed() -> None:
    effects = MemoryEffects()
    at = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    result = await _env(at).run(SopActivities(effects).perform, _sms(at))
    assert result.status == "done"
    assert effects.performed["sop:t:c-1:k/hi:1:0"][1] == {"text": "Hi Ann", "to": "+12125550123"}


def _task(channel: str | None) -> CommandInput:
    task = AssignTask(
        at=EVENING,
        step="call_lead",
        key="call_lead:1:1",
        title="Call",
        instructions="Call {{ contact.first_name }}",
        assign=AssignRule(strategy="owner"),
        due_at=EVENING + timedelta(minutes=30),
        planned_at=EVENING,
        attempt=1,
        context={"contact": {"id": "c-1", "first_name": "Ann"}},
        channel=channel,
    )
    return _params(task, "w")


async def test_a_rep_task_to_call_the_lead_is_gated_like_a_call() -> None:
    effects = MemoryEffects()
    late = await _env(EVENING).run(SopActivities(effects).perform, _task("call"))
    assert late.status == "blocked" and late.retry_at == datetime(2026, 12, 2, 10, 0, tzinfo=NY)
    effects.opted_out["c-1"] = EVENING
    noon = datetime(2026, 12, 2, 12, 0, tzinfo=NY)
    opted = await _env(noon).run(SopActivities(effects).perform, _task("call"))
    assert opted.status == "blocked" and opted.detail == {"rule": "opt_out"}
    assert effects.performed == {}


async def test_an_internal_task_without_a_channel_is_not_gated() -> None:
    effects = MemoryEffects()
    result = await _env(EVENING).run(SopActivities(effects).perform, _task(None))
    assert result.status == "done" and len(effects.performed) == 1


def _sms_to(phone: str, at: datetime, n: int, zones: list[str]) -> CommandInput:
    command = SendMessage(
        at=at,
        step="promo",
        key=f"promo:{n}:0",
        channel="sms",
        body="Hi {{ contact.first_name }}",
        planned_at=at,
        context={"contact": {"id": "c-1", "first_name": "Ann", "phone": phone}},
    )
    params = _params(command, f"sop:t:c-1:{n}")
    params.zones = zones
    return params


async def test_legal_rules_apply_in_the_activity_footer_and_cap() -> None:
    rules = load_rules()
    effects = MemoryEffects()
    shanghai = datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    china = _sms_to("+8613812345678", shanghai, 0, ["Asia/Shanghai"])
    china.policy = None
    result = await _env(shanghai).run(SopActivities(effects, rules).perform, china)
    assert result.status == "done"
    assert effects.performed[china.idempotency_key][1] == {
        "text": "Hi Ann 回T退订",
        "to": "+8613812345678",
    }
    # Florida: three texts on this subject in 24 hours, then the fourth waits for a free slot.
    effects = MemoryEffects()  # (the text to China would count: same contact, same subject)
    miami = "+13055550123"
    noon = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    for n in (1, 2, 3):
        sent = await _env(noon + timedelta(hours=n)).run(
            SopActivities(effects, rules).perform, _sms_to(miami, noon + timedelta(hours=n), n, NYC)
        )
        assert sent.status == "done", sent
    fourth = noon + timedelta(hours=4)
    blocked = await _env(fourth).run(
        SopActivities(effects, rules).perform, _sms_to(miami, fourth, 4, NYC)
    )
    assert blocked.status == "blocked" and blocked.detail == {
        "rule": "us_fl_telephone_solicitation"
    }
    assert blocked.retry_at == noon + timedelta(hours=25)  # 13:00 tomorrow, inside the window
