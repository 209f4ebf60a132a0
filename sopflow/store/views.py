"""The run record as people read it (API, CLI): one shape, built in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sopflow.store.models import Run, StepEvent


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.workflow_id,
        "sop": run.sop_id,
        "version": run.version,
        "digest": run.digest,
        "contact": run.contact_id,
        "status": run.status,
        "result": run.result,
        "enrolled_at": _iso(run.enrolled_at),
        "finished_at": _iso(run.finished_at),
    }


def run_view(run: Run, events: list[StepEvent]) -> dict[str, Any]:
    """A run with every step's planned, due and executed times, outcome, actor and reason."""
    return run_summary(run) | {
        "steps": [
            {
                "key": e.key,
                "step": e.step,
                "action": e.action,
                "planned_at": _iso(e.planned_at),
                "due_at": _iso(e.due_at),
                "executed_at": _iso(e.executed_at),
                "outcome": e.outcome,
                "actor": e.actor,
                "channel": e.channel,
                "provider_id": e.provider_id,
                "reason": e.reason,
                "detail": e.detail,
            }
            for e in events
        ]
    }
