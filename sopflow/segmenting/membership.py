"""Segment membership for routing (layering): the store's answers to what the pure engine asks.

    memberships   one contact, the named segments, at a time: the `sopflow.check_segments`
                  activity answers a branch's CheckSegments with it
    admit         the event intake's second pass: SOPs whose entry names segments are started
                  only for members (or non-members), the others are listed with the reason

Both read the segment files on each call (a few small YAML files), as the gateway's segment
routes do, so an edited segment routes the next question. Enrolment paths other than the event
intake (a cohort rule, …) call `entry_answers` and hand them to `engine.entry_matches`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from sopflow.enrolment import Enrolment
from sopflow.errors import SopflowError
from sopflow.segmenting.files import UnknownSegmentError, folder_segments
from sopflow.segmenting.query import is_member, members_among
from sopflow.segmenting.schema import Segment
from sopflow.sop import engine as sop_engine
from sopflow.sop import segment_routing
from sopflow.sop.plan import Plan


def _defined(folder: Path, segment_ids: Iterable[str]) -> dict[str, Segment]:
    """The named segments as `folder` defines them now. UnknownSegmentError (naming the known
    ids) for a segment no valid file defines: deleted or broken since deployment."""
    found, problems = folder_segments(folder, missing_ok=True)
    ids = list(dict.fromkeys(segment_ids))
    for segment_id in ids:
        if segment_id not in found:
            broken = len({p.file for p in problems if p.file != str(folder)})
            raise UnknownSegmentError(segment_id, found, folder, broken)
    return {s: found[s] for s in ids}


def memberships(
    engine: Engine, folder: Path, contact_id: str, segment_ids: Iterable[str], as_of: datetime
) -> dict[str, bool]:
    """Whether the contact is in each segment at `as_of` (UnknownSegmentError: see _defined)."""
    defined = _defined(folder, segment_ids)
    return {s: is_member(engine, segment, contact_id, as_of) for s, segment in defined.items()}


def entry_answers(
    engine: Engine, folder: Path, plan: Plan, contact_id: str, as_of: datetime
) -> dict[str, bool]:
    """The answers `engine.entry_matches` needs for the plan's entry (empty: it names none)."""
    named = segment_routing.entry_segments(plan)
    return memberships(engine, folder, contact_id, named, as_of) if named else {}


def page_entry_answers(
    engine: Engine, folder: Path, plan: Plan, contact_ids: Sequence[str], as_of: datetime
) -> dict[str, dict[str, bool]]:
    """`entry_answers` for a page of contacts (a cohort's), one query per named segment."""
    named = segment_routing.entry_segments(plan)
    if not named:
        return {c: {} for c in contact_ids}
    inside = {
        s: members_among(engine, segment, contact_ids, as_of)
        for s, segment in _defined(folder, named).items()
    }
    return {c: {s: c in ids for s, ids in inside.items()} for c in contact_ids}


@dataclass
class Admitted:
    """What intake starts, and the SOPs a segment kept out with the reason (the API's skipped)."""

    enrolments: list[Enrolment] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (sop id, reason)


def admit(
    engine: Engine,
    folder: Path,
    enrolments: Sequence[Enrolment],
    event_type: str,
    data: dict[str, Any],
    as_of: datetime,
) -> Admitted:
    """Intake's second pass, once the contact is in the store (its segments are SQL over it):
    each enrolment whose SOP's entry names segments is kept only if the entry holds with the
    store's answers. A segment that cannot be answered keeps the SOP out, with the reason."""
    admitted = Admitted()
    for enrolment in enrolments:
        plan, contact = enrolment.plan, enrolment.contact
        if not segment_routing.entry_segments(plan):
            admitted.enrolments.append(enrolment)
            continue
        try:
            answers = entry_answers(engine, folder, plan, str(contact["id"]), as_of)
        except SopflowError as exc:
            admitted.refused.append((plan.sop.id, f"entry condition: {exc}"))
            continue
        if sop_engine.entry_matches(plan, event_type, contact, data, answers):
            admitted.enrolments.append(enrolment)
            continue
        why = segment_routing.unmet(plan.sop.entry.conditions, answers)
        reason = (
            f"entry condition: the contact is {' and '.join(why)} (as of {as_of.isoformat()})"
            if why
            else "the entry's conditions do not hold for the contact's segments"
        )
        admitted.refused.append((plan.sop.id, reason))
    return admitted


async def admit_soon(
    engine: Engine,
    folder: Path,
    enrolments: Sequence[Enrolment],
    event_type: str,
    data: dict[str, Any],
) -> Admitted:
    """`admit` as of now, in a thread (SQL) only when an SOP's entry names a segment: intake
    pays nothing for SOPs that route by none."""
    if not any(segment_routing.entry_segments(e.plan) for e in enrolments):
        return Admitted(enrolments=list(enrolments))
    now = datetime.now(UTC)
    return await asyncio.to_thread(admit, engine, folder, enrolments, event_type, data, now)
