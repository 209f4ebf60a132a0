"""Property: across random zones, DST transitions, holidays, phone prefixes and touch histories,
the gate never allows a touch outside a window or past a cap that applies, and the moment it
offers instead is allowed and the earliest one. The oracle below is written from the rules'
plain meaning, not from the gate's code."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.compliance.gate import ContactFacts, Touch, TouchRequest, check_touch
from sopflow.compliance.rules import Region, Rule, contact_regions, load_rules
from sopflow.sop.clock import zones_for_phone
from sopflow.sop.schema import WEEKDAYS

RULES = load_rules()
ZONE_SETS = [
    ["America/New_York"],
    ["America/Chicago"],
    ["America/Los_Angeles"],
    ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"],
    ["America/Denver", "America/Phoenix"],
    ["Europe/Paris"],
    ["Europe/Paris", "Europe/London"],
    ["Asia/Shanghai"],
    ["Pacific/Honolulu", "America/Anchorage"],
]
PHONES = [
    "+13055550123",  # Florida
    "+14055550123",  # Oklahoma
    "+14105550123",  # Maryland
    "+12125550123",  # New York
    "+13105550123",  # California
    "+33142685300",  # France
    "+8613812345678",  # China
    "+442079460000",  # United Kingdom
]
ADDRESSES = [{}, {"country": "US", "state": "FL"}, {"country": "FR"}, {"country": "CN"}]
# DST changes in the US and the EU, 2026-2027, and the hours around them.
TRANSITIONS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2027, 3, 14, 7, tzinfo=UTC),
    datetime(2027, 3, 28, 1, tzinfo=UTC),
]

# Public holidays in France and China, at any hour of the day there.
HOLIDAYS = sorted(
    {(day, "Europe/Paris") for day in holidays.country_holidays("FR", years=[2026, 2027])}
    | {(day, "Asia/Shanghai") for day in holidays.country_holidays("CN", years=[2026, 2027])}
)

instants = st.one_of(
    st.builds(
        lambda holiday, minutes: (
            datetime.combine(holiday[0], datetime.min.time())
            .replace(tzinfo=ZoneInfo(holiday[1]))
            .astimezone(UTC)
            + timedelta(minutes=minutes)
        ),
        st.sampled_from(HOLIDAYS),
        st.integers(8 * 60, 21 * 60),  # the hours some window would otherwise allow
    ),
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    st.builds(
        lambda base, minutes: base + timedelta(minutes=minutes),
        st.sampled_from(TRANSITIONS),
        st.integers(-36 * 60, 36 * 60),
    ),
)


# ---------------------------------------------------------------- the oracle
def _covers(rule: Rule, regions: list[Region], channel: str, purpose: str, priority: int) -> bool:
    if channel not in rule.channels or purpose not in rule.purposes:
        return False
    if rule.exempt_min_priority is not None and priority >= rule.exempt_min_priority:
        return False
    if rule.where.country is None:
        return True
    return any(
        r.country == rule.where.country and rule.where.subdivision in (None, r.subdivision)
        for r in regions
    )


def _public_holiday(country: str, day: date) -> bool:
    return day in holidays.country_holidays(country, years=day.year)


def _inside(rule: Rule, at: datetime, zones: list[str]) -> bool:
    window = rule.window
    if window is None:
        return True
    for name in zones:
        local = at.astimezone(ZoneInfo(name))
        if isinstance(window.days, list) and WEEKDAYS[local.weekday()] not in window.days:
            return False
        closed = window.no_call_holidays is True and rule.where.country
        if closed and _public_holiday(str(rule.where.country), local.date()):
            return False
        if not any(start <= local.time() < end for start, end in window.hours):
            return False
    return True


def _under_cap(rule: Rule, at: datetime, touches: list[Touch], sop: str) -> bool:
    if rule.cap is None:
        return True
    counted = [
        t
        for t in touches
        if t.channel in rule.channels
        and (rule.cap.scope == "contact" or t.sop == sop)
        and at - rule.cap.per < t.at <= at
    ]
    return len(counted) < rule.cap.max


def _lawful(request: TouchRequest, facts: ContactFacts) -> bool:
    regions = list(request.regions)
    return all(
        _inside(rule, request.at, list(request.zones))
        and _under_cap(rule, request.at, list(facts.touches), request.sop)
        for rule in RULES
        if _covers(rule, regions, request.channel, request.purpose, request.priority)
    )


# ---------------------------------------------------------------- the property
touch_histories = st.lists(
    st.tuples(
        st.floats(0, 40 * 24, allow_nan=False),
        st.sampled_from(["sms", "whatsapp", "call"]),
        st.sampled_from(["promo", "other"]),
    ),
    max_size=8,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    at=instants,
    phone_and_zones=st.sampled_from(PHONES).flatmap(
        # Mostly the number's own zones, as the engine finds them; sometimes an address elsewhere.
        lambda phone: st.tuples(
            st.just(phone),
            st.one_of(st.just(zones_for_phone(phone)), st.sampled_from(ZONE_SETS)),
        )
    ),
    address=st.sampled_from(ADDRESSES),
    channel=st.sampled_from(["sms", "whatsapp", "call"]),
    purpose=st.sampled_from(["marketing", "marketing", "service"]),
    history=touch_histories,
    probes=st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=3),
)
def test_never_outside_a_window_or_past_a_cap(
    at: datetime,
    phone_and_zones: tuple[str, list[str]],
    address: dict[str, str],
    channel: str,
    purpose: str,
    history: list[tuple[float, str, str]],
    probes: list[float],
) -> None:
    phone, zones = phone_and_zones
    regions = contact_regions({**address, "phone": phone})
    touches = [Touch(at - timedelta(hours=h), ch, sop) for h, ch, sop in history]
    facts = ContactFacts(touches=touches)
    request = TouchRequest(
        channel=channel, at=at, zones=zones, regions=regions, sop="promo", purpose=purpose
    )
    verdict = check_touch(request, facts, RULES)
    if verdict.allowed:
        assert _lawful(request, facts), f"allowed outside a rule: {request}"
        return
    assert verdict.rule is not None and verdict.reason
    assert verdict.retry_at is not None and verdict.retry_at > at
    retried = TouchRequest(**{**request.__dict__, "at": verdict.retry_at})
    assert _lawful(retried, facts), "the offered moment breaks a rule"
    assert check_touch(retried, facts, RULES).allowed
    # Earliest: nothing lawful in between (sampled; one minute before is always probed).
    span = (verdict.retry_at - at).total_seconds()
    for fraction in [*probes, max(0.0, 1 - 60 / span)]:
        between = at + timedelta(seconds=span * fraction)
        if between < verdict.retry_at:
            early = TouchRequest(**{**request.__dict__, "at": between})
            assert not _lawful(early, facts), f"{between} was lawful before {verdict.retry_at}"
