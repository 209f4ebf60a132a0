"""The legal rules table and the gate that applies it: each shipped rule, strictest-wins, caps,
lists and consent, holidays, DST and numbers that span zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sopflow.compliance.gate import ContactFacts, Touch, TouchRequest, Verdict, check_touch
from sopflow.compliance.rules import Region, contact_regions, load_rules
from sopflow.errors import SopflowError

RULES = load_rules()
NY, LA = ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles")
PARIS, SHANGHAI = ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Shanghai")
US_NY, US_FL = Region("US", "NY"), Region("US", "FL")
FR, CN = Region("FR"), Region("CN")


def check(
    at: datetime,
    *,
    zones: list[str],
    regions: list[Region],
    channel: str = "sms",
    purpose: str = "marketing",
    facts: ContactFacts | None = None,
    sop: str = "promo",
    priority: int = 50,
    rules: list | None = None,  # type: ignore[type-arg]
) -> Verdict:
    request = TouchRequest(
        channel=channel,
        at=at,
        zones=zones,
        regions=regions,
        sop=sop,
        purpose=purpose,
        priority=priority,
    )
    return check_touch(request, facts or ContactFacts(), RULES if rules is None else rules)


def test_every_shipped_rule_cites_its_source() -> None:
    assert {r.id for r in RULES} >= {
        "us_federal_tcpa",
        "us_fl_telephone_solicitation",
        "us_ok_telephone_solicitation",
        "us_md_stop_the_spam_calls",
        "cn_marketing_sms",
        "fr_telemarketing_calls",
    }
    assert all(len(r.source) > 40 for r in RULES)


# ---------------------------------------------------------------- United States
def test_us_federal_hours_hold_marketing_texts_until_eight() -> None:
    at = datetime(2026, 12, 1, 21, 30, tzinfo=NY)
    verdict = check(at, zones=["America/New_York"], regions=[US_NY])
    assert (verdict.allowed, verdict.rule) == (False, "us_federal_tcpa")
    assert verdict.retry_at == datetime(2026, 12, 2, 8, 0, tzinfo=NY)
    assert "08:00-21:00" in verdict.reason and "New_York" in verdict.reason
    assert check(at.replace(hour=20), zones=["America/New_York"], regions=[US_NY]).allowed


def test_a_service_message_the_contact_asked_for_is_not_solicitation() -> None:
    at = datetime(2026, 12, 1, 21, 30, tzinfo=NY)
    assert check(at, zones=["America/New_York"], regions=[US_NY], purpose="service").allowed


@pytest.mark.parametrize("state", ["FL", "OK", "MD"])
def test_florida_oklahoma_maryland_close_at_eight_the_strictest_wins(state: str) -> None:
    at = datetime(2026, 12, 1, 20, 30, tzinfo=NY)  # federal allows it; the state does not
    verdict = check(at, zones=["America/New_York"], regions=[Region("US", state)])
    assert verdict.rule is not None and verdict.rule.startswith(f"us_{state.lower()}_")
    assert verdict.retry_at == datetime(2026, 12, 2, 8, 0, tzinfo=NY)


def test_a_floridian_with_a_new_york_number_is_protected_by_both() -> None:
    regions = contact_regions({"country": "us", "state": "fl", "phone": "+12125550123"})
    assert regions == [US_FL, US_NY]
    at = datetime(2026, 12, 1, 20, 30, tzinfo=NY)
    assert check(at, zones=["America/New_York"], regions=regions).rule == (
        "us_fl_telephone_solicitation"
    )


def test_the_number_alone_gives_the_state() -> None:
    assert contact_regions({"phone": "+13055550123"}) == [US_FL]
    assert contact_regions({"phone": "+14055550123"}) == [Region("US", "OK")]
    assert contact_regions({"phone": "not a number"}) == []


def _touches(sop: str, *hours_ago: float, now: datetime, channel: str = "sms") -> list[Touch]:
    return [Touch(now - timedelta(hours=h), channel, sop) for h in hours_ago]


def test_florida_allows_three_touches_on_one_subject_per_24_hours() -> None:
    now = datetime(2026, 12, 1, 15, 0, tzinfo=NY)
    facts = ContactFacts(touches=_touches("promo", 20, 5, 1, now=now))
    verdict = check(now, zones=["America/New_York"], regions=[US_FL], facts=facts)
    assert (verdict.allowed, verdict.rule) == (False, "us_fl_telephone_solicitation")
    assert "at most 3 touches on this subject per 24 hours" in verdict.reason
    assert verdict.retry_at == now + timedelta(hours=4)  # when the 20-hour-old touch ages out
    # Another subject (another SOP) has its own three.
    assert check(now, zones=["America/New_York"], regions=[US_FL], facts=facts, sop="other").allowed
    # New York has no such cap.
    assert check(now, zones=["America/New_York"], regions=[US_NY], facts=facts).allowed


def test_a_cap_that_frees_up_after_hours_waits_for_the_morning() -> None:
    now = datetime(2026, 12, 1, 19, 0, tzinfo=NY)
    facts = ContactFacts(touches=_touches("promo", 23, 2, 1, now=now))  # frees at 20:00: closed
    verdict = check(now, zones=["America/New_York"], regions=[US_FL], facts=facts)
    assert verdict.retry_at == datetime(2026, 12, 2, 8, 0, tzinfo=NY)
    later = check(verdict.retry_at, zones=["America/New_York"], regions=[US_FL], facts=facts)
    assert later.allowed


def test_a_number_spanning_zones_waits_until_eight_in_all_of_them() -> None:
    at = datetime(2026, 12, 1, 10, 30, tzinfo=NY)  # 07:30 in Los Angeles
    verdict = check(at, zones=["America/New_York", "America/Los_Angeles"], regions=[US_NY])
    assert verdict.retry_at == datetime(2026, 12, 1, 8, 0, tzinfo=LA)
    assert "Los_Angeles" in verdict.reason


def test_us_spring_forward_opens_at_eight_local_not_at_eight_standard_time() -> None:
    at = datetime(2027, 3, 13, 21, 30, tzinfo=NY)  # Saturday night, EST; DST starts at 02:00
    verdict = check(at, zones=["America/New_York"], regions=[US_NY])
    assert verdict.retry_at == datetime(2027, 3, 14, 12, 0, tzinfo=UTC)  # 08:00 EDT


# ---------------------------------------------------------------- China
def test_china_marketing_sms_gets_the_unsubscribe_line_inside_its_hours() -> None:
    at = datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI)
    verdict = check(at, zones=["Asia/Shanghai"], regions=[CN])
    assert verdict.allowed and verdict.footers == ("回T退订",)
    assert check(at, zones=["Asia/Shanghai"], regions=[CN], purpose="service").footers == ()
    late = check(at.replace(hour=21, minute=5), zones=["Asia/Shanghai"], regions=[CN])
    assert (late.rule, late.retry_at) == ("cn_marketing_sms", at.replace(day=2, hour=8))


def test_china_make_up_working_days_are_business_days(tmp_path: Path) -> None:
    org = tmp_path / "rules.yaml"
    org.write_text(
        "rules:\n"
        "  - id: cn_calls_on_working_days\n"
        "    title: our China call desk works business days\n"
        "    where: {country: CN}\n"
        "    channels: [call]\n"
        "    window: {hours: ['09:00-18:00'], days: business}\n"
    )
    rules = load_rules(org)
    makeup = datetime(2026, 2, 14, 10, 0, tzinfo=SHANGHAI)  # a Saturday worked for the festival
    assert check(makeup, zones=["Asia/Shanghai"], regions=[CN], channel="call", rules=rules).allowed
    festival = datetime(2026, 2, 17, 10, 0, tzinfo=SHANGHAI)  # Spring Festival, a Tuesday
    verdict = check(festival, zones=["Asia/Shanghai"], regions=[CN], channel="call", rules=rules)
    assert verdict.rule == "cn_calls_on_working_days" and "Spring Festival" in verdict.reason
    # Festival days, the substituted Friday, the weekend, the substituted Monday: Tuesday.
    assert verdict.retry_at == datetime(2026, 2, 24, 9, 0, tzinfo=SHANGHAI)


# ---------------------------------------------------------------- France
def test_france_calls_only_weekdays_in_two_blocks() -> None:
    lunch = datetime(2026, 12, 1, 13, 30, tzinfo=PARIS)
    verdict = check(lunch, zones=["Europe/Paris"], regions=[FR], channel="call")
    assert (verdict.rule, verdict.retry_at) == (
        "fr_telemarketing_calls",
        lunch.replace(hour=14, minute=0),
    )
    saturday = datetime(2026, 12, 5, 11, 0, tzinfo=PARIS)
    verdict = check(saturday, zones=["Europe/Paris"], regions=[FR], channel="call")
    assert verdict.retry_at == datetime(2026, 12, 7, 10, 0, tzinfo=PARIS)
    assert "not a business day" in verdict.reason
    # Texts are not covered by the decree.
    assert check(saturday, zones=["Europe/Paris"], regions=[FR], channel="sms").allowed


def test_france_no_calls_on_a_public_holiday() -> None:
    bastille = datetime(2026, 7, 14, 11, 0, tzinfo=PARIS)  # a Tuesday
    verdict = check(bastille, zones=["Europe/Paris"], regions=[FR], channel="call")
    assert "National Day is a public holiday" in verdict.reason
    assert verdict.retry_at == datetime(2026, 7, 15, 10, 0, tzinfo=PARIS)


def test_france_four_call_attempts_per_thirty_days() -> None:
    now = datetime(2026, 12, 1, 11, 0, tzinfo=PARIS)
    touches = [Touch(now - timedelta(days=d), "call", f"sop{d}") for d in (25, 10, 3, 1)]
    verdict = check(
        now,
        zones=["Europe/Paris"],
        regions=[FR],
        channel="call",
        facts=ContactFacts(touches=touches),
    )
    assert verdict.rule == "fr_telemarketing_calls" and "4 touches per 30 days" in verdict.reason
    # The 25-day-old call ages out on Sunday 6 December, a closed day: Monday 10:00.
    assert verdict.retry_at == datetime(2026, 12, 7, 10, 0, tzinfo=PARIS)


def test_eu_autumn_change_moves_the_utc_opening() -> None:
    friday_night = datetime(2026, 10, 23, 20, 30, tzinfo=PARIS)  # CEST; CET from Sunday
    verdict = check(friday_night, zones=["Europe/Paris"], regions=[FR], channel="call")
    assert verdict.retry_at == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)  # Monday 10:00 CET


# ---------------------------------------------------------------- lists, consent, opt-outs
def test_hard_blocks_never_retry() -> None:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    zones, regions = ["America/New_York"], [US_NY]
    listed = check(at, zones=zones, regions=regions, facts=ContactFacts(do_not_contact="national"))
    assert (listed.rule, listed.retry_at) == ("do_not_contact", None)
    assert "'national' do-not-contact list" in listed.reason
    sms_only = ContactFacts(opted_out={"sms": at - timedelta(days=1)})
    assert check(at, zones=zones, regions=regions, facts=sms_only).rule == "opt_out_channel"
    everywhere = ContactFacts(opted_out={"all": at - timedelta(days=1)})
    assert check(at, zones=zones, regions=regions, facts=everywhere).rule == "opt_out"
    assert check(at, zones=zones, regions=regions, facts=sms_only, channel="call").allowed


def _org(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "org.yaml"
    path.write_text(body)
    return path


def test_an_organisation_requiring_consent_blocks_without_a_record(tmp_path: Path) -> None:
    rules = load_rules(
        _org(
            tmp_path,
            "rules:\n  - id: consent_first\n    title: Express consent first\n"
            "    channels: [sms, whatsapp]\n    consent_required: true\n",
        )
    )
    at = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    verdict = check(at, zones=["America/New_York"], regions=[US_NY], rules=rules)
    assert (verdict.rule, verdict.retry_at) == ("consent_first", None)
    assert "no consent on record for sms" in verdict.reason
    granted = ContactFacts(consented=frozenset({"sms"}))
    assert check(
        at, zones=["America/New_York"], regions=[US_NY], rules=rules, facts=granted
    ).allowed


def test_organisation_frequency_cap_across_sops_spares_high_priority(tmp_path: Path) -> None:
    rules = load_rules(
        _org(
            tmp_path,
            "rules:\n  - id: two_texts_a_week\n    title: Two texts a week\n"
            "    channels: [sms, whatsapp]\n    cap: {max: 2, per: 7d}\n    exempt_min_priority: 80\n",
        )
    )
    now = datetime(2026, 12, 1, 12, 0, tzinfo=NY)
    touches = [
        Touch(now - timedelta(days=6), "sms", "a"),
        Touch(now - timedelta(days=1), "whatsapp", "b"),
    ]
    facts = ContactFacts(touches=[*touches, Touch(now, "call", "c")])  # calls do not count
    verdict = check(now, zones=["America/New_York"], regions=[US_NY], rules=rules, facts=facts)
    assert (verdict.rule, verdict.retry_at) == ("two_texts_a_week", now + timedelta(days=1))
    urgent = check(
        now, zones=["America/New_York"], regions=[US_NY], rules=rules, facts=facts, priority=90
    )
    assert urgent.allowed


# ---------------------------------------------------------------- the rules file
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("rules:\n  - id: x\n    title: t\n    channels: [sms]\n", "a rule needs a window"),
        (
            "rules:\n  - id: x\n    title: t\n    channels: [fax]\n    cap: {max: 1, per: 1d}\n",
            "rules.0.channels.0",
        ),
        (
            "rules:\n  - id: x\n    title: t\n    channels: [sms]\n    cap: {max: 1, per: 1d}\n"
            "  - id: x\n    title: t\n    channels: [sms]\n    cap: {max: 1, per: 1d}\n",
            "rule id 'x' is used twice",
        ),
        (
            "rules:\n  - id: us_federal_tcpa\n    title: t\n    channels: [sms]\n    cap: {max: 1, per: 1d}\n",
            "'us_federal_tcpa' is already a legal rule",
        ),
        (
            "rules:\n  - id: x\n    title: t\n    where: {country: FR}\n    channels: [call]\n"
            "    window: {hours: ['10:00-20:00'], no_call_holidays: [Mardi Gras]}\n",
            "'Mardi Gras' is not a holiday of FR; known: ",
        ),
        (
            "rules:\n  - id: x\n    title: t\n    where: {subdivision: FL}\n    channels: [sms]\n"
            "    cap: {max: 1, per: 1d}\n",
            "where.subdivision needs where.country",
        ),
        ("rules:\n  - id: x\n    title: t\n    chanels: [sms]\n", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_organisation_file_is_refused_with_its_place(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(SopflowError, match=r"org\.yaml") as caught:
        load_rules(_org(tmp_path, body))
    assert message in str(caught.value)


def test_a_missing_rules_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(SopflowError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")


def test_an_explicit_no_call_list_closes_only_those_holidays(tmp_path: Path) -> None:
    rules = load_rules(
        _org(
            tmp_path,
            "rules:\n  - id: fr_sms_holidays\n    title: no texts on Christmas\n"
            "    where: {country: FR}\n    channels: [sms]\n"
            "    window: {hours: ['09:00-20:00'], no_call_holidays: [Christmas Day]}\n",
        )
    )
    christmas = datetime(2026, 12, 25, 12, 0, tzinfo=PARIS)
    assert (
        check(christmas, zones=["Europe/Paris"], regions=[FR], rules=rules).rule
        == "fr_sms_holidays"
    )
    bastille = datetime(2026, 7, 14, 12, 0, tzinfo=PARIS)
    assert check(bastille, zones=["Europe/Paris"], regions=[FR], rules=rules).allowed
