"""The store's operations. `Store` takes an Engine it does not own (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, delete, event, make_url, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from sopflow.errors import (
    ConfigurationError,
    ConflictError,
    InvalidContactError,
    InvalidEventError,
    NotFoundError,
    SopflowError,
    UnknownSopError,
)
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import (
    AssignTask,
    Command,
    Escalate,
    Finish,
    PlaceCall,
    Record,
    SendMessage,
)
from sopflow.store import migrate
from sopflow.store.contacts import check_budget, locked_contact
from sopflow.store.models import (
    Contact,
    InboundEvent,
    OutboxEntry,
    Run,
    SopVersion,
    StepEvent,
    WhatsAppSession,
)
from sopflow.store.rows import insert_if_new
from sopflow.store.sqlite_writes import serialise_writes
from sopflow.store.text import checked, fitted

# A claimed idempotency key not answered within this long was left by a process that died:
# longer than a request takes (a workflow start or signal is seconds), short enough that a
# client's retries after a gateway was killed land within a minute (bench/fault_suite.py: with
# two minutes, retries of events caught by the kill gave up first). A slower attempt that
# outlives it is harmless: its claim token no longer matches, and the workflow start it races
# is idempotent by its business key.
CLAIM_LEASE = timedelta(seconds=30)
CONTACT_COLUMNS = ("phone", "timezone", "owner")  # a contact's fields with columns of their own


class VersionConflictError(ConflictError):
    def __init__(self, sop_id: str, version: int) -> None:
        super().__init__(
            f"{sop_id} v{version} is already deployed with different content: bump `version`"
        )


class DeployConflicts(ConflictError):
    """Some plans of an all-or-nothing deploy reuse a version: (index in the batch, error)."""

    def __init__(self, conflicts: list[tuple[int, VersionConflictError]]) -> None:
        self.conflicts = conflicts
        super().__init__("; ".join(str(error) for _, error in conflicts))


@dataclass(frozen=True)
class Deployment:
    sop_id: str
    version: int
    digest: str
    created: bool  # False: the same content was already deployed (a no-op)


class EventClaim(NamedTuple):
    """event_begin's answer: `token` when this attempt holds the claim, else the stored answer
    (None while another attempt holds it)."""

    token: str | None
    answer: dict[str, Any] | None


@dataclass(frozen=True)
class OutboxState:
    key: str
    status: str
    attempts: int
    provider_id: str | None
    result: dict[str, Any]
    created_at: datetime | None = None


def run_row(
    workflow_id: str,
    run_id: str,
    sop_id: str,
    version: int,
    digest: str,
    contact_id: str,
    enrolled_at: datetime,
) -> dict[str, Any]:
    """The columns of a new run's row."""
    return {
        "workflow_id": workflow_id, "first_run_id": run_id, "sop_id": sop_id,
        "version": version, "digest": digest, "contact_id": contact_id,
        "enrolled_at": enrolled_at, "status": "running",
    }  # fmt: skip


SQLITE_BUSY_SECONDS = 60  # how long a SQLite writer waits for the write lock


def connect(url: str, connections: int = 20) -> Engine:
    """An Engine for a URL, keeping up to `connections` open (Settings.db_connections).

    SQLite, the embedded default, gets foreign keys and WAL with synchronous=NORMAL: a commit
    no longer waits for a disk flush (WAL keeps it safe from a killed process; a power cut may
    lose the last commits), and writers wait up to SQLITE_BUSY_SECONDS for the one write lock,
    queued within the process (sqlite_writes.py) rather than polling it.
    With FULL and pysqlite's 5 s, `sopflow up` under 32 enrolments in flight answered 500
    ("database is locked") and took 19 enrolments/s."""
    in_memory = make_url(url).database in (None, "", ":memory:")  # one connection, no pool
    pool = {} if in_memory else {"pool_size": connections, "max_overflow": 0, "pool_timeout": 60}
    engine = create_engine(url, **pool)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            cursor.close()

        if not in_memory:
            path = os.path.realpath(str(engine.url.database))  # one lock per file, any URL
            serialise_writes(engine, path, SQLITE_BUSY_SECONDS)

    return engine


