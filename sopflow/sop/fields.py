"""Which contact fields a run is sure to have at each step ("required-by-use").

Templates render with StrictUndefined, so `{{ contact.lead_source }}` for a contact without a
lead_source fails the step at run time — after the API accepted the contact, and invisibly in
previews, which fill in example values. Validation therefore asks, for every template use of a
contact field, whether the contact is guaranteed to have it at that step. It is when:

- the field is `id` (the API refuses a contact without one);
- the SOP declares it `required: true` (the API refuses, 422, a contact without it);
- an entry condition on `contact.X` cannot hold on a missing value (`exists: true`, `equals`,
  `in`), so a contact without X is never enrolled by an event;
- every path into the step passes an outcome whose `outcome_fields` carry X (the engine refuses
  that outcome without them, and the reported data lands on the contact).

The last is a forward dataflow over the step graph: the first step starts with the base set;
leaving a step by an outcome route adds that outcome's fields; a step gets the intersection over
its incoming routes. Interrupt targets are entered from anywhere, so they get only the base set.
Steps start at "everything" and shrink to a fixed point, so loops converge.
Any other use must be guarded in the template, so that it renders without the field:
`{{ contact.X | default('…') }}` (or `d`), `contact.X is defined`, or a use inside
`{% if contact.X is defined %}…{% endif %}` — any `if` (or `… if … else …`, or the right side of
`and`) whose test mentions contact.X. The test itself must not touch a missing field:
`{% if contact.X %}` fails under StrictUndefined just as `{{ contact.X }}` does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from jinja2 import TemplateSyntaxError, nodes

from sopflow.sop.graph import routes
from sopflow.sop.schema import STANDARD_CONTACT_FIELDS, Condition, Sop, Step
from sopflow.sop.steps import handler_for
from sopflow.sop.steps.base import Route
from sopflow.sop.templates import environment

# Always present: normalise_contact refuses a contact without an id.
ALWAYS = frozenset({"id"})


def _present_if_true(condition: Condition) -> str | None:
    """The contact field a condition proves present when it holds, if any. Kept to operators
    that are plainly false on a missing value (conditions.holds)."""
    if condition.field is None or not condition.field.startswith("contact."):
        return None
    if condition.exists is True or condition.equals is not None or condition.in_ is not None:
        return condition.field.removeprefix("contact.")
    return None


def base_fields(sop: Sop) -> frozenset[str]:
    """Fields every contact has on enrolment: id, required fields, fields the entry tests."""
    required = {name for name, spec in sop.contact_fields.items() if spec.required}
    tested = {_present_if_true(c) for c in sop.entry.conditions} - {None}
    return ALWAYS | required | {name for name in tested if name is not None}


def _route_adds(step: Step, route: Route) -> frozenset[str]:
    """Fields a route guarantees on top of its step's: an outcome's required data."""
    if route.outcome is None:
        return frozenset()
    return frozenset(handler_for(step).waits_for().outcome_fields.get(route.outcome, ()))


def guaranteed_fields(sop: Sop) -> dict[str, frozenset[str]]:
    """Step id -> the contact fields every run has on entering it. Steps no route reaches are
    left out (nothing runs there). Unknown targets are ignored: other checks report them."""
    base = base_fields(sop)
    first = sop.steps[0].id
    entered_anywhere = {first, *sop.interrupts.values()}
    edges: list[tuple[str, str, frozenset[str]]] = []  # (from, to, fields the route adds)
    for i, step in enumerate(sop.steps):
        for _, target, route in routes(sop, i):
            edges.append((step.id, target, _route_adds(step, route)))
    # None stands for "everything" (not reached yet); intersections only shrink the sets.
    have: dict[str, frozenset[str] | None] = {s.id: None for s in sop.steps}
    for step_id in entered_anywhere:
        if step_id in have:
            have[step_id] = base
    changed = True
    while changed:
        changed = False
        incoming: dict[str, frozenset[str] | None] = {}
        for source, target, adds in edges:
            before = have.get(source)
            if before is None or target not in have:
                continue  # not reached (yet), or an unknown step
            out = before | adds
            current = incoming.get(target)
            incoming[target] = out if current is None else current & out
        for step_id, fields in incoming.items():
            new = base if step_id in entered_anywhere else fields
            if new != have[step_id]:
                have[step_id] = new
                changed = True
    return {step_id: fields for step_id, fields in have.items() if fields is not None}


# ---------------------------------------------------------------- guarded uses in a template
ContactUse = tuple[str, int, bool]  # (field, line in the template, guarded)
_DEFAULT_FILTERS = frozenset({"default", "d"})
_DEFINED_TESTS = frozenset({"defined", "undefined"})


def _contact_field(node: nodes.Node | None) -> str | None:
    """X for `contact.X` or `contact['X']`, else None."""
    if not isinstance(node, nodes.Getattr | nodes.Getitem):
        return None
    if not isinstance(node.node, nodes.Name) or node.node.name != "contact":
        return None
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = node.arg
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


def _mentions(node: nodes.Node) -> frozenset[str]:
    found = {_contact_field(node)} | {_contact_field(n) for n in node.find_all(nodes.Expr)}
    return frozenset(name for name in found if name is not None)


def _known(test: nodes.Node, holds: bool) -> frozenset[str]:
    """Contact fields sure to be defined where `test` evaluated to `holds`."""
    if isinstance(test, nodes.Not):
        return _known(test.node, not holds)
    if isinstance(test, nodes.And | nodes.Or):
        left, right = _known(test.left, holds), _known(test.right, holds)
        # A true `and` (a false `or`) means both sides had that value; otherwise only one did.
        return left | right if isinstance(test, nodes.And) == holds else left & right
    if isinstance(test, nodes.Test) and test.name in _DEFINED_TESTS:
        field = _contact_field(test.node)
        positive = (test.name == "defined") == holds
        return frozenset({field}) if field is not None and positive else frozenset()
    # Any other test that held and mentions contact.X: the decided rule counts X as present
    # (a test touching a missing X would itself fail, and is reported as a use).
    return _mentions(test) if holds else frozenset()


def _is_guard(node: nodes.Node) -> bool:
    """`… | default(…)` / `… | d(…)` or `… is defined` / `… is undefined`: fine on undefined."""
    if isinstance(node, nodes.Filter):
        return node.name in _DEFAULT_FILTERS
    return isinstance(node, nodes.Test) and node.name in _DEFINED_TESTS


def _uses(node: nodes.Node, guarded: frozenset[str]) -> Iterator[ContactUse]:
    field = _contact_field(node)
    if field is not None:
        yield field, node.lineno, field in guarded
        return
    if _is_guard(node):
        assert isinstance(node, nodes.Filter | nodes.Test)
        field = _contact_field(node.node)
        if field is not None:  # undefined is what these look for: a guarded use
            yield field, node.lineno, True
            for child in node.iter_child_nodes():
                if child is not node.node:
                    yield from _uses(child, guarded)
            return
    if isinstance(node, nodes.If):
        yield from _uses(node.test, guarded)
        yield from _uses_all(node.body, guarded | _known(node.test, True))
        otherwise = guarded | _known(node.test, False)
        for branch in node.elif_:  # an elif is tested only once the tests before it failed
            yield from _uses(branch.test, otherwise)
            yield from _uses_all(branch.body, otherwise | _known(branch.test, True))
            otherwise |= _known(branch.test, False)
        yield from _uses_all(node.else_, otherwise)
        return
    if isinstance(node, nodes.CondExpr):
        yield from _uses(node.test, guarded)
        yield from _uses(node.expr1, guarded | _known(node.test, True))
        if node.expr2 is not None:
            yield from _uses(node.expr2, guarded | _known(node.test, False))
        return
    if isinstance(node, nodes.And | nodes.Or):  # the right side runs only after the left one
        yield from _uses(node.left, guarded)
        yield from _uses(node.right, guarded | _known(node.left, isinstance(node, nodes.And)))
        return
    for child in node.iter_child_nodes():
        yield from _uses(child, guarded)


def _uses_all(body: list[nodes.Node], guarded: frozenset[str]) -> Iterator[ContactUse]:
    for node in body:
        yield from _uses(node, guarded)


def contact_uses(source: str) -> list[ContactUse]:
    """Every use of a contact field in a template, with whether it renders without the field.
    A template that does not parse has none here (template_problems reports it)."""
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError:
        return []
    return list(_uses(tree, frozenset()))


def unguarded_problems(sop: Sop, step_id: str, source: str, have: Collection[str]) -> list[str]:
    """A message per contact field a template of `step_id` reads unguarded although a contact
    may lack it there. `have`: the fields guaranteed at the step (guaranteed_fields)."""
    declared = sop.contact_fields
    multiline = "\n" in source.strip()
    reported: set[str] = set()
    out = []
    for field, line, guarded in contact_uses(source):
        if guarded or field in have or field in reported:
            continue
        if field not in declared and field not in STANDARD_CONTACT_FIELDS:
            continue  # an unknown field: template_problems names it
        reported.add(field)
        where = f" (its line {line})" if multiline else ""
        fix = (
            f"mark {field} required: true"
            if field in declared
            else f"declare {field}: {{required: true}} under contact_fields"
        )
        out.append(
            f"step {step_id!r}: template uses contact.{field}{where}, which a contact may lack "
            f"here: write {{{{ contact.{field} | default('…') }}}}, or {fix}"
        )
    return out
