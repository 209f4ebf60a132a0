"""The touch gate: the last check before a message, call or call task, in the activity.

The engine schedules touches inside the SOP's own windows; the gate re-checks at the moment of
sending, because an activity can run late and consent can change after planning, and it adds
what the SOP cannot know: the law of the contact's region, lists, and caps across every SOP.
Pure: the facts (consent, lists, recent touches) and the time come in as values.

Order: opt-out, do-not-contact, consent → blocked for good (no retry); then the SOP's window and
every matching rule's window and cap → blocked until the earliest moment all of them allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sopflow.channels.adapters import adapter
from sopflow.compliance.rules import Region, Rule, cap_next
from sopflow.sop import clock
from sopflow.sop.schema import CHANNELS, Channel, ContactPolicy, WindowSpec

_MAX_ROUNDS = 64  # rules move the candidate forward; they agree long before this


@dataclass(frozen=True)
class Touch:
    """A past touch of the contact, by any SOP (for caps)."""

    at: datetime
    channel: str
    sop: str


@dataclass(frozen=True)
class ContactFacts:
    """What the store knows about the contact when the touch is about to go."""

    opted_out: dict[str, datetime] = field(default_factory=dict)  # channel or "all" → when
    consented: frozenset[str] = frozenset()  # channels with a consent record in force
    do_not_contact: str | None = None  # the list the number is on
    touches: Sequence[Touch] = ()
    whatsapp_inbound_at: datetime | None = None  # the contact's last WhatsApp message to us


@dataclass(frozen=True)
class TouchRequest:
    channel: Channel
    at: datetime
    zones: Sequence[str]
    regions: Sequence[Region]
    sop: str
    purpose: str = "marketing"
    priority: int = 50
    policy: ContactPolicy | None = None
    due_within: timedelta | None = None  # a rep task's SLA, counted from `issued_at`
    issued_at: datetime | None = None


@dataclass(frozen=True)
class Verdict:
    """allowed, or the rule that blocked the touch, why, and when it could go (None: never).
    `footers`: lines the matching rules want appended to a message (the channel's adapter
    says whether its text carries them: SMS does).
    `due_at`: a task's due time with the SLA counted only while the SOP's and every matching
    rule's window is open (a Florida call task at 19:50 is not due at 20:20, after the law's
    20:00, but on the next morning)."""

    allowed: bool
    rule: str | None = None
    reason: str = ""
    retry_at: datetime | None = None
    footers: tuple[str, ...] = ()
    due_at: datetime | None = None


def _hard_block(
    request: TouchRequest, facts: ContactFacts, rules: Sequence[Rule]
) -> Verdict | None:
    for scope in ("all", request.channel):
        if scope in facts.opted_out:
            when = facts.opted_out[scope].isoformat()
            what = "on every channel" if scope == "all" else f"of {scope}"
            # Out of every channel: the run stops touching them (the engine ends it). Out of
            # this one only: this touch fails over, and the SOP goes on on the others.
            everywhere = "all" in facts.opted_out or set(CHANNELS) <= facts.opted_out.keys()
            rule_id = "opt_out" if everywhere else "opt_out_channel"
            return Verdict(False, rule_id, f"the contact opted out {what} at {when}")
    # The lists hold phone numbers (national registries, the internal STOP list): they bar
    # calls and texts to the number, not an email to the person.
    if facts.do_not_contact and adapter(request.channel).address_field == "phone":
        return Verdict(
            False,
            "do_not_contact",
            f"the number is on the {facts.do_not_contact!r} do-not-contact list",
        )
    for rule in rules:
        if rule.consent_required and request.channel not in facts.consented:
            return Verdict(
                False, rule.id, f"{rule.title}: no consent on record for {request.channel}"
            )
    return None


def _sop_window(request: TouchRequest, at: datetime) -> tuple[datetime | None, str]:
    policy = request.policy
    window = policy.windows.get(request.channel) if policy else None
    if policy is None or window is None or not request.zones:
        return at, ""
    calendar = clock.Calendar.from_policy(policy)
    allowed = clock.next_allowed(at, request.zones, window, calendar)
    if allowed == at:
        return at, ""
    return allowed, "the SOP's window: " + clock.why_blocked(
        at, request.zones, request.channel, window, calendar
    )


def _capped(rule: Rule, request: TouchRequest, touches: Sequence[Touch]) -> list[datetime]:
    assert rule.cap is not None
    return [
        t.at
        for t in touches
        if t.channel in rule.channels and (rule.cap.scope == "contact" or t.sop == request.sop)
    ]


def _rule_next(
    rule: Rule, request: TouchRequest, facts: ContactFacts, at: datetime
) -> tuple[datetime | None, str]:
    """When `rule` allows the touch, from `at` on, and why not at `at`."""
    candidate: datetime | None = at
    reason = ""
    if rule.window is not None and request.zones:
        candidate = rule.window_next(at, request.zones)
        if candidate != at:
            reason = f"{rule.title}: {rule.window_reason(at, request.zones, request.channel)}"
    if rule.cap is not None and candidate is not None:
        touches = _capped(rule, request, facts.touches)
        freed = cap_next(rule, candidate, touches)
        if freed != candidate and not reason:
            scope = "on this subject " if rule.cap.scope == "subject" else ""
            reason = f"{rule.title}: at most {rule.cap.max} touches {scope}per {_period(rule)}"
        candidate = freed
    return candidate, reason


def _windows(
    request: TouchRequest, rules: Sequence[Rule]
) -> list[tuple[WindowSpec, clock.Calendar]]:
    """Every window the touch must stay inside: the SOP's for its channel, then the rules'."""
    windows = []
    policy = request.policy
    if policy is not None and request.channel in policy.windows:
        windows.append((policy.windows[request.channel], clock.Calendar.from_policy(policy)))
    windows += [w for r in rules if (w := r.window_calendar) is not None]
    return windows


def _due_at(request: TouchRequest, rules: Sequence[Rule]) -> datetime | None:
    if request.due_within is None:
        return None
    start = request.issued_at or request.at
    return clock.add_window_time(start, request.due_within, request.zones, _windows(request, rules))


def _period(rule: Rule) -> str:
    assert rule.cap is not None
    hours = rule.cap.per.total_seconds() / 3600
    return f"{hours:g} hours" if hours < 48 else f"{hours / 24:g} days"


def applicable(rules: Sequence[Rule], request: TouchRequest) -> list[Rule]:
    return [
        r
        for r in rules
        if r.applies(request.regions, request.channel, request.purpose, request.priority)
    ]


def lookback(matching: Sequence[Rule]) -> timedelta:
    """How far back the touch history must go for the caps of `matching` rules."""
    return max((r.cap.per for r in matching if r.cap), default=timedelta(0))


def check_touch(request: TouchRequest, facts: ContactFacts, rules: Sequence[Rule] = ()) -> Verdict:
    matching = applicable(rules, request)
    hard = _hard_block(request, facts, matching)
    if hard is not None:
        return hard
    first_rule: str | None = None
    first_reason = ""
    candidate = request.at
    judges: list[Rule | None] = [None, *matching]  # None: the SOP's own window
    for _ in range(_MAX_ROUNDS):
        moved = False
        for rule in judges:
            if rule is None:
                found, reason = _sop_window(request, candidate)
            else:
                found, reason = _rule_next(rule, request, facts, candidate)
            rule_id = "window" if rule is None else rule.id
            if candidate == request.at and found != candidate and first_rule is None:
                first_rule, first_reason = rule_id, reason
            if found is None:  # this rule never allows it again
                return Verdict(False, first_rule, first_reason or reason, None)
            if found != candidate:
                candidate, moved = found, True
        if not moved:
            break
    else:
        return Verdict(False, first_rule, first_reason, None)
    if first_rule is None:
        footers = tuple(r.footer for r in matching if r.footer)
        return Verdict(True, footers=footers, due_at=_due_at(request, matching))
    return Verdict(False, first_rule, first_reason, candidate)
