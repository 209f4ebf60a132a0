"""A store with known runs, the gateway on it, and signed-in browsers (real sessions of
sopflow.identity: the dashboard sits behind the gateway's sign-in).

Teams: inside (supervisor sue; reps ana, ben, sue) and field (supervisor fay; reps cy, fay).
Runs, enrolled in the week of Tue 3 Nov 2026 (BASE is 09:00 in New York, the contacts' zone):
- r1 inside: ana reports on time; an SMS went out and the carrier said delivered; finished.
- r2 inside: a deferral by quiet_hours and a block by dnc; ben reports 13 h late at 22:00
  local (outside the 09:00-20:00 call window: a violation); the contact revoked SMS; finished.
- r3 field: an SMS, then a deferral for its window; cy's task is open and overdue now.
- r4 inside: ana's task is open, due tomorrow.
- r5 inside: enrolled three weeks before: outside the week.
- r6 other_sop: an SMS only, no task: of no team (ops see it, supervisors do not).
With `reports=True` (its own store: the listings above stay as they are), runs enrolled in
October: script_pilot's, PILOT_ARMS: per arm, finished runs and of them converted, and one
still running; ben (inside) holds the tasks of script_a and script_b, cy (field) those of
script_c. And referral_ask's: rf1 and rf2 asked by SMS, rf1's link visited twice, one visitor
signed up and bought.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from temporalio.service import RPCError, RPCStatusCode

from sopflow.gateway.app import create_app
from sopflow.gateway.auth import SESSION_COOKIE
from sopflow.gateway.dashboard import TemporalUi
from sopflow.identity.users import SignedIn, UserBook
from sopflow.principals import Role
from sopflow.settings import Secret
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.protocol import AssignTask, Command, Finish, Record, SendMessage
from sopflow.sop.schema import AssignRule, Sop
from sopflow.sop.validate import load_plan
from sopflow.store.consent import ConsentBook
from sopflow.store.referrals import ReferralBook
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

POSTGRES_URL = os.environ.get(
    "SOPFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SOURCE = yaml.safe_load(
    (Path(__file__).parents[2] / "sop_definitions" / "new_lead_callback.yaml").read_text()
)
A1 = compile_plan(Sop.model_validate(SOURCE | {"version": 1}))
A2 = compile_plan(Sop.model_validate(SOURCE))  # version 2
B1 = compile_plan(Sop.model_validate(SOURCE | {"id": "other_sop", "version": 1}))
PILOT = compile_plan(
    Sop.model_validate(
        yaml.safe_load(
            (Path(__file__).parents[2] / "sop_definitions" / "script_pilot.yaml").read_text()
        )
    )
)
PILOT_ARMS = {"script_a": (10, 2), "script_b": (10, 8), "script_c": (10, 5)}
PILOT_START = datetime(2026, 10, 5, 14, 0, tzinfo=UTC)
ASKING = load_plan(Path(__file__).parents[2] / "sop_definitions" / "referral_ask.yaml")
BASE = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)  # Tue 09:00 in New York
WEEK = {"since": "2026-11-01", "until": "2026-11-08"}
NOW = datetime.now(UTC).replace(microsecond=0)
PASSWORD = "correct horse battery staple"
UI = TemporalUi("http://temporal-ui.test:8233")


class Writer:
    """A run's step events written as the worker writes them (Store.record_command)."""

    def __init__(
        self, store: Store, plan: Plan, name: str, enrolled: datetime, step: str = "first_call"
    ) -> None:
        self.store, self.plan, self.step = store, plan, step
        self.run_id = f"sop:{plan.sop.id}:{name}:k"
        self.contact = f"c-{name}"
        self.seq = 0
        store.upsert_contact({"id": self.contact, "phone": "+12125550123"})
        store.start_run(
            self.run_id, "first-run", plan.sop.id, plan.sop.version, plan.digest, self.contact,
            enrolled,
        )  # fmt: skip
        self.record(Record(at=enrolled, step=step, key="enrolled", action="enrolled"))

    def record(self, command: Command, actor: str | None = None) -> None:
        self.store.record_command(self.run_id, "first-run", command, actor=actor)

    def key(self, what: str) -> str:
        self.seq += 1
        return f"{self.step}:{self.seq}:{what}"

    def task(self, rep: str, at: datetime, due: datetime) -> None:
        assign = AssignTask(
            at=at, step=self.step, key=self.key("assign"), title="Call the new lead",
            instructions="Call", assign=AssignRule(strategy="round_robin", team="inside"),
            due_at=due, planned_at=at, attempt=1, context={}, channel="call",
        )  # fmt: skip
        self.record(assign, actor=rep)

    def sms(self, at: datetime) -> str:
        key = self.key("sms")
        send = SendMessage(
            at=at, step=self.step, key=key, channel="sms", body="Hi", planned_at=at, context={}
        )
        self.record(send)
        return key

    def note(self, action: Any, at: datetime, **detail: Any) -> None:
        self.record(
            Record(at=at, step=self.step, key=self.key(action), action=action, detail=detail)
        )

    def finish(self, at: datetime, result: str = "done", step: str | None = None) -> None:
        self.record(Finish(at=at, step=step or self.step, key="end", result=result))


