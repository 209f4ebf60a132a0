"""Segment files: the examples in segments/ are valid, and every kind of bad file gets its
FILE:LINE:COL: error: message, as SOP files do."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopflow.errors import NotFoundError
from sopflow.segmenting.files import (
    MAX_SEGMENT_BYTES,
    SegmentValidationError,
    UnknownSegmentError,
    find_segment,
    load_segment,
    validate_paths,
)

ROOT = Path(__file__).resolve().parents[2]
HEAD = "id: x\nname: X\ndescription: a test\n"


def problems(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> list[str]:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    valid, found = validate_paths([path])
    assert not valid
    return [str(p).removeprefix(f"{path}:") for p in found]


def test_the_example_segments_are_valid() -> None:
    valid, found = validate_paths([ROOT / "segments"])
    assert found == []
    ids = {segment.id for segment in valid.values()}
    assert {"champions", "at_risk", "high_intent", "lapsed_vip"} <= ids
    for segment in valid.values():
        assert segment.name and segment.description


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    text = HEAD + "rules:\n  tags: {all: [vip]\n"
    assert problems(tmp_path, text) == [
        "6:1: error: invalid YAML: did not find expected ',' or '}'"
    ]


def test_unknown_keys_are_errors_with_a_hint(tmp_path: Path) -> None:
    text = HEAD + "rules:\n  tag: {all: [vip]}\n  rfm:\n    currency: EUR\n    segment: [lost]\n"
    assert problems(tmp_path, text) == [
        "5:3: error: rules: unknown field 'tag' (did you mean 'tags'?)",
        "8:5: error: rules.rfm: unknown field 'segment' (did you mean 'segments'?)",
    ]
    top = "id: x\nname: X\ndescription: d\nrule: {}\n"
    assert problems(tmp_path, top) == [
        "1:1: error: missing required field 'rules'",
        "4:1: error: unknown field 'rule' (did you mean 'rules'?)",
    ]


def test_bad_rfm_values(tmp_path: Path) -> None:
    text = HEAD + (
        "rules:\n  rfm:\n    currency: eur\n    segments: [champion]\n"
        "    recency: {gte: 6}\n    frequency: {gte: 4, lte: 2}\n    monetary: {}\n"
    )
    assert problems(tmp_path, text) == [
        "6:15: error: rules.rfm.currency: currency 'eur': an ISO 4217 code in capitals, e.g. EUR",
        "7:16: error: rules.rfm.segments[0]: unknown RFM segment 'champion' (did you mean "
        "'champions'?); the named segments are champions, loyal_customers, potential_loyalists, "
        "new_customers, promising, need_attention, about_to_sleep, cant_lose_them, at_risk, "
        "hibernating, lost",
        "8:20: error: rules.rfm.recency.gte: Input should be less than or equal to 5",
        "9:16: error: rules.rfm.frequency: gte 4 is above lte 2: nobody matches",
        "10:15: error: rules.rfm.monetary: a score range needs `gte` or `lte` (scores are 1 to 5)",
    ]
    twice = HEAD + "rules:\n  rfm: {currency: EUR, segments: [lost, lost]}\n"
    assert problems(tmp_path, twice) == [
        "5:8: error: rules.rfm: RFM segment 'lost' is listed twice"
    ]


def test_bad_attribute_rules(tmp_path: Path) -> None:
    text = HEAD + (
        "rules:\n  attributes:\n"
        "    - {field: tags, equals: vip}\n"
        "    - {field: spend, gte: 10, lte: '20'}\n"
        "    - {field: spend}\n"
        "    - {field: spend, equals: 1, in: [2]}\n"
        "    - {field: bad name, exists: true}\n"
        "    - {field: x, equals: .nan}\n"
        "    - {field: x, gte: true}\n"
        "    - {field: x, in: [[1]]}\n"
        "    - {field: x, gte: 20, lte: 10}\n"
        "    - {field: x, equals: 9223372036854775808}\n"
    )
    assert problems(tmp_path, text) == [
        "6:7: error: rules.attributes[0]: field 'tags': tags are a list: use the `tags` rule",
        "7:7: error: rules.attributes[1]: gte and lte must both be numbers or both be texts",
        "8:7: error: rules.attributes[2]: an attribute rule needs one test: equals, in, gte, "
        "lte or exists",
        "9:7: error: rules.attributes[3]: one test per attribute rule (gte with lte is a range); "
        "got equals, in",
        "10:15: error: rules.attributes[4].field: 'bad name' is not a field name: letters, "
        "digits, _ and -, starting with a letter or _, at most 64 characters",
        "11:26: error: rules.attributes[5].equals: nan is not a number a field can hold",
        "12:23: error: rules.attributes[6].gte: gte/lte take a number or a text (an ISO date…), "
        "not true/false",
        "13:23: error: rules.attributes[7].in[0]: a text, a number or true/false, got [1]",
        "14:7: error: rules.attributes[8]: gte 20 is above lte 10: nobody matches",
        "15:26: error: rules.attributes[9].equals: 9223372036854775808 is beyond what a "
        "database integer holds",
    ]


def test_bad_tag_stage_and_activity_rules(tmp_path: Path) -> None:
    text = HEAD + (
        "rules:\n"
        "  tags: {all: [vip], none: [vip]}\n"
        "  lifecycle_stage: {in: [a], not_in: [b]}\n"
        "  last_activity: {kind: call, days_since: {gte: 30, lte: 10}}\n"
    )
    assert problems(tmp_path, text) == [
        "5:9: error: rules.tags: tag 'vip' is in both `all` and `none`: nobody matches",
        "6:20: error: rules.lifecycle_stage: a lifecycle_stage rule needs `in` or `not_in` "
        "(one of them)",
        "7:25: error: rules.last_activity.kind: Input should be 'purchase', 'visit' or 'any'",
        "7:43: error: rules.last_activity.days_since: gte 30 is above lte 10: nobody matches",
    ]
    days = HEAD + "rules:\n  last_activity: {days_since: {gte: '30', lte: true}}\n"
    assert problems(tmp_path, days) == [
        "5:37: error: rules.last_activity.days_since.gte: Input should be a valid number, got '30'",
        "5:48: error: rules.last_activity.days_since.lte: Input should be a valid number, got True",
    ]
    assert problems(tmp_path, HEAD + "rules: {tags: {}}\n") == [
        "4:15: error: rules.tags: a tags rule needs `all`, `any` or `none` (a list of tags)"
    ]
    assert problems(tmp_path, HEAD + "rules: {}\n") == [
        "4:8: error: rules: a segment needs at least one rule: tags, attributes, "
        "lifecycle_stage, last_activity or rfm"
    ]


def test_files_that_are_not_one_segment(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == [
        "1:1: error: the file is empty; a segment is a mapping with id, name, description, rules"
    ]
    assert problems(tmp_path, "id: a\n---\nid: b\n") == [
        "3:1: error: one segment per file: found a second YAML document"
    ]
    assert problems(tmp_path, "- id: a\n") == [
        "1:1: error: a segment file must be a mapping (id: …, name: …, description: …, rules: …)"
    ]
    assert problems(tmp_path, b"id: caf\xe9\n") == ["1:1: error: the file is not UTF-8 text"]
    assert problems(tmp_path, "a: " + "x" * MAX_SEGMENT_BYTES) == [
        "1:1: error: file is 64 KiB; a segment file may be 64 KiB"
    ]
    assert problems(tmp_path, "id: x\n", "notes.txt") == [
        "1:1: error: not a segment file: segment files end in .yaml or .yml"
    ]
    assert problems(tmp_path, HEAD + "id: y\nrules: {tags: {all: [a]}}\n") == [
        "4:1: error: duplicate key 'id' (first defined at line 1)"
    ]


def test_a_folder_with_two_files_of_one_id(tmp_path: Path) -> None:
    text = HEAD + "rules: {tags: {all: [a]}}\n"
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yml").write_text(text)
    valid, found = validate_paths([tmp_path])
    assert list(valid) == [tmp_path / "a.yaml"]
    assert [str(p) for p in found] == [
        f"{tmp_path / 'b.yml'}:1:5: error: id: segment id 'x' is also used by {tmp_path / 'a.yaml'}"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [str(p) for p in validate_paths([empty])[1]] == [
        f"{empty}:1:1: error: no segment files in this folder (expected .yaml or .yml files)"
    ]
    with pytest.raises(SegmentValidationError, match="no such file"):
        load_segment(tmp_path / "missing.yaml")


def test_finding_a_segment_by_id(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEAD + "rules: {tags: {all: [a]}}\n")
    (tmp_path / "broken.yaml").write_text("id: [\n")
    assert find_segment(tmp_path, "x").id == "x"
    with pytest.raises(UnknownSegmentError) as unknown:
        find_segment(tmp_path, "y")
    assert str(unknown.value) == (
        f"unknown segment 'y' in {tmp_path} (known: x); 1 file there cannot be read: "
        f"`sopflow segments validate {tmp_path}` says why"
    )
    assert unknown.value.http_status == 404
    with pytest.raises(NotFoundError, match="no segments folder"):
        find_segment(tmp_path / "nowhere", "x")
