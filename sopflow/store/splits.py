"""Balanced split arms, recorded: the arm of every split step is fixed when a contact is enrolled.

A contact's first enrolment takes the split's next sequence number and the balanced arm at it
(sopflow/sop/splits.py); every later enrolment of the same contact gets the recorded arm back.
Safe under concurrent gateways and workers, on SQLite and PostgreSQL: an allocation first bumps the
split's counter row, so allocations of one split take turns and each sees what the one before it
committed; the first allocations of a new split race to create the counter, and the loser retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sopflow.errors import SopflowError
from sopflow.sop.plan import Plan
from sopflow.sop.schema import SplitStep
from sopflow.sop.splits import balanced_variant, split_steps
from sopflow.store.models import SplitAssignment, SplitCounter

# Only the creation of a split's counter and a contact enrolled twice at once can conflict, and
# either settles on the next attempt; more is a database that keeps failing, worth an error.
_ATTEMPTS = 5


@dataclass(frozen=True)
class Assignment:
    sop_id: str
    step: str
    contact_id: str
    variant: str
    seq: int
    assigned_at: datetime
    created: bool  # False: the contact already had this arm


def _assignment(row: SplitAssignment, created: bool) -> Assignment:
    return Assignment(
        row.sop_id, row.step, row.contact_id, row.variant, row.seq, row.assigned_at, created
    )


class SplitAssignments:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def assign(self, plan: Plan, contact_id: str, at: datetime | None = None) -> dict[str, str]:
        """Split step -> arm for every split step of the plan, allocated now if need be: what a
        run is started with. An arm recorded under an earlier version that the step no longer
        has is left out (the run falls back to the hash and records that)."""
        arms: dict[str, str] = {}
        for step in split_steps(plan):
            found = self.assign_step(plan, step, contact_id, at)
            if found.variant in {v.name for v in step.variants}:
                arms[step.id] = found.variant
        return arms

    def assign_step(
        self, plan: Plan, step: SplitStep, contact_id: str, at: datetime | None = None
    ) -> Assignment:
        """The contact's arm at `step`: the recorded one, else the next balanced one (recorded)."""
        for _ in range(_ATTEMPTS):
            found = self.get(plan.sop.id, step.id, contact_id)
            if found is not None:
                return found
            try:
                return self._allocate(plan, step, contact_id, at or datetime.now(UTC))
            except IntegrityError:
                continue  # another allocation created the counter or this contact's row first
        raise SopflowError(
            f"could not assign an arm of split {plan.sop.id}:{step.id} to contact {contact_id!r}"
        )

    def _allocate(self, plan: Plan, step: SplitStep, contact_id: str, at: datetime) -> Assignment:
        key = (SplitCounter.sop_id == plan.sop.id, SplitCounter.step == step.id)
        with Session(self.engine, expire_on_commit=False) as session:
            # The bump is the transaction's first statement: it takes the counter's row lock
            # (PostgreSQL) or the write lock (SQLite) before anything is read, so the check below
            # sees every allocation committed before this one.
            bumped = session.execute(
                update(SplitCounter)
                .where(*key)
                .values(next_seq=SplitCounter.next_seq + 1)
                .returning(SplitCounter.next_seq)
            ).scalar_one_or_none()
            if bumped is None:  # the split's first contact
                session.add(SplitCounter(sop_id=plan.sop.id, step=step.id, next_seq=1))
                session.flush()
                bumped = 1
            existing = session.get(SplitAssignment, (plan.sop.id, step.id, contact_id))
            if existing is not None:  # enrolled meanwhile: give its number back
                found = _assignment(existing, created=False)
                session.rollback()
                return found
            seq = bumped - 1
            row = SplitAssignment(
                sop_id=plan.sop.id,
                step=step.id,
                contact_id=contact_id,
                variant=balanced_variant(plan, step, seq),
                seq=seq,
                assigned_at=at,
            )
            session.add(row)
            session.commit()
            return _assignment(row, created=True)

    def get(self, sop_id: str, step_id: str, contact_id: str) -> Assignment | None:
        with Session(self.engine) as session:
            row = session.get(SplitAssignment, (sop_id, step_id, contact_id))
            return _assignment(row, created=False) if row is not None else None

    def counts(self, sop_id: str, step_id: str) -> dict[str, int]:
        """How many contacts each arm of a split has."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(SplitAssignment.variant, func.count())
                .where(SplitAssignment.sop_id == sop_id, SplitAssignment.step == step_id)
                .group_by(SplitAssignment.variant)
            )
            return {variant: count for variant, count in rows}
