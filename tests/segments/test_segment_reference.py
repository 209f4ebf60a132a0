"""The SQL query against a plain-Python evaluation (segment_reference.py) on random contacts,
purchases and visits, drawn to hit the edges: tied dates, amounts and counts, values of every
JSON kind, numbers written as text, purchases in other currencies or none, activity after
as_of. Every segment rule kind, alone and combined, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from segment_helpers import AS_OF, Db, segment
from segment_reference import members as reference_members
from segment_reference import rfm_scores

from sopflow.segmenting.preview import preview
from sopflow.segmenting.query import is_member, members
from sopflow.segmenting.rfm import RFM_NAMES

STAGES: list[Any] = ["lead", "customer", "churned", 5, None]
TAGS = ["vip", "newsletter", "do_not_market", "b2b"]
VALUES: list[Any] = [
    0, 3, 7.5, -2, 1000, "3", "7.50", "1000", "-2", "abc", "", "1e3", "3.", ".5",
    "2024-01-01", "2025-06-30", "B", "a", True, False, None, [1], {"x": 1},
]  # fmt: skip
RULES: list[dict[str, Any]] = [
    {"tags": {"all": ["vip"]}},
    {"tags": {"any": ["newsletter", "b2b"], "none": ["do_not_market"]}},
    {"attributes": [{"field": "score", "equals": 3}]},
    {"attributes": [{"field": "score", "equals": "3"}]},
    {"attributes": [{"field": "score", "equals": True}]},
    {"attributes": [{"field": "score", "in": [3, "abc", False, 7.5]}]},
    {"attributes": [{"field": "score", "gte": 3}]},
    {"attributes": [{"field": "score", "gte": -2, "lte": 7.5}]},
    {"attributes": [{"field": "score", "lte": "2024-12-31"}]},
    {"attributes": [{"field": "score", "gte": "B", "lte": "a"}]},
    {"attributes": [{"field": "score", "exists": True}]},
    {"attributes": [{"field": "score", "exists": False}]},
    {"attributes": [{"field": "owner", "equals": "ana"}, {"field": "phone", "exists": False}]},
    {"lifecycle_stage": {"in": ["customer", "lead"]}},
    {"lifecycle_stage": {"not_in": ["churned"]}},
    {"last_activity": {"days_since": {"lte": 30}}},
    {"last_activity": {"kind": "purchase", "days_since": {"gte": 60, "lte": 200}}},
    {"last_activity": {"kind": "visit", "days_since": {"gte": 10}}},
    {"rfm": {"currency": "EUR"}},
    {"rfm": {"currency": "EUR", "segments": ["champions", "loyal_customers", "at_risk"]}},
    {"rfm": {"currency": "USD", "recency": {"gte": 4}, "monetary": {"lte": 2}}},
    {"rfm": {"currency": "EUR", "frequency": {"gte": 2, "lte": 4}}},
]


def fill(db: Db, rng: random.Random, contacts: int) -> None:
    days = [rng.uniform(0, 400) for _ in range(12)]  # few distinct times: ties
    amounts = ["5", "10", "10.5", "99.99", "0.01", "250", "-5"]
    people, activity = [], []
    for n in range(contacts):
        who = f"c-{rng.randrange(10**6):06d}-{n}"
        fields: dict[str, Any] = {}
        if (stage := rng.choice(STAGES)) is not None:
            fields["lifecycle_stage"] = stage
        if rng.random() < 0.8:
            fields["tags"] = rng.sample(TAGS, rng.randrange(len(TAGS) + 1))
        if rng.random() < 0.85:
            fields["score"] = rng.choice(VALUES)
        people.append(
            {
                "id": who,
                "fields": fields,
                "updated_at": AS_OF,
                "phone": rng.choice([None, "+12125550123"]),
                "owner": rng.choice([None, "ana", "ben"]),
                "timezone": None,
            }
        )
        for k in range(rng.choice([0, 0, 1, 1, 2, 3, 5, 8])):
            kind = "purchase" if rng.random() < 0.75 else "visit"
            ago = rng.choice(days) if rng.random() < 0.7 else rng.uniform(-30, 400)  # < 0: after
            activity.append(
                {
                    "contact_id": who,
                    "kind": kind,
                    "key": f"{who}-{k}",
                    "at": AS_OF - timedelta(days=ago),
                    "amount": Decimal(rng.choice(amounts)) if kind == "purchase" else None,
                    "currency": rng.choice(["EUR", "EUR", "EUR", "USD", None])
                    if kind == "purchase"
                    else None,
                    "order_id": None,
                    "store": None,
                }
            )
    db.bulk(people, activity)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_rule_matches_the_reference_on_random_data(db: Db, seed: int) -> None:
    rng = random.Random(seed)
    fill(db, rng, 160)
    combined = [rng.choice(RULES) | rng.choice(RULES) for _ in range(8)]
    for rules in RULES + combined:
        chosen = segment(**rules)
        expected = reference_members(chosen, db.contacts, db.activity, AS_OF)
        assert list(members(db.engine, chosen, AS_OF)) == expected, rules


def test_rfm_scores_and_named_segments_match_the_reference(db: Db) -> None:
    rng = random.Random(7)
    fill(db, rng, 300)
    expected = rfm_scores(db.activity, "EUR", AS_OF)
    assert len(expected) > 100
    seen = set()
    for name in RFM_NAMES:
        chosen = segment(rfm={"currency": "EUR", "segments": [name]})
        got = list(members(db.engine, chosen, AS_OF))
        assert got == sorted(who for who, s in expected.items() if s.segment == name), name
        seen |= {name} if got else set()
    assert len(seen) >= 6  # the data reaches most of the map
    for score in range(1, 6):
        for axis in ("recency", "frequency", "monetary"):
            chosen = segment(rfm={"currency": "EUR", axis: {"gte": score, "lte": score}})
            want = sorted(w for w, s in expected.items() if getattr(s, axis) == score)
            assert list(members(db.engine, chosen, AS_OF)) == want, (axis, score)


def test_preview_and_is_member_agree_with_members(db: Db) -> None:
    rng = random.Random(11)
    fill(db, rng, 120)
    chosen = segment(rfm={"currency": "EUR", "segments": ["champions", "lost", "at_risk"]})
    everyone = list(members(db.engine, chosen, AS_OF))
    shown = preview(db.engine, chosen, AS_OF, sample=5)
    assert shown.members == len(everyone) > 0
    assert [m.id for m in shown.sample] == everyone[:5]
    scores = rfm_scores(db.activity, "EUR", AS_OF)
    assert shown.rfm_counts == {
        name: count
        for name in RFM_NAMES
        if (count := sum(1 for w in everyone if scores[w].segment == name))
    }
    for member in shown.sample:
        assert member.rfm is not None
        assert member.rfm.segment == scores[member.id].segment
    outsiders = [c["id"] for c in db.contacts if c["id"] not in set(everyone)]
    for who in everyone[:3] + outsiders[:3]:
        assert is_member(db.engine, chosen, who, AS_OF) == (who in everyone)
