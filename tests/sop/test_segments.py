"""SMS segments: GSM-7 vs UCS-2, the single/multi-part limits, and characters never split."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.sop.segments import GSM_BASIC, GSM_EXTENSION, Segments, count_segments
from sopflow.sop.sms_cost import sms_estimates
from sopflow.sop.validate import load_plan


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", Segments("GSM-7", 0, 1)),
        ("a" * 160, Segments("GSM-7", 160, 1)),
        ("a" * 161, Segments("GSM-7", 161, 2)),
        ("a" * 306, Segments("GSM-7", 306, 2)),  # 2 x 153
        ("a" * 307, Segments("GSM-7", 307, 3)),
        ("€" * 80, Segments("GSM-7", 160, 1)),  # extension characters are 2 septets
        ("€" * 81, Segments("GSM-7", 162, 2)),
        ("a" * 158 + "{", Segments("GSM-7", 160, 1)),
        ("a" * 159 + "{", Segments("GSM-7", 161, 2)),
        ("{}[]~\\|^€\f", Segments("GSM-7", 20, 1)),
        ("Ça coûte 5 € à Åsa", Segments("UCS-2", 18, 1, "û")),  # û is not GSM-7; Ç, é, à are
        ("回" * 70, Segments("UCS-2", 70, 1, "回")),
        ("回" * 71, Segments("UCS-2", 71, 2, "回")),
        ("回" * 134, Segments("UCS-2", 134, 2, "回")),  # 2 x 67
        ("回" * 135, Segments("UCS-2", 135, 3, "回")),
        ("😀" * 35, Segments("UCS-2", 70, 1, "😀")),  # an emoji is 2 UTF-16 code units
        ("😀" * 36, Segments("UCS-2", 72, 2, "😀")),
        ("回T退订", Segments("UCS-2", 4, 1, "回")),
        ("Reply STOP to opt out, 回T退订", Segments("UCS-2", 27, 1, "回")),
        ("It’s on", Segments("UCS-2", 7, 1, "’")),  # a curly quote is enough
        ("a" * 159 + "ç", Segments("UCS-2", 160, 3, "ç")),  # only capital Ç is GSM-7
    ],
)
def test_encoding_units_and_segments(text: str, expected: Segments) -> None:
    assert count_segments(text) == expected


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 152 septets, then "€" (ESC + e) would straddle 153: it starts part 2, which fills to 153,
    # and the last "a" needs a third part. Counted as bare septets it would fit in two (306).
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text) == Segments("GSM-7", 306, 3)
    assert count_segments("a" * 153 + "€" + "a" * 151) == Segments("GSM-7", 306, 2)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = "回" * 66 + "😀" + "回" * 66  # 134 units = 2 x 67, but the emoji straddles 67
    assert count_segments(text) == Segments("UCS-2", 134, 3, "回")
    assert count_segments("回" * 67 + "😀" + "回" * 65) == Segments("UCS-2", 134, 2, "回")


def test_the_tables_are_the_3gpp_ones() -> None:
    assert len(GSM_BASIC) == 127  # 128 codes, one of them the escape
    assert "\x1b" not in GSM_BASIC and "@" in GSM_BASIC and "Δ" in GSM_BASIC
    assert sorted(GSM_EXTENSION) == sorted("\f^{}\\[~]|€")
    assert not GSM_BASIC & GSM_EXTENSION


def test_describe_and_json() -> None:
    found = count_segments("It’s " + "x" * 70)
    assert found.describe() == "75 chars, 2 segments, UCS-2 because of '’'"
    assert found.to_json() == {"encoding": "UCS-2", "units": 75, "segments": 2}
    assert count_segments("Hi").describe() == "2 chars, 1 segment, GSM-7"


SOP = {
    "id": "costs",
    "version": 1,
    "name": "Costs",
    "owner": "ops",
    "entry": {"events": ["lead.created"]},
    "contact_fields": {
        "store_name": {"type": "string", "example": "回T退订 Downtown"},
        "city": {"type": "string"},  # no example: a placeholder stands in
    },
    "steps": [
        {"id": "plain", "kind": "sms", "body": "Hi from {{ contact.city }}"},
        {"id": "chinese", "kind": "sms", "body": "See you at {{ contact.store_name }}"},
        {"id": "chat", "kind": "whatsapp", "body": "Not billed per segment"},
        {"id": "runtime", "kind": "sms", "body": "You chose {{ event.slot }}"},
        {
            "id": "calls",
            "kind": "ladder",
            "attempt": {"kind": "call", "script": "Hello"},
            "slots": [{"day": 1, "at": "10:00"}, {"day": 2, "at": "10:00"}],
            "stop_on": ["connected"],
            "followups": [
                {"after_attempt": 1, "kind": "sms", "body": "Sorry we missed you " + "x" * 150},
                {"after_attempt": 2, "kind": "whatsapp", "body": "Try WhatsApp"},
            ],
        },
        {"id": "done", "kind": "end", "result": "completed"},
    ],
}


def test_sms_estimates_render_with_examples_and_skip_whatsapp() -> None:
    plan = compile_plan(Sop.model_validate(SOP))
    lines = [estimate.describe() for estimate in sms_estimates(plan)]
    assert lines == [
        "sms plain: about 14 chars, 1 segment, GSM-7",
        "sms chinese: about 24 chars, 1 segment, UCS-2 because of '回'",
        "sms runtime: no estimate (no sample renders it: 'dict object' has no attribute 'slot')",
        "sms calls.followups[0]: about 170 chars, 2 segments, GSM-7",
    ]


def test_every_seed_sms_has_an_estimate() -> None:
    for path in sorted((Path(__file__).parents[2] / "sop_definitions").glob("*.yaml")):
        for estimate in sms_estimates(load_plan(path)):
            assert estimate.segments is not None, estimate.describe()
