"""The step graph of an SOP: where each step can go, what is reachable, loops that never wait."""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.sop.schema import (
    BranchStep,
    CallStep,
    EndStep,
    LadderStep,
    Sop,
    SplitStep,
    TaskStep,
    WaitForStep,
    WaitStep,
)

Loc = tuple[str | int, ...]
Finding = tuple[Loc, str]

# Steps that always wait for time or for someone: a loop must pass through one of them.
_WAITING = (WaitStep, WaitForStep, TaskStep, CallStep, LadderStep)


def routes(sop: Sop, index: int) -> Iterator[tuple[Loc, str | None]]:
    """Every (loc, target) a step can go to; None target means "the next listed step"."""
    step = sop.steps[index]
    base: Loc = ("steps", index)
    falls_through = not isinstance(step, EndStep | SplitStep)
    if isinstance(step, BranchStep):
        falls_through = step.default is None
        for i, case in enumerate(step.cases):
            yield (*base, "cases", i, "goto"), case.goto
        if step.default:
            yield (*base, "default"), step.default
    if isinstance(step, SplitStep):
        for i, variant in enumerate(step.variants):
            yield (*base, "variants", i, "goto"), variant.goto
    for field in ("on_failed", "on_exhausted", "on_timeout", "on_past"):
        target = getattr(step, field, None)
        if target:
            yield (*base, field), target
    for field in ("on_outcome", "on_event"):
        for key, target in (getattr(step, field, None) or {}).items():
            yield (*base, field, key), target
    if falls_through:
        if step.next is not None:
            yield (*base, "next"), step.next
        elif index + 1 < len(sop.steps):
            yield (*base, "next"), sop.steps[index + 1].id


def check_graph(sop: Sop) -> list[Finding]:
    index = {s.id: i for i, s in enumerate(sop.steps)}
    edges: dict[str, list[str]] = {
        s.id: [t for _, t in routes(sop, i) if t is not None] for i, s in enumerate(sop.steps)
    }
    out: list[Finding] = []
    reached: set[str] = set()
    frontier = [sop.steps[0].id, *sop.interrupts.values()]
    while frontier:
        node = frontier.pop()
        if node not in reached:
            reached.add(node)
            frontier.extend(edges[node])
    for step in sop.steps:
        if step.id not in reached:
            out.append(
                (
                    ("steps", index[step.id], "id"),
                    f"step {step.id!r} is unreachable: no step leads to it",
                )
            )
    # A cycle through steps that never wait would spin (or text someone) without end.
    instant = {s.id for s in sop.steps if not isinstance(s, _WAITING)}
    instant_edges = {n: [t for t in edges[n] if t in instant] for n in instant}
    for component in _strongly_connected(instant_edges):
        if len(component) > 1 or component[0] in instant_edges[component[0]]:
            ordered = sorted(component, key=index.__getitem__)
            out.append(
                (
                    ("steps", index[ordered[0]], "id"),
                    f"loop with no wait through steps {', '.join(ordered)}; "
                    "add a wait, wait_for, task or call to the loop",
                )
            )
    return out


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a long chain cannot hit the recursion limit."""
    counter, order, low = 0, {}, {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in order:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                order[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if target not in order:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], order[target])
                continue
            if low[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components
