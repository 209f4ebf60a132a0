"""The gateway's segment routes, under /api/ (so behind its bearer token): the segments of the
folder, and a segment's preview. Files are read on each request: an edited segment shows at
once, and a file with a problem is listed with it rather than hiding the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as FastApiPath
from sqlalchemy import Engine

from sopflow.segmenting.files import find_segment, folder_segments
from sopflow.segmenting.preview import MAX_SAMPLE, parse_as_of, preview

# Module level: FastAPI resolves the (string) annotations of routes in module globals.
SegmentId = Annotated[str, FastApiPath(min_length=1, max_length=64)]
AsOf = Annotated[
    str | None,
    Query(max_length=40, description="ISO date (from 00:00 UTC) or date-time; default: now"),
]
Sample = Annotated[int, Query(ge=0, le=MAX_SAMPLE, description="members to show")]


def segments_router(engine: Engine, folder: Path) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/segments")
    async def list_segments() -> dict[str, Any]:
        """Every valid segment of the folder, with its rules, and the problems of the files
        that are not (FILE:LINE:COL: error: message)."""
        found, problems = await asyncio.to_thread(folder_segments, folder, True)
        return {
            "segments": [
                segment.model_dump(mode="json", by_alias=True, exclude_none=True)
                for segment in sorted(found.values(), key=lambda s: s.id)
            ],
            "problems": [str(problem) for problem in problems],
        }

    @router.get("/api/v1/segments/{segment_id}/preview")
    async def preview_segment(
        segment_id: SegmentId, as_of: AsOf = None, sample: Sample = 10
    ) -> dict[str, Any]:
        """How many contacts the segment holds at `as_of`, per named RFM segment when it has an
        RFM rule, and the first `sample` members by id. 404 for an unknown segment."""
        segment = await asyncio.to_thread(find_segment, folder, segment_id)
        at = parse_as_of(as_of, datetime.now(UTC))
        shown = await asyncio.to_thread(preview, engine, segment, at, sample)
        return shown.to_json()

    return router
