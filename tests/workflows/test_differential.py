"""Preview is production, proven by difference: hypothesis draws SOPs, contacts (regions, zones,
missing fields) and rep outcome scripts; each runs through the simulator and through the
production path on the time-skipping server (SopRun → activities → StoreEffects → SQL store →
the real `twilio` SDK → the sandbox network, and the SMTP mailer → the sandbox mail server, with
the law's rules table). The stored step events, the texts the sandbox received and the emails
the mail server took must be what the preview showed: same steps, same actions, same texts and
subjects, the same times within the dev server's timer floor (never early). The seed SOPs run
the same way with drawn contacts and scripts."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError
from temporalio.testing import TimeSkipper, TimeSkippingConfig, WorkflowEnvironment

from sopflow.asgi import free_port, start_server
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.rules import load_rules
from sopflow.enrolment import enrolment_for, start_enrolment
from sopflow.providers.smtp import SmtpConfig, SmtpMailer
from sopflow.providers.twilio import TwilioConfig, TwilioProvider
from sopflow.runtime import build_worker
from sopflow.sandbox.mail import MailSandbox
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Sandbox
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import RunState
from sopflow.sop.rep_view import SAMPLE_REP
from sopflow.sop.schema import Sop, TaskSpec, step_action
from sopflow.sop.simulator import Script, ScriptedEvent, ScriptedOutcome, Simulation, simulate
from sopflow.sop.validate import load_plan
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory
from workflows.contracts import ContactEventSignal, OutcomeRequest, SopRunResult

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sandbox-secret"
RULES = load_rules()
LINKS = UnsubscribeLinks("http://127.0.0.1:9", b"differential")  # both shells sign alike
# The rep production assigns is the simulator's sample rep, so texts naming the rep agree.
TEAMS = [
    {
        "id": team,
        "supervisor": SAMPLE_REP["id"],
        "reps": [{"id": SAMPLE_REP["id"], "name": SAMPLE_REP["name"],
                  "phone": SAMPLE_REP["phone"], "email": SAMPLE_REP["email"]}],
    }
    for team in ("inside_sales",)
]  # fmt: skip
PHONES = {
    "new_york": "+12125550123",
    "florida": "+13055550147",
    "california": "+14155550123",
    "china": "+8613800138000",
    "france": "+33612345678",
}
TIMER_FLOOR = timedelta(seconds=90)  # a dev-server timer plus activity latency, generously
SEEDS = {p.stem: load_plan(p) for p in sorted((ROOT / "sop_definitions").glob("*.yaml"))}


# ------------------------------------------------------------------ what hypothesis draws
@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    found = {}
    for channel in ("sms", "call", "email"):
        if draw(st.booleans()):
            start = draw(st.integers(7, 12))
            end = draw(st.integers(start + 2, 22))
            days = draw(st.sampled_from(["all", "business"]))
            found[channel] = {"hours": [f"{start:02d}:00-{end:02d}:00"], "days": days}
    return found


BODIES = [
    "thanks for your interest. Reply STOP to opt out.",
    "会员日：全场八折，欢迎到店。",
    "your order is ready for pickup at our downtown store; bring your receipt and this message, "
    "we are open every day and happy to help with returns and exchanges.",
]


@st.composite
def generated_sops(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(2, 5))
    ids = [f"s{i}" for i in range(count)]
    steps: list[dict[str, Any]] = []
    for i, step_id in enumerate(ids):
        later = [*ids[i + 1 :], "done"]
        kind = draw(
            st.sampled_from(["sms", "email", "task", "wait", "wait_for", "update", "branch"])
        )
        if kind in ("sms", "email"):
            body = "Hi {{ contact.first_name | default('there') }}, " + draw(
                st.sampled_from(BODIES)
            )
            steps.append({"id": step_id, "kind": kind, "body": body})
            if kind == "email":
                steps[-1]["subject"] = "News for {{ contact.first_name | default('you') }}"
                steps[-1]["on_failed"] = draw(st.sampled_from(later))
        elif kind == "task":
            step: dict[str, Any] = {
                "id": step_id, "kind": "task", "title": "Call the lead",
                "instructions": "Call {{ contact.first_name | default('the lead') }}",
                "due_within": f"{draw(st.integers(10, 180))}m",
                "outcomes": ["done", "no_answer"], "expires_after": "1h",
                "on_outcome": {"no_answer": draw(st.sampled_from(later))},
            }  # fmt: skip
            channel = draw(st.sampled_from(["call", None]))
            if channel:
                step["channel"] = channel
            if draw(st.booleans()):
                step["escalation"] = [{"after": "0m", "action": "remind"}]
            steps.append(step)
        elif kind == "wait":
            steps.append(
                {"id": step_id, "kind": "wait", "duration": f"{draw(st.integers(1, 48))}h"}
            )
        elif kind == "wait_for":
            steps.append({"id": step_id, "kind": "wait_for", "events": ["reply"],
                          "timeout": f"{draw(st.integers(1, 48))}h",
                          "on_event": {"reply": draw(st.sampled_from(later))}})  # fmt: skip
        elif kind == "update":
            steps.append({"id": step_id, "kind": "update", "set": {"stage": step_id},
                          "add_tags": [f"passed_{step_id}"]})  # fmt: skip
        else:
            steps.append({"id": step_id, "kind": "branch", "cases": [
                {"when": [{"field": "contact.first_name", "exists": True}],
                 "goto": draw(st.sampled_from(later))}]})  # fmt: skip
    steps.append({"id": "done", "kind": "end", "result": "done"})
    return {
        "id": f"gen_{uuid.uuid4().hex[:10]}",  # deployed once each: versions never clash
        "version": 1,
        "name": "Generated",
        "owner": "qa",
        "purpose": draw(st.sampled_from(["marketing", "service"])),
        "entry": {"events": ["lead.created"]},
        "policy": {
            "timezone": {"default": "America/New_York"},
            "windows": draw(windows()),
            "outside_window": draw(st.sampled_from(["defer", "skip"])),
        },
        "steps": steps,
    }


@st.composite
def contacts(draw: st.DrawFn) -> dict[str, Any]:
    contact: dict[str, Any] = {
        "id": f"c-{uuid.uuid4().hex[:12]}",  # a fresh contact: no history from other examples
        "phone": PHONES[draw(st.sampled_from(sorted(PHONES)))],
    }
    if draw(st.booleans()):
        contact["first_name"] = draw(st.sampled_from(["Ann", "Zoë", "李雷"]))
    if draw(st.booleans()):  # else an email step fails for want of an address, in both shells
        contact["email"] = f"{contact['id']}@Example.com"
    return contact


def scripts(plan: Plan) -> st.SearchStrategy[dict[str, list[ScriptedOutcome]]]:
    """Per rep step, what the rep reports on each assignment (in order), after how long. Odd
    seconds keep a report off the engine's minute-aligned timers."""
    steps = {
        s.id: list(action.outcomes)
        for s in plan.sop.steps
        if isinstance(action := step_action(s), TaskSpec)
    }
    delays = st.builds(lambda minutes: timedelta(minutes=minutes, seconds=17), st.integers(1, 240))
    outcome = lambda names: st.builds(  # noqa: E731
        lambda name, delay: ScriptedOutcome(name, delay),
        st.sampled_from([n for n in names if n not in _NEEDS_DATA.get(plan.sop.id, ())]),
        delays,
    )
    return st.fixed_dictionaries(
        {step: st.lists(outcome(names), max_size=3) for step, names in steps.items()}
    )


