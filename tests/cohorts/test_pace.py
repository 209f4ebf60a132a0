"""A cohort is enrolled at a controlled pace: at most the rule's starts per second, and never
ahead of the workers (starts hold while the task queue's workflow tasks wait)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from sopflow.cohorts.enrol import Backpressure, Pacer


async def test_the_pacer_spaces_starts_at_the_rule_rate() -> None:
    pacer = Pacer(per_second=50)
    began = time.monotonic()
    await asyncio.gather(*(pacer.wait() for _ in range(26)))
    # 26 starts at 50/s: the last one 25 intervals (0.5 s) after the first, not before.
    assert time.monotonic() - began >= 0.49


@dataclass
class _Runs:
    """Runs whose history is `lengths[id][i]` events long at look i (4+: a worker took it up)."""

    lengths: dict[str, list[int]]
    looked: list[str] = field(default_factory=list)

    def get_workflow_handle(self, workflow_id: str) -> Any:
        return _Run(self, workflow_id)


@dataclass
class _Run:
    runs: _Runs
    workflow_id: str

    async def describe(self) -> Any:
        seen = self.runs.looked.count(self.workflow_id)
        self.runs.looked.append(self.workflow_id)
        lengths = self.runs.lengths.get(self.workflow_id, [4])
        return type("Described", (), {"history_length": lengths[min(seen, len(lengths) - 1)]})


async def test_starts_hold_while_the_runs_started_wait_for_a_worker() -> None:
    runs = _Runs({"w3": [3, 3, 4]})  # w3 is taken up at the third look
    beats: list[int] = []
    pressure = Backpressure(runs, lambda: beats.append(1), window=3, step=2, poll=0.01)  # type: ignore[arg-type]
    for n in range(5):
        await pressure.wait()
        pressure.started.append(f"w{n}")
    # Before the 5th start, w1 was 3 back and 2 on from nothing: looked at, taken up.
    assert runs.looked == ["w1"]
    await pressure.wait()  # 5 started: w2 is 3 back, a step is 2: no look yet
    assert runs.looked == ["w1"]
    pressure.started.append("w5")
    await pressure.wait()  # 6 started: w3, held until a worker takes it up
    assert runs.looked == ["w1", "w3", "w3", "w3"] and len(beats) == 2
    assert pressure.held == pytest.approx(0.02)
    pressure.started.append("w6")
    await pressure.wait()
    assert runs.looked == ["w1", "w3", "w3", "w3"]


async def test_a_run_nobody_serves_holds_the_cohort(
    live_env: WorkflowEnvironment, task_queue: str
) -> None:
    """On the real server: a run waiting for a worker is not taken up; one a worker ran is."""
    waiting = f"w-{uuid.uuid4()}"
    await live_env.client.start_workflow("Nothing", id=waiting, task_queue=task_queue)
    pressure = Backpressure(live_env.client, lambda: None, window=2, step=1, poll=0.05)
    pressure.started += [waiting, "next"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pressure.wait(), timeout=1.0)
    assert pressure.held >= 0.5