@dataclass
class World:
    runs: dict[str, str] = field(default_factory=dict)  # name -> run id


def build(store: Store) -> World:
    for plan in (A1, A2, B1):
        store.deploy(plan)
    RepDirectory(store.engine).import_teams(
        [
            {"id": "inside", "name": "Inside", "supervisor": "sue",
             "reps": [{"id": "ana"}, {"id": "ben"}, {"id": "sue"}]},
            {"id": "field", "name": "Field", "supervisor": "fay",
             "reps": [{"id": "cy"}, {"id": "fay"}]},
        ]
    )  # fmt: skip
    world = World()
    day = timedelta(days=1)

    def run(name: str, plan: Plan, enrolled: datetime) -> Writer:
        writer = Writer(store, plan, name, enrolled)
        world.runs[name] = writer.run_id
        return writer

    r1 = run("r1", A1, BASE)
    r1.task("ana", BASE, BASE + timedelta(minutes=30))
    r1.note("outcome", BASE + timedelta(minutes=10), outcome="connected", actor="ana")
    sent = r1.sms(BASE + timedelta(minutes=12))
    r1.note("provider_status", BASE + timedelta(minutes=13), key=sent, status="delivered")
    r1.finish(BASE + timedelta(minutes=15))

    r2 = run("r2", A1, BASE + day)
    r2.task("ben", BASE + day, BASE + day + timedelta(minutes=30))
    until = (BASE + day + timedelta(hours=1)).isoformat()
    r2.note("deferred", BASE + day + timedelta(minutes=1), until=until, rule="quiet_hours",
            by="compliance", reason="quiet hours in New York")  # fmt: skip
    r2.note("blocked", BASE + day + timedelta(minutes=2), rule="dnc", reason="on the internal list")
    r2.note("outcome", BASE + day + timedelta(hours=13), outcome="connected", actor="ben")
    r2.finish(BASE + day + timedelta(hours=14))
    ConsentBook(store.engine).record(
        r2.contact,
        "revoke",
        channels=["sms"],
        method="sms_stop",
        at=BASE + day + timedelta(hours=2),
    )

    r3 = run("r3", A2, BASE + 2 * day)
    r3.sms(BASE + 2 * day)
    r3.note("deferred", BASE + 2 * day + timedelta(minutes=1), until=NOW.isoformat(),
            reason="outside the sms window")  # fmt: skip
    r3.task("cy", NOW - timedelta(hours=2), NOW - timedelta(hours=1))

    r4 = run("r4", A2, BASE + 2 * day + timedelta(hours=1))
    r4.task("ana", NOW - timedelta(minutes=5), NOW + day)

    r5 = run("r5", A1, BASE - 20 * day)
    r5.task("ana", BASE - 20 * day, BASE - 20 * day + timedelta(minutes=30))
    r5.note("outcome", BASE - 20 * day + timedelta(minutes=5), outcome="connected", actor="ana")
    r5.finish(BASE - 20 * day + timedelta(minutes=6))

    r6 = run("r6", B1, BASE + 3 * day)
    r6.sms(BASE + 3 * day)
    return world


