"""Who holds a task and whose a run is, from the step events, on SQLite and PostgreSQL: the rep
of the latest assign or reassign (a reassignment that found nobody leaves the task where it
was), and what each role may do with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sopflow.identity.access import (
    Refused,
    check_control,
    check_task,
    held_task,
    may_see_run,
    run_tasks,
)
from sopflow.principals import Principal, Role
from sopflow.sop.protocol import AssignTask, Escalate
from sopflow.sop.schema import AssignRule
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

AT = datetime(2026, 12, 1, 15, tzinfo=UTC)
TEAMS = [
    {"id": "north", "supervisor": "sam", "reps": [{"id": "ana"}, {"id": "sam"}]},
    {"id": "south", "supervisor": "wes", "reps": [{"id": "ben"}, {"id": "wes"}]},
]
RULE = AssignRule(strategy="round_robin", team="north")
ANA = Principal("ana", Role.rep, "ana")
BEN = Principal("ben", Role.rep, "ben")
SAM = Principal("sam", Role.supervisor, "sam", frozenset({"north"}))
WES = Principal("wes", Role.supervisor, "wes", frozenset({"south"}))
OPS = Principal("olga", Role.ops)


def assign(store: Store, run: str, actor: str | None, n: int = 1) -> None:
    task = AssignTask(
        at=AT, step="call", key=f"call:{n}:1", title="Call", instructions="", assign=RULE,
        due_at=AT + timedelta(minutes=30), planned_at=AT, attempt=1, context={},
    )  # fmt: skip
    store.record_command(run, "r", task, actor=actor)


def reassign(store: Store, run: str, actor: str | None, level: int) -> None:
    escalation = Escalate(
        at=AT + timedelta(hours=level), step="call", key=f"call:1:e{level}", action="reassign",
        level=level, to=AssignRule(strategy="rep", rep="ben"), due_at=AT,
    )  # fmt: skip
    store.record_command(run, "r", escalation, actor=actor)


@pytest.fixture
def runs(store: Store) -> Store:
    RepDirectory(store.engine).import_teams(TEAMS)
    for run in ("w-1", "w-2"):
        store.start_run(run, "r", "s", 1, "d", "c-1", AT)
    assign(store, "w-1", "ana")
    assign(store, "w-2", None)  # nobody was found: the rule's team is the task's
    return store


def test_the_holder_is_the_rep_of_the_latest_assign_or_reassign(runs: Store) -> None:
    task = held_task(runs.engine, "w-1", "call")
    assert task is not None and (task.holder, task.team, task.key) == ("ana", "north", "call:1:1")
    check_task(ANA, task, "w-1", "call")
    check_task(SAM, task, "w-1", "call")
    with pytest.raises(Refused, match=r"held by 'ana', not by you \('ben'\)"):
        check_task(BEN, task, "w-1", "call")
    with pytest.raises(Refused, match="outside your teams"):
        check_task(WES, task, "w-1", "call")
    reassign(runs, "w-1", "ben", 1)
    reassign(runs, "w-1", None, 2)  # everyone at capacity: the task stays with ben
    moved = held_task(runs.engine, "w-1", "call")
    assert moved is not None and (moved.holder, moved.team) == ("ben", "south")
    check_task(BEN, moved, "w-1", "call")
    check_task(WES, moved, "w-1", "call")
    with pytest.raises(Refused, match="held by 'ben', not by you"):
        check_task(ANA, moved, "w-1", "call")
    assert held_task(runs.engine, "w-1", "other") is None
    with pytest.raises(Refused, match="step 'other' of run 'w-1' has given nobody a task"):
        check_task(ANA, None, "w-1", "other")
    check_task(OPS, None, "w-1", "other")


def test_runs_are_seen_and_controlled_by_their_reps_teams(runs: Store) -> None:
    mine, nobodys = run_tasks(runs.engine, "w-1"), run_tasks(runs.engine, "w-2")
    assert may_see_run(ANA, mine) and not may_see_run(BEN, mine)
    assert may_see_run(SAM, mine) and not may_see_run(WES, mine) and may_see_run(OPS, mine)
    # Unassigned: only ops and the supervisor of the team its rule named.
    assert not may_see_run(ANA, nobodys) and may_see_run(SAM, nobodys)
    check_control(SAM, mine, "w-1")
    check_control(OPS, [], "w-9")
    with pytest.raises(Refused, match="run 'w-1' has no task of your teams"):
        check_control(WES, mine, "w-1")
    with pytest.raises(Refused, match="a rep cannot pause, resume or cancel runs"):
        check_control(ANA, mine, "w-1")


def test_a_task_moved_to_another_team_leaves_the_run_in_the_first_supervisors_sight(
    runs: Store,
) -> None:
    """The listings' `team` filter finds a run by the rep first given its task: the supervisor
    who sees it listed opens it, and may no longer act on it; the new team's may."""
    reassign(runs, "w-1", "ben", 1)  # ana (north) → ben (south)
    moved = run_tasks(runs.engine, "w-1")
    assert [(t.holder, t.held_by, t.teams_seen) for t in moved] == [
        ("ben", frozenset({"ana", "ben"}), frozenset({"north", "south"}))
    ]
    assert may_see_run(SAM, moved) and may_see_run(WES, moved)
    with pytest.raises(Refused, match="run 'w-1' has no task of your teams"):
        check_control(SAM, moved, "w-1")
    check_control(WES, moved, "w-1")
    with pytest.raises(Refused, match="held by 'ben'"):
        check_task(SAM, held_task(runs.engine, "w-1", "call"), "w-1", "call")
    assert not may_see_run(ANA, moved)  # a rep sees the tasks they hold, not their past ones
