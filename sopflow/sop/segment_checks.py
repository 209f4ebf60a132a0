"""Validation of segment conditions (`segment: ID`, `not_segment: ID`) in entry conditions and
branch cases: each id must be a segment file's (checks.check_sop calls this)."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from sopflow.sop.schema import Condition, Sop
from sopflow.sop.steps import handler_for
from sopflow.sop.steps.base import Loc, hint

Finding = tuple[Loc, str]


def _named(loc: Loc, condition: Condition) -> Iterator[tuple[Loc, str]]:
    """(where the id is written, the id) for every segment the condition names."""
    if condition.any is not None:
        for i, group in enumerate(condition.any):
            for j, inner in enumerate(group):
                yield from _named((*loc, "any", i, j), inner)
    elif condition.segment is not None:
        yield (*loc, "segment"), condition.segment
    elif condition.not_segment is not None:
        yield (*loc, "not_segment"), condition.not_segment


def named_segments(sop: Sop) -> list[tuple[Loc, str]]:
    """Every segment id the SOP names, with its place in the document."""
    found: list[tuple[Loc, str]] = []
    for i, condition in enumerate(sop.entry.conditions):
        found += _named(("entry", "conditions", i), condition)
    for i, step in enumerate(sop.steps):
        for route in handler_for(step).routes():
            for loc, condition in route.when:
                found += _named(("steps", i, *loc), condition)
    return found


def segments_in_working_folder() -> tuple[set[str], int]:
    """The valid segment ids of segments/ (where the gateway and worker read them) and how many
    files there cannot be read: for callers that give no segment ids."""
    from sopflow.segmenting.files import SEGMENTS_DIR, folder_segments  # it imports sop modules

    found, problems = folder_segments(SEGMENTS_DIR, missing_ok=True)
    return set(found), len({p.file for p in problems})


def segment_problems(sop: Sop, known_segments: Collection[str] | None) -> list[Finding]:
    """An unknown segment id, with a "did you mean" and the known ids."""
    named = named_segments(sop)
    if not named:
        return []
    broken = 0
    if known_segments is None:
        known, broken = segments_in_working_folder()
    else:
        known = set(known_segments)
    listed = f"known segments: {', '.join(sorted(known)) or 'none'}"
    unread = (
        f"; {broken} segment file{'s' if broken != 1 else ''} cannot be read: "
        "`sopflow segments validate` says why"
        if broken
        else ""
    )
    return [
        (loc, f"unknown segment {segment!r}{hint(segment, known)}; {listed}{unread}")
        for loc, segment in named
        if segment not in known
    ]
