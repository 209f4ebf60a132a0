"""sms / whatsapp / email steps: one message, sent when its window allows; a ladder's follow-ups
are messages too (send_message, message_templates)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sopflow.sop.protocol import ActionResult, SendMessage
from sopflow.sop.run import Run
from sopflow.sop.schema import Channel, FollowUp, MessageStep
from sopflow.sop.steps.base import Loc, Route
from sopflow.sop.steps.touch import Touching


def send_message(
    run: Run, key: str, message: MessageStep | FollowUp, planned: datetime
) -> SendMessage:
    return SendMessage(
        at=run.now,
        step=run.step.id,
        key=key,
        channel=message.kind,
        body=message.body,
        planned_at=planned,
        context=run.context(),
        template=message.template,
        subject=message.subject,
    )


def message_templates(base: Loc, message: MessageStep | FollowUp) -> Iterator[tuple[Loc, str]]:
    yield (*base, "body"), message.body
    if message.subject is not None:  # email
        yield (*base, "subject"), message.subject
    # A WhatsApp template is rendered like the body whenever the 24-hour session is closed.
    for name, source in (message.template.variables if message.template else {}).items():
        yield (*base, "template", "variables", name), source


class Message(Touching[MessageStep]):
    def channel(self, run: Run) -> Channel | None:
        return self.step.kind

    def issue(self, run: Run, planned: datetime) -> SendMessage:
        return send_message(run, run.key(), self.step, planned)

    def touched(self, run: Run, event: ActionResult) -> None:
        run.goto(run.plan.next_of(self.step.id))

    def not_touched(self, run: Run, outcome: str) -> None:
        run.goto(self.step.on_failed or run.plan.next_of(self.step.id))

    def routes(self) -> Iterator[Route]:
        if self.step.on_failed:
            yield Route(("on_failed",), self.step.on_failed)
        yield self.next_route()

    def templates(self) -> Iterator[tuple[Loc, str]]:
        return message_templates((), self.step)
