"""Required-by-use: a template may read a contact field only where every contact has it, or
guarded so it renders without it (sopflow/sop/fields.py). Checked when the SOP is validated,
so a contact the API accepts never fails a step for a missing optional field."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from sopflow.errors import TemplateRenderError
from sopflow.sop.checks import check_sop
from sopflow.sop.fields import base_fields, contact_uses, guaranteed_fields
from sopflow.sop.schema import Sop
from sopflow.sop.templates import render
from sopflow.sop.validate import load_plan, validate_paths

ROOT = Path(__file__).resolve().parents[2] / "sop_definitions"


def sop(steps: list[dict[str, Any]], **extra: Any) -> Sop:
    return Sop.model_validate(
        {
            "id": "demo",
            "version": 1,
            "name": "Demo",
            "owner": "qa",
            "entry": {"events": ["lead.created"]},
            "contact_fields": {"appointment_at": {"type": "datetime"}, "note": {}},
            "steps": steps,
        }
        | extra
    )


def task(step_id: str, on_outcome: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "kind": "task",
        "title": "Call",
        "due_within": "30m",
        "outcomes": ["booked", "connected"],
        "outcome_fields": {"booked": ["appointment_at"]},
        "on_outcome": on_outcome,
        "next": "done",  # other outcomes end the run (the step listed next would be a way in)
    } | extra


def sms(step_id: str, body: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "sms", "body": body} | extra


END: dict[str, Any] = {"id": "done", "kind": "end", "result": "completed"}


def check(steps: list[dict[str, Any]]) -> list[str]:
    """check_sop's messages for an SOP of these steps."""
    return [message for _, message in check_sop(sop(steps))]


# ---------------------------------------------------------------- which fields are guaranteed
def test_base_set_is_id_required_fields_and_what_the_entry_proves_present() -> None:
    entry = {
        "events": ["lead.created"],
        "conditions": [
            {"field": "contact.phone", "exists": True},
            {"field": "contact.country", "equals": "US"},
            {"field": "contact.language", "in": ["en", "es"]},
            {"field": "contact.email", "exists": False},
            {"field": "contact.last_name", "not_equals": "x"},  # holds on a missing value
            {"field": "event.source", "exists": True},
        ],
    }
    fields = {"member_since": {"type": "date", "required": True}, "note": {}}
    plain = sop([END], entry=entry, contact_fields=fields)
    assert base_fields(plain) == {"id", "member_since", "phone", "country", "language"}


def test_an_outcomes_fields_hold_after_it_but_not_on_another_path_into_the_same_step() -> None:
    steps = [
        task("call", {"booked": "confirm", "connected": "await_booking"}),
        {
            "id": "await_booking",
            "kind": "wait_for",
            "events": ["booked"],  # an event may carry the booking, or not
            "timeout": "7d",
            "on_event": {"booked": "confirm"},
            "on_timeout": "done",
        },
        sms("confirm", next="done"),
        END,
    ]
    have = guaranteed_fields(sop(steps))
    assert "appointment_at" not in have["confirm"] and "appointment_at" not in have["call"]
    only_booked = guaranteed_fields(sop([*steps[:1], *steps[2:]]))  # no other way in
    assert "appointment_at" in only_booked["confirm"]


def test_a_step_reached_by_falling_through_gets_no_outcome_fields() -> None:
    # "booked" has no route of its own: it takes `next`, as "connected" and "expired" do.
    have = guaranteed_fields(sop([task("call", {}, next="confirm"), sms("confirm"), END]))
    assert have["confirm"] == {"id"}


def test_interrupt_targets_get_only_the_base_set() -> None:
    steps = [task("call", {"booked": "confirm"}), sms("confirm", next="done"), END]
    assert "appointment_at" in guaranteed_fields(sop(steps))["confirm"]
    interrupted = sop(steps, interrupts={"reply": "confirm"})
    assert guaranteed_fields(interrupted)["confirm"] == {"id"}


def test_loops_converge_and_keep_what_every_lap_guarantees() -> None:
    steps = [
        task("call", {"booked": "remind"}, next="call"),  # the first step, in a loop of its own
        sms("remind", "{{ contact.appointment_at }}"),
        {"id": "pause", "kind": "wait", "duration": "1d", "next": "remind"},  # remind, forever
    ]
    have = guaranteed_fields(sop(steps))
    assert have["call"] == {"id"}  # the first step has the base set, loop or not
    assert have["remind"] == have["pause"] == {"id", "appointment_at"}
    assert check(steps) == []


