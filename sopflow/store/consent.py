"""Consent, opt-outs and do-not-contact lists, and the facts the touch gate needs about a contact.

An opt-out on one channel is an opt-out on every channel unless the contact said otherwise
(`only` channels given explicitly). The latest event received per channel decides: the order
is sopflow's, never the sender's claimed time, so a STOP beats every grant received before it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import QueryableAttribute, Session

from sopflow.compliance.gate import ContactFacts, Touch
from sopflow.errors import SopflowError, read_user_file
from sopflow.limits import year_problem
from sopflow.phones import e164
from sopflow.sop.schema import CHANNELS
from sopflow.store.contacts import locked_contact
from sopflow.store.models import ConsentEvent, DoNotContact, Run, StepEvent
from sopflow.store.text import checked, fitted

INTERNAL_LIST = "internal"


def _now() -> datetime:
    return datetime.now(UTC)


def check_channels(channels: Sequence[str]) -> list[str]:
    """The channels of a consent event, checked: "all" or any of the SOP language's channels."""
    unknown = sorted(set(channels) - {"all", *CHANNELS})
    if unknown or not channels:
        raise SopflowError(
            f"unknown channel {unknown[0] if unknown else ''!r}: "
            f"use all, {', '.join(CHANNELS[:-1])} or {CHANNELS[-1]}"
        )
    return list(channels)


def _events(contact_id: str) -> Select[ConsentEvent]:
    """A contact's consent events in the order sopflow received them."""
    return (
        select(ConsentEvent).where(ConsentEvent.contact_id == contact_id).order_by(ConsentEvent.id)
    )


def _refuse_unstorable(value: str | None, column: QueryableAttribute[Any]) -> str | None:
    return checked(value, column, column.key)


class ConsentBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        contact_id: str,
        action: str,
        *,
        channels: Sequence[str] = ("all",),
        method: str,
        at: datetime | None = None,
        disclosure_text: str | None = None,
        disclosure_version: str | None = None,
        actor: str | None = None,
    ) -> bool:
        """Append a grant or revoke. False when it changes nothing (a repeated STOP): the first
        time is kept. Keeps contacts.opted_out_at = since when every channel is opted out.

        It takes effect after every event received before it, whatever `at` it claims.
        Text the database cannot keep (too long, NUL characters): a revoke is recorded with it
        cut and cleaned, as losing an opt-out is worse than a clipped `method`; a grant is
        refused (SopflowError) before anything is written, as consent evidence must be exact.
        A contact id that cannot be stored, or an `at` whose year is not 1900 to 2200, is
        refused either way."""
        if action not in ("grant", "revoke"):
            raise SopflowError(f"consent action {action!r}: use grant or revoke")
        check_channels(channels)
        checked(contact_id, ConsentEvent.contact_id, "contact id")
        if at is not None and (why := year_problem(at)):  # it would overflow converting to UTC
            raise SopflowError(f"consent time {at.isoformat()}: {why}")
        keep = fitted if action == "revoke" else _refuse_unstorable
        received = _now()
        row = ConsentEvent(
            contact_id=contact_id,
            action=action,
            channels=list(channels),
            at=at or received,
            method=keep(method, ConsentEvent.method),
            disclosure_text=keep(disclosure_text, ConsentEvent.disclosure_text),
            disclosure_version=keep(disclosure_version, ConsentEvent.disclosure_version),
            actor=keep(actor, ConsentEvent.actor),
            received_at=received,
        )
        with Session(self.engine) as session, session.begin():
            # The contact's row lock makes its consent events take turns: ids follow receipt
            # (and two first events of a new contact both land: locked_contact).
            contact = locked_contact(session, contact_id, received)
            before = self._state(session, contact_id)
            covered = CHANNELS if "all" in channels else tuple(channels)
            if all(before.get(c, ("", received))[0] == action for c in covered):
                return False
            session.add(row)
            session.flush()
            after = self._state(session, contact_id)
            revoked = [after[c][1] for c in CHANNELS if after.get(c, ("", received))[0] == "revoke"]
            # Out of everything since the last channel closed (None: some channel is open).
            contact.opted_out_at = max(revoked) if len(revoked) == len(CHANNELS) else None
        return True

    @staticmethod
    def _state(session: Session, contact_id: str) -> dict[str, tuple[str, datetime]]:
        """Per channel: the action in force and since when. Events apply in the order received;
        an event is in force from the time it claims, or from its receipt if it claims a later one."""
        state: dict[str, tuple[str, datetime]] = {}
        for event in session.scalars(_events(contact_id)):
            since = min(event.at, event.received_at)
            for channel in CHANNELS if "all" in event.channels else event.channels:
                if state.get(channel, ("", since))[0] != event.action:  # keep the first time
                    state[channel] = (event.action, since)
        return state

    def opted_out_since(self, contact_id: str, channel: str) -> datetime | None:
        with Session(self.engine) as session:
            action, since = self._state(session, contact_id).get(channel, ("", None))
        return since if action == "revoke" else None

    def current(self, contact_id: str) -> dict[str, dict[str, str]]:
        """Per channel: the action in force and since when (channels never asked: absent)."""
        with Session(self.engine) as session:
            state = self._state(session, contact_id)
        return {c: {"action": a, "since": when.isoformat()} for c, (a, when) in state.items()}

    def history(self, contact_id: str) -> list[ConsentEvent]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(_events(contact_id)))

    # ------------------------------------------------------------ do-not-contact lists
    def add_to_list(self, phones: Iterable[str], list_name: str, source: str | None = None) -> int:
        """Add numbers to a list (all or nothing); returns how many were new. A number that is
        not a valid phone number is refused with its line, a list name the store cannot keep
        up front; `source` (a note: a file, "sms_stop") is kept cut to fit."""
        checked(list_name, DoNotContact.list_name, "list name")
        source = fitted(source, DoNotContact.source)
        normalised = []
        for line, phone in enumerate(phones, start=1):
            number = e164(phone.strip())
            if number is None:
                raise SopflowError(
                    f"line {line}: invalid phone number {phone.strip()!r}: use E.164"
                )
            normalised.append(number)
        added = 0
        with Session(self.engine) as session, session.begin():
            for number in dict.fromkeys(normalised):
                if session.get(DoNotContact, (number, list_name)) is None:
                    session.add(
                        DoNotContact(
                            phone=number, list_name=list_name, source=source, added_at=_now()
                        )
                    )
                    added += 1
        return added

    def import_list(self, path: Path, list_name: str) -> int:
        """A CSV whose first column is the phone number (a header row is skipped)."""
        lines = io.StringIO(read_user_file(path), newline="")
        rows = [row[0] for row in csv.reader(lines) if row and row[0].strip()]
        if rows and e164(rows[0].strip()) is None and not any(ch.isdigit() for ch in rows[0]):
            rows = rows[1:]  # a header
        return self.add_to_list(rows, list_name, source=str(path))

    def listed(self, phone: str | None) -> str | None:
        number = e164(phone) if phone else None
        if number is None:
            return None
        with Session(self.engine) as session:
            return session.scalars(
                select(DoNotContact.list_name)
                .where(DoNotContact.phone == number)
                .order_by(DoNotContact.list_name)
            ).first()

    # ------------------------------------------------------------ what the gate needs
    def facts(
        self, contact_id: str, phone: str | None, at: datetime, lookback: timedelta
    ) -> ContactFacts:
        with Session(self.engine) as session:
            state = self._state(session, contact_id)
            touches = [
                Touch(executed_at, channel or "", sop_id)
                for executed_at, channel, sop_id in session.execute(
                    select(StepEvent.executed_at, StepEvent.channel, Run.sop_id)
                    .join(Run, Run.workflow_id == StepEvent.workflow_id)
                    .where(
                        Run.contact_id == contact_id,
                        StepEvent.kind.in_(("send", "call", "assign")),
                        StepEvent.channel.is_not(None),
                        StepEvent.executed_at > at - lookback,
                    )
                )
            ]
        return ContactFacts(
            opted_out={c: when for c, (action, when) in state.items() if action == "revoke"},
            consented=frozenset(c for c, (action, _) in state.items() if action == "grant"),
            do_not_contact=self.listed(phone),
            touches=touches,
        )
