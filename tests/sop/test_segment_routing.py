"""Layering: `segment` / `not_segment` conditions in branch cases and entry conditions. The
engine asks (CheckSegments) and routes on the answer, recording it; the simulator answers from
the memberships it is given; validation names unknown segments and misplaced segment tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sopflow.errors import SopflowError
from sopflow.sop import engine, segment_routing
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import ActionResult, CheckSegments, Record, Transition
from sopflow.sop.schema import Condition, Sop
from sopflow.sop.simulator import simulate
from sopflow.sop.validate import load_plan, validate_paths

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 10:00 in New York, a Tuesday
CONTACT = {"id": "c-1", "first_name": "Ann", "phone": "+12125550123", "vip": True}


def plan(cases: list[dict[str, Any]], conditions: list[dict[str, Any]] | None = None) -> Plan:
    """A branch `route` over `cases`, then one end step per target (a, b, c), default `other`."""
    data = {
        "id": "layered",
        "version": 1,
        "name": "Layered",
        "owner": "qa",
        "entry": {"events": ["lead.created"], "conditions": conditions or []},
        "contact_fields": {"vip": {"type": "boolean"}},
        "steps": [
            {"id": "route", "kind": "branch", "cases": cases, "default": "other"},
            *({"id": name, "kind": "end", "result": name} for name in ("a", "b", "c", "other")),
        ],
    }
    return compile_plan(Sop.model_validate(data))


def records(transition: Transition, action: str) -> list[Record]:
    return [c for c in transition.commands if isinstance(c, Record) and c.action == action]


def answer(check: CheckSegments, **members: bool) -> ActionResult:
    return ActionResult(
        at=check.at, key=check.key, status="done", detail=segment_routing.answer_detail(members)
    )


# ------------------------------------------------------------------ the engine
def test_a_branch_asks_for_the_segments_then_routes_on_the_answer_and_records_it() -> None:
    layered = plan(
        [
            {"when": [{"segment": "high_intent"}], "goto": "a"},
            {"when": [{"not_segment": "champions"}], "goto": "b"},
        ]
    )
    started = engine.start(layered, CONTACT, ["America/New_York"], AT)
    (check,) = [c for c in started.commands if isinstance(c, CheckSegments)]
    assert (check.segments, check.contact_id, check.at) == (["high_intent", "champions"], "c-1", AT)
    assert started.state.pending == check.key and started.state.phase == "awaiting_result"
    assert not records(started, "branch")  # nothing decided before the store answers

    inside = engine.handle(layered, started.state, answer(check, high_intent=True, champions=True))
    (branch,) = records(inside, "branch")
    assert branch.detail == {
        "case": 1,
        "goto": "a",
        "segments": {"high_intent": True, "champions": True},
        "segments_as_of": AT.isoformat(),
    }
    assert inside.state.result == "a"

    outside = engine.handle(
        layered, started.state, answer(check, high_intent=False, champions=False)
    )
    assert records(outside, "branch")[0].detail["goto"] == "b"  # not in champions: case 2
    neither = engine.handle(
        layered, started.state, answer(check, high_intent=False, champions=True)
    )
    assert records(neither, "branch")[0].detail["case"] == "default"
    assert neither.state.result == "other"


def test_cases_before_the_first_segment_case_decide_without_asking() -> None:
    layered = plan(
        [
            {"when": [{"field": "contact.vip", "equals": True}], "goto": "a"},
            {"when": [{"segment": "high_intent"}], "goto": "b"},
        ]
    )
    vip = engine.start(layered, CONTACT, ["America/New_York"], AT)
    assert not [c for c in vip.commands if isinstance(c, CheckSegments)]
    assert records(vip, "branch")[0].detail == {"case": 1, "goto": "a"}  # no segments asked
    other = engine.start(layered, {**CONTACT, "vip": False}, ["America/New_York"], AT)
    (check,) = [c for c in other.commands if isinstance(c, CheckSegments)]
    assert check.segments == ["high_intent"]


def test_segments_inside_any_groups_are_asked_too() -> None:
    layered = plan(
        [{"when": [{"any": [[{"segment": "champions"}], [{"segment": "at_risk"}]]}], "goto": "a"}]
    )
    started = engine.start(layered, CONTACT, ["America/New_York"], AT)
    (check,) = [c for c in started.commands if isinstance(c, CheckSegments)]
    assert check.segments == ["champions", "at_risk"]
    routed = engine.handle(layered, started.state, answer(check, champions=False, at_risk=True))
    assert routed.state.result == "a"


def test_a_failed_check_routes_as_if_no_segment_held_either_way_and_says_why() -> None:
    layered = plan(
        [
            {"when": [{"segment": "high_intent"}], "goto": "a"},
            {"when": [{"not_segment": "high_intent"}], "goto": "b"},
        ]
    )
    started = engine.start(layered, CONTACT, ["America/New_York"], AT)
    (check,) = [c for c in started.commands if isinstance(c, CheckSegments)]
    failed = ActionResult(
        at=AT, key=check.key, status="failed", reason="unknown segment 'high_intent' in segments"
    )
    routed = engine.handle(layered, started.state, failed)
    (branch,) = records(routed, "branch")
    assert branch.detail["goto"] == "other"  # neither `segment` nor `not_segment` held
    assert branch.detail["segments"] == {}
    assert branch.detail["segments_error"] == "unknown segment 'high_intent' in segments"


def test_an_answer_missing_a_segment_is_a_failure_not_a_guess() -> None:
    layered = plan([{"when": [{"not_segment": "high_intent"}], "goto": "a"}])
    started = engine.start(layered, CONTACT, ["America/New_York"], AT)
    (check,) = [c for c in started.commands if isinstance(c, CheckSegments)]
    routed = engine.handle(layered, started.state, answer(check))
    branch = records(routed, "branch")[0].detail
    assert (
        branch["goto"] == "other"
        and "no answer for segment(s) high_intent" in branch["segments_error"]
    )


def test_entry_conditions_leave_segments_out_until_they_are_answered() -> None:
    gated = plan([{"when": [{"field": "contact.vip", "exists": True}], "goto": "a"}],
                 conditions=[{"field": "contact.phone", "exists": True},
                             {"segment": "high_intent"}])  # fmt: skip
    assert segment_routing.entry_segments(gated) == ["high_intent"]
    assert engine.entry_matches(gated, "lead.created", CONTACT, {})  # not asked yet: maybe
    assert not engine.entry_matches(gated, "lead.created", {"id": "c-2"}, {})  # no phone: never
    assert engine.entry_matches(gated, "lead.created", CONTACT, {}, {"high_intent": True})
    assert not engine.entry_matches(gated, "lead.created", CONTACT, {}, {"high_intent": False})
    assert not engine.entry_matches(gated, "lead.created", CONTACT, {}, {})  # unanswered: no
    why = segment_routing.unmet(gated.sop.entry.conditions, {"high_intent": False})
    assert why == ["not in segment 'high_intent'"]
    negated = Condition.model_validate({"not_segment": "champions"})
    assert segment_routing.unmet([negated], {"champions": True}) == ["in segment 'champions'"]


def test_plans_without_segment_conditions_keep_their_digest() -> None:
    """The new keys are left out of the plan's JSON while unset: deployed versions keep their
    digest, and the JSON runs in flight carry reads back the same."""
    condition = Condition.model_validate({"field": "contact.phone", "exists": True})
    assert condition.model_dump(by_alias=True, exclude_none=False) == {
        "field": "contact.phone", "any": None, "equals": None, "not_equals": None, "in": None,
        "not_in": None, "contains": None, "gt": None, "gte": None, "lt": None, "lte": None,
        "exists": True, "within_days": None,
    }  # fmt: skip
    nested = Condition.model_validate({"any": [[{"field": "outcome", "equals": "x"}]]})
    assert "segment" not in nested.model_dump()["any"][0][0]
    assert Condition.model_validate({"segment": "x"}).model_dump(exclude_none=True) == {
        "segment": "x"
    }
    callback = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    assert "segment" not in callback.model_dump_json()
    assert Plan.model_validate_json(callback.model_dump_json()) == callback


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"segment": "high_intent", "field": "contact.phone", "exists": True},
            "a `segment` condition stands alone: no field, operator or `any` beside it",
        ),
        (
            {"not_segment": "high_intent", "equals": 1},
            "a `not_segment` condition stands alone",
        ),
        (
            {"segment": "high_intent", "not_segment": "champions"},
            "use either `segment` or `not_segment` in one condition",
        ),
        ({"segment": "High-Intent"}, "String should match pattern"),
    ],
)
def test_misplaced_segment_tests_are_refused_with_what_to_write(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Condition.model_validate(given)
    assert message in str(caught.value)


SOP = """\
id: layered
version: 1
name: Layered
owner: ops@example.com
entry:
  events: [lead.created]
  conditions:
    - {segment: high_intnet}