def test_a_ladder_attempts_outcome_fields_count_like_a_tasks() -> None:
    ladder = {
        "id": "calls",
        "kind": "ladder",
        "attempt": {
            "kind": "task",
            "title": "Call",
            "due_within": "1h",
            "outcomes": ["booked", "no_answer"],
            "outcome_fields": {"booked": ["appointment_at"]},
        },
        "slots": [{"day": 1, "at": "12:00"}, {"day": 2, "at": "12:00"}],
        "stop_on": ["booked"],
        "on_outcome": {"booked": "confirm"},
        "on_exhausted": "done",
        "next": "done",
    }
    have = guaranteed_fields(sop([ladder, sms("confirm", next="done"), END]))
    assert "appointment_at" in have["confirm"] and "appointment_at" not in have["calls"]


def test_unreachable_steps_are_left_out() -> None:
    have = guaranteed_fields(sop([sms("hello", next="done"), sms("orphan"), END]))
    assert set(have) == {"hello", "done"}


# ---------------------------------------------------------------- guarded uses
@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.note | default('none') }}",
        "{{ contact.note | d('none') | upper }}",
        "{{ contact['note'] | default('') }}",
        "{{ 'yes' if contact.note is defined else 'no' }}",
        "{% if contact.note is defined %}{{ contact.note }}{% endif %}",
        "{% if contact.note is defined and contact.note != '' %}{{ contact.note }}{% endif %}",
        "{% if contact.note | default('') %}[{{ contact.note }}]{% endif %}",
        "{{ contact.note if contact.note is defined }}",
        "{% if contact.note is undefined %}-{% else %}{{ contact.note }}{% endif %}",
        "{% if contact.phone is defined %}{% elif contact.note is defined %}{{ contact.note }}{% endif %}",
    ],
)
def test_guarded_uses_render_without_the_field(source: str) -> None:
    assert all(guarded for field, _, guarded in contact_uses(source) if field == "note")
    render(source, {"contact": {"id": "c-1"}})  # and indeed they do


@pytest.mark.parametrize(
    "source",
    [
        "{{ contact.note }}",
        "{{ contact['note'] }}",
        "{% if contact.note %}!{% endif %}",  # the test itself reads the field
        "{{ contact.note | upper | default('') }}",  # upper fails first
        "{% if contact.note is not defined %}{{ contact.note }}{% endif %}",
        "{% if contact.note is defined %}{% else %}{{ contact.note }}{% endif %}",
        "{% if contact.note is defined or contact.phone is defined %}{{ contact.note }}{% endif %}",
        "{{ contact.note or 'none' }}",
        "{% for word in contact.note %}{{ word }}{% endfor %}",
    ],
)
def test_unguarded_uses_fail_without_the_field(source: str) -> None:
    assert not all(guarded for field, _, guarded in contact_uses(source) if field == "note")
    with pytest.raises(TemplateRenderError):
        render(source, {"contact": {"id": "c-1", "phone": "+12125550123"}})


