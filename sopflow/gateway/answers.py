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


# ---------------------------------------------------------------- dashboard reports
# (sopflow/compliance/teams_report.py, funnel.py, pilots.py: the definitions in full)
class TracedCount(_Answer):
    value: int
    listing: Literal["runs", "tasks"] = Field(
        description="the listing of the rows behind the count: GET /api/v1/{listing}"
    )
    filter: dict[str, str | int | bool] = Field(description="its query parameters")
    exact: bool = Field(
        description="true: the listing so filtered shows exactly the rows counted; false: "
        "rows that include them (the listing has no filter for what was counted, e.g. a step)"
    )


class RepMetrics(_Answer):
    """A rep's (or a team's) rep tasks assigned in the window, as the compliance scorer judges
    them."""

    tasks: TracedCount = Field(description="rep tasks assigned in the window")
    settled: TracedCount = Field(
        description="tasks with a verdict or past their due time: on_time + overdue + skipped "
        "(every task but those open and not due yet)"
    )
    on_time: TracedCount = Field(
        description="outcome reported by the due time plus the step's score tolerance"
    )
    overdue: TracedCount = Field(
        description="past their due time (the listings' `late`): late + missed + open past due"
    )
    late: TracedCount = Field(description="outcome reported after the due time and tolerance")
    missed: TracedCount = Field(description="expired with no outcome reported")
    skipped: TracedCount = Field(
        description="excused: the run ended (cancelled, opted out, rerouted) before it was due"
    )
    open: TracedCount = Field(description="no outcome yet in a running run")
    on_time_pct: float | None = Field(description="100 × on_time / settled (None: none settled)")
    overdue_pct: float | None = Field(description="100 × overdue / settled")
    skipped_pct: float | None = Field(description="100 × skipped / settled")
    score: float | None = Field(
        description="adherence score 0-100: each judged task's weight, on time all of it, late "
        "half, missed none, minus one per violation, over the weights (None: nothing judged)"
    )
    violations: TracedCount = Field(
        description="outcomes of these tasks reported outside the SOP's window for the channel "
        "or after the contact opted out"
    )
    sla_met: TracedCount = Field(description="runs whose first rep task (theirs) was on time")
    sla_judged: TracedCount = Field(description="runs whose first rep task (theirs) was judged")
    sla_met_pct: float | None = Field(description="100 × sla_met / sla_judged")
    touches: TracedCount = Field(
        description="outcomes reported (on_time + late) in runs of SOPs naming success_results"
    )
    successes: TracedCount = Field(
        description="runs ending with one of their SOP's success_results whose last reported "
        "outcome was this rep's"
    )
    touches_per_success: float | None = Field(description="touches / successes (None: no success)")


class RepRow(RepMetrics):
    rep: str
    name: str | None = Field(description="None: not in the rep directory any more")
    team: str | None


class TeamRow(RepMetrics):
    team: str
    name: str
    reps: int = Field(description="its reps in this report; the counts add theirs up")


class RepsReport(_Answer):
    since: str | None
    until: str | None
    as_of: str = Field(description="the time open tasks were judged overdue or not")
    reps: list[RepRow] = Field(description="every rep the caller may see, by id")
    teams: list[TeamRow] = Field(description="their teams (none for a rep)")


class FunnelCell(_Answer):
    version: int
    entries: TracedCount = Field(description="runs with a step event at the step")
    items: TracedCount = Field(description="task and touch attempts the scorer judged there")
    on_time: TracedCount
    overdue: TracedCount = Field(
        description="past their due or planned time: done late, never done, or open past due"
    )
    skipped: TracedCount = Field(
        description="excused: blocked or deferred by a rule or window, a missed ladder slot, a "
        "task whose run ended first"
    )
    open: TracedCount = Field(description="pending and not due yet")
    exits: dict[str, TracedCount] = Field(description="runs that finished at the step, by result")


class FunnelStep(_Answer):
    step: str
    kind: str
    columns: list[FunnelCell | None] = Field(
        description="one per version, in the order of `versions`; None: not a step of it"
    )


class FunnelVersion(_Answer):
    version: int
    digest: str
    runs: TracedCount = Field(description="its runs enrolled in the window")


class FunnelReport(_Answer):
    sop: str
    since: str | None
    until: str | None
    as_of: str
    versions: list[FunnelVersion] = Field(description="every deployed version, oldest first")
    steps: list[FunnelStep] = Field(
        description="the newest version's steps in plan order, then older versions' others"
    )


class PilotArm(_Answer):
    variant: str
    runs: TracedCount = Field(description="runs that took this arm")
    finished: TracedCount
    successes: TracedCount = Field(description="finished with one of the success_results")
    conversion: float | None = Field(description="successes / finished (None: none finished)")


class Significance(_Answer):
    verdict: Literal["too_few_runs", "not_significant", "significant_at_5pct"]
    text: str = Field(description="too few runs to tell / not significant / significant at 5%")
    test: Literal["chi_square", "fisher_exact", "fisher_exact_permutation"] | None = Field(
        description="Pearson's chi-square test of independence (no Yates correction); Fisher's "
        "exact test when an expected count is under 5 (r×c: p-value by permutations)"
    )
    statistic: float | None = Field(description="the chi-square statistic (chi-square test)")
    p_value: float | None
    why: str


class PilotSplit(_Answer):
    step: str
    variants: list[PilotArm]
    significance: Significance


class PilotReport(_Answer):
    sop: str
    since: str | None
    until: str | None
    as_of: str
    min_finished: int = Field(description="finished runs each arm needs for a test")
    splits: list[PilotSplit]


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
