"""Contacts imported from a CSV or JSON Lines file, or the API's list, checked in full before the
store changes. Every problem is reported as `FILE:LINE: field: why`; by default nothing is written
if any line is bad, with `skip_invalid` the good lines are. The checks are the ones every contact
passes (normalise_contact, the store's text and budget checks, the gateway's field checks, the
dates deployed SOPs read), applied field by field so one line reports all its problems.
The files are read by sopflow/contact_files.py, the store written by sopflow/store/imports.py.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine

from sopflow.contact_files import SHOWN, ContactImportError, LineProblem, Raw, Unreadable
from sopflow.enrolment import check_dates, normalise_contact
from sopflow.errors import InvalidContactError
from sopflow.gateway.inputs import Clean, ClientDatetime
from sopflow.gateway.inputs import check_json as check_json_value
from sopflow.sop.plan import Plan
from sopflow.sop.schema import Sop
from sopflow.store.imports import (
    Activity,
    ContactLine,
    Imported,
    ImportStopped,
    over_budget,
    write_all,
)
from sopflow.store.repository import CONTACT_COLUMNS
from sopflow.store.text import unstorable

if TYPE_CHECKING:  # the CLI imports rich itself, on a terminal only
    import rich.progress

BATCH = 1000  # contacts per transaction
CHECKED = ("phone", "email", "timezone", "owner", "tags")  # what normalise_contact checks
Stage = Literal["check", "write"]


@dataclass
class Report:
    imported: Imported
    skipped: list[LineProblem] = field(default_factory=list)

    def summary(self, source: str) -> str:
        done = self.imported
        return (
            f"imported {done.contacts} contacts ({done.new} new, {done.updated} updated), "
            f"{done.purchases} purchases, {done.visits} visits from {source}"
        )


class Progress:
    """What the CLI's progress bar hears; this one says nothing."""

    def start(self, stage: Stage, total: int) -> None:
        """`stage` begins, with `total` lines (check) or contacts (write) to go."""

    def advance(self, stage: Stage, count: int) -> None:
        """`count` more lines checked or contacts written."""


class BarProgress(Progress):
    """A rich progress bar, a task per stage (the CLI's, on a terminal)."""

    def __init__(self, bar: rich.progress.Progress) -> None:
        self.bar = bar
        self.tasks: dict[Stage, rich.progress.TaskID] = {}

    def start(self, stage: Stage, total: int) -> None:
        match stage:
            case "check":
                what = "checking"
            case "write":
                what = "importing"
            case _:
                assert_never(stage)
        self.tasks[stage] = self.bar.add_task(what, total=total)

    def advance(self, stage: Stage, count: int) -> None:
        self.bar.advance(self.tasks[stage], count)


# ----------------------------------------------------------------------------- checking
class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: ClientDatetime


class PurchaseIn(_Item):
    amount: Decimal = Field(max_digits=18, decimal_places=4, allow_inf_nan=False)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. EUR")
    order_id: Annotated[Clean, Field(min_length=1, max_length=64)] | None = None


class VisitIn(_Item):
    store: Annotated[Clean, Field(min_length=1, max_length=64)] | None = None


def date_fields(plans: Iterable[Plan]) -> list[tuple[str, Sop]]:
    """The contact fields deployed SOPs read as dates, with an SOP that declares each: their
    values are checked as an enrolment checks them, before a run fails on them."""
    found: dict[tuple[str, str], Sop] = {}
    for plan in plans:
        for name, spec in plan.sop.contact_fields.items():
            if spec.type in ("date", "datetime"):
                found.setdefault((name, spec.type), plan.sop)
    return [(name, sop) for (name, _), sop in found.items()]


