"""The SOP file format (pydantic v2). One model per YAML mapping; unknown keys are errors.

The compiled plan embeds this model, validated and cross-checked (see compiler.py), so the
JSON Schema printed by `sopflow sop schema` is exactly what the engine reads.
"""

from __future__ import annotations

from datetime import time, timedelta
from functools import cache
from typing import Annotated, Any, Literal, get_args
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StringConstraints,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from sopflow.cohorts.cron import parse_cron
from sopflow.sop.values import ClockTime, Duration, format_clock, parse_clock

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
EventType = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=100)
]
Template = Annotated[str, StringConstraints(max_length=4000)]
Channel = Literal["sms", "whatsapp", "call", "email"]
MessageChannel = Literal["sms", "whatsapp", "email"]  # the channels a message step sends on
CHANNELS: tuple[Channel, ...] = get_args(Channel)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Scalar = str | int | float | bool

# Fields every contact has; an SOP declares any others it uses under `contact_fields`.
STANDARD_CONTACT_FIELDS = frozenset(
    {
        "id",
        "first_name",
        "last_name",
        "phone",
        "email",
        "timezone",
        "country",
        "language",
        "tags",
        "owner",
    }
)
MAX_CONTACT_ID = 64  # the store's contacts.id column: longer ids are refused at the door
# Outcomes the engine itself produces, whatever the SOP lists.
ENGINE_OUTCOMES = frozenset({"expired", "skipped", "failed"})


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_zone(name: str) -> str:
    if name not in _zone_names():
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris")
    return name


def _parse_range(value: Any) -> tuple[time, time]:
    if isinstance(value, tuple):
        return value
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError(f"invalid time range {value!r}: write HH:MM-HH:MM, e.g. 09:00-20:00")
    start, end = (parse_clock(part) for part in value.split("-"))
    if start >= end:
        raise ValueError(
            f"empty time range {value!r}: the end must be after the start "
            "(split an overnight window into two ranges)"
        )
    return start, end


ZoneName = Annotated[str, AfterValidator(_check_zone)]
TimeRange = Annotated[
    tuple[time, time],
    BeforeValidator(_parse_range),
    PlainSerializer(lambda r: f"{format_clock(r[0])}-{format_clock(r[1])}", return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}-\d{1,2}:\d{2}$"}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- policy and contacts
class WindowSpec(Strict):
    """When a channel may be used, in the contact's local time."""

    hours: list[TimeRange] = Field(min_length=1, description="e.g. [09:00-13:00, 14:00-20:00]")
    days: Literal["all", "business"] = Field(
        "all", description="business: only business days that are not public holidays"
    )


_SOURCES: tuple[Literal["contact", "phone"], ...] = ("contact", "phone")


class TimezonePolicy(Strict):
    sources: list[Literal["contact", "phone"]] = Field(
        default_factory=lambda: list(_SOURCES),
        description="where the contact's zone comes from, in order: the contact record, the phone number",
    )
    default: ZoneName = Field("UTC", description="used when no source gives a zone")


class HolidayCalendar(Strict):
    country: str = Field(
        description="ISO 3166 code known to the `holidays` package, e.g. US, FR, CN"
    )
    subdivision: str | None = Field(None, description="state/region code, e.g. CA")


class ContactPolicy(Strict):
    timezone: TimezonePolicy = Field(default_factory=TimezonePolicy)
    business_days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]))
    holidays: HolidayCalendar | None = None
    windows: dict[Channel, WindowSpec] = Field(default_factory=dict)
    outside_window: Literal["defer", "skip"] = Field(
        "defer", description="defer: run at the next allowed moment; skip: record and move on"
    )


class ContactField(Strict):
    type: Literal["string", "number", "boolean", "date", "datetime", "url"] = "string"
    required: bool = False
    description: str = ""
    example: Scalar | None = Field(None, description="used by the simulator when not given")


