"""The step graph of an SOP: where each step can go, what is reachable, loops that never wait."""

from __future__ import annotations

from collections.abc import Iterator

from sopflow.sop.schema import Sop
from sopflow.sop.steps import handler_for
from sopflow.sop.steps.base import Loc, Route

Finding = tuple[Loc, str]


def routes(sop: Sop, index: int) -> Iterator[tuple[Loc, str, Route]]:
    """Every way out of a step as (loc in the document, target step id, the handler's route).
    Falling through past the last step ends the run: no target, so no route."""
    step = sop.steps[index]
    for route in handler_for(step).routes():
        target = route.target
        if target is None and index + 1 < len(sop.steps):
            target = sop.steps[index + 1].id
        if target is not None:
            yield ("steps", index, *route.loc), target, route


def check_graph(sop: Sop) -> list[Finding]:
    index = {s.id: i for i, s in enumerate(sop.steps)}
    edges: dict[str, list[str]] = {
        s.id: [target for _, target, _ in routes(sop, i)] for i, s in enumerate(sop.steps)
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
    instant = {s.id for s in sop.steps if not handler_for(s).waits_for().anything}
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
