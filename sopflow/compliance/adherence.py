"""SOP adherence: did the rep and the system do each required step, on time? Pure and
deterministic: a run's score comes from its plan and its step events alone (plus the contact's
zones and opt-out time, for violations), so anyone can recompute it from the event log.

Items, one per required step occurrence:
- a rep task (an `assign` event): on time when its outcome is reported by its due time plus the
  step's `score.tolerance`; late (by how much) after that; missed when it expired unreported;
- a system touch (`send` / `call`): on time when it went out by its planned time plus the
  tolerance (at least SYSTEM_GRACE: timers fire a little late); late otherwise;
- excused: blocked or deferred by a rule, a window or an opt-out, or a ladder slot that passed
  while the run waited — not the rep's fault; excused items are left out of the score;
- pending: not resolved yet (a running run); left out of the score.
Violations: a touch outside the SOP's window for its channel (a rep's call reported at 22:00),
or a touch after the contact opted out.

Score = 100 × (earned − violations) / possible, at least 0, where each required item is worth
its `score.weight`, on time earns all of it, late half (LATE_CREDIT), missed nothing, and each
violation costs one point of weight. The same formula scores a run and any group of runs, so a
rep's score is their items across runs. Every point lost comes with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sopflow.sop import clock
from sopflow.sop.plan import Plan
from sopflow.sop.schema import Scoring, TaskSpec, step_action

Status = Literal["on_time", "late", "missed", "excused", "pending"]
LATE_CREDIT = 0.5
VIOLATION_COST = 1.0
SYSTEM_GRACE = timedelta(minutes=1)
SYSTEM = "(system)"  # the actor of touches sopflow makes itself
_DEFAULT_SCORING = Scoring()
# The record actions whose `detail` the scorer reads (_RunScorer._record): a store may leave
# every other row's detail out.
DETAIL_ACTIONS = ("variant", "blocked", "skipped", "slot_missed")


@dataclass(frozen=True)
class StepRow:
    """The columns of a step event that scoring reads (see store.models.StepEvent)."""

    key: str
    step: str
    kind: str
    action: str
    executed_at: datetime
    planned_at: datetime | None = None
    due_at: datetime | None = None
    outcome: str | None = None
    actor: str | None = None
    channel: str | None = None
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Item:
    step: str
    key: str
    kind: Literal["task", "touch"]
    actor: str
    due_at: datetime | None
    weight: float
    status: Status = "pending"
    done_at: datetime | None = None
    late_by: timedelta | None = None
    reason: str = ""

    @property
    def earned(self) -> float:
        if self.status == "on_time":
            return self.weight
        return self.weight * LATE_CREDIT if self.status == "late" else 0.0

    @property
    def counted(self) -> bool:
        return self.status in ("on_time", "late", "missed")

    @property
    def points_lost(self) -> float:
        return self.weight - self.earned if self.counted else 0.0


@dataclass(frozen=True)
class Violation:
    step: str
    key: str
    actor: str
    at: datetime
    rule: Literal["out_of_window", "after_opt_out"]
    reason: str


@dataclass(frozen=True)
class RunFacts:
    """What a run's score depends on besides its step events."""

    workflow_id: str
    sop: str
    version: int
    finished: bool
    zones: Sequence[str] = ()
    opted_out_at: datetime | None = None


@dataclass
class RunScore:
    facts: RunFacts
    items: list[Item]
    violations: list[Violation]
    variant: str | None = None

    @property
    def possible(self) -> float:
        return sum(i.weight for i in self.items if i.counted)

    @property
    def earned(self) -> float:
        return sum(i.earned for i in self.items if i.counted)

    @property
    def score(self) -> float | None:
        return score_of(self.earned, self.possible, len(self.violations))

    @property
    def sla_met(self) -> bool | None:
        """The first rep task (e.g. "call within 30 minutes"): on time? None if not judged."""
        first = next((i for i in self.items if i.kind == "task"), None)
        if first is None or not first.counted:
            return None
        return first.status == "on_time"

    def losses(self) -> list[dict[str, Any]]:
        """Every point lost, with its reason."""
        lost: list[dict[str, Any]] = [
            {"step": i.step, "key": i.key, "actor": i.actor, "status": i.status,
             "points": round(i.points_lost, 3), "reason": i.reason}
            for i in self.items
            if i.points_lost > 0
        ]  # fmt: skip
        lost += [
            {"step": v.step, "key": v.key, "actor": v.actor, "status": v.rule,
             "points": VIOLATION_COST, "reason": v.reason}
            for v in self.violations
        ]  # fmt: skip
        return lost