# When the contact replies, after the enrolment (odd seconds: off the engine's timers).
replies = st.lists(
    st.builds(lambda minutes: timedelta(minutes=minutes, seconds=31), st.integers(1, 72 * 60)),
    max_size=2,
)


# Outcomes whose report must carry data the script does not draw (a booking's store).
_NEEDS_DATA = {"new_lead_callback": ("booked",), "script_pilot": ("booked",)}


# ------------------------------------------------------------------ the production path
@dataclass
class Stack:
    store: Store
    sandbox: Sandbox
    mail: MailSandbox
    skipper: TimeSkipper
    task_queue: str


@pytest.fixture(scope="module")
async def stack(skipping_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    task_queue = f"diff-{uuid.uuid4()}"
    with tempfile.TemporaryDirectory() as folder:
        store = Store(connect(f"sqlite:///{Path(folder) / 'store.db'}"))
        store.migrate()
        for plan in SEEDS.values():
            store.deploy(plan)
        RepDirectory(store.engine).import_teams(TEAMS)
        port = free_port()
        sandbox = Sandbox({SANDBOX_ACCOUNT: TOKEN}, callbacks=False)
        server, task = await start_server(sandbox.app(), port)
        mail, smtp_port = MailSandbox(), free_port()
        smtp = await mail.serve("127.0.0.1", smtp_port)
        mailer = SmtpMailer(SmtpConfig("127.0.0.1", smtp_port, "news@acme.example", starttls=False))
        provider = TwilioProvider(
            TwilioConfig(
                SANDBOX_ACCOUNT,
                TOKEN,
                SANDBOX_FROM,
                "http://127.0.0.1:9",
                whatsapp_from=SANDBOX_FROM,
                base_url=f"http://127.0.0.1:{port}",
            )
        )
        config = skipping_env.client.config()
        skipper = TimeSkipper(
            Client(**{**config, "interceptors": []}), config=TimeSkippingConfig(enabled=False)
        )
        try:
            async with build_worker(
                skipping_env.client, store, task_queue, RULES, provider, mailer, LINKS
            ):
                yield Stack(store, sandbox, mail, skipper, task_queue)
        finally:
            await provider.close()
            smtp.close()
            server.should_exit = True
            await task


Handle = WorkflowHandle[Any, SopRunResult]


async def run_in_production(
    stack: Stack,
    plan: Plan,
    contact: dict[str, Any],
    outcomes: dict[str, list[ScriptedOutcome]],
    replies: list[timedelta],
) -> tuple[str, SopRunResult]:
    """Enrol the contact and play the rep: each task gets the script's next report `delay` after
    it was assigned; the run's clock is moved forward to each timer or report, never past one."""
    if plan.sop.id not in SEEDS:
        stack.store.deploy(plan)
    enrolment = enrolment_for(plan, contact, uuid.uuid4().hex[:8])
    stack.store.upsert_contact(enrolment.contact)
    await start_enrolment(stack.skipper.client, enrolment, "lead.created", {}, stack.task_queue)
    handle: Handle = stack.skipper.client.get_workflow_handle(
        enrolment.workflow_id, result_type=SopRunResult
    )
    queues = {step: list(queue) for step, queue in outcomes.items()}
    reports: list[tuple[datetime, str, ScriptedOutcome]] = []  # when, step, what
    enrolled: datetime | None = None
    pending_replies = sorted(replies)
    scheduled: set[str] = set()  # task keys whose report is planned
    for _ in range(2000):
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            break
        state = await handle.query("state", result_type=RunState)
        if state is None or state.pending is not None:  # an activity is out: real time, briefly
            await asyncio.sleep(0.05)
            continue
        now = _virtual_now(described.raw_description.workflow_extended_info)
        if state.phase == "awaiting_outcome" and state.step in queues:
            key = f"{state.step}:{state.visits[state.step]}:{state.attempt}"
            assigned = _assigned_at(stack.store, enrolment.workflow_id, key)
            if assigned is None:  # recorded a moment after the engine moved on
                await asyncio.sleep(0.05)
                continue
            if key not in scheduled and queues[state.step]:
                scripted = queues[state.step].pop(0)
                reports.append((assigned + (scripted.delay or timedelta(0)), state.step, scripted))
                scheduled.add(key)
        if enrolled is None:
            enrolled = state.enrolled_at
        if pending_replies and enrolled + pending_replies[0] <= now:  # the contact writes back
            pending_replies.pop(0)
            with contextlib.suppress(RPCError):  # a finished run takes no event (nor the preview)
                await handle.signal("contact_event", ContactEventSignal(name="reply"))
            continue
        reports.sort(key=lambda r: r[0])
        if reports and reports[0][0] <= now:  # due: sent whatever the run is doing, as the
            _, step, scripted = reports.pop(0)  # preview does (a late report is refused)
            request = OutcomeRequest(
                step=step, outcome=scripted.outcome, actor=SAMPLE_REP["id"],
                data=dict(scripted.data),
            )  # fmt: skip
            with contextlib.suppress(RPCError, WorkflowUpdateFailedError):
                await handle.execute_update("report_outcome", request)
            continue
        targets = [t for t, _, _ in reports] + [enrolled + r for r in pending_replies[:1]]
        if state.wake_at is not None and not state.paused:
            targets.append(state.wake_at)
        if not targets:
            await asyncio.sleep(0.05)
            continue
        # A fast-forward fires the timers it passes at its end: never go past the next one.
        gap = max(min(targets) - now, timedelta(0)) + timedelta(milliseconds=20)
        with contextlib.suppress(RPCError):  # the run may have completed since `describe`
            await stack.skipper.fast_forward(handle, gap)
    else:
        raise AssertionError("the production run did not finish")
    return enrolment.workflow_id, await handle.result()


def _virtual_now(info: Any) -> datetime:  # WorkflowExecutionExtendedInfo
    """The run's own clock: the server's virtual time once it has skipped, else the wall's."""
    if info.HasField("time_skipping_info") and info.time_skipping_info.HasField("current_time"):
        return info.time_skipping_info.current_time.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    return datetime.now(UTC)


def _assigned_at(store: Store, workflow_id: str, key: str) -> datetime | None:
    for event in store.step_events(workflow_id):
        if event.key == key and event.kind == "assign":
            return event.executed_at.replace(tzinfo=event.executed_at.tzinfo or UTC)
    return None


# ------------------------------------------------------------------ the comparison
async def assert_same(
    stack: Stack,
    plan: Plan,
    contact: dict[str, Any],
    outcomes: dict[str, list[ScriptedOutcome]],
    replies: list[timedelta] | None = None,
) -> None:
    replies = replies or []
    workflow_id, result = await run_in_production(stack, plan, contact, outcomes, replies)
    preview = simulate(
        plan,
        contact,
        result.state.enrolled_at,
        Script(
            outcomes={k: list(v) for k, v in outcomes.items()},
            events=[ScriptedEvent(offset, "reply") for offset in replies],
        ),
        zones=result.state.zones,
        rules=RULES,
        links=LINKS,
    )
    assert result.result == preview.result, _story(preview)
    await _until_recorded(stack.store, workflow_id, len(preview.timeline))
    stored = {
        e.key: (e.action, e.executed_at.replace(tzinfo=e.executed_at.tzinfo or UTC))
        for e in stack.store.step_events(workflow_id)
    }
    # A refused report is answered to the reporter (409/422), not stored; the preview lists it.
    shown = {e.key: (e.action, e.at) for e in preview.timeline if e.action != "outcome_dropped"}
    production = "\n".join(
        f"{e.executed_at:%m-%d %H:%M:%S} {e.step:12} {e.action:14} {e.key} {e.reason or ''}"
        for e in stack.store.step_events(workflow_id)
    )
    story = f"preview:\n{_story(preview)}\nproduction:\n{production}"
    assert {k: a for k, (a, _) in stored.items()} == {k: a for k, (a, _) in shown.items()}, story
    for key, (_, at) in shown.items():
        late = stored[key][1] - at
        assert timedelta(0) <= late <= TIMER_FLOOR, f"{key} late by {late}\n{story}"
    previewed = [e.detail["text"] for e in preview.timeline if e.action == "sms"]
    assert _received(stack, workflow_id, contact["phone"]) == previewed, _story(preview)
    emailed = [
        (e.detail["to"], e.detail["subject"], e.detail["text"])
        for e in preview.timeline
        if e.action == "email"
    ]
    assert _mailed(stack, workflow_id) == emailed, _story(preview)


def _received(stack: Stack, workflow_id: str, phone: str) -> list[str]:
    """The texts the contact's phone received from this run (each send names its message)."""
    ids = [e.provider_id for e in stack.store.step_events(workflow_id) if e.action == "sms"]
    messages = [stack.sandbox.resources[sid] for sid in ids if sid]
    assert all(m.to == phone for m in messages)
    return [m.body for m in messages]


def _mailed(stack: Stack, workflow_id: str) -> list[tuple[str, str, str]]:
    """The emails the mail server took from this run (each send names its Message-ID)."""
    ids = [e.provider_id for e in stack.store.step_events(workflow_id) if e.action == "email"]
    by_id = {m.view()["message_id"]: m.view() for m in stack.mail.inbox}
    views = [by_id[i] for i in ids if i]
    return [(v["to"][0], v["subject"], v["text"].removesuffix("\n")) for v in views]


async def _until_recorded(store: Store, workflow_id: str, count: int) -> None:
    for _ in range(100):  # the last records are written by activities just before completion
        if len(store.step_events(workflow_id)) >= count:
            return
        await asyncio.sleep(0.05)


def _story(sim: Simulation) -> str:
    return "\n".join(
        f"{e.at:%m-%d %H:%M:%S} {e.step:12} {e.action:14} {e.key}" for e in sim.timeline
    )


# ------------------------------------------------------------------ the tests
COMMON = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink would rerun whole runs
)


