"""Split arms: the hash fallback is fair on average (chi-square), the permuted blocks are balanced
at every prefix, and the engine and the simulator take the arm assigned at enrolment."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sopflow.errors import SopflowError
from sopflow.sop import engine, splits
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import Record, Tick
from sopflow.sop.schema import Sop, SplitStep
from sopflow.sop.simulator import Script, simulate

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
# Upper 0.1% points of the chi-square distribution by degrees of freedom (scipy.stats.chi2.ppf
# (0.999, df); scipy is not a dependency). A fair hash exceeds them once in a thousand id sets.
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467}


def split_plan(*weights: int, sop_id: str = "pilot", step_id: str = "pick") -> Plan:
    """An SOP that splits at once into arms a, b, c… with these weights, each ending the run."""
    names = [chr(ord("a") + i) for i in range(len(weights))]
    sop: dict[str, Any] = {
        "id": sop_id,
        "version": 1,
        "name": "Pilot",
        "owner": "qa",
        "entry": {"events": ["lead.created"]},
        "steps": [
            {
                "id": step_id,
                "kind": "split",
                "variants": [
                    {"name": n, "weight": w, "goto": f"end_{n}"}
                    for n, w in zip(names, weights, strict=True)
                ],
            },
            *({"id": f"end_{n}", "kind": "end", "result": n} for n in names),
        ],
    }
    return compile_plan(Sop.model_validate(sop))


def split_step(plan: Plan) -> SplitStep:
    (step,) = splits.split_steps(plan)
    return step


def pilot() -> Plan:
    """sop_definitions/script_pilot.yaml, parsed and compiled (its other checks have their own
    tests in test_seed_sops.py: here only its split matters)."""
    data = yaml.safe_load((ROOT / "sop_definitions" / "script_pilot.yaml").read_text())
    return compile_plan(Sop.model_validate(data))


# ---------------------------------------------------------------- the hash fallback
@pytest.mark.parametrize("weights", [(1, 1, 1), (5, 3, 2), (1, 2, 3, 4)])
def test_the_hash_fallback_fits_the_weights_chi_square(weights: tuple[int, ...]) -> None:
    plan = split_plan(*weights)
    step = split_step(plan)
    n = 30_000
    counts = Counter(splits.split_variant(plan, step, f"lead-{i}") for i in range(n))
    total = sum(weights)
    expected = {v.name: n * v.weight / total for v in step.variants}
    statistic = sum((counts[name] - e) ** 2 / e for name, e in expected.items())
    assert statistic < CHI2_999[len(weights) - 1], (statistic, counts)


def test_the_hash_fallback_keeps_a_contact_in_its_arm() -> None:
    plan = pilot()
    step = split_step(plan)
    assert {splits.split_variant(plan, step, "lead-7") for _ in range(5)} == {
        splits.split_variant(plan, step, "lead-7")
    }


# ---------------------------------------------------------------- permuted blocks
def balanced_counts(plan: Plan, n: int) -> Counter[str]:
    step = split_step(plan)
    return Counter(splits.balanced_variant(plan, step, seq) for seq in range(n))


def test_300_pilot_leads_split_into_three_exactly_equal_arms() -> None:
    plan = pilot()
    assert balanced_counts(plan, 300) == {"script_a": 100, "script_b": 100, "script_c": 100}


def test_from_100_to_320_leads_every_arm_is_within_2_points_of_a_third() -> None:
    plan = pilot()
    step = split_step(plan)
    counts: Counter[str] = Counter()
    for seq in range(320):
        counts[splits.balanced_variant(plan, step, seq)] += 1
        n = seq + 1
        if n >= 100:
            worst = max(abs(counts[v.name] / n - 1 / 3) for v in step.variants)
            assert worst <= 0.02, (n, counts)


@pytest.mark.parametrize("weights", [(1, 1, 1), (2, 1), (5, 3, 2), (70, 30), (1, 1, 1, 1, 1)])
def test_every_prefix_is_within_one_block_of_proportional(weights: tuple[int, ...]) -> None:
    plan = split_plan(*weights)
    step = split_step(plan)
    size = splits.block_size(step)
    reduced = dict(splits.arm_weights(step))
    total = sum(reduced.values())
    counts: Counter[str] = Counter()
    for seq in range(20 * size):
        counts[splits.balanced_variant(plan, step, seq)] += 1
        n = seq + 1
        for name, weight in reduced.items():
            deviation = abs(counts[name] - n * weight / total)
            # An arm holds weight × multiple slots of a block: no prefix strays further.
            assert deviation <= weight * splits.BLOCK_MULTIPLE <= size, (n, counts)
            if n % size == 0:
                assert deviation == 0, (n, counts)  # after every full block: exact


def test_blocks_reduce_weights_and_are_shuffled_deterministically() -> None:
    three = split_step(split_plan(1, 1, 1))
    assert splits.block_size(three) == splits.block_size(split_step(split_plan(2, 2, 2))) == 6
    assert splits.block_size(split_step(split_plan(70, 30))) == 20
    plan = pilot()
    step = split_step(plan)
    random.seed(1)
    first = [splits.block(plan, step, index) for index in range(50)]
    random.seed(2)  # the blocks depend on nothing but sop, step and index
    assert [splits.block(plan, step, index) for index in range(50)] == first
    assert all(Counter(b) == {"script_a": 2, "script_b": 2, "script_c": 2} for b in first)
    assert len({tuple(b) for b in first}) > 10  # shuffled, not one fixed order
    other = split_plan(1, 1, 1, sop_id="other")
    assert [splits.block(other, split_step(other), i) for i in range(5)] != [
        splits.block(split_plan(1, 1, 1), three, i) for i in range(5)
    ]
    with pytest.raises(ValueError, match="start at 0"):
        splits.balanced_variant(plan, step, -1)


# ---------------------------------------------------------------- choosing and checking arms
def test_choose_takes_a_valid_assigned_arm_else_the_hash() -> None:
    plan = pilot()
    step = split_step(plan)
    hashed = splits.split_variant(plan, step, "lead-1")
    other = next(v.name for v in step.variants if v.name != hashed)
    assert splits.choose(plan, step, "lead-1", {"pick_script": other}) == (
        other,
        {"method": "balanced"},
    )
    assert splits.choose(plan, step, "lead-1", {}) == (hashed, {"method": "hash"})
    assert splits.choose(plan, step, "lead-1", {"pick_script": "script_z"}) == (
        hashed,
        {"method": "hash", "ignored": "script_z"},
    )


@pytest.mark.parametrize(
    "given, message",
    [
        (
            {"pick_script": "script_d"},
            "split step 'pick_script' has no arm 'script_d' (arms: script_a, script_b, script_c)",
        ),
        (
            {"call_a": "script_a"},
            "'call_a' is not a split step of SOP 'script_pilot' (split steps: pick_script)",
        ),
    ],
)
def test_a_wrong_assignment_is_one_clear_error(given: dict[str, str], message: str) -> None:
    with pytest.raises(SopflowError) as caught:
        splits.check_assignment(pilot(), given)
    assert str(caught.value) == message


# ---------------------------------------------------------------- the engine and the simulator
def variant_records(commands: list[Any]) -> list[Record]:
    return [c for c in commands if isinstance(c, Record) and c.action == "variant"]


def test_the_engine_takes_the_assigned_arm_and_records_how() -> None:
    plan = pilot()
    step = split_step(plan)
    contact = {"id": "lead-1", "phone": "+12125550123", "tags": ["pilot"]}
    hashed = splits.split_variant(plan, step, "lead-1")
    other = next(v.name for v in step.variants if v.name != hashed)

    started = engine.start(plan, contact, ["UTC"], AT, variants={"pick_script": other})
    (record,) = variant_records(started.commands)
    assert record.detail == {"variant": other, "method": "balanced"}
    assert started.state.variants == {"pick_script": other}
    assert started.state.assigned_variants == {"pick_script": other}
    assert started.state.step == f"call_{other[-1]}"
    later = engine.handle(plan, started.state, Tick(at=AT))  # carried from transition to transition
    assert later.state.assigned_variants == {"pick_script": other}

    (plain,) = variant_records(engine.start(plan, contact, ["UTC"], AT).commands)
    assert plain.detail == {"variant": hashed, "method": "hash"}
    wrong = engine.start(plan, contact, ["UTC"], AT, variants={"pick_script": "script_z"})
    (fallback,) = variant_records(wrong.commands)
    assert fallback.detail == {"variant": hashed, "method": "hash", "ignored": "script_z"}


def test_the_simulator_previews_an_assigned_arm_and_refuses_a_wrong_one() -> None:
    plan = pilot()
    contact = {"id": "p-1", "first_name": "Gus", "phone": "+12125550123", "tags": ["pilot"]}
    for arm in ("script_a", "script_b", "script_c"):
        sim = simulate(
            plan, contact, AT, Script(default_outcome="booked"), variants={"pick_script": arm}
        )
        (variant,) = [e for e in sim.timeline if e.action == "variant"]
        assert variant.detail == {"variant": arm, "method": "balanced"}
        assert any(e.step == f"call_{arm[-1]}" and e.action == "assign" for e in sim.timeline)
    with pytest.raises(SopflowError, match="has no arm 'script_d'"):
        simulate(plan, contact, AT, variants={"pick_script": "script_d"})
