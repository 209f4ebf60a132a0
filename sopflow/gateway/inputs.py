"""What the API accepts in free-form fields, checked before anything is stored or sent to a run:
no NUL character (PostgreSQL cannot store one), no lone surrogate (JSON can escape one; no
database driver encodes it), no text longer than a field can sensibly be, no NaN or infinity
(Python's JSON parser takes them; JSON cannot carry them on), no object over its size budget
(event data 16 KiB, a contact 64 KiB: sopflow/limits.py), no date-time whose year is outside
1900–2200. A refusal is a 422 naming the field, e.g.
`contact.notes: 2500 characters, more than the 2000 allowed`."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, ValidationInfo

from sopflow.limits import CONTACT_BUDGET, EVENT_DATA_BUDGET, size_problem, year_problem
from sopflow.store.text import unstorable

MAX_TEXT = 2000  # one text value of a contact field or event data
MAX_KEY = 64  # a field name (an SOP's contact fields are identifiers of at most 64)
MAX_DEPTH = 8  # objects and lists nested in contact fields or event data
MAX_METHOD = 40  # how consent was given or withdrawn: the store's consent_events.method


def clean(text: str) -> str:
    if why := unstorable(text):
        raise ValueError(why)
    return text


def check_json(value: Any, where: str, depth: int = 0) -> None:
    """Client JSON the store can keep (the API's data and the contacts import): strings within
    MAX_TEXT and storable, finite numbers, short storable keys, nesting within MAX_DEPTH; else
    a ValueError naming where."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"{where}: {len(value)} characters, more than the {MAX_TEXT} allowed")
        if why := unstorable(value):
            raise ValueError(f"{where}: {why}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a number JSON can carry")
    elif isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_KEY:
                raise ValueError(f"{where}: field name {key[:20]!r}… is longer than {MAX_KEY}")
            if why := unstorable(key):
                raise ValueError(f"{where}: field name {key!r} {why}")
            check_json(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]", depth + 1)


def _checked(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    check_json(value, info.field_name or "value", 0)
    return value


def _within(budget: int) -> AfterValidator:
    def check(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if why := size_problem(value, budget):
            raise ValueError(f"{info.field_name or 'value'}: {why}")
        return value

    return AfterValidator(check)


def _sane_year(value: datetime, info: ValidationInfo) -> datetime:
    # Checked as given: 0001-01-01T00:00:00+05:00 has no UTC time (it overflows converting).
    if why := year_problem(value):
        raise ValueError(f"{info.field_name or 'value'}: {value.isoformat()}: {why}")
    return value


Clean = Annotated[str, AfterValidator(clean)]  # give its length with Field(max_length=…)
JsonObject = Annotated[dict[str, Any], AfterValidator(_checked)]
EventData = Annotated[JsonObject, _within(EVENT_DATA_BUDGET)]  # event or outcome report data
ContactObject = Annotated[JsonObject, _within(CONTACT_BUDGET)]
ClientDatetime = Annotated[AwareDatetime, AfterValidator(_sane_year)]
