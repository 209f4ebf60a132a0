"""An SOP's `success_results`: only results the SOP can end with, each once, refused with the
file, line and the results it can end with; an SOP without them keeps its plan digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopflow.errors import SopValidationError
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.schema import Sop
from sopflow.sop.validate import load_plan

from .report_world import PILOT_SOURCE, ROOT, source


def problems(tmp_path: Path, success: str) -> list[str]:
    text = (ROOT / "sop_definitions" / "script_pilot.yaml").read_text()
    text = text.replace("success_results: [converted]", f"success_results: {success}")
    path = tmp_path / "pilot.yaml"
    path.write_text(text)
    with pytest.raises(SopValidationError) as caught:
        load_plan(path)
    return [str(p).replace(str(path), "pilot.yaml") for p in caught.value.problems]


def test_a_result_the_sop_cannot_end_with_is_named_with_those_it_can(tmp_path: Path) -> None:
    line = (ROOT / "sop_definitions" / "script_pilot.yaml").read_text().splitlines().index(
        "success_results: [converted]"
    ) + 1
    assert problems(tmp_path, "[converted, booked]") == [
        f"pilot.yaml:{line}:18: error: success_results: 'booked' is not a result this SOP can "
        "end with; it ends with converted, interested, lost"
    ]
    assert problems(tmp_path, "[lost, lost]") == [
        f"pilot.yaml:{line}:18: error: success_results: 'lost' is listed twice"
    ]


def test_the_engines_own_endings_are_no_success() -> None:
    for ending in ("cancelled", "opted_out", "completed"):  # completed: the last step is an end
        with pytest.raises(ValueError, match=f"'{ending}' is not a result this SOP can end"):
            Sop.model_validate(PILOT_SOURCE | {"success_results": [ending]})


def test_completed_counts_when_the_last_step_is_not_an_end() -> None:
    steps = [s for s in PILOT_SOURCE["steps"] if s["kind"] != "end"]
    steps += [{"id": "converted", "kind": "end", "result": "converted"},
              {"id": "wrap_up", "kind": "wait", "duration": "1d"}]  # fmt: skip
    sop = Sop.model_validate(
        PILOT_SOURCE | {"steps": steps, "success_results": ["completed", "converted"]}
    )
    assert sop.success_results == ["completed", "converted"]


def test_an_sop_without_success_results_keeps_its_digest() -> None:
    callback = Sop.model_validate(source("new_lead_callback"))
    assert "success_results" not in callback.model_dump()
    # Pinned before success results existed (tests/cohorts/test_schedule_rules.py pins it too).
    assert compile_plan(callback).digest.startswith("sha256:230dc5b09700")


def test_a_plan_with_success_results_round_trips_with_its_digest() -> None:
    plan = load_plan(ROOT / "sop_definitions" / "script_pilot.yaml")
    assert plan.sop.success_results == ["converted"]
    again = Plan.model_validate(plan.model_dump(mode="json"))
    assert again.sop.success_results == ["converted"] and again.digest == plan.digest
    assert compile_plan(again.sop).digest == plan.digest
