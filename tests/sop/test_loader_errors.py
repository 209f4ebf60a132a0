"""The YAML loader: positions, limits and pydantic errors turned into located, actionable lines."""

from __future__ import annotations

import tracemalloc
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
        "f.yaml:7:19: error: steps[0].kind: unknown step kind 'wiat' (expected one of: sms, whatsapp, email, "
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


def test_a_duration_without_a_unit_is_located_with_a_hint() -> None:
    found = messages(
        BASE + "  - {id: a, kind: task, title: Call, due_within: 30, outcomes: [done]}\n"
    )
    assert found == [
        "f.yaml:7:50: error: steps[0].due_within: invalid duration 30: a duration needs a unit "
        "(w, d, h, m, s); write 30m, 30s or 30h"
    ]


def long_string_bomb(levels: int) -> str:
    """200 KB of text referenced 4**levels times through nested aliases: as cheap to parse as
    any 200 KB file, 4**levels * 200 KB to expand, yet only a few thousand nodes."""
    lines = [f'x0: &s0 "{"x" * 200_000}"']
    lines += [f"x{i}: &s{i} [{', '.join([f'*s{i - 1}'] * 4)}]" for i in range(1, levels + 1)]
    return BASE + "  - {id: a, kind: end, result: done}\n" + "\n".join(lines) + "\n"


def test_a_long_string_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(long_string_bomb(6))  # 819 MB expanded, in 4,096 copies
    tracemalloc.start()
    try:
        with pytest.raises(SopValidationError) as caught:
            load_yaml_file(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # x2 is the first value over the limit: 16 copies of the 200 KB string.
    assert [str(p) for p in caught.value.problems] == [
        f"{bomb}:10:5: error: this value expands to 3,200,000 characters of text "
        "(at most 1,048,576) once YAML aliases (*name) are expanded; write it out, "
        "or reuse anchors less"
    ]
    assert peak < 20 * 1024 * 1024


def test_a_billion_laughs_is_refused_at_the_value_that_explodes() -> None:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 10):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        text += f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    with pytest.raises(SopValidationError, match=r"f\.yaml:5:4: error: this value expands to "):
        load_yaml(text, "f.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id: x\na: &a [*a]\n", "f.yaml:2:4: error: this value contains an alias to itself"),
        ("id: x\na: &a {b: *a}\n", "f.yaml:2:4: error: this value contains an alias to itself"),
        ("a: " + "[" * 150 + "]" * 150 + "\n", "levels deep; flatten the file"),
    ],
)
def test_recursive_aliases_and_deep_nesting_are_one_error(text: str, expected: str) -> None:
    with pytest.raises(SopValidationError) as caught:
        load_yaml(text, "f.yaml")
    assert len(caught.value.problems) == 1 and expected in str(caught.value.problems[0])


def test_anchors_reused_a_few_times_still_load() -> None:
    doc = load_yaml("a: &o [booked, lost]\nb: *o\nc: *o\nd: &t Hi there\ne: *t\n", "f.yaml")
    assert doc.data == {
        "a": ["booked", "lost"],
        "b": ["booked", "lost"],
        "c": ["booked", "lost"],
        "d": "Hi there",
        "e": "Hi there",
    }
    assert doc.positions[("c", 1)] == (1, 16)  # an alias's values sit where the anchor's do


def test_a_long_wrong_value_is_quoted_short() -> None:
    found = messages(BASE.replace("name: D", "name: [" + "word, " * 5_000 + "end]"))
    (line,) = [f for f in found if "name:" in f]
    assert len(line) < 200 and line.endswith("…")
