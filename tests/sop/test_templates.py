"""Templates: static variable checks at validation, sandboxed strict rendering at run time."""

from __future__ import annotations

import pytest

from sopflow.errors import TemplateRenderError
from sopflow.sop.templates import render, template_problems

FIELDS = {"first_name", "appointment_at"}


def test_known_variables_pass() -> None:
    source = "Hi {{ contact.first_name }}, {{ rep.name }} here ({{ run.attempt }}, {{ sop.name }}) {{ event.x }}"
    assert template_problems(source, FIELDS) == []


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("{{ contact.frist_name }}", "unknown variable 'contact.frist_name'"),
        ("{{ contact['frist_name'] }}", "unknown variable 'contact.frist_name'"),
        ("{{ customer.name }}", "unknown variable 'customer'"),
        ("{{ rep.mobile }}", "unknown variable 'rep.mobile'"),
        ("{{ contact.first_name | shout }}", "No filter named 'shout'"),
        ("{% if %}", "template syntax error"),
    ],
)
def test_problems_are_reported(source: str, fragment: str) -> None:
    problems = template_problems(source, FIELDS)
    assert any(fragment in p for p in problems), problems


def test_loop_variables_are_not_unknown() -> None:
    assert (
        template_problems("{% for t in contact.tags %}{{ t }}{% endfor %}", FIELDS | {"tags"}) == []
    )


def test_render_strict_undefined_names_the_step() -> None:
    with pytest.raises(TemplateRenderError, match=r"step 'remind'.*appointment_at"):
        render("{{ contact.appointment_at }}", {"contact": {}}, "remind")


def test_render_is_sandboxed() -> None:
    with pytest.raises(TemplateRenderError, match="unsafe"):
        render("{{ contact.__class__.__mro__ }}", {"contact": {}}, "s")


def test_localtime_filter_uses_the_contacts_zone() -> None:
    context = {
        "contact": {"appointment_at": "2026-12-03T20:00:00+00:00"},
        "run": {"timezone": "Asia/Shanghai"},
    }
    assert render("{{ contact.appointment_at | localtime('%d %H:%M') }}", context) == "04 04:00"
    naive = {
        "contact": {"appointment_at": "2026-12-03T15:00"},
        "run": {"timezone": "Asia/Shanghai"},
    }
    assert render("{{ contact.appointment_at | localtime('%H:%M') }}", naive) == "15:00"
