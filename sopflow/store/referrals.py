"""Referrals in the store (table `referrals`): visits of a referrer's landing page, the people it
brought who signed up, their first purchase after that, and which of these the referrer's runs
have been told of; and the referral funnel read from them and from the runs.

- A visit is counted once per visitor and referrer: the landing page keeps a random visitor id
  in a cookie (and in its form), and (referrer, visitor) is unique.
- A sign-up creates the referred contact, or fills in what a known one lacks (found by phone: a
  public form never overwrites what the CRM holds), and records the referrer in the same
  transaction, or nothing at all. A contact has one referrer, the first: the same sign-up
  again records nothing new; another referrer, or the contact itself, is refused.
- A conversion is the referred contact's first purchase after the sign-up: an `order.created`
  event (`convert`), or a purchase imported with the contacts (`convert_purchases`).
- `pending` lists the sign-ups and conversions the referrer's runs have not been told of yet;
  the gateway tells them (sopflow/gateway/referral_pages.py) and marks them `told`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, assert_never, get_args

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sopflow.errors import ConflictError, NotFoundError, SopflowError
from sopflow.referrals import Cohort, Funnel, Period, ReferrerStats, asking_steps, funnel
from sopflow.sop.plan import Plan
from sopflow.sop.schema import MessageChannel
from sopflow.store.contacts import check_budget, locked_contact
from sopflow.store.models import Contact, ContactActivity, Referral, Run, SopVersion, StepEvent
from sopflow.store.repository import CONTACT_COLUMNS
from sopflow.store.text import fitted

VISITOR = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): what we hand out
NEW_ID_PREFIX = "ref-"  # a referred contact the CRM does not know yet: ref-<hash of the phone>
News = Literal["signed_up", "converted"]


class SelfReferral(SopflowError):
    def __init__(self) -> None:
        super().__init__("this is the referrer's own phone number: nobody can refer themselves")


class AlreadyReferred(ConflictError):
    def __init__(self) -> None:
        super().__init__(
            "this person was referred by someone else first: a contact has one referrer"
        )


@dataclass(frozen=True)
class Visit:
    visitor: str  # the id the page keeps in its cookie
    counted: bool  # False: this visitor had already come through this referrer's link


@dataclass(frozen=True)
class SignUp:
    referral_id: int
    referred_id: str
    new: bool  # False: the same sign-up again; nothing was recorded


@dataclass(frozen=True)
class Announcement:
    """A sign-up or a conversion the referrer's runs must hear of, as an event to them."""

    referral_id: int
    news: News
    referrer_id: str
    referred_id: str
    referred_name: str | None

    @property
    def event_type(self) -> str:
        match self.news:
            case "signed_up":
                return "referral.signed_up"
            case "converted":
                return "referral.converted"
            case _:
                assert_never(self.news)

    @property
    def idempotency_key(self) -> str:
        """One key per referral and news: telling again (a retry, two gateways) is a replay."""
        return f"sopflow:{self.event_type}:{self.referral_id}"

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"referred_contact_id": self.referred_id}
        if self.referred_name:
            data["referred_name"] = self.referred_name
        return data


def new_contact_id(phone: str) -> str:
    """The id of a referred contact the CRM does not know: the same for the same phone, so a
    sign-up sent twice (or twice at once) finds one contact."""
    return NEW_ID_PREFIX + hashlib.sha256(phone.encode()).hexdigest()[:20]


class ReferralBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def known(self, contact_id: str) -> bool:
        with Session(self.engine) as session:
            return session.get(Contact, contact_id) is not None

    def first_name(self, contact_id: str) -> str | None:
        with Session(self.engine) as session:
            fields = session.scalar(select(Contact.fields).where(Contact.id == contact_id))
        name = (fields or {}).get("first_name")
        return name if isinstance(name, str) and name else None

    def contact_with_phone(self, phone: str) -> str | None:
        """The contact a sign-up with this (E.164) phone is: the first one known with it."""
        with Session(self.engine) as session:
            return session.scalars(
                select(Contact.id).where(Contact.phone == phone).order_by(Contact.id).limit(1)
            ).first()

    # ------------------------------------------------------------------ visits and sign-ups
    def visit(
        self, referrer_id: str, visitor: str | None, came_from: str | None, now: datetime
    ) -> Visit:
        """Count a visit of the referrer's page once per visitor; a visitor without a usable
        id gets a new one. NotFoundError (nothing written) when the referrer is not a contact."""
        if not self.known(referrer_id):
            raise NotFoundError(f"unknown referrer {referrer_id!r}")
        if visitor is None or not VISITOR.fullmatch(visitor):
            visitor = secrets.token_urlsafe(16)
        source = fitted(came_from, Referral.came_from) if came_from else None
        row = Referral(referrer_id=referrer_id, visitor=visitor, came_from=source, visited_at=now)
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # (referrer, visitor) is there: a repeat visit
                return Visit(visitor, False)
        return Visit(visitor, True)

    def sign_up(
        self, referrer_id: str, contact: dict[str, Any], visitor: str | None, now: datetime
    ) -> SignUp:
        """Record `contact` (normalised, with its id) as referred by `referrer_id`, in one
        transaction: the contact created or filled in, the referral attached to this visitor's
        visit (else a row of its own). The same sign-up again changes nothing; SelfReferral or
        AlreadyReferred (another referrer came first) change nothing either."""
        referred_id = contact["id"]
        if visitor is not None and not VISITOR.fullmatch(visitor):
            visitor = None  # not an id this page handed out: no visit of ours to join
        with Session(self.engine) as session:
            referrer = session.get(Contact, referrer_id)
        if referrer is None:
            raise NotFoundError(f"unknown referrer {referrer_id!r}")
        # By id, or by number: another contact of the CRM may share the referrer's phone.
        if referred_id == referrer_id or (
            referrer.phone and referrer.phone == contact.get("phone")
        ):
            raise SelfReferral()
        try:
            with Session(self.engine) as session, session.begin():
                # First statement: the contact's row, locked, so sign-ups of one person (two
                # clicks, two referrers' pages) take turns from here on both databases.
                person = locked_contact(session, referred_id, now)
                first = session.scalars(
                    select(Referral).where(Referral.referred_id == referred_id)
                ).first()
                if first is not None:
                    if first.referrer_id != referrer_id:
                        raise AlreadyReferred()
                    return SignUp(first.id, referred_id, False)
                _fill_in(person, contact, now)
                own = None
                if visitor is not None:
                    own = session.scalars(
                        select(Referral)
                        .where(Referral.referrer_id == referrer_id, Referral.visitor == visitor)
                        .with_for_update()
                    ).first()
                if own is not None and own.referred_id is None:
                    own.referred_id, own.signed_up_at = referred_id, now
                    row = own
                else:  # no visit recorded for it, or this device's visit brought someone else
                    row = Referral(
                        referrer_id=referrer_id,
                        visitor=visitor if own is None else None,
                        visited_at=now if own is None else None,  # a device's visit counts once
                        referred_id=referred_id,
                        signed_up_at=now,
                    )
                    session.add(row)
                session.flush()
                return SignUp(row.id, referred_id, True)
        except IntegrityError:  # a form sent twice at once from one device: one of them won
            raise ConflictError(
                "another sign-up from this page was being recorded at the same moment: "
                "send the form again"
            ) from None

    # ------------------------------------------------------------------ conversions
    def convert(self, referred_id: str, at: datetime) -> bool:
        """The referred contact bought (an order.created event): True when this is their
        referral's conversion, False when they have no referral or it converted already."""
        with Session(self.engine) as session, session.begin():
            done = session.scalar(
                update(Referral)
                .where(
                    Referral.referred_id == referred_id,
                    Referral.signed_up_at.is_not(None),
                    Referral.converted_at.is_(None),
                )
                .values(converted_at=at)
                .returning(Referral.id)
            )
        return done is not None

    def convert_purchases(self) -> int:
        """Referrals not yet converted whose contact has a purchase (from the contacts import)
        at or after the sign-up convert at the first such purchase; how many did."""
        first = (
            select(Referral.id, func.min(ContactActivity.at))
            .join(ContactActivity, ContactActivity.contact_id == Referral.referred_id)
            .where(
                Referral.converted_at.is_(None),
                Referral.signed_up_at.is_not(None),
                ContactActivity.kind == "purchase",
                ContactActivity.at >= Referral.signed_up_at,
            )
            .group_by(Referral.id)
        )
        converted = 0
        with Session(self.engine) as session, session.begin():
            for referral_id, at in session.execute(first).all():
                done = session.scalar(
                    update(Referral)
                    .where(Referral.id == referral_id, Referral.converted_at.is_(None))
                    .values(converted_at=at)
                    .returning(Referral.id)
                )
                converted += done is not None
        return converted

    # ------------------------------------------------------------------ telling the runs
    def pending(self, limit: int = 100) -> list[Announcement]:
        """Sign-ups and conversions the referrer's runs have not been told of, oldest first
        (a referral's sign-up before its conversion)."""
        untold = or_(
            Referral.signup_told_at.is_(None),
            and_(Referral.converted_at.is_not(None), Referral.conversion_told_at.is_(None)),
        )
        query = (
            select(Referral, Contact.fields)
            .join(Contact, Contact.id == Referral.referred_id)
            .where(Referral.signed_up_at.is_not(None), untold)
            .order_by(Referral.id)
            .limit(limit)
        )
        found: list[Announcement] = []
        with Session(self.engine) as session:
            for row, fields in session.execute(query).all():
                name = (fields or {}).get("first_name")
                name = name if isinstance(name, str) and name else None
                assert row.referred_id is not None  # signed up
                news: list[News] = []
                if row.signup_told_at is None:
                    news.append("signed_up")
                if row.converted_at is not None and row.conversion_told_at is None:
                    news.append("converted")
                found += [
                    Announcement(row.id, n, row.referrer_id, row.referred_id, name) for n in news
                ]
        return found

    def told(self, announcement: Announcement, at: datetime) -> None:
        """The referrer's runs have been told (or nothing listens for the event)."""
        match announcement.news:
            case "signed_up":
                column = Referral.signup_told_at
            case "converted":
                column = Referral.conversion_told_at
            case _:
                assert_never(announcement.news)
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(Referral)
                .where(Referral.id == announcement.referral_id, column.is_(None))
                .values({column: at})
            )

    # ------------------------------------------------------------------ reading
    def referral_of(self, referred_id: str) -> Referral | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(
                select(Referral).where(Referral.referred_id == referred_id)
            ).first()

    def funnel(self, period: Period, since: datetime | None = None) -> Funnel:
        """The referral funnel per period (sopflow.referrals.funnel): contacts enrolled in an
        SOP whose texts carry the referral link, those an ask reached, and what their links
        brought. `since`: cohorts enrolled from then on (and, outside the funnel, referrers
        no ask reached whose links were first visited from then on)."""
        with Session(self.engine) as session:
            asking = _asking_versions(session)
            cohorts = _cohorts(session, asking)
            stats = {
                referrer: ReferrerStats(visits, signed_up, converted, first_at)
                for referrer, visits, signed_up, converted, first_at in session.execute(
                    select(
                        Referral.referrer_id,
                        func.count(Referral.visited_at),
                        func.count(Referral.signed_up_at),
                        func.count(Referral.converted_at),
                        func.min(func.coalesce(Referral.visited_at, Referral.signed_up_at)),
                    ).group_by(Referral.referrer_id)
                )
            }
        return funnel(cohorts, stats, period, since)


