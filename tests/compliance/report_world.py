"""Hand-built runs for the dashboard reports' tests (teams, funnel, pilots), written as the
worker writes them (Store.record_command), on SQLite and on the PostgreSQL server of this
machine. Finished runs sit at fixed times inside the SOPs' call window (09:00-20:00 in New York,
on a Tuesday) so their verdicts are exact; open tasks sit around now (overdue is judged by the
clock)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import AssignTask, Command, Finish, Record
from sopflow.sop.schema import AssignRule, Sop
from sopflow.store.repository import Store

ROOT = Path(__file__).parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)
BASE = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)  # 09:00 in New York, a Tuesday


def source(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "sop_definitions" / f"{name}.yaml").read_text())
    return loaded


CALLBACK = source("new_lead_callback")
# new_lead_callback naming its success: touches per success count its runs.
LEADS = compile_plan(Sop.model_validate(CALLBACK | {"success_results": ["converted"]}))
OTHER = compile_plan(Sop.model_validate(CALLBACK | {"id": "other_sop", "version": 1}))
PILOT_SOURCE = source("script_pilot")
PILOT = compile_plan(Sop.model_validate(PILOT_SOURCE))  # v3, success_results: [converted]
# An older pilot version: no success results yet, and a step v3 dropped.
_OLD = {k: v for k, v in PILOT_SOURCE.items() if k != "success_results"}
OLD_PILOT = compile_plan(
    Sop.model_validate(
        _OLD
        | {
            "version": 2,
            "steps": [*_OLD["steps"], {"id": "dropped", "kind": "end", "result": "dropped"}],
        }
    )
)


class Writer:
    """One run's step events, as the worker writes them."""

    def __init__(self, store: Store, plan: Plan, name: str, enrolled: datetime) -> None:
        self.store, self.plan = store, plan
        self.run_id = f"sop:{plan.sop.id}:{name}:k"
        self.seq = 0
        store.upsert_contact({"id": name, "first_name": "Ann", "phone": "+12125550123"})
        store.start_run(
            self.run_id, "r", plan.sop.id, plan.sop.version, plan.digest, name, enrolled
        )

    def record(self, command: Command, actor: str | None = None) -> None:
        self.store.record_command(self.run_id, "r", command, actor=actor)

    def task(self, step: str, rep: str | None, at: datetime, due: datetime) -> str:
        self.seq += 1
        key = f"{step}:{self.seq}"
        assign = AssignTask(
            at=at, step=step, key=key, title="Call", instructions="Call",
            assign=AssignRule(strategy="round_robin", team="inside"), due_at=due,
            planned_at=at, attempt=1, context={}, channel="call",
        )  # fmt: skip
        self.record(assign, actor=rep)
        return key

    def note(self, step: str, action: str, at: datetime, **detail: Any) -> None:
        self.seq += 1
        key = f"{step}:{self.seq}:{action}"
        self.record(Record(at=at, step=step, key=key, action=action, detail=detail))

    def outcome(self, step: str, outcome: str, at: datetime, actor: str) -> None:
        self.note(step, "outcome", at, outcome=outcome, actor=actor)

    def finish(self, step: str, at: datetime, result: str) -> None:
        self.record(Finish(at=at, step=step, key="end", result=result))
