"""RFM: recency, frequency and monetary scores from purchase events, and the named segments.

Scores. Every contact with at least one purchase in the segment's currency at or before `as_of`
is ranked against all of them, by the time of their last purchase (recency), the number of
purchases (frequency) and the sum of their amounts (monetary), each cut into quintiles by
NTILE(5) in ascending order: 1 is the bottom fifth, 5 the top (the most recent, frequent,
spending). Two choices, both made so the same customer behaviour always gets the same score:
- Ties share a score: the quintile where their value starts (the lowest of the tiles NTILE gave
  the tied rows). Plain NTILE would split, say, the 60 % of customers who bought once over F 1,
  2 and 3 by the order of their ids.
- Fewer than five contacts fill fewer than five quintiles: with three purchasers the scores are
  1, 2 and 3, as NTILE(5) gives them. Quintiles of a handful of customers mean little.
A contact without such purchases has no scores: no RFM rule matches them.

Currencies. Only purchases in the segment's declared `currency` count, for all three scores:
sums in two currencies cannot be ranked against each other without exchange rates sopflow does
not have, and a customer who only buys in USD is not a low spender in EUR. Purchases imported
without a currency belong to no currency and count in no RFM.

Named segments. The eleven segments of Putler's RFM segment table ("RFM Analysis For Successful
Customer Segmentation", https://www.putler.com/rfm-analysis/; the same bounds are reproduced in
churned.io's "RFM-Model" docs). It places a contact on two axes, R and the mean of F and M, each
drawn from 0 to 5, and gives each segment a band on both (e.g. "Can't Lose Them: R 0-1, F&M
4-5"). We read each band as the interval (low, high]: then the table covers every score exactly
once, with three regions drawn inside others (champions inside loyal customers, can't lose them
inside at risk, hibernating inside lost), which take precedence. `NAMED` keeps the table in
that order; the first band that holds names the contact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Integer, and_, case, cast, func, select
from sqlalchemy.sql.selectable import Subquery

from sopflow.segmenting.fields import Dialect
from sopflow.store.models import ContactActivity

RfmName = Literal[
    "champions",
    "loyal_customers",
    "potential_loyalists",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "cant_lose_them",
    "at_risk",
    "hibernating",
    "lost",
]
RFM_NAMES: tuple[RfmName, ...] = get_args(RfmName)
Band = tuple[int, int]  # (low, high]: low < score <= high
# (name, recency band, band of the mean of frequency and monetary), first match wins.
NAMED: tuple[tuple[RfmName, Band, Band], ...] = (
    ("champions", (4, 5), (4, 5)),
    ("loyal_customers", (2, 5), (3, 5)),
    ("potential_loyalists", (3, 5), (1, 3)),
    ("new_customers", (4, 5), (0, 1)),
    ("promising", (3, 4), (0, 1)),
    ("need_attention", (2, 3), (2, 3)),
    ("about_to_sleep", (2, 3), (0, 2)),
    ("cant_lose_them", (0, 1), (4, 5)),
    ("at_risk", (0, 2), (2, 5)),
    ("hibernating", (1, 2), (1, 2)),
    ("lost", (0, 2), (0, 2)),
)
assert tuple(name for name, _, _ in NAMED) == RFM_NAMES
# Money ranked on SQLite in ten-thousandths as integers: its amounts are REALs, and a REAL sum
# depends on the order of the additions, which would split ties that NUMERIC keeps.
SQLITE_MONEY_SCALE = 10_000


def named_segment(recency: int, frequency: int, monetary: int) -> RfmName:
    """The named segment of three scores (1-5)."""
    both = frequency + monetary  # twice the mean, so the bands stay in integers
    for name, (r_low, r_high), (fm_low, fm_high) in NAMED:
        if r_low < recency <= r_high and 2 * fm_low < both <= 2 * fm_high:
            return name
    raise ValueError(f"scores out of range: R {recency}, F {frequency}, M {monetary}")


def named_case(
    recency: ColumnElement[Any], frequency: ColumnElement[Any], monetary: ColumnElement[Any]
) -> ColumnElement[Any]:
    """named_segment in SQL."""
    both = frequency + monetary
    return case(
        *[
            (
                and_(r_low < recency, recency <= r_high, 2 * fm_low < both, both <= 2 * fm_high),
                name,
            )
            for name, (r_low, r_high), (fm_low, fm_high) in NAMED
        ]
    )


def scores(dialect: Dialect, currency: str, as_of: datetime) -> Subquery:
    """Per scored contact: contact_id, recency, frequency, monetary, segment (the name), and
    what they came from: last_purchase_at, purchases, total (on SQLite in ten-thousandths)."""
    activity = ContactActivity.__table__
    amount: ColumnElement[Any] = activity.c.amount
    if dialect == "sqlite":
        amount = cast(func.round(activity.c.amount * SQLITE_MONEY_SCALE), Integer)
    bought = (
        select(
            activity.c.contact_id,
            func.max(activity.c.at).label("last_purchase_at"),
            func.count().label("purchases"),
            func.coalesce(func.sum(amount), 0).label("total"),
        )
        .where(
            activity.c.kind == "purchase",
            activity.c.currency == currency,
            activity.c.at <= as_of,
        )
        .group_by(activity.c.contact_id)
        .subquery("bought")
    )
    tiles = select(
        bought,
        func.ntile(5).over(order_by=bought.c.last_purchase_at).label("r_tile"),
        func.ntile(5).over(order_by=bought.c.purchases).label("f_tile"),
        func.ntile(5).over(order_by=bought.c.total).label("m_tile"),
    ).subquery("tiles")
    # Ties share the quintile where their value starts.
    scored = select(
        tiles.c.contact_id,
        tiles.c.last_purchase_at,
        tiles.c.purchases,
        tiles.c.total,
        func.min(tiles.c.r_tile).over(partition_by=tiles.c.last_purchase_at).label("recency"),
        func.min(tiles.c.f_tile).over(partition_by=tiles.c.purchases).label("frequency"),
        func.min(tiles.c.m_tile).over(partition_by=tiles.c.total).label("monetary"),
    ).subquery("scored")
    return select(
        scored,
        named_case(scored.c.recency, scored.c.frequency, scored.c.monetary).label("segment"),
    ).subquery("rfm")
