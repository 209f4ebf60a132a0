"""From an event to enrolments: which deployed SOPs it triggers, for which contact, under which id.

Everything is checked before anything starts, so a bad request changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers

from sopflow.errors import InvalidContactError, InvalidEventError
from sopflow.sop import clock, engine
from sopflow.sop.plan import Plan


@dataclass(frozen=True)
class Enrolment:
    plan: Plan
    workflow_id: str
    contact: dict[str, Any]
    zones: list[str]


def workflow_id(sop_id: str, contact_id: str, key: str) -> str:
    """The business key: Temporal itself rejects a second start of the same enrolment."""
    return f"sop:{sop_id}:{contact_id}:{key}"


def normalise_contact(contact: Mapping[str, Any]) -> dict[str, Any]:
    """A contact with a text id, an E.164 phone and a known time zone, or InvalidContactError."""
    result = dict(contact)
    contact_id = result.get("id")
    if (
        not isinstance(contact_id, str | int)
        or isinstance(contact_id, bool)
        or str(contact_id) == ""
    ):
        raise InvalidContactError("`id` is required (the contact's unique id in your CRM)")
    result["id"] = str(contact_id)
    phone = result.get("phone")
    if phone not in (None, ""):
        try:
            parsed = phonenumbers.parse(str(phone), None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_valid_number(parsed):
            raise InvalidContactError(
                f"invalid phone number {phone!r}: use E.164, e.g. +12125550123", result["id"]
            )
        result["phone"] = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    zone_name = result.get("timezone")
    if zone_name not in (None, ""):
        try:
            clock.zone(str(zone_name))
        except (ValueError, KeyError):
            raise InvalidContactError(f"unknown time zone {zone_name!r}", result["id"]) from None
    tags = result.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidContactError("`tags` must be a list of strings", result["id"])
    return result


def plan_enrolments(
    plans: Iterable[Plan],
    event_type: str,
    contact: Mapping[str, Any],
    data: Mapping[str, Any],
    key: str,
) -> list[Enrolment]:
    """The enrolments an event causes. Raises if no SOP listens to it or the contact is unfit."""
    plans = list(plans)
    listening = [p for p in plans if event_type in p.sop.entry.events]
    if not listening:
        known = sorted({e for p in plans for e in p.sop.entry.events})
        raise InvalidEventError(
            f"no deployed SOP is triggered by {event_type!r} (known events: {', '.join(known) or 'none'})"
        )
    person = normalise_contact(contact)
    found = []
    for plan in listening:
        if not engine.entry_matches(plan, event_type, person, data):
            continue
        missing = [
            n
            for n, f in plan.sop.contact_fields.items()
            if f.required and person.get(n) in (None, "")
        ]
        if missing:
            raise InvalidContactError(
                f"SOP {plan.sop.id!r} needs {', '.join(missing)}", person["id"]
            )
        zones, _ = clock.contact_zones(person, plan.sop.policy.timezone)
        found.append(Enrolment(plan, workflow_id(plan.sop.id, person["id"], key), person, zones))
    return found
