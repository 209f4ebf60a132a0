"""Each rule kind on hand-made contacts, on SQLite and PostgreSQL: what matches and, at each
edge, what does not. RFM: quintiles with ties, fewer than five purchasers, contacts without
purchases, currencies, and `as_of`."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from segment_helpers import AS_OF, POSTGRES_URL, Db, segment
from sqlalchemy import create_engine, make_url, text

from sopflow.errors import SopflowError
from sopflow.segmenting.preview import preview
from sopflow.segmenting.query import is_member, members
from sopflow.segmenting.rfm import NAMED, RFM_NAMES, named_segment
from sopflow.store.repository import Store

DAY = timedelta(days=1)


def ids(db: Db, **rules: Any) -> list[str]:
    return list(members(db.engine, segment(**rules), AS_OF))


def test_tags_all_any_none(db: Db) -> None:
    db.contact("a", tags=["vip", "newsletter"])
    db.contact("b", tags=["vip", "do_not_market"])
    db.contact("c", tags=["newsletter"])
    db.contact("d", tags=[])
    db.contact("e")  # no tags at all
    db.contact("f", tags="vip")  # not a list: no tags
    assert ids(db, tags={"all": ["vip"]}) == ["a", "b"]
    assert ids(db, tags={"all": ["vip", "newsletter"]}) == ["a"]
    assert ids(db, tags={"any": ["newsletter", "do_not_market"]}) == ["a", "b", "c"]
    assert ids(db, tags={"none": ["do_not_market"]}) == ["a", "c", "d", "e", "f"]
    assert ids(db, tags={"all": ["vip"], "none": ["do_not_market"]}) == ["a"]


def test_attribute_equals_and_in_are_typed(db: Db) -> None:
    db.contact("n3", tier=3)
    db.contact("n3.0", tier=3.0)
    db.contact("t3", tier="3")  # a CSV import's number: counts as 3
    db.contact("t3x", tier="3 ")  # not a plain decimal: text only
    db.contact("true", tier=True)
    db.contact("gold", tier="gold")
    db.contact("null", tier=None)
    db.contact("none")
    assert ids(db, attributes=[{"field": "tier", "equals": 3}]) == ["n3", "n3.0", "t3"]
    assert ids(db, attributes=[{"field": "tier", "equals": "3"}]) == ["t3"]
    assert ids(db, attributes=[{"field": "tier", "equals": True}]) == ["true"]
    assert ids(db, attributes=[{"field": "tier", "equals": False}]) == []
    assert ids(db, attributes=[{"field": "tier", "in": ["gold", True, 3.0]}]) == [
        "gold",
        "n3",
        "n3.0",
        "t3",
        "true",
    ]


def test_attribute_ranges_compare_numbers_as_numbers_and_texts_by_code_point(db: Db) -> None:
    db.contact("n9", spend=9)
    db.contact("n10", spend=10)
    db.contact("t10", spend="10.00")
    db.contact("t100", spend="100")
    db.contact("word", spend="lots")
    for shape in ("10.0.1", "10.", ".10", "-", "10e1"):  # not plain decimals: texts
        db.contact(f"text {shape}", spend=shape)
    db.contact("d1", since="2024-01-31")
    db.contact("d2", since="2024-02-01")
    db.contact("upper", since="Z")
    db.contact("lower", since="a")
    # 9 < 10 as numbers; as texts "9" > "10", which would put n9 in and t100 out.
    assert ids(db, attributes=[{"field": "spend", "gte": 10}]) == ["n10", "t10", "t100"]
    assert ids(db, attributes=[{"field": "spend", "gte": 9.5, "lte": 10}]) == ["n10", "t10"]
    assert ids(db, attributes=[{"field": "since", "gte": "2024-02-01"}]) == [
        "d2",
        "lower",
        "upper",
    ]
    # Code point order: "Z" (90) sorts before "a" (97), whatever the database's collation.
    assert ids(db, attributes=[{"field": "since", "lte": "Z"}]) == ["d1", "d2", "upper"]
    assert ids(db, attributes=[{"field": "spend", "lte": "m"}]) == [
        "t10",
        "t100",
        "text -",
        "text .10",
        "text 10.",
        "text 10.0.1",
        "text 10e1",
        "word",
    ]


def test_attribute_exists_and_the_contact_columns(db: Db) -> None:
    db.contact("a", phone="+12125550123", owner="ana", plan="gold")
    db.contact("b", owner="ben", plan=None)
    db.contact("c", plan="")
    assert ids(db, attributes=[{"field": "plan", "exists": True}]) == ["a", "c"]
    assert ids(db, attributes=[{"field": "plan", "exists": False}]) == ["b"]
    assert ids(db, attributes=[{"field": "phone", "exists": True}]) == ["a"]
    assert ids(db, attributes=[{"field": "owner", "in": ["ana", "ben"]}]) == ["a", "b"]
    two = [{"field": "owner", "equals": "ben"}, {"field": "phone", "exists": False}]
    assert ids(db, attributes=two) == ["b"]


def test_lifecycle_stage_in_and_not_in(db: Db) -> None:
    db.contact("lead", lifecycle_stage="lead")
    db.contact("customer", lifecycle_stage="customer")
    db.contact("churned", lifecycle_stage="churned")
    db.contact("none")
    db.contact("number", lifecycle_stage=2)
    assert ids(db, lifecycle_stage={"in": ["lead", "customer"]}) == ["customer", "lead"]
    assert ids(db, lifecycle_stage={"not_in": ["churned"]}) == [
        "customer",
        "lead",
        "none",
        "number",
    ]


def test_last_activity_counts_days_back_from_as_of(db: Db) -> None:
    for who in ("recent", "edge", "old", "visitor", "never", "future"):
        db.contact(who)
    db.purchase("recent", AS_OF - 2 * DAY)
    db.purchase("edge", AS_OF - 30 * DAY)  # exactly 30 days: within 30, and 30 or more
    db.purchase("old", AS_OF - 31 * DAY)
    db.visit("visitor", AS_OF - 1 * DAY)
    db.purchase("visitor", AS_OF - 100 * DAY)
    db.purchase("future", AS_OF + 5 * DAY)  # after as_of: does not exist yet
    within = {"days_since": {"lte": 30}}
    assert ids(db, last_activity=within) == ["edge", "recent", "visitor"]
    assert ids(db, last_activity={"kind": "purchase", **within}) == ["edge", "recent"]
    lapsed = {"kind": "purchase", "days_since": {"gte": 30}}
    assert ids(db, last_activity=lapsed) == ["edge", "old", "visitor"]
    assert ids(db, last_activity={"kind": "visit", "days_since": {"gte": 1, "lte": 1.5}}) == [
        "visitor"
    ]
    # The same data a month later: the recent ones have lapsed, the future one is recent.
    later = AS_OF + 31 * DAY
    lapsed_later = list(members(db.engine, segment(last_activity=lapsed), later))
    assert lapsed_later == ["edge", "old", "recent", "visitor"]
    recent_later = list(members(db.engine, segment(last_activity=within), later))
    assert recent_later == ["future"]


def scores(db: Db, currency: str = "EUR") -> dict[str, tuple[int, int, int]]:
    shown = preview(db.engine, segment(rfm={"currency": currency}), AS_OF, sample=100)
    found = {}
    for member in shown.sample:
        assert member.rfm is not None
        found[member.id] = (member.rfm.recency, member.rfm.frequency, member.rfm.monetary)
    return found


def test_rfm_quintiles_of_ten_purchasers(db: Db) -> None:
    for n in range(10):  # c0 bought longest ago, least often, least; c9 the other way
        db.contact(f"c{n}")
        for k in range(n + 1):
            db.purchase(f"c{n}", AS_OF - (100 - n) * DAY - k * timedelta(hours=1), str(n + 1))
    got = scores(db)
    assert got == {f"c{n}": (n // 2 + 1,) * 3 for n in range(10)}
    assert ids(db, rfm={"currency": "EUR", "segments": ["champions"]}) == ["c8", "c9"]
    assert ids(db, rfm={"currency": "EUR", "segments": ["lost"]}) == ["c0", "c1"]


def test_rfm_ties_share_the_quintile_where_their_value_starts(db: Db) -> None:
    # Seven one-time buyers and three repeat buyers: NTILE(5) alone would spread the one-time
    # buyers over F 1 to 4 by id; tied, they all score 1.
    for n in range(10):
        db.contact(f"c{n}")
        db.purchase(f"c{n}", AS_OF - DAY, "20")  # the same day and amount for everyone
    for n in (7, 8, 9):
        db.purchase(f"c{n}", AS_OF - 2 * DAY, "20")
    db.purchase("c9", AS_OF - 3 * DAY, "20")
    got = scores(db)
    assert {who: f for who, (_, f, _) in got.items()} == {
        **{f"c{n}": 1 for n in range(7)},
        "c7": 4,  # positions 8-9 of 10 are the fourth fifth
        "c8": 4,
        "c9": 5,
    }
    assert {r for r, _, _ in got.values()} == {1}  # the same last purchase: the same score
    assert {who: m for who, (_, _, m) in got.items()} == {
        **{f"c{n}": 1 for n in range(7)},
        "c7": 4,
        "c8": 4,
        "c9": 5,
    }


def test_rfm_fewer_than_five_purchasers_fill_fewer_quintiles(db: Db) -> None:
    for n in range(3):
        db.contact(f"c{n}")
        db.purchase(f"c{n}", AS_OF - (10 - n) * DAY, str(10 * (n + 1)))
    assert scores(db) == {"c0": (1, 1, 1), "c1": (2, 1, 2), "c2": (3, 1, 3)}
    db.contact("alone")
    db.purchase("alone", AS_OF - DAY, "5", currency="GBP")
    assert scores(db, "GBP") == {"alone": (1, 1, 1)}


def test_rfm_ignores_contacts_without_purchases_and_counts_one_currency(db: Db) -> None:
    db.contact("eur")
    db.purchase("eur", AS_OF - 5 * DAY, "100")
    db.contact("usd")  # a big spender, in dollars only
    db.purchase("usd", AS_OF - DAY, "9000", currency="USD")
    db.contact("mixed")
    db.purchase("mixed", AS_OF - 50 * DAY, "1", currency="EUR")
    db.purchase("mixed", AS_OF - DAY, "5000", currency="USD")  # not in the EUR scores
    db.contact("unlabelled")
    db.purchase("unlabelled", AS_OF - DAY, "70", currency=None)  # counts in no currency
    db.contact("visitor")
    db.visit("visitor", AS_OF - DAY)
    db.contact("nobody")
    assert scores(db, "EUR") == {"eur": (2, 1, 2), "mixed": (1, 1, 1)}
    assert scores(db, "USD") == {"mixed": (1, 1, 1), "usd": (1, 1, 2)}
    everyone_scored = ids(db, rfm={"currency": "EUR", "recency": {"gte": 1}})
    assert everyone_scored == ["eur", "mixed"]
    assert ids(db, rfm={"currency": "JPY"}) == []


def test_rfm_at_an_earlier_as_of_ignores_later_purchases(db: Db) -> None:
    db.contact("early")
    db.purchase("early", AS_OF - 30 * DAY, "10")
    db.contact("late")
    db.purchase("late", AS_OF - 40 * DAY, "10")
    db.purchase("late", AS_OF - DAY, "500")
    chosen = segment(rfm={"currency": "EUR", "monetary": {"gte": 2}})
    assert list(members(db.engine, chosen, AS_OF)) == ["late"]
    before = AS_OF - 20 * DAY  # the 500 was not spent yet; early's purchase was the later one
    assert list(members(db.engine, chosen, before)) == []
    recent = segment(rfm={"currency": "EUR", "recency": {"gte": 2}})
    assert list(members(db.engine, recent, before)) == ["early"]
    assert list(members(db.engine, recent, AS_OF)) == ["late"]
    assert is_member(db.engine, recent, "early", before)
    assert not is_member(db.engine, recent, "early", AS_OF)
    assert not is_member(db.engine, recent, "unknown", AS_OF)


def test_rules_combine_with_and(db: Db) -> None:
    db.contact("both", tags=["vip"], lifecycle_stage="customer")
    db.contact("tag_only", tags=["vip"], lifecycle_stage="lead")
    db.contact("stage_only", lifecycle_stage="customer")
    for who in ("both", "tag_only", "stage_only"):
        db.purchase(who, AS_OF - DAY)
    rules = {"tags": {"all": ["vip"]}, "lifecycle_stage": {"in": ["customer"]}}
    assert ids(db, **rules) == ["both"]
    assert ids(db, **rules, rfm={"currency": "EUR"}) == ["both"]
    assert ids(db, **rules, rfm={"currency": "USD"}) == []


def test_members_stream_in_code_point_order(db: Db) -> None:
    for who in ("b", "B", "a", "A", "é", "10", "9"):
        db.contact(who, tags=["x"])
    assert ids(db, tags={"all": ["x"]}) == sorted(["b", "B", "a", "A", "é", "10", "9"])


def test_a_postgresql_database_with_a_language_collation_still_compares_code_points() -> None:
    """Where the database sorts by language (ICU "en": a < B < Z), ids still stream in code
    point order and text bounds still compare code points, as on SQLite."""
    name = f"seg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(
                f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                "ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
            )
        )
    engine = create_engine(make_url(POSTGRES_URL).set(database=name))
    try:
        Store(engine).migrate()
        db = Db(engine, "")
        for who in ("b", "B", "a", "A", "Z"):
            db.contact(who, tags=["x"], word=who)
        with engine.connect() as connection:  # the database's own order is not ours
            order = connection.execute(text("SELECT id FROM contacts ORDER BY id")).scalars()
            assert list(order) != sorted(["b", "B", "a", "A", "Z"])
        assert ids(db, tags={"all": ["x"]}) == ["A", "B", "Z", "a", "b"]
        assert ids(db, attributes=[{"field": "word", "lte": "Z"}]) == ["A", "B", "Z"]
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_members_are_read_as_they_are_consumed_and_closing_releases_the_connection(
    db: Db,
) -> None:
    for n in range(25):
        db.contact(f"c{n:02d}", tags=["x"])
    streamed = members(db.engine, segment(tags={"all": ["x"]}), AS_OF)
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]  # nothing run yet
    assert next(streamed) == "c00"
    assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    streamed.close()  # type: ignore[attr-defined]
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_as_of_needs_a_time_zone(db: Db) -> None:
    with pytest.raises(SopflowError, match="has no UTC offset"):
        members(db.engine, segment(tags={"all": ["x"]}), AS_OF.replace(tzinfo=None))


def test_the_named_segment_map_covers_every_score_once() -> None:
    cells = {
        (r, f, m): named_segment(r, f, m)
        for r in range(1, 6)
        for f in range(1, 6)
        for m in range(1, 6)
    }
    assert set(cells.values()) == set(RFM_NAMES)  # every name is reachable
    # Putler's bands, read as (low, high] on R and on the mean of F and M.
    assert cells[5, 5, 5] == cells[5, 4, 5] == "champions"
    assert cells[5, 4, 4] == cells[3, 5, 5] == "loyal_customers"
    assert cells[5, 1, 1] == "new_customers"
    assert cells[4, 1, 1] == "promising"
    assert cells[4, 2, 1] == cells[5, 3, 3] == "potential_loyalists"
    assert cells[3, 3, 3] == "need_attention"
    assert cells[3, 2, 2] == "about_to_sleep"
    assert cells[1, 5, 4] == "cant_lose_them"
    assert cells[1, 4, 4] == cells[2, 5, 5] == cells[1, 3, 2] == "at_risk"
    assert cells[2, 2, 1] == cells[2, 2, 2] == "hibernating"
    assert cells[2, 1, 1] == cells[1, 1, 2] == cells[1, 2, 2] == "lost"
    # Only the three regions drawn inside others overlap; the first listed wins.
    overlaps = {
        tuple(
            name for name, (rl, rh), (fl, fh) in NAMED if rl < r <= rh and 2 * fl < f + m <= 2 * fh
        )
        for r, f, m in cells
    }
    assert {names for names in overlaps if len(names) > 1} == {
        ("champions", "loyal_customers"),
        ("cant_lose_them", "at_risk"),
        ("hibernating", "lost"),
    }
    with pytest.raises(ValueError, match="out of range"):
        named_segment(0, 1, 1)
