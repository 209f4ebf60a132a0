"""The interface every step kind's handler implements, and the answers its static questions give.

A handler is bound to one step. The walk (engine.py) asks it to act on the run; validation
(checks.py, fields.py) and the graph (graph.py) ask it where it routes and what it waits for, so
no other module needs to know what a step kind means.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar

from sopflow.sop.protocol import ActionResult, Command, ContactEvent, OutcomeReported
from sopflow.sop.run import Run
from sopflow.sop.schema import Condition, Moment, StepBase

# A path into the YAML document, e.g. ("steps", 2, "on_outcome", "booked").
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Route:
    """One way out of a step, and why it is taken."""

    loc: Loc  # where the target is written, relative to the step
    target: str | None  # None: the step listed after this one (after the last, the run ends)
    outcome: str | None = None  # taken on this reported outcome
    event: str | None = None  # taken on this contact event
    when: tuple[tuple[Loc, Condition], ...] = ()  # taken when these hold (a branch case)


@dataclass(frozen=True)
class Waits:
    """What holds a run at a step. A step that waits for nothing moves on in the same engine
    call, so a loop of such steps would spin (graph.py)."""

    outcomes: Sequence[str] = ()  # reported by a rep or the carrier
    outcome_fields: Mapping[str, Sequence[str]] = field(default_factory=dict)  # data they carry
    outcomes_at: Loc = ()  # where the outcomes are declared, relative to the step
    events: Sequence[str] = ()  # contact events
    timer: bool = False  # time by design: a duration, a moment, slots, a due time
    until: Moment | None = None  # the moment waited for, when the SOP gives one

    @property
    def anything(self) -> bool:
        return bool(self.outcomes or self.events or self.timer)


S = TypeVar("S", bound=StepBase)


class Handler(ABC, Generic[S]):
    """What one step kind means. The runtime calls other than `enter` come only in the phases
    the step itself set (engine.py checks), so a kind that sets none keeps the defaults."""

    def __init__(self, step: S) -> None:
        self.step = step

    # ---------------------------------------------------------------- the walk
    @abstractmethod
    def enter(self, run: Run) -> None:
        """The run arrives at the step (state already reset for the visit: Run.arrive)."""

    def on_timer(self, run: Run) -> None:
        """The run's wake_at fell due; its phase says which of the step's timers it is."""
        raise self._unexpected("a timer")

    def on_result(self, run: Run, event: ActionResult) -> None:
        """The result of the command the run was holding for (state.pending, now cleared)."""
        raise self._unexpected("a result")

    def on_outcome(self, run: Run, report: OutcomeReported) -> None:
        """An outcome: reported and accepted (engine.outcome_problem), or sopflow's own."""
        raise self._unexpected("an outcome")

    def on_event(self, run: Run, event: ContactEvent) -> None:
        """A contact event the step waits for (state.awaiting_events); already recorded."""
        raise self._unexpected("an event")

    def _unexpected(self, what: str) -> AssertionError:
        return AssertionError(f"step {self.step.id!r} ({type(self).__name__}) waits for no {what}")

    # ---------------------------------------------------------------- static questions
    @abstractmethod
    def routes(self) -> Iterator[Route]:
        """Every way out of the step, in the order validation reports them."""

    def waits_for(self) -> Waits:
        return Waits()

    @abstractmethod
    def templates(self) -> Iterator[tuple[Loc, str]]:
        """Every template the step renders, with where it is (relative to the step)."""

    def problems(self, known_sops: Collection[str] | None) -> Iterator[tuple[Loc, str]]:
        """Rules of the kind's own fields a schema cannot express (relative locs)."""
        return iter(())

    def next_route(self) -> Route:
        """Falling through: the step's `next`, else the one listed after it."""
        return Route(("next",), self.step.next)


class Stamp(TypedDict):
    """The fields an effect's command takes from the run."""

    at: datetime
    step: str
    key: str
    context: dict[str, Any]


class EffectStep(Handler[S]):
    """A step that hands the shell one effect that does not hold the run (enrol, update) and
    goes on to the next step at once; a failure comes back later as `effect_failed`."""

    @abstractmethod
    def command(self, stamp: Stamp) -> Command: ...

    def enter(self, run: Run) -> None:
        stamp = Stamp(at=run.now, step=self.step.id, key=run.key(), context=run.context())
        run.commands.append(self.command(stamp))
        run.goto(run.plan.next_of(self.step.id))

    def routes(self) -> Iterator[Route]:
        yield self.next_route()


def hint(word: str, choices: Collection[str]) -> str:
    """A "did you mean" for a misspelt name, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