def use_store_threads(count: int) -> None:
    """Size the running event loop's `asyncio.to_thread` pool to the store's connections. The
    default (cores + 4: six here) capped a worker at six store calls in flight: under load its
    activities waited seconds for a thread while the CPU sat half idle (bench_production)."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(count, thread_name_prefix="sopflow-store")
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _contact_merge(contact: dict[str, Any]) -> Callable[[Session], Contact]:
    """`upsert_contact`'s merge, checked now (InvalidContactError before any write), applied
    to the transaction it is given: the locked row, changed and within its budget."""
    given = {k: v for k, v in contact.items() if v not in (None, "")}
    contact_id = _contact_column(contact["id"], "id", contact["id"])
    columns = {
        name: _contact_column(contact_id, name, given[name])
        for name in CONTACT_COLUMNS
        if name in given
    }
    news = {k: v for k, v in given.items() if k not in ("id", *CONTACT_COLUMNS)}

    def merge(session: Session) -> Contact:
        row = locked_contact(session, contact_id, _now())
        for name, value in columns.items():
            setattr(row, name, value)
        row.fields = {**(row.fields or {}), **news}
        row.updated_at = _now()
        check_budget(row)
        return row

    return merge


def _contact_column(contact_id: str, name: str, value: Any) -> Any:
    """`value` for the contact's column `name`, or InvalidContactError if it cannot be kept."""
    if not isinstance(value, str):
        return value
    return checked(
        value, getattr(Contact, name), f"`{name}`", lambda why: InvalidContactError(why, contact_id)
    )


