"""Referral codes are short, signed, the same for a contact every time, and refused when forged,
cut or altered; templates get the link; the funnel's arithmetic on a known data set."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.errors import TemplateRenderError
from sopflow.referrals import (
    MAX_CODE,
    NO_LINKS,
    Cohort,
    ReferralLinks,
    ReferrerStats,
    asking_steps,
    funnel,
    funnel_view,
    period_of,
    template_values,
)
from sopflow.sop.rendering import with_rep
from sopflow.sop.templates import render, template_problems
from sopflow.sop.validate import load_plan

KEY = b"a key only the tests know"
LINKS = ReferralLinks("https://shop.example.com/", KEY)
SOPS = Path(__file__).resolve().parents[2] / "sop_definitions"


def test_a_code_names_its_contact_and_is_the_same_every_time() -> None:
    for contact_id in ("c-1", "ann", "0042", "ünïcødé 顧客", "x" * 64):
        code = LINKS.code(contact_id)
        assert LINKS.referrer(code) == contact_id
        assert LINKS.code(contact_id) == code  # derived: no table needed to make it
        assert len(code) <= MAX_CODE
    assert len(LINKS.code("c-1042")) == 16  # short: the id's 8 characters and an 8-character tag
    assert LINKS.url("c-1") == f"https://shop.example.com/r/{LINKS.code('c-1')}"
    assert LINKS.code("c-1") != LINKS.code("c-2")


def test_forged_cut_or_altered_codes_name_nobody() -> None:
    code = LINKS.code("c-1")
    other_key = ReferralLinks("https://shop.example.com", b"someone else's key").code("c-1")
    forged_id = base64.urlsafe_b64encode(b"c-2").decode().rstrip("=") + code[-8:]  # c-1's tag
    altered = [code[:i] + ("A" if ch != "A" else "B") + code[i + 1 :] for i, ch in enumerate(code)]
    for bad in [other_key, forged_id, code[:-1], code[1:], code + "A", "", "A" * 8, *altered]:
        assert LINKS.referrer(bad) is None, bad
    # Characters base64 would skip, padding, another spelling of the same bytes: not codes.
    for bad in (code[:2] + "!" + code[2:], code[:4] + "=" + code[4:], "YR" + LINKS.code("a")[2:]):
        assert LINKS.referrer(bad) is None, bad
    assert LINKS.referrer("A" * (MAX_CODE + 1)) is None
    assert LINKS.referrer(base64.urlsafe_b64encode(b"\xff\xfe").decode() + code[-8:]) is None


def test_referral_codes_and_unsubscribe_tokens_never_pass_for_each_other() -> None:
    unsubscribe = UnsubscribeLinks("https://shop.example.com", KEY)  # the same key, shared
    referral = ReferralLinks.sharing(unsubscribe)
    assert referral == ReferralLinks("https://shop.example.com", KEY)
    token = unsubscribe.token("c-1")
    assert referral.referrer(token) is None
    assert referral.referrer(token.replace(".", "")) is None
    code = referral.code("c-1")
    assert unsubscribe.contact_for(code) is None
    assert unsubscribe.contact_for(f"{code[:-8]}.{code[-8:]}") is None


def test_templates_read_the_link_and_code_signed_with_the_shells_links() -> None:
    shells = UnsubscribeLinks("https://shop.example.com", KEY)
    context = with_rep({"contact": {"id": "c-1"}}, {}, "run-1", shells)
    text = render("Share {{ referral_link }} (code {{ referral_code }})", context)
    assert text == f"Share {LINKS.url('c-1')} (code {LINKS.code('c-1')})"
    assert template_values("c-1", shells) == {
        "referral_link": LINKS.url("c-1"),
        "referral_code": LINKS.code("c-1"),
    }
    # Without the key a text with the link fails, saying why; one without renders as before.
    bare = with_rep({"contact": {"id": "c-1"}}, {}, "run-1")
    with pytest.raises(TemplateRenderError) as caught:
        render("Share {{ referral_link }}", bare, "ask")
    assert str(caught.value) == f"step 'ask': template failed to render: {NO_LINKS}"
    with pytest.raises(TemplateRenderError, match="SOPFLOW_UNSUBSCRIBE_KEY"):
        render("{{ referral_code }}", bare)
    assert render("Hello {{ contact.id }}", bare) == "Hello c-1"


def test_validation_knows_the_referral_values() -> None:
    assert template_problems("{{ referral_link }} {{ referral_code }}", ["id"]) == []
    problems = template_problems("{{ referral_link.short }}", ["id"])
    assert problems == [
        "template uses unknown variable 'referral_link.short' on its line 1 (available: )"
    ]
    assert "unknown variable 'referral_url'" in template_problems("{{ referral_url }}", ["id"])[0]


def test_the_seed_referral_sop_asks_in_both_its_ask_steps_only() -> None:
    plan = load_plan(SOPS / "referral_ask.yaml")
    assert asking_steps(plan) == {"ask_whatsapp", "ask_sms"}
    assert asking_steps(load_plan(SOPS / "new_lead_callback.yaml")) == frozenset()


def test_periods_are_utc_days_iso_weeks_and_months() -> None:
    at = datetime(2027, 1, 1, 3, 0, tzinfo=UTC)  # a Friday in ISO week 53 of 2026
    assert period_of(at, "day") == "2027-01-01"
    assert period_of(at, "week") == "2026-W53"
    assert period_of(at, "month") == "2027-01"
    new_york = datetime(2027, 1, 1, 1, 0, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert new_york.month == 12 and period_of(new_york, "month") == "2027-01"  # counted in UTC


MARCH, APRIL = datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)


def known_data() -> tuple[dict[str, Cohort], dict[str, ReferrerStats]]:
    """March: 4 loyal, 3 reached, 2 shared (5 + 3 visitors, 2 + 1 sign-ups, 1 + 1 bought).
    April: 2 loyal, 2 reached, 1 shared (2 visitors, 1 sign-up, none bought). Outside: a
    contact never enrolled (4 visitors, 1 bought) and an enrolled one no ask reached (1 visit)."""
    cohorts = {
        "m1": Cohort(MARCH, True),
        "m2": Cohort(MARCH + timedelta(days=5), True),
        "m3": Cohort(MARCH, True),
        "m4": Cohort(MARCH, False),
        "a1": Cohort(APRIL, True),
        "a2": Cohort(APRIL, True),
    }
    stats = {
        "m1": ReferrerStats(5, 2, 1, MARCH),
        "m2": ReferrerStats(3, 1, 1, MARCH),
        "m4": ReferrerStats(1, 0, 0, APRIL),
        "a1": ReferrerStats(2, 1, 0, APRIL),
        "hand": ReferrerStats(4, 1, 1, APRIL),
    }
    return cohorts, stats


def test_the_funnel_on_a_known_data_set() -> None:
    found = funnel(*known_data(), "month")
    march, april = (row.view() for row in found.rows)
    assert march == {
        "period": "2026-03", "loyal": 4, "asked": 3, "shared": 2, "visits": 8,
        "signed_up": 3, "converted": 2, "referral_rate": 2 / 3, "visits_per_sharer": 4.0,
        "signup_rate": 3 / 8, "page_conversion": 2 / 8,
    }  # fmt: skip
    assert (april["loyal"], april["asked"], april["shared"], april["visits"]) == (2, 2, 1, 2)
    assert april["page_conversion"] == 0.0
    total = found.total.view()
    assert (total["loyal"], total["asked"], total["shared"], total["converted"]) == (6, 5, 3, 2)
    # reachable loyal customers × referral rate × visits per sharer × page conversion
    for row in (march, total):
        product = (
            row["asked"] * row["referral_rate"] * row["visits_per_sharer"] * row["page_conversion"]
        )
        assert product == pytest.approx(row["converted"])
    outside = found.not_asked.view()
    assert (outside["shared"], outside["visits"], outside["converted"]) == (2, 5, 1)
    assert (outside["loyal"], outside["asked"], outside["referral_rate"]) == (0, 0, None)


def test_the_funnel_since_a_date_and_by_week() -> None:
    found = funnel(*known_data(), "week", since=datetime(2026, 3, 12, tzinfo=UTC))
    assert [row.period for row in found.rows] == ["2026-W11", "2026-W14"]  # m2, then April
    assert (found.total.loyal, found.total.asked, found.total.visits) == (3, 3, 5)
    assert found.not_asked.visits == 5  # m4's and the hand-passed link's, visited in April
    later = funnel(*known_data(), "day", since=datetime(2026, 5, 1, tzinfo=UTC))
    assert later.rows == [] and later.total.view()["referral_rate"] is None
    assert later.not_asked.visits == 0
    view = funnel_view(later, "day", datetime(2026, 5, 1, tzinfo=UTC))
    assert view["since"] == "2026-05-01T00:00:00+00:00" and view["rows"] == []
