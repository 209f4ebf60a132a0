"""Tables of the store. Every planned and actual step lands in `step_events`, linked to the run."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores no zone; we put UTC back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Amount(TypeDecorator[Decimal]):
    """Money as NUMERIC(18, 4) (every ISO 4217 minor unit fits): Decimal on PostgreSQL; on
    SQLite, which keeps a REAL, read back as the Decimal that was written (SQLAlchemy's own
    conversion warns, and warnings are errors in the tests)."""

    impl = Numeric(18, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(18, 4, asdecimal=False))
        return dialect.type_descriptor(Numeric(18, 4))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        return float(value) if value is not None and dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        # A double keeps 15 significant digits: an amount under 10**11 with 4 decimals comes
        # back as written; SQLite cannot keep more (PostgreSQL keeps all 18).
        return Decimal(repr(value)).quantize(Decimal("0.0001"))


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    supervisor_id: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA; its reps' default


class Rep(Base):
    __tablename__ = "reps"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(200))
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"))
    active: Mapped[bool] = mapped_column(default=True)
    max_tasks_per_day: Mapped[int | None]  # workload cap: tasks assigned in any 24 hours
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA; due times shown in it


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64))
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    opted_out_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


ActivityKind = Literal["purchase", "visit"]


class ContactActivity(Base):
    """A purchase or a store visit of a contact (imported: sopflow/contacts_import.py). `key`
    is what a re-import matches on: the order id of a purchase that has one, else the time."""

    __tablename__ = "contact_activity"
    __table_args__ = (UniqueConstraint("contact_id", "kind", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"))
    kind: Mapped[ActivityKind] = mapped_column(String(10))
    key: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime]
    amount: Mapped[Decimal | None] = mapped_column(Amount())
    currency: Mapped[str | None] = mapped_column(String(3))  # ISO 4217
    order_id: Mapped[str | None] = mapped_column(String(64))
    store: Mapped[str | None] = mapped_column(String(64))


class SopVersion(Base):
    """A deployed SOP version; runs are pinned to one (version + digest)."""

    __tablename__ = "sop_versions"
    __table_args__ = (UniqueConstraint("sop_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sop_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    digest: Mapped[str] = mapped_column(String(80), unique=True)
    plan: Mapped[dict[str, Any]]
    deployed_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (  # runs listed newest first (store/listing.py), of one SOP or all
        Index("ix_runs_enrolled_at", "enrolled_at", "workflow_id"),
        Index("ix_runs_sop_enrolled", "sop_id", "enrolled_at", "workflow_id"),
    )
    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    first_run_id: Mapped[str] = mapped_column(String(64))
    sop_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int]
    digest: Mapped[str] = mapped_column(String(80))
    contact_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20), default="running")
    result: Mapped[str | None] = mapped_column(String(64))
    enrolled_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


TASK_ROWS = "kind = 'assign'"  # the step events that are rep tasks (ix_step_events_tasks)


class StepEvent(Base):
    """One engine command as it happened: planned, due and actual times, outcome, reason."""

    __tablename__ = "step_events"
    __table_args__ = (
        UniqueConstraint("workflow_id", "key"),
        Index("ix_step_events_run_time", "workflow_id", "executed_at"),
        # Rep tasks listed newest first (store/listing.py). Partial: led by `kind`, SQLite with
        # no statistics took it for every per-run lookup with a kind (seconds, not ms).
        Index(
            "ix_step_events_tasks",
            "executed_at",
            "id",
            sqlite_where=text(TASK_ROWS),
            postgresql_where=text(TASK_ROWS),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("runs.workflow_id"))
    temporal_run_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(40))
    planned_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    executed_at: Mapped[datetime]
    outcome: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(20))
    provider_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RunVerdict(Base):
    """The scorer's verdict on a run, kept so a report does not rescore a run whose inputs did
    not change (store/verdicts.py): `basis` names those inputs (the scorer's version, the plan,
    finished or not, the contact's phone and time zone (hashed) and opt-out, the run's step
    events by count and last id), `verdict` is the zones, items and violations as JSON. A cache:
    any row may be dropped."""

    __tablename__ = "run_verdicts"
    workflow_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    basis: Mapped[str] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(Text)


class OutboxEntry(Base):
    """Written before a provider call: a retried activity finds it and does not send twice."""

    __tablename__ = "outbox"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(300), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(
        String(20), default="pending"
    )  # pending|done|blocked|failed
    attempts: Mapped[int] = mapped_column(default=0)
    provider_id: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class InboundEvent(Base):
    """An event received by the API, by idempotency key: the same key again gets the stored
    answer and changes nothing. `answer` is NULL while the first request is being processed;
    `received_at` is when that attempt claimed the key (a later one may take over a stale claim),
    `claim` the random token of the attempt holding it: only that attempt may answer or release
    it, so a slow attempt whose claim was taken over cannot touch its successor's."""

    __tablename__ = "inbound_events"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    received_at: Mapped[datetime]
    claim: Mapped[str | None] = mapped_column(String(32))  # NULL: claimed before 0008


