"""REST API. Every route under /api/ needs `Authorization: Bearer <token>` (SOPFLOW_API_TOKEN, or
a user's own token), checked before the body is read (auth.py); the browser pages a session of
/signin. Errors are 4xx with a JSON `detail` that says what to fix."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as FastApiPath
from fastapi import Query as FastApiQuery
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator, model_validator
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from sopflow import metrics
from sopflow.channels.unsubscribe import PATH as UNSUBSCRIBE_PATH
from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.compliance.adherence import Grouping
from sopflow.compliance.rules import Rule
from sopflow.contact_files import ContactImportError
from sopflow.contacts_import import api_answer, api_problems, import_contacts
from sopflow.enrolment import (
    Enrolment,
    normalise_contact,
    plan_enrolments,
    start_enrolment,
)
from sopflow.errors import ConfigurationError, SopflowError
from sopflow.gateway import answers, referral_pages, twilio_hooks, unsubscribe
from sopflow.gateway.auth import MAX_FORM, Authenticate
from sopflow.gateway.click_to_call import ClickToCall, click_to_call_router
from sopflow.gateway.dashboard import TemporalUi, add_dashboard
from sopflow.gateway.docs_pages import add_docs_pages
from sopflow.gateway.guards import MAX_API_BODY, BodyLimit, RequestMetrics
from sopflow.gateway.inbox import INBOX, inbox_router
from sopflow.gateway.inputs import MAX_METHOD, Clean, ClientDatetime, ContactObject, EventData
from sopflow.gateway.listing import listing_router
from sopflow.gateway.outcomes import check_actor, report_outcome
from sopflow.gateway.readiness import Probe
from sopflow.gateway.referral_pages import (
    ReferralDesk,
    referral_api_router,
    referral_page_router,
)
from sopflow.gateway.reports_api import reports_router
from sopflow.gateway.signals import signal_run, tell_runs
from sopflow.gateway.signin import SIGNIN, signin_router
from sopflow.gateway.twilio_hooks import TwilioHooks, twilio_router
from sopflow.gateway.unsubscribe import unsubscribe_router
from sopflow.gateway.who import principal
from sopflow.identity.access import Refused, check_control, may_see_run, run_tasks
from sopflow.identity.users import UserBook
from sopflow.principals import Principal
from sopflow.providers.base import Provider
from sopflow.referrals import PATH as REFERRAL_PATH
from sopflow.referrals import ReferralLinks
from sopflow.segmenting.api import segments_router
from sopflow.segmenting.files import SEGMENTS_DIR
from sopflow.segmenting.membership import admit_soon
from sopflow.settings import Secret
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import SYSTEM_ACTORS
from sopflow.sop.schema import MAX_CONTACT_ID
from sopflow.store.consent import ConsentBook, check_channels
from sopflow.store.listing import Listing
from sopflow.store.referrals import ReferralBook
from sopflow.store.reports import Scores, parse_since, run_score_view
from sopflow.store.repository import Store, run_row
from sopflow.store.splits import SplitAssignments
from sopflow.store.views import run_view
from workflows.contracts import ContactEventSignal, ControlSignal, OutcomeAnswer

ClientFactory = Callable[[], Awaitable[Client]]
# Module level: FastAPI resolves the (string) annotations of dependencies in module globals.
ContactId = Annotated[Clean, FastApiPath(min_length=1, max_length=MAX_CONTACT_ID)]
RunId = Annotated[Clean, FastApiPath(min_length=1, max_length=300)]  # the store's workflow ids
MAX_NAME = 64  # step ids, outcomes, actors: the store's columns for them
READY_TIMEOUT = 3.0  # seconds each readiness check may take
PLANS_TTL = 2.0  # seconds a new deployment may go unseen by new enrolments (PlanCache)
CONSENT_EVENTS = ("opted_out", "opted_in")
Who = Annotated[Principal, Depends(principal)]
# Kept for clients written before users had tokens of their own: the authenticated user is the
# actor; a body naming someone else is refused (outcomes.check_actor).
ACTOR = "deprecated: the actor is the user of the token; if given, it must be theirs"


class EventIn(BaseModel):
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=100)
    contact: ContactObject
    data: EventData = Field(default_factory=dict)
    idempotency_key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")

    @model_validator(mode="after")
    def _consent_data(self) -> EventIn:
        """A consent event's data is recorded as consent: refused here, not by the store."""
        if self.type in CONSENT_EVENTS:
            method = self.data.get("method", "api_event")
            if not isinstance(method, str) or not 1 <= len(method) <= MAX_METHOD:
                raise ValueError(f"data.method: a text of 1 to {MAX_METHOD} characters")
            channels = self.data.get("channels", ["all"])
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise ValueError("data.channels: a list of channel names")
        return self


