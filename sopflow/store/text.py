"""Text as the database can keep it. PostgreSQL refuses a NUL character and a string longer than
its VARCHAR column (SQLite takes both), and no driver encodes a lone surrogate: left to the
database, such input fails the same way on every retry. A writer either refuses it up front as
bad input (`checked`: 422) or keeps what fits (`fitted`), whichever loses less."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import String
from sqlalchemy.orm import QueryableAttribute

from sopflow.errors import SopflowError

Text = TypeVar("Text", str, str | None)


def length(column: QueryableAttribute[Any]) -> int:
    """The column's VARCHAR length: the models are the one place limits are written."""
    kind = column.type
    assert isinstance(kind, String) and kind.length is not None, f"{column} has no length"
    return kind.length


def unstorable(value: str) -> str | None:
    """Why no text column can store `value` (a NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if not value.isascii() and _unencodable(value):
        return "is not valid Unicode text (a lone surrogate)"
    return None


def problem(value: str, column: QueryableAttribute[Any]) -> str | None:
    """Why `value` cannot be stored in `column` as it is, or None."""
    if why := unstorable(value):
        return why
    if len(value) > (limit := length(column)):
        return f"is longer than {limit} characters"
    return None


def checked(
    value: Text,
    column: QueryableAttribute[Any],
    what: str,
    error: Callable[[str], SopflowError] = SopflowError,
) -> Text:
    """`value` unchanged, or `error` naming `what` is wrong with it (before any write)."""
    if value is not None and (why := problem(value, column)):
        raise error(f"{what} {why}")
    return value


def fitted(value: Text, column: QueryableAttribute[Any]) -> Text:
    """`value` as close as it can be kept: NULs dropped, lone surrogates replaced, cut to the
    column's length. For records where a cut value beats none (an opt-out, an audit line)."""
    if value is None:
        return None
    value = value.replace("\x00", "")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[: length(column)]


def _unencodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