# ---------------------------------------------------------------- the validation error
DEMO = """\
id: demo
version: 1
name: Demo
owner: ops@example.com
entry:
  events: [lead.created]
contact_fields:
  lead_source: {type: string}
steps:
  - id: first_call
    kind: task
    title: Call the lead
    instructions: Call {{ contact.first_name }} (from {{ contact.lead_source }}).
    due_within: 30m
    outcomes: [connected]
  - id: done
    kind: end
    result: completed
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "demo.yaml"
    path.write_text(textwrap.dedent(text))
    _, found = validate_paths([path])
    return [str(p).replace(str(path), "demo.yaml") for p in found]


def test_an_unguarded_optional_field_is_an_error_at_the_template(tmp_path: Path) -> None:
    assert problems(tmp_path, DEMO) == [
        "demo.yaml:13:19: error: steps[0].instructions: step 'first_call': template uses "
        "contact.first_name, which a contact may lack here: write "
        "{{ contact.first_name | default('…') }}, or declare first_name: {required: true} "
        "under contact_fields",
        "demo.yaml:13:19: error: steps[0].instructions: step 'first_call': template uses "
        "contact.lead_source, which a contact may lack here: write "
        "{{ contact.lead_source | default('…') }}, or mark lead_source required: true",
    ]


def test_a_multi_line_template_names_the_line_of_the_use(tmp_path: Path) -> None:
    text = DEMO.replace(
        "    instructions: Call {{ contact.first_name }} (from {{ contact.lead_source }}).\n",
        "    instructions: |\n      Call the lead.\n      Source: {{ contact.lead_source }}\n",
    )
    (found,) = problems(tmp_path, text)
    assert found.startswith("demo.yaml:13:19: error: steps[0].instructions: step 'first_call'")
    assert "contact.lead_source (its line 2), which a contact may lack here" in found


@pytest.mark.parametrize(
    "old, new",
    [
        (  # guarded in the template
            "Call {{ contact.first_name }} (from {{ contact.lead_source }}).",
            "Call {{ contact.first_name | default('the lead') }}"
            "{% if contact.lead_source is defined %} (from {{ contact.lead_source }}){% endif %}.",
        ),
        (  # required: checked at intake (the API answers 422)
            "  lead_source: {type: string}\n",
            "  lead_source: {type: string, required: true}\n  first_name: {required: true}\n",
        ),
        (  # the entry proves them present
            "  events: [lead.created]\n",
            "  events: [lead.created]\n  conditions: [{field: contact.first_name, exists: true},"
            " {field: contact.lead_source, in: [web, store]}]\n",
        ),
    ],
)
def test_each_fix_the_message_offers_validates(tmp_path: Path, old: str, new: str) -> None:
    assert old in DEMO
    assert problems(tmp_path, DEMO.replace(old, new)) == []


def test_unknown_fields_are_reported_once_as_unknown(tmp_path: Path) -> None:
    found = problems(tmp_path, DEMO.replace("{{ contact.first_name }}", "{{ contact.frist_name }}"))
    (unknown,) = [p for p in found if "frist_name" in p]
    assert "template uses unknown variable 'contact.frist_name'" in unknown


def test_whatsapp_template_variables_are_checked_like_the_body(tmp_path: Path) -> None:
    step = (
        "  - id: hello\n    kind: whatsapp\n    body: Hi\n"
        "    template: {content_sid: HX0123456789abcdef0123456789abcdef,"
        " variables: {'1': '{{ contact.first_name }}'}}\n"
    )
    text = DEMO.replace("steps:\n", "steps:\n" + step).replace(
        "{{ contact.first_name }} (from {{ contact.lead_source }})", "the lead"
    )
    (found,) = problems(tmp_path, text)
    assert "steps[0].template.variables.1: step 'hello': template uses contact.first_name" in found


def test_enroll_data_update_fields_and_ladder_follow_ups_are_checked_too() -> None:
    ladder = {
        "id": "calls",
        "kind": "ladder",
        "attempt": {"kind": "call", "script": "Hello"},
        "slots": [{"day": 1, "at": "12:00"}, {"day": 2, "at": "12:00"}],
        "stop_on": ["connected"],
        "followups": [{"after_attempt": 1, "kind": "sms", "body": "Hi {{ contact.note }}"}],
    }
    steps: list[dict[str, Any]] = [
        {"id": "more", "kind": "enroll", "sop": "other", "data": {"at": "{{ contact.note }}"}},
        {"id": "save", "kind": "update", "set": {"copy": "{{ contact.note }}"}},
        ladder,
        END,
    ]
    assert [message.split(":")[0] for message in check(steps)] == [
        "step 'more'",
        "step 'save'",
        "step 'calls'",
    ]


# ---------------------------------------------------------------- the seed SOPs
@pytest.mark.parametrize("path", sorted(ROOT.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_seed_sop_validates(path: Path) -> None:
    _, found = validate_paths([path])
    assert found == []


def test_the_callback_seed_guarantees_the_phone_and_a_booked_outcomes_fields_only() -> None:
    plan = load_plan(ROOT / "new_lead_callback.yaml")
    have = guaranteed_fields(plan.sop)
    assert have["first_call"] == {"id", "phone"}  # `exists: true` in the entry
    # book_visit is also reached by a "booked" event, which need not carry the booking.
    assert have["book_visit"] == {"id", "phone"}
    assert have["opted_out"] == {"id", "phone"}  # an interrupt target


def test_the_readme_lead_renders_its_first_call_without_name_or_source() -> None:
    plan = load_plan(ROOT / "new_lead_callback.yaml")
    instructions = plan.step("first_call").instructions  # type: ignore[union-attr]
    text = render(instructions, {"contact": {"id": "c-2", "phone": "+12125550199"}})
    assert text.startswith("Call the lead on +12125550199 (from an unknown source).")


def test_an_update_cannot_write_the_id_tags_or_what_intake_checks() -> None:
    found = check_sop(
        sop(
            [
                {"id": "mark", "kind": "update", "add_tags": ["ok"],
                 "set": {"tags": "vip", "phone": "{{ event.phone }}", "stage": "won"}},
            ]
        )
    )  # fmt: skip
    assert [(loc, message) for loc, message in found] == [
        (
            ("steps", 0, "set", "tags"),
            "`set` cannot write 'tags': tags are a list: add them with add_tags",
        ),
        (
            ("steps", 0, "set", "phone"),
            "`set` cannot write 'phone': a phone number comes through intake, where it is checked",
        ),
    ]
