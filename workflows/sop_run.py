"""SopRun: one enrolment as a durable workflow, a thin shell over sopflow.sop.engine.

The engine decides; this shell only carries commands out (activities), keeps one timer for
`state.wake_at`, and feeds signals, updates and timer ticks back in. Deterministic by
construction: time is workflow.now(), and no SQL, Jinja2 or Twilio is imported here.
"""

from __future__ import annotations

import contextlib
from collections import deque
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from sopflow.limits import CONTACT_BUDGET, fitting
    from sopflow.sop import engine
    from sopflow.sop.protocol import (
        ActionResult,
        AssignTask,
        CheckSegments,
        Command,
        ContactEvent,
        Control,
        Escalate,
        Event,
        OutcomeReported,
        ProviderEvent,
        RunState,
        Tick,
        Transition,
        awaits_result,
        is_bookkeeping,
        touch_channel,
    )
    from workflows.contracts import (
        CommandInput,
        CommandResult,
        ContactEventSignal,
        ControlSignal,
        OutcomeAnswer,
        OutcomeRequest,
        ProviderEventSignal,
        SopRunInput,
        SopRunResult,
    )
    from workflows.search_attributes import REP, Progress, identity, progress
    from workflows.summaries import activity_summary, timer_summary

# Anything that reaches a person retries a bounded number of times, never forever.
EFFECT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=6,
    non_retryable_error_types=["TemplateRenderError", "InvalidContactError", "UnknownSopError"],
)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=20)
# Runs that got data over the contact's budget keep what fits (a marker in their history: a run
# recorded before merged everything, and replays as it ran).
CONTACT_BUDGET_PATCH = "contact-budget"
LOCAL_RECORDS_PATCH = "records-as-local-activities"
# Runs started before it upsert no search attributes: their histories have no such commands.
SEARCH_ATTRIBUTES_PATCH = "search-attributes"


def _over_budget(state: RunState, data: dict[str, Any]) -> str | None:
    """Why `data` cannot all merge into the run's contact (sopflow.limits), or None."""
    _, dropped = fitting(state.contact, data)
    if not dropped:
        return None
    return (
        f"the contact would be over its {CONTACT_BUDGET // 1024} KiB with "
        f"{', '.join(dropped)}: send less data"
    )


def _within_budget(state: RunState, event: ContactEvent) -> ContactEvent:
    """The event with the data that fits the run's contact: a signal cannot be refused, and a
    contact growing with every CRM sync would end in payloads Temporal refuses (2 MB), stalling
    the run at its next continue-as-new. The event itself still counts (an interrupt, a wait,
    an opt-out); the gateway kept its full data (inbound_events)."""
    kept, dropped = fitting(state.contact, event.data)
    if not dropped or not workflow.patched(CONTACT_BUDGET_PATCH):
        return event
    workflow.logger.warning(
        "event %s: %s left out of the contact, over its %d bytes",
        event.name,
        ", ".join(dropped),
        CONTACT_BUDGET,
    )
    return event.model_copy(update={"data": kept})


