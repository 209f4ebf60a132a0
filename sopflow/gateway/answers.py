"""Response models of the /api/v1 routes that build their answers as dicts (views.py, reports,
consent, referrals…): the OpenAPI schema describes every answer. `extra="forbid"` on the models
the gateway validates its answers with: a key added to a view without its model is a 500 in
the tests, not an undocumented field. Routers of other modules get theirs by `document` (the
schema only: their answers are sent as they are built)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from sopflow.compliance.adherence import Grouping, Status


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- consent
class ChannelConsent(_Answer):
    action: Literal["grant", "revoke"]
    since: str


class ConsentRecorded(_Answer):
    contact_id: str
    recorded: bool = Field(description="false: a repeat that changed nothing")
    channels: dict[str, ChannelConsent] = Field(description="what is in force per channel")


class ConsentEventView(_Answer):
    action: Literal["grant", "revoke"]
    channels: list[str]
    at: str
    method: str
    disclosure_text: str | None
    disclosure_version: str | None
    actor: str | None


class ConsentView(_Answer):
    contact_id: str
    channels: dict[str, ChannelConsent]
    history: list[ConsentEventView] = Field(description="every consent event, in order")


# ---------------------------------------------------------------- contacts import
class ImportProblem(_Answer):
    loc: list[str | int] = Field(description='["body", "contacts", INDEX, FIELD]')
    msg: str
    type: str


class ContactsImported(_Answer):
    contacts: int
    new: int
    updated: int
    purchases: int
    visits: int
    skipped: list[ImportProblem] = Field(description="items left out (skip_invalid), the first")
    skipped_count: int


# ---------------------------------------------------------------- runs and scores
class StepView(_Answer):
    key: str
    step: str
    action: str
    planned_at: str | None
    due_at: str | None
    executed_at: str | None
    outcome: str | None
    actor: str | None
    channel: str | None
    provider_id: str | None
    reason: str | None
    detail: dict[str, Any]


class RunView(_Answer):
    run_id: str
    sop: str
    version: int
    digest: str
    contact: str
    status: str
    result: str | None
    enrolled_at: str | None
    finished_at: str | None
    steps: list[StepView] = Field(description="every step event, in the order recorded")


class ScoreItemView(_Answer):
    step: str
    key: str
    kind: Literal["task", "touch"]
    actor: str
    status: Status
    due_at: str | None
    done_at: str | None
    late_by_seconds: float | None
    weight: float
    reason: str


class ViolationView(_Answer):
    step: str
    actor: str
    at: str
    rule: Literal["out_of_window", "after_opt_out"]
    reason: str


class LossView(_Answer):
    step: str
    key: str
    actor: str
    status: str = Field(description="the item's status, or the violated rule")
    points: float
    reason: str


class RunScoreView(_Answer):
    run_id: str
    sop: str
    version: int
    variant: str | None
    score: float | None
    sla_met: bool | None
    items: list[ScoreItemView]
    violations: list[ViolationView]
    losses: list[LossView] = Field(description="every point lost, with its reason")


class ComplianceRow(_Answer):
    group: str
    runs: int
    on_time: int
    late: int
    missed: int
    excused: int
    pending: int
    violations: int
    sla_met: int
    sla_judged: int
    score: float | None


class ComplianceReport(_Answer):
    by: Grouping
    since: str | None
    rows: list[ComplianceRow]


class ControlAccepted(_Answer):
    run_id: str
    action: Literal["pause", "resume", "cancel"]


# ---------------------------------------------------------------- other modules' routes
class CallPlaced(_Answer):
    call_sid: str | None
    rep: str
    already: bool = Field(description="true: the task's call was placed before (one per attempt)")


class FunnelRowView(_Answer):
    period: str
    loyal: int
    asked: int
    shared: int
    visits: int
    signed_up: int
    converted: int
    referral_rate: float | None
    visits_per_sharer: float | None
    signup_rate: float | None
    page_conversion: float | None


class ReferralReport(_Answer):
    period: str
    since: str | None
    rows: list[FunnelRowView]
    total: FunnelRowView
    not_asked: FunnelRowView


class Announced(_Answer):
    told: int
    pending: int


class SegmentList(_Answer):
    segments: list[dict[str, Any]] = Field(description="each valid segment as its file says")
    problems: list[str] = Field(description="FILE:LINE:COL: error: message")


class SegmentPreview(_Answer):
    segment: str
    name: str | None
    as_of: str
    members: int
    rfm: dict[str, Any] | None = Field(description='{"currency", "segments": {name: members}}')
    sample: list[dict[str, Any]]


OTHER_ROUTES: Mapping[tuple[str, str], type[BaseModel]] = {
    ("POST", "/api/v1/runs/{run_id}/tasks/{step}/call"): CallPlaced,
    ("GET", "/api/v1/reports/referrals"): ReferralReport,
    ("POST", "/api/v1/referrals/announce"): Announced,
    ("GET", "/api/v1/segments"): SegmentList,
    ("GET", "/api/v1/segments/{segment_id}/preview"): SegmentPreview,
}


def document(router: APIRouter) -> APIRouter:
    """Give the router's routes listed in OTHER_ROUTES their answer's model in the schema."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            model = OTHER_ROUTES.get((method, route.path))
            if model is not None:
                # Without the `dict` the route's annotation gave, which the schema would merge
                # into the model's; the answer is sent as the route builds it, unvalidated.
                route.response_model = None
                route.responses = {**route.responses, route.status_code or 200: {"model": model}}
    return router