@pytest.mark.slow
@pytest.mark.timeout(600)
@COMMON
@given(data=st.data())
async def test_generated_sops_run_as_previewed(stack: Stack, data: st.DataObject) -> None:
    plan = compile_plan(Sop.model_validate(data.draw(generated_sops())))
    contact = data.draw(contacts())
    await assert_same(stack, plan, contact, data.draw(scripts(plan)), data.draw(replies))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(SEEDS))
@settings(COMMON, max_examples=3)
@given(data=st.data())
async def test_seed_sops_run_as_previewed(stack: Stack, name: str, data: st.DataObject) -> None:
    plan = SEEDS[name]
    contact = data.draw(contacts())
    contact |= {  # what each seed requires at intake
        "store_visit_reminder": {
            "appointment_at": (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT15:00"),
            "store_name": "Example Home Downtown",
            "store_address": "12 Market St",
        },
        "referral_ask": {"referral_code": "ANN42"},
        "script_pilot": {"tags": ["pilot"]},
        "vip_six_touches": {
            "tags": ["vip"],
            "member_since": "2021-12-01",
            "birthday": "1985-05-20",
        },
        "new_lead_callback": {},
        "lead_triage": {},  # a fresh contact is in no segment: both shells take the default
        "lead_nurture": {},
    }[name]
    await assert_same(stack, plan, contact, data.draw(scripts(plan)))
