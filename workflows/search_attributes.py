"""A run's search attributes: what `temporal workflow list --query` and Temporal's UI filter on.

    temporal workflow list --query "SopId='new_lead_callback' AND Rep='ana'"

Defined once, here: SopRun upserts them (the stable ones at its first task, the others as it
waits), `sopflow up` and the tests' dev server register them (`dev_server_args`), a worker
checks that a cluster has them (sopflow.runtime.check_search_attributes), and
docs/temporal-cluster.md gives the commands that create them (`create_commands`).

The values use the run listing's vocabulary (sopflow.store.listing RunStatus / WaitingFor: a
test keeps the two equal), so a query in Temporal and a filter of GET /api/v1/runs mean the
same thing. This module imports no SQL: the workflow imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, assert_never

from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributeUpdate,
)

from sopflow.sop.plan import Plan
from sopflow.sop.protocol import RunState
from sopflow.sop.schema import LadderStep, LadderTask, TaskStep

SOP_ID = SearchAttributeKey.for_keyword("SopId")
SOP_VERSION = SearchAttributeKey.for_int("SopVersion")
CONTACT_ID = SearchAttributeKey.for_keyword("ContactId")
# A list: the reps holding the run's open task, else the last one assigned (one at a time today;
# a list so a step that assigns several reps needs no new attribute).
REP = SearchAttributeKey.for_keyword_list("Rep")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")
WAITING_FOR = SearchAttributeKey.for_keyword("WaitingFor")
KEYS: tuple[SearchAttributeKey[Any], ...] = (
    SOP_ID,
    SOP_VERSION,
    CONTACT_ID,
    REP,
    RUN_STATUS,
    WAITING_FOR,
)

# The listing's words (sopflow/store/listing.py), repeated because that module imports SQL.
RunStatus = Literal["running", "finished"]
WaitingFor = Literal["rep", "resume", "window", "unknown"]


def type_name(kind: SearchAttributeIndexedValueType) -> str:
    """A type as the `temporal` CLI and Temporal's docs spell it."""
    match kind:
        case SearchAttributeIndexedValueType.TEXT:
            return "Text"
        case SearchAttributeIndexedValueType.KEYWORD:
            return "Keyword"
        case SearchAttributeIndexedValueType.INT:
            return "Int"
        case SearchAttributeIndexedValueType.DOUBLE:
            return "Double"
        case SearchAttributeIndexedValueType.BOOL:
            return "Bool"
        case SearchAttributeIndexedValueType.DATETIME:
            return "Datetime"
        case SearchAttributeIndexedValueType.KEYWORD_LIST:
            return "KeywordList"
        case _:
            assert_never(kind)


def dev_server_args(keys: Sequence[SearchAttributeKey[Any]] = KEYS) -> list[str]:
    """`temporal server start-dev` flags registering the attributes; idempotent on a database
    that has them already (a restart of `sopflow up`)."""
    return [
        arg
        for key in keys
        for arg in ("--search-attribute", f"{key.name}={type_name(key.indexed_value_type)}")
    ]


def create_commands(
    namespace: str, keys: Sequence[SearchAttributeKey[Any]] = KEYS, address: str | None = None
) -> list[str]:
    """The `temporal` commands that create `keys` on a self-hosted cluster, one per attribute:
    the CLI (1.9) takes several --name but one --type, and adds only the first name."""
    where = f" --address {address}" if address else ""
    return [
        f"temporal operator search-attribute create{where} --namespace {namespace} "
        f"--name {key.name} --type {type_name(key.indexed_value_type)}"
        for key in keys
    ]


def missing(
    registered: Mapping[str, SearchAttributeIndexedValueType],
    keys: Sequence[SearchAttributeKey[Any]] = KEYS,
) -> list[SearchAttributeKey[Any]]:
    """The keys a namespace lacks, or has under another type (an upsert of those would fail
    the workflow task, and the run would stall retrying it)."""
    return [key for key in keys if registered.get(key.name) != key.indexed_value_type]


def waiting_for(plan: Plan, state: RunState) -> WaitingFor | None:
    """What a run waits for now, in the listing's words; None once it has finished. The workflow
    knows more than the store (a wait step's timer, a contact's event): those are "unknown" to
    the listing, and stay so here, so both answer a filter alike."""
    if state.finished:
        return None
    if state.paused:
        return "resume"
    match state.phase:
        case "awaiting_outcome":
            return "rep" if rep_task(plan, state.step) else "unknown"
        case "deferred":
            return "window"
        case "waiting" | "awaiting_event" | "awaiting_result":
            return "unknown"
        case "finished":
            return None
        case _:
            assert_never(state.phase)


def rep_task(plan: Plan, step_id: str | None) -> bool:
    """A rep's task holds the step (a call step's outcome comes from the carrier)."""
    if step_id is None or not plan.has_step(step_id):
        return False
    step = plan.step(step_id)
    return isinstance(step, TaskStep) or (
        isinstance(step, LadderStep) and isinstance(step.attempt, LadderTask)
    )


def run_status(state: RunState) -> RunStatus:
    return "finished" if state.finished else "running"


@dataclass(frozen=True)
class Progress:
    """The attributes that change as a run goes on; compared so an unchanged one is not
    upserted again (each upsert is an event in the history)."""

    status: RunStatus
    waiting_for: WaitingFor | None
    reps: tuple[str, ...]

    def updates(self) -> list[SearchAttributeUpdate[Any]]:
        wait = (
            WAITING_FOR.value_set(self.waiting_for)
            if self.waiting_for
            else WAITING_FOR.value_unset()
        )
        rep = REP.value_set(list(self.reps)) if self.reps else REP.value_unset()
        return [RUN_STATUS.value_set(self.status), wait, rep]


def progress(plan: Plan, state: RunState, rep: str | None) -> Progress:
    return Progress(run_status(state), waiting_for(plan, state), (rep,) if rep else ())


def identity(state: RunState) -> list[SearchAttributeUpdate[Any]]:
    """What never changes in a run: its SOP, version and contact."""
    updates: list[SearchAttributeUpdate[Any]] = [
        SOP_ID.value_set(state.sop),
        SOP_VERSION.value_set(state.version),
    ]
    contact = state.contact.get("id")
    if contact not in (None, ""):
        updates.append(CONTACT_ID.value_set(str(contact)))
    return updates
