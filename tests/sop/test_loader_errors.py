"""The YAML loader: positions, limits and pydantic errors turned into located, actionable lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sopflow.errors import SopValidationError
from sopflow.sop.loader import load_yaml, load_yaml_file, problems_from_validation_error
from sopflow.sop.schema import Sop


def messages(text: str) -> list[str]:
    with pytest.raises(SopValidationError) as caught:
        doc = load_yaml(text, "f.yaml")
        try:
            Sop.model_validate(doc.data)
        except ValidationError as exc:
            raise SopValidationError(problems_from_validation_error(doc, exc, Sop)) from None
    return [str(p) for p in caught.value.problems]


def test_positions_of_values_and_keys() -> None:
    doc = load_yaml("id: x\nsteps:\n  - id: a\n    kind: sms\n", "f.yaml")
    assert doc.positions[("steps", 0, "kind")] == (4, 11)
    assert doc.key_positions[("steps", 0, "kind")] == (4, 5)
    assert doc.locate(("steps", 0, "sms", "kind")) == (4, 11)  # a union tag in the loc is skipped
    assert doc.data == {"id": "x", "steps": [{"id": "a", "kind": "sms"}]}


def test_dates_stay_text_and_sexagesimal_times_are_integers() -> None:
    doc = load_yaml("a: 2026-12-03\nb: 18:00\n", "f.yaml")
    assert doc.data == {"a": "2026-12-03", "b": 1080}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id: x\n\tversion: 1\n", "f.yaml:2:1: error: invalid YAML"),
        ("a:\n  b: 1\n  b: 2\n", "f.yaml:3:3: error: duplicate key 'b' (first defined at line 2)"),
        ("? [a]\n: 1\n", "f.yaml:1:3: error: mapping keys must be text"),
        (
            "a: &x {b: 1}\nc:\n  <<: *x\n",
            "f.yaml:3:3: error: YAML merge keys (<<) are not supported",
        ),
    ],
)
def test_yaml_level_errors(text: str, expected: str) -> None:
    assert any(m.startswith(expected) for m in messages(text)), messages(text)


BASE = "id: d\nversion: 1\nname: D\nowner: o\nentry: {events: [lead.created]}\nsteps:\n"


def test_unknown_step_kind_suggests_the_closest() -> None:
    found = messages(BASE + "  - {id: a, kind: wiat, duration: 1h}\n")
    assert found == [
        "f.yaml:7:19: error: steps[0].kind: unknown step kind 'wiat' (expected one of: sms, whatsapp, "
        "call, task, ladder, wait, wait_for, branch, split, enroll, update, end) (did you mean 'wait'?)"
    ]


def test_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    found = messages(BASE + "  - id: a\n    kind: sms\n")
    assert found == ["f.yaml:7:5: error: steps[0]: missing required field 'body'"]


def test_unknown_field_inside_a_nested_model_suggests_from_that_model() -> None:
    found = messages(
        BASE.replace(
            "entry: {events: [lead.created]}", "entry: {events: [lead.created], conditons: []}"
        )
        + "  - {id: a, kind: end, result: done}\n"
    )
    assert found == [
        "f.yaml:5:33: error: entry: unknown field 'conditons' (did you mean 'conditions'?)"
    ]


def test_wrong_type_says_what_was_given() -> None:
    found = messages(BASE + "  - {id: a, kind: wait, duration: 1h, score: {weight: heavy}}\n")
    assert len(found) == 1 and found[0].startswith("f.yaml:7:55: error: steps[0].score.weight:")
    assert "'heavy'" in found[0]


def test_non_utf8_and_directories(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"id: x\nname: caf\xe9\n")
    with pytest.raises(SopValidationError, match="not UTF-8"):
        load_yaml_file(bad)
    with pytest.raises(SopValidationError, match="is a directory"):
        load_yaml_file(tmp_path)