def check_record(
    raw: dict[str, Any], dates: list[tuple[str, Sop]]
) -> tuple[dict[str, Any], tuple[Activity, ...], list[tuple[str, str]]]:
    """The contact normalised, its activity, and every problem as (field, why)."""
    raw = dict(raw)
    purchases, visits = raw.pop("purchases", None), raw.pop("visits", None)
    given = {k: v for k, v in raw.items() if v is not None and v != ""}
    problems: list[tuple[str, str]] = []
    try:
        contact = normalise_contact(given)  # the usual case: one call
    except InvalidContactError:
        contact = _by_field(given, problems)  # it stops at the first problem: find them all
    prefix = f"contact {contact['id']!r}: "  # normalise_contact's, said by the line already
    for name in ("id", "owner"):  # normalise_contact bounds their length, not what they hold
        if isinstance(value := contact.get(name), str) and (why := unstorable(value)):
            problems.append((name, why))
    fields = {k: v for k, v in contact.items() if k not in ("id", *CONTACT_COLUMNS)}
    try:
        check_json_value(fields, "", 0)  # the usual case: one call
    except ValueError:
        for name, value in fields.items():
            problems.extend(_json_problems(name, value))
    for name, sop in dates:
        if name in given:
            try:
                check_dates(sop, {"id": contact["id"], name: given[name]})
            except InvalidContactError as exc:
                problems.append((name, str(exc).removeprefix(prefix)))
    activity = [
        *_activity("purchase", purchases, PurchaseIn, problems),
        *_activity("visit", visits, VisitIn, problems),
    ]
    return contact, tuple(activity), problems


def _by_field(given: dict[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any]:
    """normalise_contact field by field: every problem of the line, the good fields normalised.
    A bad id is replaced by a stand-in so the other fields are still checked."""
    try:
        contact_id = normalise_contact({"id": given.get("id")})["id"]
    except InvalidContactError as exc:
        problems.append(("id", str(exc)))
        contact_id = "-"
    contact = {**given, "id": contact_id}
    prefix = f"contact {contact_id!r}: "
    for name in CHECKED:
        if name in given:
            try:
                contact[name] = normalise_contact({"id": contact_id, name: given[name]})[name]
            except InvalidContactError as exc:
                problems.append((name, str(exc).removeprefix(prefix)))
    return contact


def _json_problems(name: str, value: Any) -> list[tuple[str, str]]:
    """The gateway's checks of a contact field (text storable and not too long, no NaN, not
    nested too deep, a sane name), as (field, why)."""
    try:
        check_json_value({name: value}, "", 0)
    except ValueError as exc:
        message = str(exc)
        if message.startswith(inside := f".{name}"):  # the value, or something within it
            path, _, why = message[len(inside) :].partition(": ")
            return [(name + path, why)]
        return [("contact", message.removeprefix(": "))]  # the field's name
    return []


def _activity(
    kind: Literal["purchase", "visit"],
    items: Any,
    model: type[PurchaseIn] | type[VisitIn],
    problems: list[tuple[str, str]],
) -> list[Activity]:
    name = f"{kind}s"
    if items is None:
        return []
    if not isinstance(items, list):
        problems.append((name, f"must be a list of objects, not a {type(items).__name__}"))
        return []
    found: list[Activity] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        try:
            parsed = model.model_validate(item)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(where, exc, list(model.model_fields)))
            continue
        activity = _as_activity(kind, parsed)
        if (first := seen.setdefault(activity.key, index)) != index:
            same = "order_id" if activity.key.startswith("order:") else "time"
            problems.append((where, f"the same {kind} as {name}[{first}] (same {same})"))
            continue
        found.append(activity)
    return found


def _as_activity(kind: Literal["purchase", "visit"], parsed: PurchaseIn | VisitIn) -> Activity:
    match kind:
        case "purchase":
            assert isinstance(parsed, PurchaseIn)
            return Activity(kind, parsed.at, parsed.amount, parsed.currency, parsed.order_id)
        case "visit":
            assert isinstance(parsed, VisitIn)
            return Activity(kind, parsed.at, store=parsed.store)
        case _:
            assert_never(kind)