def score_of(earned: float, possible: float, violations: int) -> float | None:
    if possible <= 0:
        return None if violations == 0 else 0.0
    return round(max(0.0, 100 * (earned - VIOLATION_COST * violations) / possible), 1)


def _scoring(plan: Plan, step_id: str) -> Scoring:
    if not plan.has_step(step_id):
        return _DEFAULT_SCORING
    return plan.step(step_id).score


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n)
    return text or f"{int(delta.total_seconds())}s"


class _RunScorer:
    def __init__(self, plan: Plan, facts: RunFacts) -> None:
        self.plan, self.facts = plan, facts
        self.items: list[Item] = []
        self.violations: list[Violation] = []
        self.open_tasks: dict[str, Item] = {}  # step → the task awaiting its outcome
        self.deferred: set[str] = set()  # steps whose current touch was deferred
        self.variant: str | None = None
        self.calendar = clock.Calendar.from_policy(plan.sop.policy)

    def item(self, row: StepRow, kind: Literal["task", "touch"], actor: str) -> Item:
        scoring = _scoring(self.plan, row.step)
        due = row.due_at if kind == "task" else row.planned_at
        item = Item(row.step, row.key, kind, actor, due, scoring.weight if scoring.required else 0)
        self.items.append(item)
        return item

    def feed(self, row: StepRow) -> None:
        if row.kind == "assign":  # a deferral before it was the task's, not a later touch's
            self.deferred.discard(row.step)
            self.open_tasks[row.step] = self.item(row, "task", row.actor or SYSTEM)
        elif row.kind in ("send", "call"):
            self._touch(row)
        elif row.kind == "record":
            self._record(row)

    def _touch(self, row: StepRow) -> None:
        item = self.item(row, "touch", SYSTEM)
        item.done_at = row.executed_at
        planned = row.planned_at or row.executed_at
        late_by = row.executed_at - planned
        tolerance = max(_scoring(self.plan, row.step).tolerance, SYSTEM_GRACE)
        if row.step in self.deferred:
            self.deferred.discard(row.step)
            item.status, item.reason = "excused", "deferred by a window or rule before it went out"
        elif late_by <= tolerance:
            item.status = "on_time"
        else:
            item.status, item.late_by = "late", late_by
            item.reason = f"{row.action} went out {_span(late_by)} after its planned time"
        self._check_touch(row.step, row.key, SYSTEM, row.channel, row.executed_at)

    def _record(self, row: StepRow) -> None:
        action, detail = row.action, row.detail
        if action == "variant":
            self.variant = str(detail.get("variant"))
        elif action == "deferred":
            self.deferred.add(row.step)
        elif action in ("blocked", "skipped"):
            self.deferred.discard(row.step)
            item = self.item(row, "touch", SYSTEM)
            item.status, item.done_at = "excused", row.executed_at
            rule = detail.get("rule") or "window"
            item.reason = f"{action} by {rule}: {row.reason or ''}".rstrip(": ")
        elif action == "failed":
            item = self.item(row, "touch", SYSTEM)
            item.status, item.done_at = "missed", row.executed_at
            item.reason = f"the provider failed: {row.reason or 'no reason given'}"
        elif action == "slot_missed":
            item = self.item(row, "touch", SYSTEM)
            item.status, item.done_at = "excused", row.executed_at
            item.reason = f"the slot at {detail.get('slot')} passed before the attempt could start"
        elif action == "outcome":
            self._outcome(row)

    def _outcome(self, row: StepRow) -> None:
        item = self.open_tasks.pop(row.step, None)
        if item is None:  # the outcome of an automated call: the carrier's, not a rep task
            return
        item.done_at = row.executed_at
        if row.outcome == "expired" and row.actor in ("sopflow", None):  # nobody reported
            item.status = "missed"
            item.reason = f"no outcome reported; the task expired {_span(row.executed_at - (item.due_at or row.executed_at))} after it was due"
            return
        due = item.due_at or row.executed_at
        late_by = row.executed_at - due
        tolerance = _scoring(self.plan, row.step).tolerance
        if late_by <= tolerance:
            item.status = "on_time"
        else:
            item.status, item.late_by = "late", late_by
            item.reason = f"outcome {row.outcome!r} reported {_span(late_by)} after it was due"
            if tolerance:
                item.reason += f" (tolerance {_span(tolerance)})"
        task_channel = self._task_channel(row.step)
        self._check_touch(row.step, row.key, item.actor, task_channel, row.executed_at)

    def _task_channel(self, step_id: str) -> str | None:
        """The channel through which the rep reaches the contact for this task, if any."""
        action = step_action(self.plan.step(step_id)) if self.plan.has_step(step_id) else None
        return action.channel if isinstance(action, TaskSpec) else None

    def _check_touch(
        self, step: str, key: str, actor: str, channel: str | None, at: datetime
    ) -> None:
        if channel is None:
            return
        opted = self.facts.opted_out_at
        if opted is not None and at >= opted:
            self.violations.append(
                Violation(step, key, actor, at, "after_opt_out",
                          f"{channel} at {at.isoformat()} after the opt-out at {opted.isoformat()}")
            )  # fmt: skip
            return
        window = self.plan.sop.policy.windows.get(channel)  # type: ignore[call-overload]
        if window is None or not self.facts.zones:
            return
        if clock.next_allowed(at, self.facts.zones, window, self.calendar) != at:
            why = clock.why_blocked(at, self.facts.zones, channel, window, self.calendar)
            self.violations.append(Violation(step, key, actor, at, "out_of_window", why))

    def finish(self) -> RunScore:
        if self.facts.finished:
            for item in self.open_tasks.values():  # the run ended while the task was open
                item.status, item.reason = "excused", "the run ended before the task was due"
        return RunScore(self.facts, self.items, self.violations, self.variant)


