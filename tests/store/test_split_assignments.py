"""Recorded split arms, on SQLite and PostgreSQL: balanced, the same arm for the same contact, and
distinct sequence numbers when gateways allocate at the same time."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sopflow.sop import splits
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.models import SplitAssignment
from sopflow.store.repository import Store
from sopflow.store.splits import SplitAssignments

ROOT = Path(__file__).resolve().parents[2]
# Parsed and compiled: only its split matters here (test_seed_sops.py validates the file).
PILOT = compile_plan(
    Sop.model_validate(yaml.safe_load((ROOT / "sop_definitions" / "script_pilot.yaml").read_text()))
)
AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def two_split_plan(version: int = 1, arms: tuple[str, str] = ("a", "b")) -> Plan:
    """Two splits in a row: `first` 2:1, then `second` 1:1."""
    first, second = arms
    sop: dict[str, Any] = {
        "id": "two_splits",
        "version": version,
        "name": "Two splits",
        "owner": "qa",
        "entry": {"events": ["lead.created"]},
        "steps": [
            {
                "id": "first",
                "kind": "split",
                "variants": [
                    {"name": first, "weight": 2, "goto": "second"},
                    {"name": second, "weight": 1, "goto": "second"},
                ],
            },
            {
                "id": "second",
                "kind": "split",
                "variants": [
                    {"name": "x", "goto": "done"},
                    {"name": "y", "goto": "done"},
                ],
            },
            {"id": "done", "kind": "end", "result": "done"},
        ],
    }
    return compile_plan(Sop.model_validate(sop))


def seqs(store: Store, sop_id: str, step: str) -> list[int]:
    with Session(store.engine) as session:
        return sorted(
            session.scalars(
                select(SplitAssignment.seq).where(
                    SplitAssignment.sop_id == sop_id, SplitAssignment.step == step
                )
            )
        )


def test_a_contact_keeps_its_arm_in_every_enrolment(store: Store) -> None:
    book = SplitAssignments(store.engine)
    step = PILOT.step("pick_script")
    assert isinstance(step, splits.SplitStep)
    first = book.assign_step(PILOT, step, "lead-1", at=AT)
    assert first.created and first.seq == 0 and first.assigned_at == AT
    assert first.variant == splits.balanced_variant(PILOT, step, 0)
    again = book.assign_step(PILOT, step, "lead-1")
    assert not again.created and (again.variant, again.seq, again.assigned_at) == (
        first.variant,
        0,
        AT,
    )
    assert book.assign(PILOT, "lead-1") == {"pick_script": first.variant}  # a second enrolment
    assert book.get("script_pilot", "pick_script", "lead-1") == again
    assert book.get("script_pilot", "pick_script", "lead-2") is None
    assert seqs(store, "script_pilot", "pick_script") == [0]  # no number used twice


def test_300_pilot_leads_take_exactly_a_third_each(store: Store) -> None:
    book = SplitAssignments(store.engine)
    arms = [book.assign(PILOT, f"lead-{i}")["pick_script"] for i in range(300)]
    assert Counter(arms) == {"script_a": 100, "script_b": 100, "script_c": 100}
    assert book.counts("script_pilot", "pick_script") == Counter(arms)
    assert seqs(store, "script_pilot", "pick_script") == list(range(300))
    step = PILOT.step("pick_script")
    assert isinstance(step, splits.SplitStep)
    assert arms == [splits.balanced_variant(PILOT, step, n) for n in range(300)]


def test_each_split_of_a_plan_has_its_own_balanced_sequence(store: Store) -> None:
    book = SplitAssignments(store.engine)
    plan = two_split_plan()
    arms = [book.assign(plan, f"c-{i}") for i in range(60)]
    assert Counter(a["first"] for a in arms) == {"a": 40, "b": 20}  # weights 2:1
    assert Counter(a["second"] for a in arms) == {"x": 30, "y": 30}
    assert seqs(store, "two_splits", "first") == seqs(store, "two_splits", "second")


def test_a_plan_without_splits_writes_nothing(store: Store) -> None:
    callback = compile_plan(
        Sop.model_validate(
            yaml.safe_load((ROOT / "sop_definitions" / "new_lead_callback.yaml").read_text())
        )
    )
    assert SplitAssignments(store.engine).assign(callback, "c-1") == {}
    with Session(store.engine) as session:
        assert session.scalar(select(func.count()).select_from(SplitAssignment)) == 0


def test_an_arm_a_later_version_dropped_is_not_passed_on(store: Store) -> None:
    book = SplitAssignments(store.engine)
    first = book.assign(two_split_plan(), "c-1")
    renamed = two_split_plan(version=2, arms=("c", "d"))
    again = book.assign(renamed, "c-1")
    assert first["first"] in ("a", "b")
    assert again == {"second": first["second"]}  # `first` falls back to the hash, recorded so


def test_concurrent_allocations_get_distinct_numbers_and_balanced_arms(store: Store) -> None:
    book = SplitAssignments(store.engine)
    contacts = [f"lead-{i}" for i in range(240)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        arms = list(pool.map(lambda c: book.assign(PILOT, c)["pick_script"], contacts))
    assert seqs(store, "script_pilot", "pick_script") == list(range(240))
    assert Counter(arms) == {"script_a": 80, "script_b": 80, "script_c": 80}
    assert [book.assign(PILOT, c)["pick_script"] for c in contacts] == arms


@pytest.mark.parametrize("split_exists", [False, True])
def test_one_contact_enrolled_at_once_by_many_gets_one_arm(
    store: Store, split_exists: bool
) -> None:
    book = SplitAssignments(store.engine)
    if split_exists:  # else the threads also race to create the split's counter
        book.assign(PILOT, "someone-else")
    with ThreadPoolExecutor(max_workers=8) as pool:
        arms = set(pool.map(lambda _: book.assign(PILOT, "lead-1")["pick_script"], range(16)))
    assert len(arms) == 1
    assert seqs(store, "script_pilot", "pick_script") == list(range(2 if split_exists else 1))