class EnrolledRun(BaseModel):
    run_id: str
    sop: str
    version: int


class SkippedSop(BaseModel):
    sop: str
    reason: str


class EventOut(BaseModel):
    enrolled: list[EnrolledRun]
    delivered: list[str] = Field(
        default_factory=list, description="running runs of the contact told about the event"
    )
    skipped: list[SkippedSop] = Field(
        default_factory=list, description="SOPs the event triggers but did not start, and why"
    )


class ContactsImportIn(BaseModel):
    contacts: list[dict[str, Any]] = Field(
        min_length=1, description="as the lines of a .jsonl import; the body cap bounds how many"
    )
    skip_invalid: bool = False


class ConsentIn(BaseModel):
    action: Literal["grant", "revoke"]
    channels: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    method: Clean = Field(min_length=1, max_length=MAX_METHOD, description="web_form, call…")
    disclosure_text: Clean | None = Field(None, max_length=2000)
    disclosure_version: Clean | None = Field(None, max_length=40)
    actor: Clean | None = Field(None, max_length=MAX_NAME, description=ACTOR)
    at: ClientDatetime | None = Field(None, description="when it was given; default: now")


class OutcomeIn(BaseModel):
    step: Clean = Field(max_length=MAX_NAME)
    outcome: Clean = Field(max_length=MAX_NAME)
    actor: Clean | None = Field(None, min_length=1, max_length=MAX_NAME, description=ACTOR)
    note: Clean = Field("", max_length=2000)
    data: EventData = Field(default_factory=dict)

    @field_validator("actor")
    @classmethod
    def _a_person(cls, actor: str | None) -> str | None:
        if actor in SYSTEM_ACTORS:  # a reporter cannot speak as the carrier or the engine
            raise ValueError(f"actor {actor!r} is reserved for sopflow's own reports")
        return actor


class ControlIn(BaseModel):
    action: Literal["pause", "resume", "cancel"]  # ControlSignal's
    actor: Clean | None = Field(None, min_length=1, max_length=MAX_NAME, description=ACTOR)
    reason: Clean = Field("", max_length=500)  # the store's step_events.reason


