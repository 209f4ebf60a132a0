"""A segment's preview: how many contacts it holds at `as_of`, how they spread over the named RFM
segments (when it has an RFM rule), and the first few members with what put them there. Two
queries, both the segment's own: a count grouped by named segment, and the first `sample`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func

from sopflow.errors import SopflowError
from sopflow.limits import year_problem
from sopflow.segmenting.fields import Dialect, dialect_of
from sopflow.segmenting.query import compile_segment
from sopflow.segmenting.rfm import RFM_NAMES, SQLITE_MONEY_SCALE, RfmName
from sopflow.segmenting.schema import Segment

MAX_SAMPLE = 100


@dataclass(frozen=True)
class Scores:
    recency: int
    frequency: int
    monetary: int
    segment: RfmName
    purchases: int
    total: Decimal
    last_purchase_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "recency": self.recency,
            "frequency": self.frequency,
            "monetary": self.monetary,
            "segment": self.segment,
            "purchases": self.purchases,
            "total": str(self.total),
            "last_purchase_at": self.last_purchase_at.isoformat(),
        }


@dataclass(frozen=True)
class Member:
    id: str
    first_name: str | None
    last_name: str | None
    lifecycle_stage: str | None
    tags: list[str]
    rfm: Scores | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "lifecycle_stage": self.lifecycle_stage,
            "tags": self.tags,
            "rfm": None if self.rfm is None else self.rfm.to_json(),
        }


@dataclass(frozen=True)
class Preview:
    segment: Segment
    as_of: datetime
    members: int
    rfm_counts: dict[RfmName, int] | None  # named segment -> members, those with any
    sample: list[Member]

    def to_json(self) -> dict[str, Any]:
        rfm = self.segment.rules.rfm
        return {
            "segment": self.segment.id,
            "name": self.segment.name,
            "as_of": self.as_of.isoformat(),
            "members": self.members,
            "rfm": None
            if rfm is None or self.rfm_counts is None
            else {"currency": rfm.currency, "segments": self.rfm_counts},
            "sample": [member.to_json() for member in self.sample],
        }


def preview(engine: Engine, segment: Segment, as_of: datetime, sample: int = 10) -> Preview:
    """Count the segment's members at `as_of`, per named RFM segment where it has an RFM rule,
    and read the first `sample` of them (by id)."""
    if not 0 <= sample <= MAX_SAMPLE:
        raise SopflowError(f"sample {sample}: show 0 to {MAX_SAMPLE} contacts")
    dialect = dialect_of(engine)
    compiled = compile_segment(segment, dialect, as_of)
    query, rfm, contacts = compiled.select, compiled.rfm, compiled.contacts
    with engine.connect() as connection:
        if rfm is None:
            counts = None
            total = connection.execute(query.with_only_columns(func.count()).order_by(None))
            members = int(total.scalar_one())
        else:
            grouped = (
                query.with_only_columns(rfm.c.segment, func.count())
                .group_by(rfm.c.segment)
                .order_by(None)
            )
            found = {row[0]: int(row[1]) for row in connection.execute(grouped)}
            counts = {name: found[name] for name in RFM_NAMES if name in found}
            members = sum(counts.values())
        columns = [contacts.c.id, contacts.c.fields]
        if rfm is not None:
            columns += [
                rfm.c.recency,
                rfm.c.frequency,
                rfm.c.monetary,
                rfm.c.segment,
                rfm.c.purchases,
                rfm.c.total,
                rfm.c.last_purchase_at,
            ]
        rows = connection.execute(query.with_only_columns(*columns).limit(sample)).all()
    return Preview(segment, as_of, members, counts, [_member(row, dialect) for row in rows])


def _member(row: Any, dialect: Dialect) -> Member:
    fields = row.fields or {}
    tags = fields.get("tags")
    scores = None
    if len(row) > 2:
        total = Decimal(row.total)
        if dialect == "sqlite":  # ranked in ten-thousandths (rfm.SQLITE_MONEY_SCALE)
            total = (total / SQLITE_MONEY_SCALE).quantize(Decimal("0.0001"))
        scores = Scores(
            recency=int(row.recency),
            frequency=int(row.frequency),
            monetary=int(row.monetary),
            segment=row.segment,
            purchases=int(row.purchases),
            total=total,
            last_purchase_at=row.last_purchase_at,
        )
    return Member(
        id=row.id,
        first_name=_text(fields.get("first_name")),
        last_name=_text(fields.get("last_name")),
        lifecycle_stage=_text(fields.get("lifecycle_stage")),
        tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
        rfm=scores,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_as_of(text: str | None, now: datetime) -> datetime:
    """`--as-of` / `as_of=`: an ISO date (its start, 00:00 UTC) or date-time (naive = UTC),
    in the years 1900-2200; none: `now`."""
    if text is None or not text.strip():
        return now
    text = text.strip()
    hint = "use an ISO date (2026-03-01, from 00:00 UTC) or date-time (2026-03-01T18:00:00+01:00)"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SopflowError(f"as_of {text!r}: {hint}") from None
    if why := year_problem(parsed):
        raise SopflowError(f"as_of {text!r}: {why}")
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
