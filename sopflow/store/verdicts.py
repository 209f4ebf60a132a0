"""The scorer's verdicts on runs, kept in `run_verdicts` so that a report reads a run's scored
items instead of rescoring its step events (store.reports.Scores writes and reads them).

A verdict is a pure function of its inputs (compliance/adherence.py): the plan (by digest),
whether the run has finished, the contact's zones (from its phone and time zone, by the plan's
policy and phonenumbers' metadata) and opt-out time, and the run's step events. Its `basis`
names all of them: the events by their count and last id (step events are only ever added, but
ids may commit out of order: the count catches an older id arriving late), the contact by a hash
(no phone number is copied here). A kept verdict serves only while the basis read now equals
the one it was scored from; anything else (a new event, a late receipt on a finished run, an
opt-out, a new phone number, a run that finished) rescores it.
Time is not an input: an open task stays `pending` in the verdict, and whether it is overdue
*now* is decided by each report at read time (store.listing.past_due), so a kept verdict never
goes stale as the clock moves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import phonenumbers
from sqlalchemy import Connection, Table

from sopflow.compliance.adherence import Item, RunScore, Violation
from sopflow.store.models import RunVerdict
from sopflow.store.rows import dialect_insert

# Bump when the scorer (compliance/adherence.py) judges differently or a verdict's shape
# changes: every kept verdict then fails its basis and is rescored once. The phonenumbers
# version stands for its zone metadata, which the contact's zones come from.
SCORER_VERSION = 1
_SOURCE = f"v{SCORER_VERSION}/phonenumbers-{phonenumbers.__version__}"
_MICROSECOND = timedelta(microseconds=1)
# The Core table: an insert of the ORM entity went through the ORM's bulk path, and a
# multi-row VALUES took longer to compile than to run.
_TABLE = cast("Table", RunVerdict.__table__)


def basis(
    digest: str,
    finished: bool,
    phone: str | None,
    timezone: str | None,
    opted_out_at: datetime | None,
    events: int,
    last_event: int,
) -> str:
    """What a run's verdict is scored from, as one comparable string."""
    contact = hashlib.blake2b(f"{phone}\n{timezone}".encode(), digest_size=10).hexdigest()
    opted = opted_out_at.isoformat() if opted_out_at else "-"
    state = "finished" if finished else "open"
    return f"{_SOURCE} {digest} {state} {contact} {opted} {events}:{last_event}"


@dataclass(frozen=True)
class Verdict:
    """A kept verdict: the run's zones as scored, and its score's parts."""

    zones: list[str]
    variant: str | None
    items: list[Item]
    violations: list[Violation]


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def dump(score: RunScore) -> str:
    """The verdict as JSON: the zones, the variant, the items and the violations as lists."""
    items = [
        [i.step, i.key, i.kind, i.actor, _at(i.due_at), i.weight, i.status, _at(i.done_at),
         i.late_by // _MICROSECOND if i.late_by is not None else None, i.reason]
        for i in score.items
    ]  # fmt: skip
    violations = [
        [v.step, v.key, v.actor, v.at.isoformat(), v.rule, v.reason] for v in score.violations
    ]
    zones = list(score.facts.zones)
    return json.dumps([zones, score.variant, items, violations], separators=(",", ":"))


def _item(row: list[Any]) -> Item:
    step, key, kind, actor, due, weight, status, done, late, reason = row
    # Inline, not through a helper: a report decodes a few items for every run it covers.
    due_at = datetime.fromisoformat(due) if due is not None else None
    done_at = datetime.fromisoformat(done) if done is not None else None
    late_by = timedelta(microseconds=late) if late is not None else None
    return Item(step, key, kind, actor, due_at, weight, status, done_at, late_by, reason)


def load(text: str) -> Verdict:
    """A kept verdict, as `dump` wrote it."""
    zones, variant, items, violations = json.loads(text)
    return Verdict(
        zones,
        variant,
        [_item(row) for row in items],
        [
            Violation(step, key, actor, datetime.fromisoformat(at), rule, reason)
            for step, key, actor, at, rule, reason in violations
        ],
    )


def save(connection: Connection, verdicts: Sequence[dict[str, Any]]) -> None:
    """Insert or replace verdicts ({workflow_id, basis, verdict}), so two reports scoring the
    same run at once both succeed (the last write wins; both are right)."""
    if not verdicts:
        return
    insert = dialect_insert(connection.dialect.name)(_TABLE)
    excluded = {"basis": insert.excluded.basis, "verdict": insert.excluded.verdict}
    upsert = insert.on_conflict_do_update(index_elements=["workflow_id"], set_=excluded)
    connection.execute(upsert, list(verdicts))
