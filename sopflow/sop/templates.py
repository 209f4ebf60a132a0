"""Message bodies and call scripts: Jinja2 in its sandbox, strict about undefined variables.

Variables are checked when an SOP is validated, so a typo in `{{ contact.frist_name }}` is a
validation error naming the line, not a failed send at 10:00 on the day before a visit.
Whether a contact may lack a field where a template reads it is checked too (fields.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes, pass_context
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from sopflow.errors import TemplateRenderError
from sopflow.sop.rep_view import REP_FIELDS

# What a template may read besides the contact's fields.
KNOWN_FIELDS: dict[str, frozenset[str] | None] = {
    "rep": REP_FIELDS,
    "run": frozenset({"id", "enrolled_at", "variant", "attempt", "visit", "step", "timezone"}),
    "sop": frozenset({"id", "name", "version"}),
    "event": None,  # data of the last event or outcome: known only at run time
    # The contact's signed referral link and code (sopflow/referrals.py): texts, no attributes.
    "referral_link": frozenset(),
    "referral_code": frozenset(),
}


@pass_context
def _localtime(context: Context, value: Any, fmt: str = "%a %d %b %H:%M") -> str:
    """Format a date-time in the contact's zone: {{ contact.appointment_at | localtime('%H:%M') }}."""
    from sopflow.sop.clock import to_local  # clock imports schema; keep templates import-light

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        run = context.get("run") or {}
        zone_name = run.get("timezone", "UTC") if isinstance(run, Mapping) else "UTC"
        if value.tzinfo is None:
            return value.strftime(fmt)
        return to_local(value, zone_name).strftime(fmt)
    if isinstance(value, date):
        return value.strftime(fmt)
    raise TemplateError(f"localtime expects a date-time, got {value!r}")


@cache
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters["localtime"] = _localtime
    return env


def _attribute_uses(tree: nodes.Template) -> list[tuple[str, str, int]]:
    """(root, attribute, line) for every `root.attr` or `root['attr']` in the template."""
    uses = []
    for attr in tree.find_all(nodes.Getattr):
        assert isinstance(attr, nodes.Getattr)
        if isinstance(attr.node, nodes.Name):
            uses.append((attr.node.name, attr.attr, attr.lineno))
    for item in tree.find_all(nodes.Getitem):
        assert isinstance(item, nodes.Getitem)
        if (
            isinstance(item.node, nodes.Name)
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            uses.append((item.node.name, item.arg.value, item.lineno))
    return uses


def template_problems(source: str, contact_fields: Collection[str]) -> list[str]:
    """Everything wrong with one template, as messages; empty when it is fine."""
    from jinja2 import meta

    env = environment()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return [f"template syntax error on its line {exc.lineno}: {exc.message}"]
    problems = []
    roots = {"contact", *KNOWN_FIELDS}
    try:  # unknown filters and tests fail when compiling, not when parsing
        env.compile(tree)
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateError as exc:
        problems.append(f"template error: {exc}")
        undeclared = set()
    for name in sorted(undeclared):
        if name not in roots:
            problems.append(
                f"template uses unknown variable {name!r} (available: {', '.join(sorted(roots))})"
            )
    for root, attr, line in _attribute_uses(tree):
        allowed = contact_fields if root == "contact" else KNOWN_FIELDS.get(root, frozenset())
        if allowed is not None and root in roots and attr not in allowed:
            hint = (
                " (declare it under contact_fields)"
                if root == "contact"
                else f" (available: {', '.join(sorted(allowed))})"
            )
            problems.append(
                f"template uses unknown variable '{root}.{attr}' on its line {line}{hint}"
            )
    return problems


@lru_cache(maxsize=2048)
def _compiled(source: str) -> Template:
    """A template compiled once: SOPs render the same few sources for every run and step, and
    compiling costs far more than rendering (measured: ~3 ms against ~0.05 ms)."""
    return environment().from_string(source)


def render(source: str, context: Mapping[str, Any], step: str = "?") -> str:
    """Render in the sandbox; any failure becomes a TemplateRenderError naming the step."""
    try:
        return _compiled(source).render(**context).strip()
    except (TemplateError, SecurityError, ValueError, TypeError) as exc:
        raise TemplateRenderError(step, str(exc)) from exc