def score_run(plan: Plan, facts: RunFacts, rows: Iterable[StepRow]) -> RunScore:
    """Score one run from its step events, in the order they were recorded."""
    scorer = _RunScorer(plan, facts)
    for row in rows:
        scorer.feed(row)
    return scorer.finish()


# ---------------------------------------------------------------- aggregates
GROUPINGS = ("rep", "team", "sop", "version", "variant", "day")
Grouping = Literal["rep", "team", "sop", "version", "variant", "day"]


@dataclass
class Tally:
    runs: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("on_time", "late", "missed", "excused", "pending"), 0
        )
    )
    earned: float = 0.0
    possible: float = 0.0
    violations: int = 0
    sla_met: int = 0
    sla_judged: int = 0

    def add_item(self, item: Item) -> None:
        self.counts[item.status] += 1
        if item.counted:
            self.earned += item.earned
            self.possible += item.weight

    def row(self, group: str) -> dict[str, Any]:
        return {
            "group": group,
            "runs": self.runs,
            **self.counts,
            "violations": self.violations,
            "sla_met": self.sla_met,
            "sla_judged": self.sla_judged,
            "score": score_of(self.earned, self.possible, self.violations),
        }


REPORT_COLUMNS = tuple(Tally().row(""))  # the keys of a report row, in order (CSV header)


class Report:
    """Folds run scores into groups, one run at a time: memory grows with the number of groups,
    never with the number of runs or step events."""

    def __init__(self, by: Grouping, teams: Mapping[str, str] | None = None) -> None:
        if by not in GROUPINGS:
            raise ValueError(f"unknown grouping {by!r}: use one of {', '.join(GROUPINGS)}")
        self.by, self.teams = by, dict(teams or {})
        self.tallies: dict[str, Tally] = {}

    def _group(self, run: RunScore, actor: str, when: datetime | None) -> str:
        facts = run.facts
        if self.by == "rep":
            return actor
        if self.by == "team":
            return self.teams.get(actor, SYSTEM if actor == SYSTEM else "(no team)")
        if self.by == "sop":
            return facts.sop
        if self.by == "version":
            return f"{facts.sop} v{facts.version}"
        if self.by == "variant":
            return f"{facts.sop}:{run.variant}" if run.variant else f"{facts.sop}:(none)"
        return when.date().isoformat() if when else "(undated)"

    def _tally(self, group: str, touched: set[str]) -> Tally:
        touched.add(group)
        return self.tallies.setdefault(group, Tally())

    def add(self, run: RunScore) -> None:
        touched: set[str] = set()
        for item in run.items:
            self._tally(
                self._group(run, item.actor, item.due_at or item.done_at), touched
            ).add_item(item)
        for violation in run.violations:
            self._tally(self._group(run, violation.actor, violation.at), touched).violations += 1
        first = next((i for i in run.items if i.kind == "task"), None)
        if first is not None and first.counted:
            tally = self._tally(
                self._group(run, first.actor, first.due_at or first.done_at), touched
            )
            tally.sla_judged += 1
            tally.sla_met += first.status == "on_time"
        for group in touched:
            self.tallies[group].runs += 1

    def rows(self) -> list[dict[str, Any]]:
        return [self.tallies[group].row(group) for group in sorted(self.tallies)]