def event_fields(command: Command) -> dict[str, Any]:
    """The columns of a step event, from the command that caused it."""
    fields: dict[str, Any] = {"kind": command.kind, "action": command.kind}
    if isinstance(command, Record):
        detail = dict(command.detail)
        fields |= {
            "action": command.action,
            "detail": detail,
            "outcome": detail.get("outcome"),
            "actor": detail.get("actor") or None,
            "reason": detail.get("reason"),
        }
        planned = detail.get("planned_at")
        fields["planned_at"] = datetime.fromisoformat(planned) if planned else None
    elif isinstance(command, SendMessage):
        fields |= {
            "action": command.channel,
            "channel": command.channel,
            "planned_at": command.planned_at,
        }
    elif isinstance(command, PlaceCall):
        fields |= {"channel": "call", "planned_at": command.planned_at}
    elif isinstance(command, AssignTask):
        fields |= {
            "channel": command.channel,  # a call task is a touch: it counts towards caps
            "planned_at": command.planned_at,
            "due_at": command.due_at,
            "detail": {
                "title": command.title,
                "assign": command.assign.model_dump(exclude_none=True),
            },
        }
    elif isinstance(command, Escalate):
        fields |= {
            "action": command.action,
            "due_at": command.due_at,
            "detail": {"level": command.level},
        }
    elif isinstance(command, Finish):
        fields |= {"action": "end", "outcome": command.result}
    return fields


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self) -> None:
        try:
            migrate.upgrade(self.engine)
        except OperationalError as exc:  # no server there, login refused…: for ops to fix
            where = self.engine.url.render_as_string(hide_password=True)
            why = str(exc.orig).strip().splitlines()[0]
            raise ConfigurationError(f"cannot reach the store at {where}: {why}") from None

    def ping(self) -> None:
        """Raise unless the database answers (readiness)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # ------------------------------------------------------------ SOP versions
    def deploy(self, plan: Plan) -> Deployment:
        """Store a compiled SOP. The same digest again is a no-op; a reused version number with
        different content is refused, so a version always means one plan."""
        try:
            return self.deploy_all([plan])[0]
        except DeployConflicts as exc:
            raise exc.conflicts[0][1] from None

    def deploy_all(self, plans: Sequence[Plan]) -> list[Deployment]:
        """Store every plan in one transaction, or none (deploy's rule for each). Raises
        DeployConflicts naming every plan whose version is taken by other content."""
        done: list[Deployment] = []
        conflicts: list[tuple[int, VersionConflictError]] = []
        try:
            with Session(self.engine) as session, session.begin():
                for index, plan in enumerate(plans):
                    sop = plan.sop
                    digest = session.scalars(
                        select(SopVersion.digest).where(
                            SopVersion.sop_id == sop.id, SopVersion.version == sop.version
                        )
                    ).first()
                    if digest is None:
                        session.add(
                            SopVersion(
                                sop_id=sop.id,
                                version=sop.version,
                                digest=plan.digest,
                                plan=plan.model_dump(mode="json", by_alias=True),
                                deployed_at=_now(),
                            )
                        )
                        session.flush()  # a plan given twice in one batch is a conflict too
                    elif digest != plan.digest:
                        conflicts.append((index, VersionConflictError(sop.id, sop.version)))
                    done.append(Deployment(sop.id, sop.version, plan.digest, digest is None))
                if conflicts:
                    raise DeployConflicts(conflicts)  # leaving the block rolls everything back
        except IntegrityError:
            raise SopflowError(
                "another deploy stored one of these versions at the same moment: deploy again"
            ) from None
        return done

    def latest_plan(self, sop_id: str) -> Plan:
        with Session(self.engine) as session:
            row = session.scalars(
                select(SopVersion)
                .where(SopVersion.sop_id == sop_id)
                .order_by(SopVersion.version.desc())
            ).first()
            if row is None:
                known = list(session.scalars(select(SopVersion.sop_id).distinct()))
                raise UnknownSopError(sop_id, known)
            return Plan.model_validate(row.plan)

    def plan(self, digest: str) -> Plan:
        """The plan a run is pinned to."""
        with Session(self.engine) as session:
            row = session.scalars(select(SopVersion).where(SopVersion.digest == digest)).first()
            if row is None:
                raise NotFoundError(f"no deployed SOP version has digest {digest}")
            return Plan.model_validate(row.plan)

    def latest_plans(self) -> list[Plan]:
        """The newest deployed version of every SOP: what new enrolments run."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(SopVersion).order_by(SopVersion.sop_id, SopVersion.version)
            )
            newest = {row.sop_id: row.plan for row in rows}
        return [Plan.model_validate(plan) for plan in newest.values()]

    def upsert_contact(self, contact: dict[str, Any]) -> None:
        """Keep the latest known fields of a contact (the CRM stays the source of truth). An
        event carries what changed, not the whole record: a field it leaves out or empty keeps
        its stored value (an event without a phone must not forget the number STOP is matched
        by; an owner claimed by a rep stays until the CRM names one). A value the store cannot
        keep, or that would take the contact over its budget (64 KiB of JSON), is refused
        (InvalidContactError) before anything is written."""
        merge = _contact_merge(contact)
        with Session(self.engine) as session, session.begin():
            merge(session)

    def update_contact(
        self, contact_id: str, changes: dict[str, Any], add_tags: list[str] | None = None
    ) -> None:
        """An SOP's update step: merge fields and tags into the contact (created if unknown).
        phone, timezone and owner have columns of their own; the rest lives in `fields`. Over
        the contact's budget: InvalidContactError, nothing written (the run records the failure
        and goes on)."""
        _contact_column(contact_id, "id", contact_id)
        with Session(self.engine) as session, session.begin():
            row = locked_contact(session, contact_id, _now())
            fields = dict(row.fields or {})
            for name, value in changes.items():
                if name in CONTACT_COLUMNS:
                    setattr(row, name, _contact_column(contact_id, name, value or None))
                elif name != "id":
                    fields[name] = value
            tags = list(fields.get("tags") or [])
            fields["tags"] = tags + [t for t in add_tags or [] if t not in tags]
            row.fields, row.updated_at = fields, _now()
            check_budget(row)

    def contact(self, contact_id: str) -> Contact | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Contact, contact_id)

    def opted_out_at(self, contact_id: str) -> datetime | None:
        row = self.contact(contact_id)
        return row.opted_out_at if row is not None else None

    # ------------------------------------------------------------ runs and step events
    def start_run(
        self,
        workflow_id: str,
        run_id: str,
        sop_id: str,
        version: int,
        digest: str,
        contact_id: str,
        enrolled_at: datetime,
    ) -> bool:
        """Record an enrolment; False if the workflow id is already known (a duplicate start)."""
        row = run_row(workflow_id, run_id, sop_id, version, digest, contact_id, enrolled_at)
        with Session(self.engine) as session, session.begin():
            return insert_if_new(session, Run, row, Run.workflow_id)

    def record_command(
        self,
        workflow_id: str,
        temporal_run_id: str,
        command: Command,
        provider_id: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
    ) -> bool:
        """Write the step event for a command once; a retried write of the same key is a no-op.
        actor / outcome / reason: what the shell learnt carrying it out (the rep given a task,
        the run an enrolment started, why it failed). `run` (`run_row`): the run's row, written
        in the same transaction if the gateway has not (a run started by another path)."""
        fields = event_fields(command)
        overrides = {"actor": actor, "outcome": outcome, "reason": reason}
        fields |= {name: value for name, value in overrides.items() if value is not None}
        if detail:
            fields["detail"] = {**fields.get("detail", {}), **detail}
        for name in ("actor", "outcome", "reason"):  # reports' and errors' free text: an audit
            if isinstance(fields.get(name), str):  # line cut to fit beats a write failing forever
                fields[name] = fitted(fields[name], getattr(StepEvent, name))
        row = StepEvent(
            workflow_id=workflow_id,
            temporal_run_id=temporal_run_id,
            key=command.key,
            step=command.step,
            executed_at=command.at,
            provider_id=provider_id,
            **fields,
        )
        with Session(self.engine) as session:
            try:
                if run is not None:
                    insert_if_new(session, Run, run, Run.workflow_id)
                if isinstance(command, Finish):  # read before the add: no autoflush of the row
                    closing = session.get(Run, workflow_id)
                    if closing is not None:
                        closing.status, closing.result = "finished", command.result
                        closing.finished_at = command.at
                session.add(row)
                session.commit()
            except IntegrityError:  # written by an earlier attempt (with the run's status)
                return False
        return True

    def step_events(self, workflow_id: str) -> list[StepEvent]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.scalars(
                    select(StepEvent)
                    .where(StepEvent.workflow_id == workflow_id)
                    .order_by(StepEvent.id)
                )
            )

    def list_runs(
        self, sop_id: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[Run]:
        """Newest enrolments first."""
        query = select(Run).order_by(Run.enrolled_at.desc()).limit(limit)
        if sop_id:
            query = query.where(Run.sop_id == sop_id)
        if status:
            query = query.where(Run.status == status)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))

    def run(self, workflow_id: str) -> Run | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(Run, workflow_id)

    def running_runs(self, contact_id: str) -> list[str]:
        """Workflow ids of the contact's runs not yet finished."""
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Run.workflow_id)
                    .where(Run.contact_id == contact_id, Run.status == "running")
                    .order_by(Run.enrolled_at)
                )
            )

    # ------------------------------------------------------------ inbound events
    def event_begin(
        self, key: str, type_: str, contact_id: str, data: dict[str, Any]
    ) -> EventClaim:
        """Claim an idempotency key. (token, None): new, process it and pass `token` to
        event_finish or event_abandon. (None, answer): seen before; answer is None while another
        attempt is still processing it. A claim left unanswered for CLAIM_LEASE (its process
        died between claim and finish) is taken over by the next attempt with a new token, else
        the event would be refused as "in progress" forever. A key, type or contact id the
        store cannot keep: InvalidEventError, nothing written."""
        return self._claim(key, type_, contact_id, data, None)[0]

    def event_begin_with_contact(
        self, key: str, type_: str, contact: dict[str, Any], data: dict[str, Any]
    ) -> tuple[EventClaim, datetime | None]:
        """`event_begin`, and when the claim is this attempt's, the event's contact merged as
        `upsert_contact` merges it, in the claim's transaction (intake's throughput on SQLite
        is its write lock: one write transaction for both); with the contact's opt-out.
        InvalidContactError: nothing written, the key unclaimed."""
        return self._claim(key, type_, str(contact["id"]), data, _contact_merge(contact))

    def _claim(
        self,
        key: str,
        type_: str,
        contact_id: str,
        data: dict[str, Any],
        merge: Callable[[Session], Contact] | None,
    ) -> tuple[EventClaim, datetime | None]:
        checked(key, InboundEvent.key, "idempotency key", InvalidEventError)
        checked(type_, InboundEvent.type, "event type", InvalidEventError)
        checked(contact_id, InboundEvent.contact_id, "contact id", InvalidEventError)
        now, token = _now(), secrets.token_hex(16)
        claim = {"type": type_, "contact_id": contact_id, "data": data, "received_at": now}

        def claimed(session: Session) -> tuple[EventClaim, datetime | None]:
            """The claim is ours: the contact's news go in the same transaction."""
            opted_out_at = merge(session).opted_out_at if merge is not None else None
            session.commit()
            return EventClaim(token, None), opted_out_at

        with Session(self.engine) as session:
            session.add(InboundEvent(key=key, claim=token, **claim))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
            else:
                return claimed(session)
            # One conditional update: of attempts racing for a stale claim, only one matches
            # (PostgreSQL re-checks the row after the winner's commit; SQLite writes in turn).
            taken = session.scalar(
                update(InboundEvent)
                .where(
                    InboundEvent.key == key,
                    InboundEvent.answer.is_(None),
                    InboundEvent.received_at < now - CLAIM_LEASE,
                )
                .values(claim=token, **claim)
                .returning(InboundEvent.key)
            )
            if taken is not None:
                return claimed(session)
            session.commit()
            row = session.get(InboundEvent, key)
            return EventClaim(None, row.answer if row is not None else None), None

    def event_finish(
        self,
        key: str,
        token: str,
        answer: dict[str, Any],
        runs: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """Keep the answer of the attempt holding the claim `token`. False, and the answer is
        not kept, when another attempt took the claim over (this one outlived its lease): that
        one answers. `runs` (`run_row`s of the runs this event started) are recorded in the same
        transaction either way, as `start_run` records one."""
        with Session(self.engine) as session, session.begin():
            for row in runs:
                insert_if_new(session, Run, row, Run.workflow_id)
            done = session.scalar(
                update(InboundEvent)
                .where(
                    InboundEvent.key == key,
                    InboundEvent.claim == token,
                    InboundEvent.answer.is_(None),
                )
                .values(answer=answer)
                .returning(InboundEvent.key)
            )
        return done is not None

    def event_abandon(self, key: str, token: str) -> bool:
        """Processing failed: forget the key so that a retry is processed afresh. False, and
        nothing changes, when the claim is no longer this attempt's."""
        with Session(self.engine) as session, session.begin():
            gone = session.scalar(
                delete(InboundEvent)
                .where(
                    InboundEvent.key == key,
                    InboundEvent.claim == token,
                    InboundEvent.answer.is_(None),
                )
                .returning(InboundEvent.key)
            )
        return gone is not None

    # ------------------------------------------------------------ outbox
    def outbox_begin(
        self,
        key: str,
        workflow_id: str,
        kind: str,
        recipient: Mapping[str, Any] | None = None,
    ) -> OutboxState:
        """Claim a touch before the provider call. An existing row is returned as it is, so the
        caller sees that this key was already sent (or is in doubt) and does not send again.
        `recipient` ({"channel", "to", "text"}) lets upkeep look an abandoned claim up at the
        provider."""
        now = _now()
        result = {"recipient": dict(recipient)} if recipient else {}
        with Session(self.engine) as session:
            session.add(
                OutboxEntry(
                    key=key,
                    workflow_id=workflow_id,
                    kind=kind,
                    attempts=1,
                    result=result,
                    created_at=now,
                    updated_at=now,
                )
            )
            try:
                session.commit()
                return OutboxState(key, "pending", 1, None, result, now)
            except IntegrityError:
                session.rollback()
            row = session.get(OutboxEntry, key)
            assert row is not None
            row.attempts += 1
            row.updated_at = now
            state = OutboxState(
                key, row.status, row.attempts, row.provider_id, dict(row.result), row.created_at
            )
            session.commit()
            return state

    def outbox_get(self, key: str) -> OutboxState | None:
        with Session(self.engine) as session:
            r = session.get(OutboxEntry, key)
            if r is None:
                return None
            return OutboxState(
                r.key, r.status, r.attempts, r.provider_id, dict(r.result), r.created_at
            )

    def outbox_stale(self, idle_since: datetime, limit: int = 500) -> list[OutboxState]:
        """Claims still pending that no attempt has touched since `idle_since` (in doubt)."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(OutboxEntry)
                .where(OutboxEntry.status == "pending", OutboxEntry.updated_at < idle_since)
                .order_by(OutboxEntry.updated_at)
                .limit(limit)
            )
            return [
                OutboxState(
                    r.key, r.status, r.attempts, r.provider_id, dict(r.result), r.created_at
                )
                for r in rows
            ]

    def provider_status_advance(self, key: str, status: str, rank: int) -> bool:
        """Keep a touch's latest provider status: True when `status` ranks above the last one
        recorded (callbacks arrive out of order) or is that one again (a retry of a webhook whose
        processing failed; true duplicates are caught before), False when it is older, another
        final status, or the key is unknown."""
        with Session(self.engine) as session, session.begin():
            row = session.get(OutboxEntry, key, with_for_update=True)
            if row is None:
                return False
            known = int(row.result.get("status_rank", -1))
            if rank < known or (rank == known and status != row.result.get("provider_status")):
                return False
            row.result = {**row.result, "provider_status": status, "status_rank": rank}
            row.updated_at = _now()
        return True

    def note_whatsapp_inbound(self, phone: str, at: datetime) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(WhatsAppSession, phone)
            if row is None:
                session.add(WhatsAppSession(phone=phone, last_inbound_at=at))
            elif at > row.last_inbound_at:
                row.last_inbound_at = at

    def whatsapp_inbound_at(self, phone: str) -> datetime | None:
        """When the number last wrote to us on WhatsApp (its 24-hour session: preflight)."""
        with Session(self.engine) as session:
            row = session.get(WhatsAppSession, phone)
            if row is None:
                return None
            at = row.last_inbound_at
            return at if at.tzinfo else at.replace(tzinfo=UTC)

    def contacts_with_phone(self, phone: str) -> list[str]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Contact.id).where(Contact.phone == phone).order_by(Contact.id)
                )
            )

    def outbox_finish(
        self,
        key: str,
        status: str,
        provider_id: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(OutboxEntry, key)
            if row is None:
                raise NotFoundError(f"no outbox entry {key!r}")
            # merged: a status callback may have landed before this answer did
            row.status, row.provider_id = status, provider_id
            row.result = {**row.result, **(result or {})}
            row.updated_at = _now()
