"""Bounds on what clients send that outlive the request: years a date may name, and the size of
event data and of a contact. Standard library only: the gateway, the store and the SopRun
workflow (inside Temporal's sandbox) apply the same numbers.

Sizes are of the value as compact JSON in UTF-8 (`json_size`), the form it travels and is
stored in, whatever spacing the client used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from typing import Any

# Dates a client may give. Outside are typos and placeholders (0001-01-01, 9999-12-31), and the
# arithmetic on them (to UTC, offsets, time zones) overflows: a run would fail for good, a store
# write with a 500.
EARLIEST_YEAR, LATEST_YEAR = 1900, 2200
# One event's (or outcome report's) data: a run merges it into its contact and keeps it in its
# state and history, so one CRM sync cannot swell a run.
EVENT_DATA_BUDGET = 16 * 1024
# A contact, stored or as a run carries it (Temporal refuses payloads of 2 MB; a run's whole
# state travels in each continue-as-new).
CONTACT_BUDGET = 64 * 1024


def year_problem(value: date) -> str | None:
    """Why a client's date or date-time cannot be used (its year is out of range), or None."""
    if EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        return None
    return f"the year must be {EARLIEST_YEAR} to {LATEST_YEAR}"


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON in UTF-8."""
    return len(_item(value))


def size_problem(value: Any, budget: int) -> str | None:
    """Why `value` is too large for `budget` bytes of JSON, or None."""
    size = json_size(value)
    if size <= budget:
        return None
    return f"{size} bytes as JSON, more than the {budget} ({budget // 1024} KiB) allowed"


def fitting(
    contact: Mapping[str, Any], data: Mapping[str, Any], budget: int = CONTACT_BUDGET
) -> tuple[dict[str, Any], list[str]]:
    """The part of `data` that merges into `contact` within `budget`, key by key in order, and
    the keys left out. A key the contact has already is replaced, so an update of the same
    fields keeps fitting. Linear: each item is measured once."""
    sizes = {key: len(_item(key)) + 1 + len(_item(value)) for key, value in contact.items()}
    total = _object_size(sizes)
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        size = len(_item(key)) + 1 + len(_item(value))
        trial = {**sizes, key: size}
        if (trial_total := _object_size(trial)) <= budget or trial_total <= total:
            sizes, total, kept[key] = trial, trial_total, value
        else:
            dropped.append(key)
    return kept, dropped


def _object_size(item_sizes: Mapping[str, int]) -> int:
    """Bytes of `{"k":v,...}` from the bytes of each `"k":v`."""
    return 2 + sum(item_sizes.values()) + max(len(item_sizes) - 1, 0)


def _item(value: Any) -> bytes:
    # default=str: a date a shell put in; surrogatepass: measured, never refused, here.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "surrogatepass")