class ConsentEvent(Base):
    """A consent given or withdrawn: who, when, how, under which disclosure, for which channels.
    The latest event received per channel decides; "all" covers every channel. `at` is when the
    sender says it was given (the audit record); `received_at` when sopflow got it. The order of
    effect is the order received (`id`): a claimed `at` cannot put a grant after a later STOP."""

    __tablename__ = "consent_events"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    contact_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(10))  # grant | revoke
    channels: Mapped[list[str]] = mapped_column(JSON)
    at: Mapped[datetime]
    method: Mapped[str] = mapped_column(String(40))  # sms_stop, api, web_form, import…
    disclosure_text: Mapped[str | None] = mapped_column(String(2000))
    disclosure_version: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime]


class WhatsAppSession(Base):
    """When a number last wrote to us on WhatsApp: for 24 hours after, we may write freely."""

    __tablename__ = "whatsapp_sessions"
    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_inbound_at: Mapped[datetime]


class DoNotContact(Base):
    """A number on a do-not-contact list (the internal one, or an imported external list)."""

    __tablename__ = "do_not_contact"
    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    list_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str | None] = mapped_column(String(200))
    added_at: Mapped[datetime]


class SplitAssignment(Base):
    """The arm a contact takes at a split step, fixed the first time they are enrolled: the same
    contact keeps it in every later enrolment. `seq` numbers the split's contacts (0, 1, 2…);
    the arm is the balanced block's arm at that number (sopflow/sop/splits.py)."""

    __tablename__ = "split_assignments"
    __table_args__ = (UniqueConstraint("sop_id", "step", "seq"),)
    sop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int]
    assigned_at: Mapped[datetime]


class SplitCounter(Base):
    """The next sequence number of one split. An allocation updates it first in its transaction,
    which makes allocations of one split take turns (row lock on PostgreSQL, write lock on SQLite)."""

    __tablename__ = "split_counters"
    sop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_seq: Mapped[int]


class Referral(Base):
    """One person a referrer's link brought (sopflow/store/referrals.py): their first visit of
    the landing page (a visitor id kept in a cookie, so repeat visits count once), their sign-up
    as a contact, their first purchase after it; and when the referrer's runs were told of the
    sign-up and of the purchase (told again until they have been). A contact has at most one
    referrer, the first: `referred_id` is unique."""

    __tablename__ = "referrals"
    # Also the index of a referrer's referrals (its leading column).
    __table_args__ = (UniqueConstraint("referrer_id", "visitor"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    referrer_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"))
    visitor: Mapped[str | None] = mapped_column(String(32))  # NULL: a sign-up without a visit
    came_from: Mapped[str | None] = mapped_column(String(500))  # the first visit's HTTP Referer
    referred_id: Mapped[str | None] = mapped_column(ForeignKey("contacts.id"), unique=True)
    visited_at: Mapped[datetime | None]
    signed_up_at: Mapped[datetime | None]
    converted_at: Mapped[datetime | None]
    signup_told_at: Mapped[datetime | None]
    conversion_told_at: Mapped[datetime | None]


class User(Base):
    """Someone who signs in (sopflow/identity): their role, the rep they work as (reps and
    supervisors: a rep id of the teams file) and their password's argon2id hash (None: API
    tokens only)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))  # sopflow.principals.Role
    rep_id: Mapped[str | None] = mapped_column(ForeignKey("reps.id"))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiToken(Base):
    """A user's API token, kept as the SHA-256 of the token only (it is shown once)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(8))  # its last characters, to tell tokens apart
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class BrowserSession(Base):
    """A signed-in browser: keyed by the SHA-256 of the random id in its cookie, so a copy of
    the table signs nobody in; deleting the row signs the browser out."""

    __tablename__ = "browser_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))  # the token its forms must carry
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
