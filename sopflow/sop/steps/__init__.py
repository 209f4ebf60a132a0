"""One handler per step kind; `handler_for` is the one place a step finds its handler.

The match is exhaustive over schema.Step: a kind added to the language without a handler here
fails mypy (assert_never), not a run.
"""

from __future__ import annotations

from typing import Any, assert_never

from sopflow.sop.schema import (
    BranchStep,
    CallStep,
    EndStep,
    EnrollStep,
    LadderStep,
    MessageStep,
    SplitStep,
    Step,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
)
from sopflow.sop.steps.base import Handler
from sopflow.sop.steps.branch import Branch
from sopflow.sop.steps.call import Call
from sopflow.sop.steps.end import End
from sopflow.sop.steps.enroll import Enroll
from sopflow.sop.steps.ladder import Ladder
from sopflow.sop.steps.message import Message
from sopflow.sop.steps.split import Split
from sopflow.sop.steps.task import Task
from sopflow.sop.steps.update import Update
from sopflow.sop.steps.wait import Wait, WaitFor


def handler_for(step: Step) -> Handler[Any]:
    match step:
        case MessageStep():
            return Message(step)
        case CallStep():
            return Call(step)
        case TaskStep():
            return Task(step)
        case LadderStep():
            return Ladder(step)
        case WaitStep():
            return Wait(step)
        case WaitForStep():
            return WaitFor(step)
        case BranchStep():
            return Branch(step)
        case SplitStep():
            return Split(step)
        case EnrollStep():
            return Enroll(step)
        case UpdateStep():
            return Update(step)
        case EndStep():
            return End(step)
        case _:
            assert_never(step)
