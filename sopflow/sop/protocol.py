"""The engine's protocol: events in, commands out, and the run state carried between them.

Everything here is JSON-serialisable (pydantic), so a Temporal workflow can keep the state
in its history and the simulator can print it. Add fields; never remove or rename them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, assert_never, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from sopflow.sop.schema import AssignRule, Channel, MessageChannel, WhatsAppTemplate


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- events (shell -> engine)
class Tick(_Model):
    """The shell's timer fired (at or after state.wake_at)."""

    type: Literal["tick"] = "tick"
    at: AwareDatetime


class ActionResult(_Model):
    """What became of a send / call / assign command, matched by its key."""

    type: Literal["action_result"] = "action_result"
    at: AwareDatetime
    key: str
    status: Literal["done", "blocked", "failed"]
    reason: str = ""
    retry_at: AwareDatetime | None = Field(None, description="blocked: the next allowed moment")
    due_at: AwareDatetime | None = Field(
        None, description="assign: the due time the gate counted in the law's windows too"
    )
    detail: dict[str, Any] = Field(default_factory=dict)


# Who acts when no person does: the engine itself (expiry, a skipped or failed touch) and the
# carrier (an automated call's result). The API refuses them as a reporter's name.
SystemActor = Literal["sopflow", "carrier"]
SYSTEM_ACTORS: frozenset[str] = frozenset(get_args(SystemActor))
ENGINE: SystemActor = "sopflow"
CARRIER: SystemActor = "carrier"
# Contact events every deployment understands, whatever its SOPs name.
BuiltinEvent = Literal["opted_out", "opted_in", "reply"]
BUILTIN_EVENTS: frozenset[str] = frozenset(get_args(BuiltinEvent))


class OutcomeReported(_Model):
    """A rep (task) or the carrier (call) reports how a step went."""

    type: Literal["outcome"] = "outcome"
    at: AwareDatetime
    step: str
    outcome: str
    actor: str = ""
    note: str = ""
    data: dict[str, Any] = Field(default_factory=dict, description="merged into the contact")


class ContactEvent(_Model):
    """Something the contact did or that happened to them: reply, booked, visited, opted_out…"""

    type: Literal["contact_event"] = "contact_event"
    at: AwareDatetime
    name: str
    data: dict[str, Any] = Field(default_factory=dict, description="merged into the contact")


class Control(_Model):
    """A supervisor pauses, resumes or cancels a run; who and why are recorded."""

    type: Literal["control"] = "control"
    at: AwareDatetime
    action: Literal["pause", "resume", "cancel"]
    actor: str = Field(min_length=1)
    reason: str = ""


class ProviderEvent(_Model):
    """What the carrier said later about a send or call (delivered, undelivered, failed, read…),
    matched by the command's key. Recorded for the audit; outcomes still come as OutcomeReported."""

    type: Literal["provider_event"] = "provider_event"
    at: AwareDatetime
    key: str
    status: str = Field(min_length=1, max_length=40)
    detail: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    Tick | ActionResult | OutcomeReported | ContactEvent | Control | ProviderEvent,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- commands (engine -> shell)
class _Command(_Model):
    at: AwareDatetime = Field(description="when the engine issued it")
    step: str
    key: str = Field(description="idempotency key, unique within the run")


class SendMessage(_Command):
    kind: Literal["send"] = "send"
    channel: MessageChannel
    body: str = Field(description="Jinja2 template; the shell renders it with `context`")
    planned_at: AwareDatetime
    context: dict[str, Any]
    template: WhatsAppTemplate | None = None  # whatsapp, outside the 24-hour session
    subject: str | None = Field(None, description="email: the subject line's template")


class PlaceCall(_Command):
    kind: Literal["call"] = "call"
    script: str
    machine_detection: bool
    planned_at: AwareDatetime
    context: dict[str, Any]


class AssignTask(_Command):
    kind: Literal["assign"] = "assign"
    title: str
    instructions: str
    assign: AssignRule
    due_at: AwareDatetime
    planned_at: AwareDatetime
    attempt: int
    context: dict[str, Any]
    channel: Channel | None = Field(None, description="the window the rep works in, e.g. call")
    due_within: timedelta | None = Field(
        None, description="the SLA as written; due_at counts it in allowed time only"
    )


class Escalate(_Command):
    kind: Literal["escalate"] = "escalate"
    action: Literal["remind", "notify_supervisor", "reassign"]
    level: int
    to: AssignRule | None
    due_at: AwareDatetime


class EnrollContact(_Command):
    kind: Literal["enroll"] = "enroll"
    sop: str
    data: dict[str, str] = Field(description="templates rendered with `context`")
    context: dict[str, Any]


class UpdateContact(_Command):
    kind: Literal["update"] = "update"
    target: str
    set: dict[str, str]
    add_tags: list[str]
    context: dict[str, Any]


class CheckSegments(_Command):
    """Is the contact in these segments (at `at`)? Membership is SQL, so the shell answers: the
    workflow through an activity, the simulator from the memberships it was given. The answer is
    an ActionResult whose detail["segments"] maps each id to true/false (segment_routing.py)."""

    kind: Literal["segments"] = "segments"
    contact_id: str
    segments: list[str] = Field(min_length=1)


