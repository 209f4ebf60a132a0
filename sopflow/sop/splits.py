"""Which arm of a `split` step a contact takes. Pure: no I/O, no clock, no random module state.

Two ways, both deterministic:
- **balanced** (permuted blocks): the store numbers a split's contacts 0, 1, 2… at enrolment
  (sopflow/store/splits.py) and contact number n takes the arm at position n of a shuffled block
  of arms. After every full block the arms' counts are exactly proportional to their weights,
  and in between they are never more than one block apart. The arm travels into the run
  (`RunState.assigned_variants`), so the engine itself never needs the store.
- **hash**: sha256 of sop:step:contact modulo the total weight, when no arm was assigned
  (previews, runs started without a store). Fair only on average: at 300 contacts an equal
  three-way arm's share has a standard deviation of ~2.7 percentage points, too loose for a pilot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from math import gcd
from typing import Any

from sopflow.errors import SopflowError
from sopflow.sop.plan import Plan
from sopflow.sop.schema import SplitStep

# Each block holds every arm this many times its (reduced) weight. With one, the last contact of
# a block could be told from the ones before it; two keeps blocks short (6 for three equal arms)
# so the counts stay within a few contacts of proportional throughout a pilot. Changing it only
# reshuffles contacts not yet assigned: assignments already stored keep their arm.
BLOCK_MULTIPLE = 2


def split_steps(plan: Plan) -> list[SplitStep]:
    """The plan's split steps, in the order they are listed."""
    return [step for step in plan.sop.steps if isinstance(step, SplitStep)]


def arm_weights(step: SplitStep) -> list[tuple[str, int]]:
    """(arm, weight) with the weights divided by their common divisor: 2/2/2 blocks like 1/1/1."""
    common = gcd(*(v.weight for v in step.variants))
    return [(v.name, v.weight // common) for v in step.variants]


def block_size(step: SplitStep) -> int:
    """How many contacts one balanced block holds."""
    return sum(w for _, w in arm_weights(step)) * BLOCK_MULTIPLE


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def block(plan: Plan, step: SplitStep, index: int) -> list[str]:
    """The arms of block `index` in the order contacts take them: every arm weight × multiple
    times, shuffled by sorting the slots on a sha256 of sop:step:block:slot (a uniform permutation
    that depends on nothing but its inputs)."""
    slots = [name for name, weight in arm_weights(step) for _ in range(weight * BLOCK_MULTIPLE)]
    prefix = f"{plan.sop.id}:{step.id}:{index}"
    order = sorted(range(len(slots)), key=lambda slot: _digest(f"{prefix}:{slot}"))
    return [slots[slot] for slot in order]


def balanced_variant(plan: Plan, step: SplitStep, seq: int) -> str:
    """The arm of the split's contact number `seq` (0 for the first) under permuted blocks."""
    if seq < 0:
        raise ValueError(f"sequence numbers start at 0, not {seq}")
    size = block_size(step)
    return block(plan, step, seq // size)[seq % size]


def split_variant(plan: Plan, step: SplitStep, contact_id: str) -> str:
    """The hash fallback: the same contact always lands in the same arm, fair only on average."""
    seed = f"{plan.sop.id}:{step.id}:{contact_id}".encode()
    bucket = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") % sum(
        v.weight for v in step.variants
    )
    for variant in step.variants:
        if bucket < variant.weight:
            return variant.name
        bucket -= variant.weight
    raise AssertionError("unreachable: buckets cover the total weight")


def choose(
    plan: Plan, step: SplitStep, contact_id: str, assigned: Mapping[str, str]
) -> tuple[str, dict[str, Any]]:
    """The arm a run takes at `step` and how it was chosen (for the `variant` record): the arm
    assigned at enrolment when it is one of the step's, else the hash. An assigned arm the step
    does not have (a later version renamed it) is named in the record, never followed."""
    given = assigned.get(step.id)
    if given is not None and given in {v.name for v in step.variants}:
        return given, {"method": "balanced"}
    how: dict[str, Any] = {"method": "hash"}
    if given is not None:
        how["ignored"] = given
    return split_variant(plan, step, contact_id), how


def check_assignment(plan: Plan, variants: Mapping[str, str]) -> dict[str, str]:
    """Arms given by a person (`simulate --variant STEP=ARM`), checked against the plan."""
    splits = {step.id: step for step in split_steps(plan)}
    for step_id, arm in variants.items():
        step = splits.get(step_id)
        if step is None:
            known = ", ".join(splits) or "none"
            raise SopflowError(
                f"{step_id!r} is not a split step of SOP {plan.sop.id!r} (split steps: {known})"
            )
        arms = [v.name for v in step.variants]
        if arm not in arms:
            raise SopflowError(
                f"split step {step_id!r} has no arm {arm!r} (arms: {', '.join(arms)})"
            )
    return dict(variants)
