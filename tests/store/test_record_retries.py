"""A step event is written once whatever retries it: a retried record activity (or a local
activity run again when its workflow task was replayed) must be a no-op, the finish included
(its write also closes the run, and must not fail because the first attempt already did)."""

from __future__ import annotations

from datetime import UTC, datetime

from sopflow.sop import engine
from sopflow.sop.plan import compile_plan
from sopflow.sop.protocol import Finish
from sopflow.sop.schema import Sop
from sopflow.store.repository import Store

START = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
PLAN = compile_plan(
    Sop.model_validate(
        {
            "id": "tiny",
            "version": 1,
            "name": "T",
            "owner": "o",
            "entry": {"events": ["x"]},
            "steps": [{"id": "bye", "kind": "end", "result": "done"}],
        }
    )
)


def test_a_retried_finish_is_a_no_op_and_the_run_stays_finished(store: Store) -> None:
    store.start_run("wf-f", "run-a", PLAN.sop.id, 1, PLAN.digest, "c-f", START)
    commands = engine.start(PLAN, {"id": "c-f"}, ["UTC"], START).commands
    finish = next(c for c in commands if isinstance(c, Finish))
    for command in commands:
        assert store.record_command("wf-f", "run-a", command)
    # The same finish again, as a retry or a replayed local activity writes it.
    assert not store.record_command("wf-f", "run-a", finish)
    assert not store.record_command("wf-f", "run-b", finish)  # after a workflow task retry
    run = store.run("wf-f")
    assert run is not None and (run.status, run.result) == ("finished", "done")
    assert [e.key for e in store.step_events("wf-f")].count(finish.key) == 1