class PlanCache:
    """The latest plans, reloaded at most every `ttl` seconds: loading every deployed plan on
    each request cost ~29 ms. The store has no cheap "has anything been deployed?" answer, so a
    new deployment (`sopflow deploy`, the upkeep) reaches new enrolments within `ttl`."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store, self.ttl = store, ttl
        self.plans: list[Plan] = []
        self.loaded_at = -math.inf
        self.lock = asyncio.Lock()

    async def get(self) -> list[Plan]:
        async with self.lock:  # one reload at a time; requests meanwhile wait for its answer
            if time.monotonic() - self.loaded_at >= self.ttl:
                self.plans = await asyncio.to_thread(self.store.latest_plans)
                self.loaded_at = time.monotonic()
            return self.plans


def intake(plans: list[Plan], event: EventIn) -> tuple[dict[str, Any], list[Enrolment]]:
    """The contact normalised and the enrolments the event causes, or a SopflowError. CPU work
    (entry conditions, contact checks): callers run it in a thread, off the event loop."""
    if event.type in CONSENT_EVENTS:  # "channels": the contact named some only
        check_channels(event.data.get("channels", ["all"]))
    enrolments = plan_enrolments(
        plans, event.type, event.contact, event.data, event.idempotency_key
    )
    return normalise_contact(event.contact), enrolments


def create_app(
    store: Store,
    client_factory: ClientFactory,
    api_token: Secret,
    task_queue: str,
    twilio: TwilioHooks | None = None,
    provider: Provider | None = None,
    rules: Sequence[Rule] = (),
    links: UnsubscribeLinks | None = None,
    plans_ttl: float = PLANS_TTL,
    probes: Mapping[str, Probe] | None = None,
    segments: Path = SEGMENTS_DIR,
    temporal_ui: TemporalUi | None = None,
) -> FastAPI:
    """`twilio`: serve Twilio's webhooks under /twilio (signature-checked with its token);
    `provider` + `rules`: offer rep click-to-call, judged by the touch gate with `rules`;
    `links`: serve email's one-click unsubscribe under /unsubscribe (links signed with it);
    `probes`: what /readyz asks besides the store and Temporal (gateway/readiness.py);
    `segments`: the folder of segment files /api/v1/segments reads;
    `temporal_ui`: where the dashboard links a run's history (default: the dev server's UI)."""
    if not api_token.reveal().strip():  # an empty token would open every route
        raise ConfigurationError("the API token is empty: set SOPFLOW_API_TOKEN to a secret")
    app = FastAPI(title="sopflow", version="0.1.0", docs_url=None, redoc_url=None)
    add_docs_pages(app)  # /docs and /redoc from vendored assets: FastAPI's load from a CDN
    limits = [
        ("/twilio/", twilio_hooks.MAX_BODY),
        (UNSUBSCRIBE_PATH, unsubscribe.MAX_BODY),
        (REFERRAL_PATH, referral_pages.MAX_BODY),
    ]
    limits += [(SIGNIN, MAX_FORM), (INBOX, MAX_FORM)]
    app.add_middleware(BodyLimit, limits=limits, default=MAX_API_BODY)
    users = UserBook(store.engine)
    app.add_middleware(Authenticate, token=api_token, users=users)  # after BodyLimit: runs first
    app.add_middleware(RequestMetrics, router=app.router)  # added last: runs first, counts 401s
    app.add_route("/metrics", metrics.endpoint, ["GET"], include_in_schema=False)  # no secrets
    plans = PlanCache(store, plans_ttl)
    consent = ConsentBook(store.engine)
    scores = Scores(store.engine)
    splits = SplitAssignments(store.engine)
    client_lock = asyncio.Lock()
    clients: list[Client] = []

    async def temporal() -> Client:
        async with client_lock:
            if not clients:
                clients.append(await client_factory())
            return clients[0]

    @app.exception_handler(SopflowError)
    async def _user_error(_: Request, exc: SopflowError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)  # by its class

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Without each error's input: it may be large, or hold a NaN JSON cannot encode (a 500).
        errors = [{k: v for k, v in error.items() if k != "input"} for error in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    if twilio is not None:
        app.include_router(twilio_router(twilio, store, temporal))
    calls = ClickToCall(store, temporal, provider, rules) if provider is not None else None
    if calls is not None:
        app.include_router(answers.document(click_to_call_router(calls)))
    app.include_router(signin_router(users))
    app.include_router(inbox_router(store, temporal, scores, calls))
    if links is not None:
        app.include_router(unsubscribe_router(links, consent))
    app.include_router(answers.document(segments_router(store.engine, segments)))
    app.include_router(listing_router(Listing(store.engine, scores)))
    ui = temporal_ui or TemporalUi.for_server(None, "localhost:7233")
    add_dashboard(app, store, scores, temporal, ui)  # /dashboard: supervisors and ops
    app.include_router(reports_router(store.engine, scores))

    async def tell_referrer(type_: str, contact_id: str, data: dict[str, Any], key: str) -> None:
        """A referral's news to the referrer's runs, as POST /api/v1/events would bring it."""
        contact = {"id": contact_id}
        await accept_event(EventIn(type=type_, contact=contact, data=data, idempotency_key=key))

    referrals = ReferralDesk(ReferralBook(store.engine), tell_referrer)
    app.include_router(answers.document(referral_api_router(referrals)))
    if links is not None:  # referral links are signed with the unsubscribe links' key
        app.include_router(referral_page_router(referrals, ReferralLinks.sharing(links)))

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        """Liveness: the process answers (a load balancer restarts it when it does not)."""
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: the store, Temporal and the `probes` (the phone provider, the mail server)
        answer within a few seconds, asked together; 503 names what does not, so a load
        balancer sends no events to a gateway that would refuse them."""

        async def temporal_answers() -> None:
            client = await temporal()
            await client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=READY_TIMEOUT)
            )

        async def store_answers() -> None:
            await asyncio.to_thread(store.ping)

        async def check(probe: Probe) -> str:
            try:
                await asyncio.wait_for(probe(), READY_TIMEOUT)
            except Exception as exc:  # any failure is the answer: not ready, and why
                return f"{type(exc).__name__}: {exc}"[:200]
            return "ok"

        named = {"store": store_answers, "temporal": temporal_answers, **(probes or {})}
        answers = await asyncio.gather(*(check(probe) for probe in named.values()))
        checks = dict(zip(named, answers, strict=True))
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @app.post("/api/v1/events", status_code=202)
    async def post_event(event: EventIn) -> EventOut:
        """Start every SOP the event triggers and pass it to the contact's running runs.
        Everything is checked before anything changes; the same idempotency key again gets
        the first answer and changes nothing."""
        return await accept_event(event)

    async def accept_event(event: EventIn) -> EventOut:
        """The event intake: the API's events, and the gateway's own (referral news)."""
        person, enrolments = await asyncio.to_thread(intake, await plans.get(), event)
        # The claim and the contact's news in one write transaction, the runs' rows and the
        # answer in another: SQLite's write lock is what bounds intake on the embedded default.
        (token, answer), opted_out_at = await asyncio.to_thread(
            store.event_begin_with_contact, event.idempotency_key, event.type, person, event.data
        )
        if token is None:
            if answer is None:
                raise HTTPException(
                    409, "an event with this idempotency_key is still being processed: retry"
                )
            metrics.event("replayed")
            return EventOut.model_validate(answer)
        try:
            out, runs = await process(event, person, enrolments, opted_out_at)
            if event.type == "order.created":  # a referred contact's purchase converts
                await referrals.purchased(person["id"])
        except BaseException:
            await asyncio.to_thread(store.event_abandon, event.idempotency_key, token)
            raise
        await asyncio.to_thread(
            store.event_finish, event.idempotency_key, token, out.model_dump(), runs
        )
        metrics.event("accepted")
        return out

    async def process(
        event: EventIn,
        person: dict[str, Any],
        enrolments: list[Enrolment],
        opted_out_at: datetime | None,
    ) -> tuple[EventOut, list[dict[str, Any]]]:
        """The event's effects once its contact is stored (with its opt-out then): the answer,
        and the rows of the runs it started, for `event_finish` to record."""
        if event.type in CONSENT_EVENTS:
            changed = await asyncio.to_thread(
                consent.record,
                person["id"],
                "revoke" if event.type == "opted_out" else "grant",
                channels=event.data.get("channels", ["all"]),
                method=str(event.data.get("method", "api_event")),
            )
            if changed and event.type == "opted_out":
                metrics.opt_out("event")
            opted_out_at = await asyncio.to_thread(store.opted_out_at, person["id"])
        client = await temporal()
        out = EventOut(enrolled=[], delivered=[], skipped=[])
        runs: list[dict[str, Any]] = []
        # Entry conditions naming a segment: SQL over the contact just stored (layering).
        admitted = await admit_soon(store.engine, segments, enrolments, event.type, event.data)
        out.skipped += [SkippedSop(sop=sop, reason=why) for sop, why in admitted.refused]
        for enrolment in admitted.enrolments:
            sop = enrolment.plan.sop
            if opted_out_at is not None:
                reason = f"the contact opted out at {opted_out_at.isoformat()}"
                out.skipped.append(SkippedSop(sop=sop.id, reason=reason))
                metrics.enrolment("refused")
                continue
            # Arms are fixed before the start (the run cannot read the store): balanced per split.
            variants = await asyncio.to_thread(splits.assign, enrolment.plan, person["id"])
            started = await start_enrolment(
                client, enrolment, event.type, event.data, task_queue, variants
            )
            if started.created:  # recorded before the answer: events that follow reach it
                metrics.enrolment("accepted")
                runs.append(
                    run_row(
                        enrolment.workflow_id,
                        started.run_id,
                        sop.id,
                        started.version,
                        enrolment.plan.digest,
                        person["id"],
                        datetime.now(UTC),
                    )
                )
            out.enrolled.append(
                EnrolledRun(run_id=enrolment.workflow_id, sop=sop.id, version=started.version)
            )
        if event.type in CONSENT_EVENTS and "all" not in event.data.get("channels", ["all"]):
            return out, runs  # one channel only: the gate honours it; the runs go on
        signal = ContactEventSignal(name=event.type, data=event.data)
        just_started = {run.run_id for run in out.enrolled}
        out.delivered = await tell_runs(client, store, person["id"], signal, just_started)
        return out, runs

    @app.post("/api/v1/contacts/import", response_model=answers.ContactsImported)
    async def post_contacts_import(given: ContactsImportIn) -> JSONResponse:
        """Add or update contacts by id with their purchases and visits, as `sopflow contacts
        import` does: every item is checked first, and one bad item is a 422 listing the
        problems (`loc`: body, contacts, index, field) with nothing written, unless
        `skip_invalid`."""
        records = list(enumerate(given.contacts))
        try:
            report = await asyncio.to_thread(
                import_contacts,
                store.engine,
                records,
                "contacts",
                await plans.get(),
                given.skip_invalid,
                noun="item",
            )
        except ContactImportError as exc:
            detail = {"detail": api_problems(exc.problems), "count": len(exc.problems)}
            return JSONResponse(detail, status_code=422)
        if report.imported.purchases:  # referred contacts' purchases convert
            await referrals.imported()
        return JSONResponse(api_answer(report))

    @app.post(
        "/api/v1/contacts/{contact_id}/consent",
        status_code=201,
        response_model=answers.ConsentRecorded,
    )
    async def post_consent(contact_id: ContactId, given: ConsentIn, who: Who) -> dict[str, Any]:
        """Record consent given or withdrawn, with how and under which disclosure. A repeat that
        changes nothing is answered `recorded: false`. The touch gate reads it before every touch."""
        check_actor(given.actor, who, "recorded")
        recorded = await asyncio.to_thread(
            consent.record,
            contact_id,
            given.action,
            channels=given.channels,
            method=given.method,
            at=given.at,
            disclosure_text=given.disclosure_text,
            disclosure_version=given.disclosure_version,
            actor=who.actor,
        )
        if recorded and given.action == "revoke":
            metrics.opt_out("consent_api")
        state = await asyncio.to_thread(consent.current, contact_id)
        return {"contact_id": contact_id, "recorded": recorded, "channels": state}

    @app.get("/api/v1/contacts/{contact_id}/consent", response_model=answers.ConsentView)
    async def get_consent(contact_id: ContactId) -> dict[str, Any]:
        """What is in force per channel, and every consent event in order."""
        state = await asyncio.to_thread(consent.current, contact_id)
        events = await asyncio.to_thread(consent.history, contact_id)
        history = [
            {
                "action": e.action,
                "channels": e.channels,
                "at": e.at.isoformat(),
                "method": e.method,
                "disclosure_text": e.disclosure_text,
                "disclosure_version": e.disclosure_version,
                "actor": e.actor,
            }
            for e in events
        ]
        return {"contact_id": contact_id, "channels": state, "history": history}

    @app.get("/api/v1/reports/compliance", response_model=answers.ComplianceReport)
    async def get_compliance(
        by: Grouping = "rep",
        since: Annotated[Clean | None, FastApiQuery(max_length=40)] = None,
        sop: Annotated[Clean | None, FastApiQuery(max_length=MAX_NAME)] = None,
    ) -> dict[str, Any]:
        """Adherence scores recomputed from the event log, one row per group."""
        start = parse_since(since, datetime.now(UTC))
        rows = await asyncio.to_thread(scores.report, by, start, sop)
        return {"by": by, "since": start.isoformat() if start else None, "rows": rows}

    @app.get("/api/v1/runs/{run_id}/score", response_model=answers.RunScoreView)
    async def get_run_score(run_id: RunId, who: Who) -> dict[str, Any]:
        """One run's score, its items and every point lost with the reason."""
        await check_run_in_sight(who, run_id)
        found = await asyncio.to_thread(scores.run, run_id)  # NotFoundError: 404 by its class
        return run_score_view(found)

    async def check_run_in_sight(who: Principal, run_id: str) -> None:
        """404 for a run outside what the user may see, as for one that does not exist."""
        if not who.sees_everything:
            tasks = await asyncio.to_thread(run_tasks, store.engine, run_id)
            if not may_see_run(who, tasks):
                raise HTTPException(404, f"unknown run {run_id!r}")

    @app.post("/api/v1/runs/{run_id}/outcomes")
    async def post_outcome(run_id: RunId, report: OutcomeIn, who: Who) -> OutcomeAnswer:
        """Report the outcome of a task, as the user of the token: a rep on the tasks they
        hold, a supervisor on their teams' tasks, ops on any (403 otherwise)."""
        check_actor(report.actor, who)
        return await report_outcome(
            store, temporal, who, run_id, report.step, report.outcome, report.note, report.data
        )

    @app.post(
        "/api/v1/runs/{run_id}/control", status_code=202, response_model=answers.ControlAccepted
    )
    async def post_control(run_id: RunId, control: ControlIn, who: Who) -> dict[str, str]:
        """Pause, resume or cancel a run; the run records who (the user of the token) and why.
        Ops on any run, a supervisor on runs whose tasks went to their teams (403 otherwise)."""
        check_actor(control.actor, who)
        if not who.sees_everything:
            tasks = await asyncio.to_thread(run_tasks, store.engine, run_id)
            if not tasks and await asyncio.to_thread(store.run, run_id) is None:
                raise HTTPException(404, f"unknown or finished run {run_id!r}")
            try:
                check_control(who, tasks, run_id)
            except Refused as exc:
                raise HTTPException(403, str(exc)) from None
        signal = ControlSignal(action=control.action, actor=who.actor, reason=control.reason)
        if not await signal_run(await temporal(), run_id, "control", signal):
            raise HTTPException(404, f"unknown or finished run {run_id!r}")
        return {"run_id": run_id, "action": control.action}

    @app.get("/api/v1/runs/{run_id}", response_model=answers.RunView)
    async def get_run(run_id: RunId, who: Who) -> dict[str, Any]:
        await check_run_in_sight(who, run_id)
        run = await asyncio.to_thread(store.run, run_id)
        if run is None:
            raise HTTPException(404, f"unknown run {run_id!r}")
        events = await asyncio.to_thread(store.step_events, run_id)
        return run_view(run, events)

    return app
