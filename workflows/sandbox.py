"""The workflow sandbox every sopflow worker uses.

The engine is deterministic but leans on libraries that load data lazily (holidays' country
tables, phonenumbers' zone maps): inside the sandbox those late imports fail or are re-executed
per workflow. Passing them through keeps one loaded copy, which is safe because none of them
keep mutable state that affects results. (holidays also reads translation files; see
sopflow.sop.clock._outside_workflow_sandbox.)
"""

from __future__ import annotations

import sys
import tempfile

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = (
    "sopflow",
    "workflows.contracts",
    "pydantic",
    "pydantic_core",
    "holidays",
    "phonenumbers",
)


def cache_bytecode() -> None:
    """The sandbox imports the workflow's module afresh for every run it starts or replays.
    With bytecode writing off (PYTHONDONTWRITEBYTECODE, common in container images) each of
    those imports compiled workflows/sop_run.py from source: ~30 ms of the worker's one core
    per run, a third of its CPU in bench/bench_production.py. Bytecode goes to a private
    directory instead (not beside the source, which may be read-only)."""
    if sys.dont_write_bytecode:
        sys.pycache_prefix = sys.pycache_prefix or tempfile.mkdtemp(prefix="sopflow-pycache-")
        sys.dont_write_bytecode = False


def workflow_runner() -> SandboxedWorkflowRunner:
    cache_bytecode()
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)
