"""ladder steps: a call or task attempt at each listed local slot until an outcome in stop_on,
with follow-up messages after attempts; slots already past are shifted, skipped or run now."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import datetime, timedelta
from typing import Any

from sopflow.sop import clock
from sopflow.sop.protocol import ActionResult, Command
from sopflow.sop.run import Run
from sopflow.sop.schema import ENGINE_OUTCOMES, Channel, LadderCall, LadderStep
from sopflow.sop.steps.base import Loc, Route, hint
from sopflow.sop.steps.call import CallAction
from sopflow.sop.steps.message import message_templates, send_message
from sopflow.sop.steps.task import TaskAction
from sopflow.sop.steps.touch import Action, Awaiting, outcome_routes

# A slot reached this late still runs (at once): the previous attempt's expiry timer may fire
# seconds after a slot at the same instant, and that must not cost the lead a day or an attempt.
SLOT_GRACE = timedelta(minutes=10)
# Looking this many days past the first day a shifted slot is ahead for one its window allows.
_SHIFT_SEARCH_DAYS = 14


class Ladder(Awaiting[LadderStep]):
    action_at = ("attempt",)

    def action(self) -> Action[Any]:
        attempt = self.step.attempt  # a new attempt kind would not type-check as a task here
        return CallAction(attempt) if isinstance(attempt, LadderCall) else TaskAction(attempt)

    # ---------------------------------------------------------------- the touch due now
    def channel(self, run: Run) -> Channel | None:
        followup = run.state.followup
        return self.step.followups[followup].kind if followup is not None else super().channel(run)

    def issue(self, run: Run, planned: datetime) -> Command:
        followup = run.state.followup
        if followup is None:
            return super().issue(run, planned)
        return send_message(run, run.key(f":f{followup}"), self.step.followups[followup], planned)

    def touched(self, run: Run, event: ActionResult) -> None:
        if run.state.followup is not None:
            self._after_followup(run)
        else:
            super().touched(run, event)

    def not_touched(self, run: Run, outcome: str) -> None:
        if run.state.followup is not None:
            self._after_followup(run)
        else:
            super().not_touched(run, outcome)

    # ---------------------------------------------------------------- slots and outcomes
    def enter(self, run: Run) -> None:
        step = self.step
        anchor = run.state.enrolled_at if step.anchor == "enrolment" else run.now
        zone_name = run.state.zones[0]
        day0 = clock.to_local(anchor, zone_name).date()
        run.state.slots = [
            clock.local_instant(day0 + timedelta(days=slot.day - 1), slot.at, zone_name)
            for slot in step.slots
        ]
        self._next_slot(run)

    def route(self, run: Run, outcome: str) -> None:
        state, step = run.state, self.step
        # The touch went out only if the run was awaiting its outcome: a skipped, blocked or
        # failed one comes here through not_touched in another phase (see _next_slot).
        made = state.phase == "awaiting_outcome"
        if made:
            state.attempts_made += 1
        if outcome in step.stop_on:
            run.goto(step.on_outcome.get(outcome) or run.plan.next_of(step.id))
            return
        index = self._followup_due(state.attempts_made if made else None, state.attempt)
        if index is not None:
            state.followup, state.planned_at = index, run.now
            self.try_touch(run)
            return
        self._next_slot(run)

    def _after_followup(self, run: Run) -> None:
        run.state.followup = None
        self._next_slot(run)

    def _next_slot(self, run: Run) -> None:
        state, step = run.state, self.step
        while state.attempt < len(state.slots):
            state.attempt += 1
            slot = state.slots[state.attempt - 1]
            state.planned_at, state.due_at, state.overdue_recorded, state.escalation_level = (
                slot,
                None,
                False,
                0,
            )
            if slot >= run.now - SLOT_GRACE:  # late by a timer's latency is not missed
                run.wait("waiting", max(slot, run.now))
                return
            if step.missed_slot == "shift":
                self._shift_slots(run)
                run.wait("waiting", state.planned_at)
                return
            if step.missed_slot == "run_now":
                # The previous touch's phase must not pass for this one's (route counts an
                # attempt as made only when the run was awaiting its outcome).
                state.phase = "waiting"
                self.try_touch(run)
                return
            run.record(step.id, "slot_missed", attempt=state.attempt, slot=slot.isoformat())
        run.record(step.id, "ladder_exhausted", attempts=len(state.slots))
        run.goto(step.on_exhausted or run.plan.next_of(step.id))

    def _shift_slots(self, run: Run) -> None:
        """`missed_slot: shift`: the slot now due is past; move it and every later slot by the
        same whole days, to the first day its listed local time is ahead and inside the attempt's
        window (so the window does not defer it a second time), else the first day it is ahead.
        Slots are rebuilt from local dates and listed times, so they keep their local time
        across DST."""
        state, step, zone_name = run.state, self.step, run.state.zones[0]
        index = state.attempt - 1

        def moved(i: int, days: int) -> datetime:
            day = clock.to_local(state.slots[i], zone_name).date() + timedelta(days=days)
            return clock.local_instant(day, step.slots[i].at, zone_name)

        today = clock.to_local(run.now, zone_name).date()
        ahead = max(1, (today - clock.to_local(state.slots[index], zone_name).date()).days)
        if moved(index, ahead) < run.now:
            ahead += 1
        channel = self.channel(run)
        window = run.plan.sop.policy.windows.get(channel) if channel else None
        days = ahead  # if the window never allows the listed time, it defers the slot as usual
        for candidate in range(ahead, ahead + _SHIFT_SEARCH_DAYS):
            at = moved(index, candidate)
            if window is None or clock.next_allowed(at, state.zones, window, run.calendar) == at:
                days = candidate
                break
        run.record(
            step.id,
            "slot_shifted",
            attempt=state.attempt,
            slot=state.slots[index].isoformat(),
            to=moved(index, days).isoformat(),
            days=days,
            reason="the slot passed before the ladder reached it",
        )
        state.slots[index:] = [moved(i, days) for i in range(index, len(state.slots))]
        state.planned_at = state.slots[index]

    def _followup_due(self, made: int | None, slot: int) -> int | None:
        """The follow-up to send now: after the `made`-th attempt made (None: this one was not),
        or, for plans compiled before attempts made were counted, after slot number `slot`."""
        step = self.step
        count = slot if step.followups_count == "slots" else made
        if count is None:
            return None
        return next((i for i, f in enumerate(step.followups) if f.after_attempt == count), None)

    # ---------------------------------------------------------------- static questions
    def routes(self) -> Iterator[Route]:
        if self.step.on_exhausted:
            yield Route(("on_exhausted",), self.step.on_exhausted)
        yield from outcome_routes(self.step.on_outcome)
        yield self.next_route()

    def templates(self) -> Iterator[tuple[Loc, str]]:
        for j, follow in enumerate(self.step.followups):
            yield from message_templates(("followups", j), follow)
        yield from super().templates()

    def problems(self, known_sops: Collection[str] | None) -> Iterator[tuple[Loc, str]]:
        step = self.step
        outcomes = set(step.attempt.outcomes) | ENGINE_OUTCOMES
        for j, outcome in enumerate(step.stop_on):
            if outcome not in outcomes:
                yield (
                    ("stop_on", j),
                    f"outcome {outcome!r} is never produced by the attempt{hint(outcome, outcomes)}",
                )
        for outcome in step.on_outcome:
            if outcome in outcomes and outcome not in step.stop_on:
                yield (
                    ("on_outcome", outcome),
                    f"outcome {outcome!r} does not stop the ladder; add it to stop_on",
                )
        order = [(s.day, s.at) for s in step.slots]
        for j in range(1, len(order)):
            if order[j] <= order[j - 1]:
                yield ("slots", j), "slots must be in time order (day, then at)"
        for j, follow in enumerate(step.followups):
            if follow.after_attempt > len(step.slots):
                yield (
                    ("followups", j, "after_attempt"),
                    f"the ladder has only {len(step.slots)} attempts",
                )
