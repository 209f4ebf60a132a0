"""A saved CohortRun history replays under the current code: a change to the fan-out's commands
that would break fan-outs in flight (or their continue-as-new) fails here, before it ships.
Refresh it after a deliberate change: SOPFLOW_SAVE_HISTORY=1 pytest tests/cohorts/test_fanout.py."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.cohort_run import CohortRun
from workflows.sandbox import workflow_runner

HISTORY = Path(__file__).parent / "histories" / "cohort_run.json"


async def test_a_saved_fan_out_replays() -> None:
    replayer = Replayer(
        workflows=[CohortRun],
        workflow_runner=workflow_runner(),
        data_converter=pydantic_data_converter,
    )
    history = WorkflowHistory.from_json("cohort:saved", HISTORY.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
