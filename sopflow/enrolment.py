"""From an event to enrolments: which deployed SOPs it triggers, for which contact, under which id.

Everything is checked before anything starts, so a bad request changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from sopflow.emails import EMAIL_HINT, email_address
from sopflow.errors import InvalidContactError, InvalidEventError
from sopflow.limits import EARLIEST_YEAR as EARLIEST_YEAR  # dates a contact field may hold
from sopflow.limits import LATEST_YEAR as LATEST_YEAR
from sopflow.limits import year_problem
from sopflow.phones import E164_HINT, e164
from sopflow.sop import clock, engine
from sopflow.sop.plan import Plan
from sopflow.sop.protocol import BUILTIN_EVENTS
from sopflow.sop.schema import MAX_CONTACT_ID, Sop, WaitForStep
from sopflow.store.repository import Store
from workflows.contracts import SopRunInput

MAX_OWNER = 64  # a rep id: the store's contacts.owner


@dataclass(frozen=True)
class Enrolment:
    plan: Plan
    workflow_id: str
    contact: dict[str, Any]
    zones: list[str]


def known_events(plans: Iterable[Plan]) -> set[str]:
    """Event types the API accepts: SOP triggers, events runs wait for or are interrupted by,
    and the built-in contact events."""
    known = set(BUILTIN_EVENTS)  # the gateway records these on the contact too
    for plan in plans:
        sop = plan.sop
        known |= set(sop.entry.events) | set(sop.interrupts)
        known |= {e for step in sop.steps if isinstance(step, WaitForStep) for e in step.events}
    return known


@dataclass(frozen=True)
class Started:
    version: int  # the run's SOP version (the first start's, for a duplicate)
    run_id: str  # Temporal's id of the first run
    created: bool  # False: this enrolment already existed


def workflow_id(sop_id: str, contact_id: str, key: str) -> str:
    """The business key: Temporal itself rejects a second start of the same enrolment."""
    return f"sop:{sop_id}:{contact_id}:{key}"


def normalise_contact(contact: Mapping[str, Any]) -> dict[str, Any]:
    """A contact with a text id, an E.164 phone, a valid email and a known time zone, or
    InvalidContactError."""
    result = dict(contact)
    contact_id = result.get("id")
    if (
        not isinstance(contact_id, str | int)
        or isinstance(contact_id, bool)
        or str(contact_id) == ""
    ):
        raise InvalidContactError("`id` is required (the contact's unique id in your CRM)")
    if len(str(contact_id)) > MAX_CONTACT_ID:
        raise InvalidContactError(f"`id` is longer than {MAX_CONTACT_ID} characters")
    result["id"] = str(contact_id)
    addresses = (
        ("phone", e164, "phone number", E164_HINT),
        ("email", email_address, "email", EMAIL_HINT),
    )
    for field, parse, what, hint in addresses:  # the channels' addresses, normalised once
        given = result.get(field)
        if given not in (None, ""):
            if (address := parse(str(given))) is None:
                raise InvalidContactError(f"invalid {what} {given!r}: {hint}", result["id"])
            result[field] = address
    zone_name = result.get("timezone")
    if zone_name not in (None, ""):
        try:
            clock.zone(str(zone_name))
        except (ValueError, KeyError):
            raise InvalidContactError(f"unknown time zone {zone_name!r}", result["id"]) from None
    owner = result.get("owner")
    if owner is not None and (not isinstance(owner, str) or len(owner) > MAX_OWNER):
        raise InvalidContactError(f"`owner` must be a rep id of at most {MAX_OWNER} characters")
    tags = result.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidContactError("`tags` must be a list of strings", result["id"])
    return result


def enrolment_for(plan: Plan, contact: Mapping[str, Any], key: str) -> Enrolment:
    """One SOP for one contact: the contact checked against the SOP, zones resolved."""
    person = normalise_contact(contact)
    missing = [
        n for n, f in plan.sop.contact_fields.items() if f.required and person.get(n) in (None, "")
    ]
    if missing:
        raise InvalidContactError(f"SOP {plan.sop.id!r} needs {', '.join(missing)}", person["id"])
    check_dates(plan.sop, person)
    zones, _ = clock.contact_zones(person, plan.sop.policy.timezone)
    return Enrolment(plan, workflow_id(plan.sop.id, person["id"], key), person, zones)


def _as_date(value: Any) -> date | None:
    """A date or date-time field's value read as the engine reads it (clock._parse_instant,
    the templates' localtime): a date, or ISO 8601 text. None when it is neither."""
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        with suppress(ValueError):
            return datetime.fromisoformat(value)
    return None