@workflow.defn(name="SopRun")
class SopRun:
    @workflow.init
    def __init__(self, params: SopRunInput) -> None:
        self._inbox: deque[tuple[Event, int | None]] = deque()  # (event, outcome request id)
        self._answers: dict[int, OutcomeAnswer] = {}
        # Set here, not in run(): an update in a continued run's first task is validated before
        # run() starts, and would be refused as "not started yet" by a run that is mid-way.
        self._state: RunState | None = params.state
        self._input: SopRunInput | None = params
        self._next_request = 0
        # The rep the run assigned last (a continued run reads it back from its attributes), and
        # the attributes last upserted: None until the run upserts any (before the patch: never).
        reps = workflow.info().typed_search_attributes.get(REP)
        self._rep: str | None = reps[-1] if reps else None
        self._shown: Progress | None = None

    @workflow.run
    async def run(self, params: SopRunInput) -> SopRunResult:
        self._input = params
        plan = params.plan
        if params.state is None:
            transition = engine.start(
                plan,
                params.contact,
                params.zones,
                workflow.now(),
                params.trigger,
                params.trigger_data,
                params.variants,
            )
        else:
            transition = Transition(state=params.state, commands=[])
        state = transition.state
        if workflow.patched(SEARCH_ATTRIBUTES_PATCH):  # at the first task, before any activity
            self._show(state, identity(state))
        transition_count = state.transitions
        todo: deque[Command] = deque(transition.commands)
        while True:
            self._state = state
            while todo:
                command = todo.popleft()
                result = await self._carry_out(command, state)
                if result is not None:
                    transition = engine.handle(plan, state, result)
                    state = self._state = transition.state
                    todo.extend(transition.commands)
            self._show(state)
            if state.finished:
                await self._close(state)
                return SopRunResult(result=state.result, state=state, generation=params.generation)
            if await self._should_continue_as_new(params, state, started_at=transition_count):
                workflow.continue_as_new(
                    params.model_copy(update={"state": state, "generation": params.generation + 1})
                )
            event, request_id = await self._next_event(state)
            if isinstance(event, ContactEvent):
                event = _within_budget(state, event)
            if request_id is not None:  # re-checked: another report may have won meanwhile
                assert isinstance(event, OutcomeReported)
                problem = engine.outcome_problem(plan, state, event.step, event.outcome, event.data)
                over = problem is None and _over_budget(state, event.data)
                if over and workflow.patched(CONTACT_BUDGET_PATCH):  # a signal filled it up
                    problem = over
                self._answers[request_id] = OutcomeAnswer(
                    accepted=problem is None, message=problem or ""
                )
                if problem:
                    continue
            transition = engine.handle(plan, state, event)
            state = transition.state
            todo.extend(transition.commands)

    def _show(self, state: RunState, also: list[SearchAttributeUpdate[Any]] | None = None) -> None:
        """Upsert the attributes that changed (status, what the run waits for, its rep), in runs
        started with the patch, with `also` (one event); an unchanged value is not written again."""
        if self._shown is None and not workflow.patched(SEARCH_ATTRIBUTES_PATCH):
            return
        assert self._input is not None
        shown = progress(self._input.plan, state, self._rep)
        if shown != self._shown or also:
            workflow.upsert_search_attributes([*(also or []), *shown.updates()])
            self._shown = shown

    async def _should_continue_as_new(
        self, params: SopRunInput, state: RunState, started_at: int
    ) -> bool:
        """Continue as new when the server suggests it (or every N transitions), but only between
        events: never with a report queued or an update handler still waiting for its answer."""
        due = workflow.info().is_continue_as_new_suggested() or (
            params.continue_every is not None
            and state.transitions - started_at >= params.continue_every
        )
        if not due or self._inbox:
            return False
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() or bool(self._inbox))
        return not self._inbox

    async def _close(self, state: RunState) -> None:
        """Answer reports still queued (they lost to the one that ended the run), then let every
        update and signal handler finish before the run completes."""
        assert self._input is not None
        while self._inbox:
            event, request_id = self._inbox.popleft()
            if request_id is not None and isinstance(event, OutcomeReported):
                problem = engine.outcome_problem(self._input.plan, state, event.step, event.outcome)
                self._answers[request_id] = OutcomeAnswer(accepted=False, message=problem or "")
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _next_event(self, state: RunState) -> tuple[Event, int | None]:
        """The next signal/update, or a Tick when the engine's timer is due."""
        if state.wake_at is not None and not state.paused:  # a paused run arms no timer
            remaining = (state.wake_at - workflow.now()).total_seconds()
            if remaining > 0 and not self._inbox:
                assert self._input is not None
                summary = timer_summary(self._input.plan, state, self._rep)
                with contextlib.suppress(TimeoutError):  # the timer fired: a Tick is due
                    await workflow.wait_condition(
                        lambda: bool(self._inbox), timeout=remaining, timeout_summary=summary
                    )
            if not self._inbox:
                return Tick(at=max(workflow.now(), state.wake_at)), None
        else:
            await workflow.wait_condition(lambda: bool(self._inbox))
        return self._inbox.popleft()

    async def _carry_out(self, command: Command, state: RunState) -> Event | None:
        info = workflow.info()
        params = CommandInput(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            sop=state.sop,
            version=state.version,
            command=command,
            digest=state.digest,
            contact_id=str(state.contact.get("id", "")),
            enrolled_at=state.enrolled_at,
        )
        if touch_channel(command) is not None:  # what the gate re-checks
            assert self._input is not None
            sop = self._input.plan.sop
            params.zones, params.policy = state.zones, sop.policy
            params.purpose, params.priority = sop.purpose, sop.priority
        assert self._input is not None
        summary = activity_summary(self._input.plan, command, self._rep)
        if is_bookkeeping(command):
            if workflow.patched(LOCAL_RECORDS_PATCH):
                # A local activity: one insert needs no round trip through the server's task
                # queue nor a workflow task of its own (about half of a run's workflow tasks).
                await workflow.execute_local_activity(
                    "sopflow.record",
                    params,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RECORD_RETRY,
                    summary=summary,
                )
            else:  # histories recorded before the patch replay as they ran
                await workflow.execute_activity(
                    "sopflow.record",
                    params,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RECORD_RETRY,
                    summary=summary,
                )
            return None
        # A segment check is a query, not an effect: its own activity, no gate and no rep. New
        # with the command, so no history recorded before it takes this path.
        activity = "sopflow.check_segments" if isinstance(command, CheckSegments) else None
        try:
            result: CommandResult = await workflow.execute_activity(
                activity or "sopflow.perform",
                params,
                result_type=CommandResult,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=EFFECT_RETRY,
                summary=summary,
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise
            # Retries exhausted (provider down, misconfigured, a template that cannot render):
            # the command failed; the engine decides what that means (protocol.awaits_result).
            cause = exc.cause.message if isinstance(exc.cause, FailureError) else str(exc)
            result = CommandResult(status="failed", reason=f"gave up after retries: {cause}")
        self._note_rep(command, result)
        if not awaits_result(command) and result.status == "done":
            return None
        return ActionResult(
            at=workflow.now(),
            key=command.key,
            status=result.status,
            reason=result.reason,
            retry_at=result.retry_at,
            due_at=result.due_at,
            detail=result.detail,
        )

    def _note_rep(self, command: Command, result: CommandResult) -> None:
        """The rep who holds the task after an assignment or a reassignment (the activity
        chose them: round robin, least loaded, the owner)."""
        moved = isinstance(command, AssignTask) or (
            isinstance(command, Escalate) and command.action == "reassign"
        )
        rep = result.detail.get("rep") if moved and result.status == "done" else None
        if isinstance(rep, str) and rep:
            self._rep = rep

    @workflow.signal(name="contact_event")
    def contact_event(self, signal: ContactEventSignal) -> None:
        self._inbox.append(
            (ContactEvent(at=workflow.now(), name=signal.name, data=signal.data), None)
        )

    @workflow.signal(name="provider_event")
    def provider_event(self, signal: ProviderEventSignal) -> None:
        """Delivery receipts and call statuses from the provider's webhooks, recorded in the run."""
        event = ProviderEvent(
            at=workflow.now(), key=signal.key, status=signal.status, detail=signal.detail
        )
        self._inbox.append((event, None))

    @workflow.signal(name="control")
    def control(self, signal: ControlSignal) -> None:
        """A supervisor pauses, resumes or cancels the run; the engine records who and why."""
        event = Control(
            at=workflow.now(), action=signal.action, actor=signal.actor, reason=signal.reason
        )
        self._inbox.append((event, None))

    @workflow.update(name="report_outcome")
    async def report_outcome(self, request: OutcomeRequest) -> OutcomeAnswer:
        """Queue the report; the run loop re-checks it against the state it applies it to."""
        self._next_request += 1
        request_id = self._next_request
        report = OutcomeReported(
            at=workflow.now(),
            step=request.step,
            outcome=request.outcome,
            actor=request.actor,
            note=request.note,
            data=request.data,
        )
        self._inbox.append((report, request_id))
        await workflow.wait_condition(lambda: request_id in self._answers)
        return self._answers.pop(request_id)

    @report_outcome.validator
    def _validate_outcome(self, request: OutcomeRequest) -> None:
        if self._input is None or self._state is None:
            raise ValueError("the run has not started yet")
        problem = engine.outcome_problem(
            self._input.plan, self._state, request.step, request.outcome, request.data
        )
        if problem or (problem := _over_budget(self._state, request.data)):
            raise ValueError(problem)

    @workflow.query(name="state")
    def state(self) -> RunState | None:
        return self._state