steps:
  - id: route
    kind: branch
    cases:
      - when: [{not_segment: champoins}]
        goto: done
      - when: [{any: [[{segment: nobody}]]}]
        goto: done
  - id: done
    kind: end
    result: done
"""


def layout(tmp_path: Path, text: str = SOP) -> Path:
    """sops/layered.yaml with segments/ beside sops/, as segments/ is beside sop_definitions/."""
    (tmp_path / "sops").mkdir()
    (tmp_path / "segments").mkdir()
    for name in ("high_intent", "champions"):
        source = (ROOT / "segments" / f"{name}.yaml").read_text()
        (tmp_path / "segments" / f"{name}.yaml").write_text(source)
    path = tmp_path / "sops" / "layered.yaml"
    path.write_text(text)
    return path


def test_validate_names_each_unknown_segment_at_its_line_with_a_hint(tmp_path: Path) -> None:
    path = layout(tmp_path)
    plans, found = validate_paths([path.parent])
    assert not plans
    known = "known segments: champions, high_intent"
    assert [str(p).replace(str(path), "F") for p in found] == [
        f"F:8:17: error: entry.conditions[0].segment: unknown segment 'high_intnet' "
        f"(did you mean 'high_intent'?); {known}",
        f"F:13:30: error: steps[0].cases[0].when[0].not_segment: unknown segment 'champoins' "
        f"(did you mean 'champions'?); {known}",
        f"F:15:34: error: steps[0].cases[1].when[0].any[0][0].segment: unknown segment "
        f"'nobody'; {known}",
    ]


def test_validate_takes_another_segments_folder(tmp_path: Path) -> None:
    path = layout(tmp_path, SOP.replace("high_intnet", "high_intent").replace("champoins", "vip")
                  .replace("nobody", "champions"))  # fmt: skip
    assert "unknown segment 'vip'" in str(validate_paths([path])[1])
    other = tmp_path / "elsewhere"
    other.mkdir()
    for name in ("high_intent", "champions"):
        (other / f"{name}.yaml").write_text((tmp_path / "segments" / f"{name}.yaml").read_text())
    (other / "vip.yaml").write_text(
        "id: vip\nname: VIPs\ndescription: tagged vip\nrules:\n  tags: {all: [vip]}\n"
    )
    plans, found = validate_paths([path], segments=other)
    assert found == [] and plans


def test_a_segment_used_as_a_field_says_how_to_write_it(tmp_path: Path) -> None:
    text = SOP.replace("{segment: high_intnet}", "{field: segment.high_intent, exists: true}")
    path = layout(tmp_path, text.replace("champoins", "champions").replace("nobody", "champions"))
    messages = [p.message for p in validate_paths([path])[1]]
    assert messages == [
        "entry.conditions[0].field: a segment is not a field: write `segment: high_intent` "
        "(or `not_segment: high_intent`) as a condition of its own"
    ]


def test_the_seed_triage_routes_by_a_segment_that_exists() -> None:
    triage = load_plan(ROOT / "sop_definitions" / "lead_triage.yaml")
    nurture = load_plan(ROOT / "sop_definitions" / "lead_nurture.yaml")
    assert segment_routing.plan_segments(triage) == ["high_intent"]
    assert segment_routing.entry_segments(nurture) == ["high_intent"]
    assert (ROOT / "segments" / "high_intent.yaml").exists()


# ------------------------------------------------------------------ the simulator
def test_the_simulator_answers_from_the_memberships_it_is_given() -> None:
    triage = load_plan(ROOT / "sop_definitions" / "lead_triage.yaml")
    member = simulate(triage, CONTACT, AT, segments=["high_intent"])
    (branch,) = [e for e in member.timeline if e.action == "branch"]
    assert branch.detail["segments"] == {"high_intent": True}
    assert branch.detail["goto"] == "sales_call"
    assert next(e.action for e in member.timeline if e.step == "sales_call") == "assign"

    nobody = simulate(triage, CONTACT, AT)  # a contact with no history is in no segment
    (branch,) = [e for e in nobody.timeline if e.action == "branch"]
    assert (branch.detail["segments"], branch.detail["goto"]) == ({"high_intent": False}, "nurture")
    assert nobody.result == "nurtured"
    assert [e.detail["sop"] for e in nobody.timeline if e.action == "enroll"] == ["lead_nurture"]
    assert not [e for e in nobody.timeline if e.action == "segments"]  # the branch says it all


def test_the_simulator_refuses_a_segment_the_sop_never_names() -> None:
    triage = load_plan(ROOT / "sop_definitions" / "lead_triage.yaml")
    with pytest.raises(SopflowError) as caught:
        simulate(triage, CONTACT, AT, segments=["high_intnet"])
    assert str(caught.value) == (
        "--segment 'high_intnet' is no segment lead_triage names (it routes by high_intent)"
    )
    callback = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    with pytest.raises(SopflowError, match="it routes by no segment"):
        simulate(callback, CONTACT, AT, segments=["high_intent"])


def sopflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_sop_simulate_takes_segment_memberships() -> None:
    triage = str(ROOT / "sop_definitions" / "lead_triage.yaml")
    start = ["--start", "2026-12-01T10:00", "--default-outcome", "connected"]
    inside = sopflow("sop", "simulate", triage, *start, "--segment", "high_intent")
    assert inside.returncode == 0, inside.stderr
    assert "case=1, goto=sales_call; in high_intent as of Tue 01 Dec 10:00" in inside.stdout
    assert "result: qualified" in inside.stdout
    outside = sopflow("sop", "simulate", triage, *start, "--json")
    assert outside.returncode == 0, outside.stderr
    assert '"segments": {\n          "high_intent": false' in outside.stdout
    typo = sopflow("sop", "simulate", triage, *start, "--in-segment", "champions")
    assert typo.returncode == 1
    assert typo.stderr.strip() == (
        "error: --segment 'champions' is no segment lead_triage names (it routes by high_intent)"
    )


def test_sop_validate_takes_a_segments_folder(tmp_path: Path) -> None:
    path = layout(tmp_path)
    result = sopflow("sop", "validate", str(path), "--segments", str(ROOT / "segments"))
    assert result.returncode == 1
    assert "unknown segment 'champoins' (did you mean 'champions'?); known segments: " in (
        result.stderr
    )
    assert "at_risk" in result.stderr  # the given folder's segments, not those beside the file
    help_text = sopflow("sop", "validate", "--help").stdout
    assert "--segments" in help_text


def test_validate_without_a_segments_folder_beside_reads_the_working_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "layered.yaml"  # no segments/ beside tmp_path's folder
    path.write_text(
        textwrap.dedent(SOP).replace("champoins", "champions").replace("nobody", "champions")
    )
    monkeypatch.chdir(ROOT)
    found = [p.message for p in validate_paths([path])[1]]
    known = ", ".join(sorted(p.stem for p in (ROOT / "segments").glob("*.yaml")))
    assert found == [
        "entry.conditions[0].segment: unknown segment 'high_intnet' (did you mean "
        f"'high_intent'?); known segments: {known}"
    ]