# Everything the engine writes down besides commands with side effects. Closed: the scorer, the
# store and the CLI read these names, so a new one is added here and handled there.
RecordAction = Literal[
    "enrolled",
    "deferred",  # a touch waits for its window or a rule (until)
    "skipped",  # a touch outside its window under outside_window: skip
    "blocked",  # the gate refused a touch for good (opt-out, list, consent)
    "failed",  # a touch the provider refused or that could not be rendered
    "effect_failed",  # a rep notice, escalation, enrolment or update that could not be done
    "ignored",
    "outcome",
    "overdue",
    "expired",
    "timeout",
    "branch",
    "variant",
    "wait_past",
    "slot_missed",
    "slot_shifted",
    "ladder_exhausted",
    "interrupt",
    "event",
    "paused",
    "resumed",
    "cancelled",
    "error",
    "provider_status",
]


class Record(_Command):
    """Something to write down that needs no side effect: deferral, outcome, branch, timeout…"""

    kind: Literal["record"] = "record"
    action: RecordAction
    detail: dict[str, Any] = Field(default_factory=dict)


class Finish(_Command):
    kind: Literal["finish"] = "finish"
    result: str


Command = Annotated[
    SendMessage
    | PlaceCall
    | AssignTask
    | Escalate
    | EnrollContact
    | UpdateContact
    | CheckSegments
    | Record
    | Finish,
    Field(discriminator="kind"),
]


def awaits_result(command: Command) -> bool:
    """The result contract: a send, call or task holds the run until its ActionResult arrives
    (the engine routes done / blocked / failed), and so does a segment check (its answers). Any
    other effect (escalation, enrolment, contact
    update) does not hold the run; a shell reports it only when it failed, and the engine records
    that as `effect_failed`. Records and the finish are bookkeeping with no result at all."""
    match command:
        case SendMessage() | PlaceCall() | AssignTask() | CheckSegments():
            return True
        case Escalate() | EnrollContact() | UpdateContact() | Record() | Finish():
            return False
        case _:
            assert_never(command)


def is_bookkeeping(command: Command) -> bool:
    """Records and the finish: written down, never performed."""
    return isinstance(command, Record | Finish)


def touch_channel(command: Command) -> Channel | None:
    """The channel through which a command reaches the contact; None: not a touch. A rep task
    with a channel is a touch too (the rep will call or text the lead)."""
    match command:
        case SendMessage():
            return command.channel
        case PlaceCall():
            return "call"
        case AssignTask():
            return command.channel
        case Escalate() | EnrollContact() | UpdateContact() | CheckSegments() | Record() | Finish():
            return None
        case _:
            assert_never(command)


Phase = Literal[
    "deferred",  # a touch waits for its window (wake_at)
    "waiting",  # a wait step or a ladder slot (wake_at)
    "awaiting_result",  # a send / call / assign is out; needs an ActionResult for `pending`
    "awaiting_outcome",  # a task or call waits for an outcome; wake_at = next escalation/timeout
    "awaiting_event",  # wait_for: one of awaiting_events, or the timeout at wake_at
    "finished",
]


class RunState(BaseModel):
    """Everything the engine knows about one run. The engine copies it; callers never mutate it."""

    model_config = ConfigDict(extra="forbid")

    sop: str
    version: int
    digest: str
    contact: dict[str, Any]
    zones: list[str]
    enrolled_at: AwareDatetime
    now: AwareDatetime
    step: str | None = None
    phase: Phase = "waiting"
    wake_at: AwareDatetime | None = None
    awaiting_events: list[str] = Field(default_factory=list)
    pending: str | None = Field(None, description="key of the command whose result is awaited")
    visits: dict[str, int] = Field(default_factory=dict)
    step_started: dict[str, AwareDatetime] = Field(default_factory=dict)
    planned_at: AwareDatetime | None = None
    attempt: int = 0
    attempts_made: int = Field(
        0, description="ladder: attempts whose touch went out (`attempt` is the slot index)"
    )
    followup: int | None = Field(None, description="ladder: index of the follow-up being sent")
    slots: list[AwareDatetime] = Field(default_factory=list)
    due_at: AwareDatetime | None = None
    overdue_recorded: bool = False
    escalation_level: int = 0
    last_outcome: str | None = None
    last_event: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, str] = Field(default_factory=dict)
    assigned_variants: dict[str, str] = Field(
        default_factory=dict,
        description="split step -> arm assigned at enrolment (balanced); `variants` is what was taken",
    )
    result: str | None = None
    transitions: int = 0
    paused: bool = Field(False, description="a paused run acts on no timer until resumed")

    @property
    def finished(self) -> bool:
        return self.phase == "finished"


class Transition(BaseModel):
    """What one engine call returns: the new state and the commands to carry out, in order."""

    model_config = ConfigDict(frozen=True)

    state: RunState
    commands: list[Command]


def utc(value: datetime) -> datetime:
    """Reject naive datetimes early: the engine only works with aware instants."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the engine needs a time zone")
    return value
