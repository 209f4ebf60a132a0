"""Saved histories replay under the current code: a change that would break runs in flight
(a new command order without workflow.patched) fails here, in CI, before it ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.sandbox import workflow_runner
from workflows.sop_run import SopRun

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "replay").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"sop:{path.stem}", path.read_text())


def test_there_are_histories_to_replay() -> None:
    assert HISTORIES, "tests/replay is empty: run the workflow tests with SOPFLOW_SAVE_HISTORY=1"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[SopRun],
        workflow_runner=workflow_runner(),
        data_converter=pydantic_data_converter,
    )
    history = load(path)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
