"""The workflow sandbox every sopflow worker uses.

The engine is deterministic but leans on libraries that load data lazily (holidays' country
tables, phonenumbers' zone maps): inside the sandbox those late imports fail or are re-executed
per workflow. Passing them through keeps one loaded copy, which is safe because none of them
keep mutable state that affects results. (holidays also reads translation files; see
sopflow.sop.clock._outside_workflow_sandbox.)
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = (
    "sopflow",
    "workflows.contracts",
    "pydantic",
    "pydantic_core",
    "holidays",
    "phonenumbers",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)
