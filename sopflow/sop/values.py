"""Small value types of the SOP language: durations ("30m", "1d 2h", "-1d") and clock times ("18:00").

They parse from the forms ops people write and serialise to one canonical form, so two
SOPs that mean the same compile to the same plan digest.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)\s*([wdhms])")
_DURATION = re.compile(r"^([+-])?\s*((?:\d+\s*[wdhms]\s*)+)$")


def parse_duration(value: Any) -> timedelta:
    """Parse "30m", "1d 2h" or "-1d"; a number without a unit is an error.

    A bare `30` used to mean 30 seconds, which no ops person means when writing
    `due_within: 30`; the JSON Schema has always required a unit, so the loader does too.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        hint = (
            f"write {int(value)}m, {int(value)}s or {int(value)}h"
            if float(value).is_integer()
            else "write whole units, e.g. 90m or 1h 30m"
        )
        raise ValueError(
            f"invalid duration {value!r}: a duration needs a unit (w, d, h, m, s); {hint}"
        )
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: write e.g. 30m, 2h, 1d 12h")
    match = _DURATION.match(value.strip().lower())
    if not match:
        raise ValueError(
            f"invalid duration {value!r}: use a number and a unit (w, d, h, m, s), e.g. 30m, 2h, 1d 12h"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(match.group(2)))
    return timedelta(seconds=-seconds if match.group(1) == "-" else seconds)


def format_duration(delta: timedelta) -> str:
    """Canonical form: "-1d2h30m"; "0s" for zero."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def parse_clock(value: Any) -> time:
    """Parse a local wall-clock time "HH:MM" (24-hour)."""
    if isinstance(value, time):
        return value
    # YAML 1.1 reads an unquoted 18:00 as the sexagesimal integer 1080.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    if isinstance(value, str):
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
            return time(int(match.group(1)), int(match.group(2)))
    raise ValueError(f"invalid clock time {value!r}: use 24-hour HH:MM, e.g. 09:00 or 18:30")


def format_clock(value: time) -> str:
    return value.strftime("%H:%M")


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^-?(\d+[wdhms]\s*)+$", "examples": ["30m"]}),
]
ClockTime = Annotated[
    time,
    BeforeValidator(parse_clock),
    PlainSerializer(format_clock, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}$", "examples": ["18:00"]}),
]