def check_dates(sop: Sop, contact: Mapping[str, Any], where: str = "field") -> None:
    """The SOP's date and date-time fields of the contact parse, within sane years: the engine
    reads them later (schedules, conditions, templates), when a bad one fails the run for good.
    `where` names what holds them in the message ("data field": an event's or a report's)."""
    for name, spec in sop.contact_fields.items():
        value = contact.get(name)
        if spec.type not in ("date", "datetime") or value in (None, ""):
            continue
        parsed = _as_date(value)
        if parsed is None:
            raise InvalidContactError(
                f"{where} {name!r} is {value!r}, not an ISO 8601 {spec.type} "
                "(e.g. 2026-03-01 or 2026-03-01T09:30:00+01:00)",
                str(contact.get("id")),
            )
        if why := year_problem(parsed):
            raise InvalidContactError(
                f"{where} {name!r} is {value!r}: {why}", str(contact.get("id"))
            )


def check_data_dates(plans: Iterable[Plan], contact_id: str, data: Mapping[str, Any]) -> None:
    """An event's or an outcome report's data: runs merge it into their contact, so the fields
    any of `plans` reads as dates are checked as a contact's are (a run of any SOP may get it)."""
    for plan in plans:
        check_dates(plan.sop, {**data, "id": contact_id}, "data field")


def check_report_dates(store: Store, workflow_id: str, data: Mapping[str, Any]) -> None:
    """An outcome report's data, against the plan its run is pinned to. A run the store does not
    know is left to Temporal, which answers for it (404)."""
    run = store.run(workflow_id)
    if run is not None and data:
        check_data_dates([store.plan(run.digest)], run.contact_id, data)


async def start_enrolment(
    client: Client,
    enrolment: Enrolment,
    trigger: str,
    trigger_data: Mapping[str, Any],
    task_queue: str,
    variants: Mapping[str, str] | None = None,
) -> Started:
    """Start the run; the same workflow id again starts nothing. `variants`: the arm of each
    split step, assigned before the start (store/splits.py); without them the run hashes."""
    plan = enrolment.plan
    try:
        handle = await client.start_workflow(
            "SopRun",
            SopRunInput(
                plan=plan,
                contact=enrolment.contact,
                zones=enrolment.zones,
                trigger=trigger,
                trigger_data=dict(trigger_data),
                variants=dict(variants or {}),
            ),
            id=enrolment.workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={"version": plan.sop.version},
        )
        return Started(plan.sop.version, handle.first_execution_run_id or "", True)
    except WorkflowAlreadyStartedError:  # the same enrolment again: answer as the first time
        described = await client.get_workflow_handle(enrolment.workflow_id).describe()
        version = int((await described.memo()).get("version", plan.sop.version))
        return Started(version, described.run_id, False)


def plan_enrolments(
    plans: Iterable[Plan],
    event_type: str,
    contact: Mapping[str, Any],
    data: Mapping[str, Any],
    key: str,
) -> list[Enrolment]:
    """The enrolments an event causes (maybe none: a contact event for running runs). Raises if
    no deployed SOP knows the event or the contact is unfit."""
    plans = list(plans)
    known = known_events(plans)
    if event_type not in known:
        raise InvalidEventError(
            f"no deployed SOP uses the event {event_type!r} (known events: {', '.join(sorted(known))})"
        )
    listening = [p for p in plans if event_type in p.sop.entry.events]
    person = normalise_contact(contact)
    check_data_dates(plans, person["id"], data)  # the contact's running runs merge it
    return [
        enrolment_for(plan, person, key)
        for plan in listening
        if engine.entry_matches(plan, event_type, person, data)
    ]
