"""Preview is production for layering, on test_differential's production path (the gateway's
SopRun → activities → StoreEffects → the SQL store, the Twilio SDK against the sandbox): a lead
the store holds in `high_intent` and one it does not run through lead_triage, and the simulator,
told the same membership, shows the same steps at the same times and records the same answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from test_differential import LINKS, RULES, SEEDS, TIMER_FLOOR, Stack, run_in_production
from test_differential import stack as stack  # the module's production path, started once

from sopflow.sop.simulator import Script, ScriptedOutcome, simulate
from sopflow.store.models import ContactActivity

TRIAGE = SEEDS["lead_triage"]
ROOT = Path(__file__).resolve().parents[2]


def high_intent_lead(stack: Stack, visited_days_ago: int) -> dict[str, Any]:
    contact_id = f"c-{uuid.uuid4().hex[:12]}"
    contact = {"id": contact_id, "first_name": "Ann", "phone": "+12125550123"}
    stack.store.upsert_contact({**contact, "lifecycle_stage": "lead", "tags": ["price_page"]})
    at = datetime.now(UTC) - timedelta(days=visited_days_ago)
    row = {"contact_id": contact_id, "kind": "visit", "key": "v1", "at": at}
    with stack.store.engine.begin() as connection:
        connection.execute(insert(ContactActivity), [row])
    return contact


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("visited", "member"), [(3, True), (40, False)])
async def test_triage_by_segment_runs_as_previewed(
    stack: Stack, visited: int, member: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # StoreEffects reads segments/ from the working directory
    contact = high_intent_lead(stack, visited)
    reports = {"sales_call": [ScriptedOutcome("connected", timedelta(minutes=12, seconds=17))]}
    workflow_id, result = await run_in_production(stack, TRIAGE, contact, reports, [])
    preview = simulate(
        TRIAGE,
        contact,
        result.state.enrolled_at,
        Script(outcomes={k: list(v) for k, v in reports.items()}),
        zones=result.state.zones,
        rules=RULES,
        links=LINKS,
        segments=["high_intent"] if member else [],
    )
    assert result.result == preview.result == ("qualified" if member else "nurtured")
    events = stack.store.step_events(workflow_id)
    stored = {
        e.key: (e.action, e.executed_at.replace(tzinfo=e.executed_at.tzinfo or UTC)) for e in events
    }
    shown = {e.key: (e.action, e.at) for e in preview.timeline}
    assert {k: a for k, (a, _) in stored.items()} == {k: a for k, (a, _) in shown.items()}
    for key, (_, at) in shown.items():
        assert timedelta(0) <= stored[key][1] - at <= TIMER_FLOOR, key
    (recorded,) = [e.detail for e in events if e.action == "branch"]
    (previewed,) = [e.detail for e in preview.timeline if e.action == "branch"]
    assert recorded == previewed
    assert recorded["segments"] == {"high_intent": member}