# ---------------------------------------------------------------- conditions
class Condition(Strict):
    """A test on one value, `any` of several groups of tests, or a segment membership.

    `field` is contact.<name>, event.<name>, event.type, outcome, variant or visits.<step id>.
    `within_days: N` holds when the next yearly occurrence of a date (a birthday) is in N days.
    `segment: ID` / `not_segment: ID` stand alone: membership is SQL, so the shell asks the store
    (sopflow/sop/segment_routing.py) and the engine reads the answer from the scope.
    """

    field: str | None = None
    any: list[list[Condition]] | None = Field(
        None, description="holds if all tests of one group hold"
    )
    equals: Scalar | None = None
    not_equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    contains: Scalar | None = None
    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None
    exists: bool | None = None
    within_days: int | None = Field(None, ge=0, le=366)
    segment: Identifier | None = Field(
        None, description="holds when the contact is in this segment (segments/<id>.yaml)"
    )
    not_segment: Identifier | None = Field(
        None, description="holds when the contact is not in this segment"
    )

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        named = [name for name in SEGMENT_KEYS if getattr(self, name) is not None]
        if named:
            if len(named) > 1:
                raise ValueError(
                    "use either `segment` or `not_segment` in one condition "
                    "(list two conditions to test two segments)"
                )
            if self.any is not None or self.field is not None or self.operator_names():
                raise ValueError(
                    f"a `{named[0]}` condition stands alone: no field, operator or `any` beside "
                    "it (write the other test as another condition of the list)"
                )
            return self
        if self.any is not None:
            if self.field is not None or self.operator_names():
                raise ValueError("a condition with `any` has no field or operator of its own")
            return self
        if self.field is None:
            raise ValueError("a condition needs `field` (or `any`, `segment`, `not_segment`)")
        used = self.operator_names()
        if len(used) != 1:
            names = ", ".join("in" if n == "in_" else n for n in OPERATORS)
            raise ValueError(f"a condition needs exactly one operator ({names}); got {len(used)}")
        return self

    def operator_names(self) -> list[str]:
        return [name for name in OPERATORS if getattr(self, name) is not None]

    @property
    def operator(self) -> str:
        return self.operator_names()[0]

    @model_serializer(mode="wrap")
    def _no_segment_no_key(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Plans compiled before segment conditions existed keep their digest (and version).
        data: dict[str, Any] = handler(self)
        for name in SEGMENT_KEYS:
            if data.get(name, "") is None:
                del data[name]
        return data


SEGMENT_KEYS = ("segment", "not_segment")
OPERATORS = (
    "equals",
    "not_equals",
    "in_",
    "not_in",
    "contains",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "within_days",
)


def _check_cron(text: str) -> str:
    parse_cron(text)  # CronError (a ValueError) says what is wrong
    return text


class _Cohort(Strict):
    segment: Identifier | None = Field(
        None, description="only the members of this segment (segments/<id>.yaml) at that time"
    )
    max_per_second: int = Field(
        100, ge=1, le=1000, description="enrolments started per second at most (the pace)"
    )


class CronSchedule(_Cohort):
    """A calendar: the cohort is enrolled at each time the cron expression names, in `timezone`."""

    cron: Annotated[str, AfterValidator(_check_cron)] = Field(
        description="minute hour day-of-month month day-of-week, e.g. '0 10 * * MON'"
    )
    timezone: ZoneName = Field(description="the zone the cron's times are read in")


class ContactDateSchedule(_Cohort):
    """A date of each contact (a membership start, a birthday), at a time of day in each
    contact's own zone (the policy's timezone sources, as the run reads it)."""

    contact_date: Identifier = Field(description="a contact field of type date or datetime")
    annual: bool = Field(False, description="every year on its anniversary (29 Feb: 28 Feb)")
    at: ClockTime = Field(description="local time in each contact's zone, e.g. 10:00")

    @model_validator(mode="before")
    @classmethod
    def _no_zone(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timezone" in data:
            raise ValueError(
                "a contact date is read in each contact's own zone (policy.timezone); "
                "`timezone` is for cron schedules"
            )
        return data


def _schedule_kind(value: Any) -> str | None:
    """The rule a mapping is by the key it names (callable: one key decides, not a `kind`)."""
    if isinstance(value, dict):
        named = [key for key in ("cron", "contact_date") if key in value]
        tags = {"cron": "CronSchedule", "contact_date": "ContactDateSchedule"}
        return tags[named[0]] if len(named) == 1 else None
    return type(value).__name__ if isinstance(value, _Cohort) else None


# Tags are the class names: the loader skips them in error locations (a key name would not be).
ScheduleRule = Annotated[
    Annotated[CronSchedule, Tag("CronSchedule")]
    | Annotated[ContactDateSchedule, Tag("ContactDateSchedule")],
    Discriminator(
        _schedule_kind,
        custom_error_type="schedule_kind",
        custom_error_message="a schedule names either `cron` (with `timezone`) or "
        "`contact_date` (with `at`)",
    ),
]


class Entry(Strict):
    events: list[EventType] = Field(default_factory=list, description="events that enrol a contact")
    schedule: ScheduleRule | None = Field(
        None, description="enrol a cohort on a calendar or on a date of each contact"
    )
    conditions: list[Condition] = Field(default_factory=list, description="all must hold")

    @model_validator(mode="after")
    def _a_trigger(self) -> Entry:
        if not self.events and self.schedule is None:
            raise ValueError("an entry needs `events`, a `schedule`, or both")
        return self

    @model_serializer(mode="wrap")
    def _no_schedule_no_key(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Plans compiled before schedules existed keep their digest (and their version).
        data: dict[str, Any] = handler(self)
        if self.schedule is None:
            data.pop("schedule", None)
        return data


# ---------------------------------------------------------------- time expressions
class Moment(Strict):
    """A point in time: anchor (+ offset), then optionally a day number and a local clock time.

    anchor: enrolment | now | step:<id> (when that step last started) | contact.<date field>.
    day: 1 is the anchor's local date. business_day: N is the Nth business day after it.
    """

    anchor: str = "enrolment"
    offset: Duration = timedelta(0)
    day: int | None = Field(None, ge=1, le=366)
    business_day: int | None = Field(None, ge=1, le=60)
    at: ClockTime | None = None
    annual: bool = Field(
        False, description="anchor is a yearly date (birthday): use its next occurrence from now"
    )

    @model_validator(mode="after")
    def _day_or_business_day(self) -> Moment:
        if self.day is not None and self.business_day is not None:
            raise ValueError("use either day or business_day, not both")
        return self


# ---------------------------------------------------------------- steps
class Scoring(Strict):
    """Hints for adherence scoring: computed later from the plan and the step record alone."""

    required: bool = True
    tolerance: Duration = Field(timedelta(0), description="lateness still on time")
    weight: float = Field(1.0, ge=0)


class StepBase(Strict):
    id: Identifier
    name: str = ""
    next: Identifier | None = Field(None, description="default: the step listed after this one")
    score: Scoring = Field(default_factory=Scoring)


class AssignRule(Strict):
    strategy: Literal["owner", "round_robin", "least_loaded", "rep"] = "owner"
    team: str | None = None
    rep: str | None = None

    @model_validator(mode="after")
    def _needs_target(self) -> AssignRule:
        if self.strategy == "rep" and not self.rep:
            raise ValueError("strategy 'rep' needs `rep`")
        if self.strategy in ("round_robin", "least_loaded") and not self.team:
            raise ValueError(f"strategy {self.strategy!r} needs `team`")
        return self


class Escalation(Strict):
    after: Duration = Field(description="time after the task's due time")
    action: Literal["remind", "notify_supervisor", "reassign"]
    to: AssignRule | None = Field(None, description="reassign: who gets the task")


class TaskSpec(Strict):
    """A human step for a rep."""

    title: str = Field(min_length=1)
    instructions: Template = ""
    channel: Channel | None = Field(None, description="the window the rep must work in, e.g. call")
    due_within: Duration
    assign: AssignRule = Field(default_factory=AssignRule)
    outcomes: list[Identifier] = Field(min_length=1)
    escalation: list[Escalation] = Field(default_factory=list)
    expires_after: Duration | None = Field(
        None, description="after the due time, give up with outcome 'expired'"
    )
    outcome_fields: dict[Identifier, list[Identifier]] = Field(
        default_factory=dict,
        description="contact fields a report of that outcome must carry, e.g. booked: [appointment_at]",
    )


class CallSpec(Strict):
    """An automated voice call."""

    script: Template = Field(min_length=1)
    outcomes: list[Identifier] = Field(
        default_factory=lambda: ["connected", "no_answer", "busy", "voicemail", "failed"]
    )
    result_timeout: Duration = Field(
        timedelta(minutes=10), description="no call result by then: outcome 'expired'"
    )
    machine_detection: bool = True


class WhatsAppTemplate(Strict):
    """An approved WhatsApp template (Twilio Content API): WhatsApp only lets a business write
    freely within 24 hours of the person's last message; outside that window it must be this."""

    content_sid: str = Field(pattern=r"^HX[0-9a-fA-F]{32}$", description="Twilio Content SID")
    variables: dict[str, Template] = Field(
        default_factory=dict, description='placeholders, e.g. {"1": "{{ contact.first_name }}"}'
    )


class _Message(Strict):
    kind: MessageChannel
    body: Template = Field(min_length=1)
    subject: Template | None = Field(None, max_length=998, description="email: the subject line")
    template: WhatsAppTemplate | None = Field(
        None, description="whatsapp: sent instead of the body when the 24-hour session is closed"
    )

    @model_validator(mode="after")
    def _channel_fields(self) -> _Message:
        if self.template is not None and self.kind != "whatsapp":
            raise ValueError("`template` is for whatsapp messages only")
        if self.kind == "email" and not self.subject:
            raise ValueError("an email needs a `subject`")
        if self.kind != "email" and self.subject is not None:
            raise ValueError("`subject` is for email messages only")
        return self


class MessageStep(StepBase, _Message):
    on_failed: Identifier | None = Field(
        None, description="where to go if the send fails or is skipped"
    )


class CallStep(StepBase, CallSpec):
    kind: Literal["call"]
    on_outcome: dict[Identifier, Identifier] = Field(default_factory=dict)


class TaskStep(StepBase, TaskSpec):
    kind: Literal["task"]
    on_outcome: dict[Identifier, Identifier] = Field(default_factory=dict)


class LadderTask(TaskSpec):
    kind: Literal["task"]


class LadderCall(CallSpec):
    kind: Literal["call"]


class Slot(Strict):
    day: int = Field(ge=1, le=366, description="1 is the day the ladder starts")
    at: ClockTime


class FollowUp(_Message):
    after_attempt: int = Field(
        ge=1,
        description="sent after the Nth attempt actually made ends without a stop outcome "
        "(attempts skipped, blocked or failed do not count; see the ladder's followups_count)",
    )


class LadderStep(StepBase):
    """Retry attempts at listed local slots until an outcome in stop_on."""

    kind: Literal["ladder"]
    attempt: Annotated[LadderTask | LadderCall, Field(discriminator="kind")]
    slots: list[Slot] = Field(min_length=1, max_length=50)
    anchor: Literal["step_start", "enrolment"] = "step_start"
    stop_on: list[Identifier] = Field(min_length=1)
    on_outcome: dict[Identifier, Identifier] = Field(default_factory=dict)
    followups: list[FollowUp] = Field(default_factory=list)
    followups_count: Literal["attempts_made", "slots"] = Field(
        "attempts_made",
        description="what a follow-up's after_attempt counts: attempts actually made, or slots "
        "reached, made or not (how plans compiled before counted; kept so their runs replay)",
    )
    # `shift` became the default after plans were deployed with `skip`: those plans carry
    # `missed_slot` in their JSON, so they keep `skip`; the same YAML now compiles to a new digest.
    missed_slot: Literal["shift", "skip", "run_now"] = Field(
        "shift",
        description="a slot already past when the ladder reaches it: shift (it and every later "
        "slot move by whole days, to the next day its local time is ahead and inside the "
        "attempt's window), skip (recorded slot_missed; the attempt is lost) or run_now",
    )
    on_exhausted: Identifier | None = Field(None, description="default: next")


class WaitStep(StepBase):
    kind: Literal["wait"]
    duration: Duration | None = None
    until: Moment | None = None
    on_past: Identifier | None = Field(
        None, description="where to go when `until` is already past (default: continue now)"
    )

    @model_validator(mode="after")
    def _one_of(self) -> WaitStep:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a wait needs exactly one of duration or until")
        return self


class WaitForStep(StepBase):
    kind: Literal["wait_for"]
    events: list[EventType] = Field(min_length=1)
    timeout: Duration | None = None
    until: Moment | None = None
    on_event: dict[EventType, Identifier] = Field(default_factory=dict)
    on_timeout: Identifier | None = Field(None, description="default: next")

    @model_validator(mode="after")
    def _deadline(self) -> WaitForStep:
        if (self.timeout is None) == (self.until is None):
            raise ValueError(
                "wait_for needs exactly one of timeout or until (no run waits forever)"
            )
        return self


class BranchCase(Strict):
    when: list[Condition] = Field(min_length=1, description="all must hold")
    goto: Identifier


class BranchStep(StepBase):
    kind: Literal["branch"]
    cases: list[BranchCase] = Field(min_length=1)
    default: Identifier | None = Field(None, description="default: next")


class Variant(Strict):
    name: Identifier
    weight: int = Field(1, ge=1)
    goto: Identifier


class SplitStep(StepBase):
    kind: Literal["split"]
    variants: list[Variant] = Field(min_length=2)


class EnrollStep(StepBase):
    kind: Literal["enroll"]
    sop: Identifier
    data: dict[Identifier, Template] = Field(default_factory=dict)


class UpdateStep(StepBase):
    kind: Literal["update"]
    target: Template = Field("{{ contact.id }}", description="id of the contact to update")
    set: dict[Identifier, Template] = Field(default_factory=dict)
    add_tags: list[str] = Field(default_factory=list)


class EndStep(StepBase):
    kind: Literal["end"]
    result: Identifier


Step = Annotated[
    MessageStep
    | CallStep
    | TaskStep
    | LadderStep
    | WaitStep
    | WaitForStep
    | BranchStep
    | SplitStep
    | EnrollStep
    | UpdateStep
    | EndStep,
    Field(discriminator="kind"),
]


def step_action(step: Step) -> TaskSpec | CallSpec | None:
    """The task or call a step performs (a ladder performs its attempt), if any."""
    if isinstance(step, TaskStep | CallStep):
        return step
    if isinstance(step, LadderStep):
        return step.attempt
    return None


def step_outcomes(step: Step) -> list[str]:
    """Outcomes a step can report, besides the engine's own (expired, skipped, failed)."""
    action = step_action(step)
    return list(action.outcomes) if action else []


STEP_KINDS = (
    "sms",
    "whatsapp",
    "email",
    "call",
    "task",
    "ladder",
    "wait",
    "wait_for",
    "branch",
    "split",
    "enroll",
    "update",
    "end",
)


class Sop(Strict):
    """An SOP file."""

    id: Identifier
    version: int = Field(ge=1)
    name: str = Field(min_length=1)
    description: str = ""
    owner: str = Field(min_length=1, description="who maintains this SOP")
    purpose: Literal["marketing", "service"] = Field(
        "marketing",
        description="service: reminders and replies the contact asked for; legal rules for "
        "marketing (solicitation hours, same-subject caps) do not hold them",
    )
    priority: int = Field(
        50, ge=0, le=100, description="organisation caps may exempt SOPs at or above a priority"
    )
    entry: Entry
    contact_fields: dict[Identifier, ContactField] = Field(default_factory=dict)
    policy: ContactPolicy = Field(default_factory=ContactPolicy)
    interrupts: dict[EventType, Identifier] = Field(
        default_factory=dict,
        description="events that jump to a step whatever the run is doing (opted_out ends a run by default)",
    )
    steps: list[Step] = Field(min_length=1, max_length=500)
    # After `steps`: its validator reads them.
    success_results: list[Identifier] = Field(
        default_factory=list,
        description="results of this SOP's runs that count as a success (a booking, a sale): "
        "conversion in pilot reports, touches per success in rep reports; each a result the "
        "SOP can end with",
    )

    @field_validator("success_results")
    @classmethod
    def _results_it_ends_with(cls, names: list[str], info: ValidationInfo) -> list[str]:
        steps = info.data.get("steps")
        if steps is None:  # the steps are invalid: their errors say what to fix first
            return names
        possible = end_results(steps)
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"{name!r} is listed twice")
            if name not in possible:
                raise ValueError(
                    f"{name!r} is not a result this SOP can end with; "
                    f"it ends with {', '.join(sorted(possible))}"
                )
        return names

    @model_serializer(mode="wrap")
    def _no_success_results_no_key(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Plans compiled before success results existed keep their digest (and version).
        data: dict[str, Any] = handler(self)
        if not self.success_results:
            data.pop("success_results", None)
        return data


def end_results(steps: list[Step]) -> set[str]:
    """The results a run of these steps can end with by the SOP's design: each `end` step's,
    and `completed` when the last step is not an `end` (a run goes past it). The engine's own
    endings (cancelled, opted_out, invalid_contact) are never a success."""
    results = {step.result for step in steps if isinstance(step, EndStep)}
    if steps and not isinstance(steps[-1], EndStep):
        results.add("completed")
    return results