def _pydantic_problems(where: str, exc: ValidationError, known: list[str]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        match error["type"]:
            case "value_error" if isinstance(cause, ValueError):  # inputs.py names the field
                why = str(cause).removeprefix(f"{error['loc'][-1]}: ")
            case "decimal_type":
                why = f"a number such as 12.50, not a {type(error['input']).__name__}"
            case "timezone_aware":
                why = "needs a UTC offset, e.g. 2026-03-01T10:30:00Z or …+01:00"
            case "extra_forbidden":
                why = f"unknown key (known: {', '.join(known)})"
            case _:
                why = error["msg"]
        problems.append((where + path, why))
    return problems


class Spool:
    """Checked lines kept in a temporary file, a batch at a time: memory stays flat however
    large the file, and nothing is parsed twice."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.pending: list[ContactLine] = []
        self.count = 0

    def add(self, line: ContactLine) -> None:
        self.pending.append(line)
        self.count += 1
        if len(self.pending) >= BATCH:
            self._flush()

    def batches(self, leave_out: AbstractSet[int] = frozenset()) -> Iterator[list[ContactLine]]:
        self._flush()
        self.file.seek(0)
        while True:
            try:
                batch: list[ContactLine] = pickle.load(self.file)  # our own file
            except EOFError:
                return
            yield [line for line in batch if line.line not in leave_out]

    def _flush(self) -> None:
        if self.pending:
            pickle.dump(self.pending, self.file, pickle.HIGHEST_PROTOCOL)
            self.pending = []


def check_all(
    records: Iterable[Raw],
    source: str,
    plans: Iterable[Plan],
    spool: Spool,
    progress: Progress,
    noun: str = "line",
) -> list[LineProblem]:
    """Check every record: the good ones go to `spool`, the problems are returned. `noun`: what
    a record's number counts (a file's lines, the API's items)."""
    dates = date_fields(plans)
    problems: list[LineProblem] = []
    first_line: dict[str, int] = {}
    reached = 0
    for line, record in records:
        progress.advance("check", max(line - reached, 0))
        reached = max(reached, line)
        if isinstance(record, Unreadable):
            problems.append(LineProblem(source, line, record.field, record.why))
            continue
        contact, activity, found = check_record(record, dates)
        if not any(name == "id" for name, _ in found):
            first = first_line.setdefault(contact["id"], line)
            if first != line:
                found.append(("id", f"{contact['id']!r} is also on {noun} {first}"))
        if found:
            problems.extend(LineProblem(source, line, name, why) for name, why in found)
        else:
            spool.add(ContactLine(line, contact, activity))
    return problems


def import_contacts(
    engine: Engine,
    records: Iterable[Raw],
    source: str,
    plans: Iterable[Plan],
    skip_invalid: bool = False,
    progress: Progress | None = None,
    noun: str = "line",
) -> Report:
    """Check everything, then write in batches of BATCH. Raises ContactImportError (nothing
    written) when a line is bad, unless `skip_invalid`: then the good lines are written and the
    bad ones reported in `Report.skipped`. The caller starts `progress`'s check stage (it knows
    how many lines the file has)."""
    progress = progress or Progress()
    with tempfile.TemporaryFile() as file:
        spool = Spool(file)
        problems = check_all(records, source, plans, spool, progress, noun)
        late = [  # over the budget, merged with what is stored (new ones too): still read only
            LineProblem(source, line, "contact", why)
            for batch in spool.batches()
            for line, why in over_budget(engine, batch)
        ]
        problems = sorted(problems + late)
        if problems and not skip_invalid:
            raise ContactImportError(problems)
        left_out = {p.line for p in late}  # the others were never spooled
        progress.start("write", spool.count - len(left_out))
        try:
            imported = write_all(
                engine, spool.batches(left_out), lambda count: progress.advance("write", count)
            )
        except ImportStopped as exc:  # named by the file, as the checks name their lines
            raise ImportStopped(exc.line, exc.reason, exc.written, source) from None
    return Report(imported, problems)


def api_answer(report: Report) -> dict[str, Any]:
    """The API's answer to an import: the counts, and the items left out (`skip_invalid`)."""
    done = report.imported
    return {
        "contacts": done.contacts,
        "new": done.new,
        "updated": done.updated,
        "purchases": done.purchases,
        "visits": done.visits,
        "skipped": api_problems(report.skipped),
        "skipped_count": len(report.skipped),
    }


def api_problems(problems: list[LineProblem], shown: int = SHOWN) -> list[dict[str, Any]]:
    """Problems as FastAPI words its own 422s (`loc`, `msg`, `type`), the first `shown`."""
    return [
        {"loc": ["body", "contacts", p.line, p.field], "msg": p.why, "type": "contact_import"}
        for p in problems[:shown]
    ]
