"""Inputs and outputs of the SopRun workflow and its activities: one pydantic model each.

Add fields, never remove or rename them: running workflows and saved histories depend on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

from sopflow.sop.plan import Plan
from sopflow.sop.protocol import Command, RunState
from sopflow.sop.schema import ContactPolicy

TASK_QUEUE = "sopflow"


class SopRunInput(BaseModel):
    plan: Plan
    contact: dict[str, Any]
    zones: list[str]
    trigger: str = ""
    trigger_data: dict[str, Any] = Field(default_factory=dict)
    state: RunState | None = Field(None, description="set when the run continues as new")
    continue_every: int | None = Field(
        None,
        ge=1,
        description="continue as new after this many engine transitions (bounds history)",
    )
    generation: int = Field(0, description="how many times this enrolment has continued as new")
    variants: dict[str, str] = Field(
        default_factory=dict,
        description="split step -> arm assigned at enrolment (store/splits.py); else the hash",
    )


class SopRunResult(BaseModel):
    result: str | None
    state: RunState
    generation: int = 0


class ContactEventSignal(BaseModel):
    name: str
    data: dict[str, Any] = Field(default_factory=dict)


class ProviderEventSignal(BaseModel):
    key: str = Field(description="the engine key of the send or call it is about")
    status: str = Field(min_length=1, max_length=40)
    detail: dict[str, Any] = Field(default_factory=dict)


class ControlSignal(BaseModel):
    action: Literal["pause", "resume", "cancel"]
    actor: str = Field(min_length=1)
    reason: str = ""


class OutcomeRequest(BaseModel):
    step: str
    outcome: str
    actor: str
    note: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class OutcomeAnswer(BaseModel):
    accepted: bool
    message: str = ""


class CommandInput(BaseModel):
    """One engine command for an activity to carry out, with the run it belongs to."""

    workflow_id: str
    run_id: str
    sop: str
    version: int
    command: Command
    digest: str = ""
    contact_id: str = ""
    enrolled_at: AwareDatetime | None = None
    zones: list[str] = Field(default_factory=list, description="touches: the contact's zones")
    policy: ContactPolicy | None = Field(None, description="touches: windows the gate re-checks")
    purpose: str = Field("marketing", description="touches: the SOP's purpose (legal rules)")
    priority: int = Field(50, description="touches: the SOP's priority (organisation caps)")

    @property
    def idempotency_key(self) -> str:
        """Stable across activity retries and continue-as-new: the run's business id + the engine key."""
        return f"{self.workflow_id}/{self.command.key}"


class CommandResult(BaseModel):
    status: Literal["done", "blocked", "failed"] = "done"
    reason: str = ""
    retry_at: AwareDatetime | None = None
    due_at: AwareDatetime | None = None  # a task: the due time the gate counted
    detail: dict[str, Any] = Field(default_factory=dict)