def build_pilots(store: Store, world: World) -> None:
    """script_pilot's runs: each arm's split record, its rep's call task, the outcome and the
    end of the finished ones (PILOT_ARMS), one run per arm still waiting on its call."""
    store.deploy(PILOT)
    n = 0
    for arm, (finished, converted) in PILOT_ARMS.items():
        rep = "cy" if arm == "script_c" else "ben"
        for i in range(finished + 1):
            n += 1
            at = PILOT_START + timedelta(hours=n)
            run = Writer(store, PILOT, f"p{n}", at, step="pick_script")
            world.runs[f"p{n}"] = run.run_id
            run.note("variant", at, variant=arm)
            run.step = f"call_{arm[-1]}"
            run.task(rep, at, at + timedelta(hours=1))
            if i == finished:
                continue  # still running
            won = i < converted
            outcome = "booked" if won else "not_interested"
            run.note("outcome", at + timedelta(minutes=20), outcome=outcome, actor=rep)
            run.finish(at + timedelta(minutes=21), "converted" if won else "lost",
                       "converted" if won else "not_converted")  # fmt: skip


def build_referrals(store: Store, world: World) -> None:
    store.deploy(ASKING)
    book = ReferralBook(store.engine)
    for name in ("rf1", "rf2"):
        run = Writer(store, ASKING, name, PILOT_START, step="ask_sms")
        world.runs[name] = run.run_id
        run.sms(PILOT_START + timedelta(minutes=1))
    referrer = "c-rf1"
    for visitor in ("a" * 22, "b" * 22):
        book.visit(referrer, visitor, None, PILOT_START + timedelta(hours=1))
    person = {"id": "c-friend", "phone": "+12125550188"}
    book.sign_up(referrer, person, "a" * 22, PILOT_START + timedelta(hours=2))
    book.convert("c-friend", PILOT_START + timedelta(days=1))


@dataclass
class FakeTemporal:
    """Signals the dashboard sends, by run id; runs in `finished` answer NOT_FOUND, as
    Temporal does for a closed workflow."""

    signals: list[tuple[str, str, Any]] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)

    def get_workflow_handle(self, run_id: str) -> Any:
        fake = self

        class Handle:
            async def signal(self, name: str, payload: Any) -> None:
                if run_id in fake.finished:
                    raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
                fake.signals.append((run_id, name, payload))

        return Handle()


@dataclass
class Site:
    """The gateway on a built store; `browser(user)` is a client signed in as that user."""

    store: Store
    app: Any
    world: World
    temporal: FakeTemporal
    sessions: dict[str, SignedIn]
    browser: Callable[[str | None], httpx.AsyncClient]


USERS = {
    "olga": (Role.ops, None),
    "sue": (Role.supervisor, "sue"),
    "fay": (Role.supervisor, "fay"),
    "ana": (Role.rep, "ana"),
}


async def open_site(store: Store, reports: bool = False) -> AsyncIterator[Site]:
    world = build(store)
    if reports:
        build_pilots(store, world)
        build_referrals(store, world)
    users = UserBook(store.engine)
    cookies, sessions = {}, {}
    for user, (role, rep) in USERS.items():
        users.add(user, role, rep, PASSWORD)
        signed = users.sign_in(user, PASSWORD)
        assert signed is not None
        cookies[user], sessions[user] = signed.cookie, signed.signed_in
    temporal = FakeTemporal()

    async def client_factory() -> Any:
        return temporal

    app = create_app(store, client_factory, Secret("dashboard-token"), "q", temporal_ui=UI)
    clients: list[httpx.AsyncClient] = []

    def browser(user: str | None) -> httpx.AsyncClient:
        jar = {SESSION_COOKIE: cookies[user]} if user else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sopflow", cookies=jar
        )
        clients.append(client)
        return client

    try:
        yield Site(store, app, world, temporal, sessions, browser)
    finally:
        for client in clients:
            await client.aclose()
