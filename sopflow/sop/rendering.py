"""Render a command's templates for one run: shared by the simulator and the activities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.referrals import template_values as referral_values
from sopflow.sop.protocol import (
    AssignTask,
    CheckSegments,
    Command,
    EnrollContact,
    Escalate,
    Finish,
    PlaceCall,
    Record,
    SendMessage,
    UpdateContact,
)
from sopflow.sop.templates import render


def command_context(
    command: Command,
    rep: Mapping[str, Any],
    run_id: str,
    links: UnsubscribeLinks | None = None,
) -> dict[str, Any]:
    return with_rep(getattr(command, "context", {}), rep, run_id, links)


def with_rep(
    context: Mapping[str, Any],
    rep: Mapping[str, Any],
    run_id: str,
    links: UnsubscribeLinks | None = None,
) -> dict[str, Any]:
    """The engine's template variables plus what the shell knows: the rep, the run's id and,
    signed with `links`' key, the contact's referral link and code (sopflow/referrals.py)."""
    full = dict(context)
    full["rep"] = dict(rep)
    full["run"] = {**full.get("run", {}), "id": run_id}
    full |= referral_values(full.get("contact", {}).get("id"), links)
    return full


def render_command(
    command: Command,
    rep: Mapping[str, Any],
    run_id: str,
    links: UnsubscribeLinks | None = None,
) -> dict[str, Any]:
    """The rendered text of a command's templates; raises TemplateRenderError naming the step."""
    context = command_context(command, rep, run_id, links)

    def one(source: str) -> str:
        return render(source, context, command.step)

    match command:
        case SendMessage():
            rendered = {"text": one(command.body)}
            if command.subject is not None:
                rendered["subject"] = one(command.subject)
            if command.template is None:
                return rendered
            variables = {k: one(v) for k, v in command.template.variables.items()}
            return {**rendered, "variables": variables}
        case PlaceCall():
            return {"script": one(command.script)}
        case AssignTask():
            return {"instructions": one(command.instructions)}
        case EnrollContact():
            return {"data": {key: one(value) for key, value in command.data.items()}}
        case UpdateContact():
            return {
                "target": one(command.target),
                "set": {k: one(v) for k, v in command.set.items()},
                "add_tags": list(command.add_tags),
            }
        case Escalate() | CheckSegments() | Record() | Finish():
            return {}
        case _:
            assert_never(command)