def _fill_in(person: Contact, contact: dict[str, Any], now: datetime) -> None:
    """Give the (locked) contact what it lacks of `contact`; keep everything it has."""
    changed = False
    for name in CONTACT_COLUMNS:
        if contact.get(name) not in (None, "") and getattr(person, name) is None:
            setattr(person, name, contact[name])
            changed = True
    fields = dict(person.fields or {})
    for name, value in contact.items():
        if name not in ("id", *CONTACT_COLUMNS) and value not in (None, "") and name not in fields:
            fields[name] = value
            changed = True
    if changed:
        person.fields, person.updated_at = fields, now
        check_budget(person)


def _asking_versions(session: Session) -> dict[tuple[str, int], frozenset[str]]:
    """(SOP, version) -> its steps that send the referral link, for versions that have any."""
    found = {}
    for sop_id, version, plan in session.execute(
        select(SopVersion.sop_id, SopVersion.version, SopVersion.plan)
    ):
        if "referral_" in str(plan) and (steps := asking_steps(Plan.model_validate(plan))):
            found[(sop_id, version)] = steps
    return found


def _cohorts(session: Session, asking: dict[tuple[str, int], frozenset[str]]) -> dict[str, Cohort]:
    """Contact -> their first enrolment in an asking SOP, and whether an ask reached them (a
    text carrying the link was sent: its step event's action is the channel)."""
    if not asking:
        return {}
    runs = or_(*(and_(Run.sop_id == s, Run.version == v) for s, v in asking))
    asks = or_(
        *(
            and_(Run.sop_id == s, Run.version == v, StepEvent.step.in_(sorted(steps)))
            for (s, v), steps in asking.items()
        )
    )
    channels: Sequence[str] = get_args(MessageChannel)
    reached = set(
        session.scalars(
            select(Run.contact_id)
            .distinct()
            .join(StepEvent, StepEvent.workflow_id == Run.workflow_id)
            .where(asks, StepEvent.action.in_(channels))
        )
    )
    return {
        contact_id: Cohort(enrolled_at, contact_id in reached)
        for contact_id, enrolled_at in session.execute(
            select(Run.contact_id, func.min(Run.enrolled_at)).where(runs).group_by(Run.contact_id)
        )
    }
