"""SQL expressions over one contact field, for SQLite and PostgreSQL: the two keep JSON apart
(`json_type`/`json_extract` against `json_typeof`/`->>`), and this module is where they meet.
Every predicate here is true or false, never NULL, so NOT and OR over them mean what they say
for a contact that lacks the field.

A field is a key of the contact's `fields` (JSON), or one of the columns the store keeps apart
(phone, timezone, owner), which hold text or nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal, assert_never

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Engine,
    Float,
    Numeric,
    and_,
    case,
    cast,
    collate,
    false,
    func,
    literal,
    or_,
)
from sqlalchemy.sql.selectable import FromClause

from sopflow.errors import SopflowError
from sopflow.store.repository import CONTACT_COLUMNS

Dialect = Literal["sqlite", "postgresql"]
# What a text must be to count as a number (CSV imports keep every value as text). Plain
# decimals only: no exponents, no spaces, so SQLite's GLOB can check it as PostgreSQL's regex does.
NUMERIC_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_PG_NUMERIC_TEXT = "^-?[0-9]+(\\.[0-9]+)?$"


def dialect_of(engine: Engine) -> Dialect:
    name = engine.dialect.name
    match name:
        case "sqlite" | "postgresql":
            return name
        case _:
            raise SopflowError(f"segments run on PostgreSQL or SQLite, not {name}")


def sure(condition: ColumnElement[Any]) -> ColumnElement[bool]:
    """`condition`, with NULL (a missing field) read as false."""
    return func.coalesce(condition, false(), type_=Boolean)


def number_literal(dialect: Dialect, value: float | int) -> ColumnElement[Any]:
    """A number to compare with field values: exact (NUMERIC) on PostgreSQL; SQLite compares
    REALs and integers by value."""
    match dialect:
        case "postgresql":
            return literal(Decimal(str(value)), Numeric())
        case "sqlite":
            return literal(value, Float())
        case _:
            assert_never(dialect)


def text_order(dialect: Dialect, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """`value` compared and sorted by code point, as Python and SQLite (BINARY) do. A PostgreSQL
    database with a language collation (en_US, ICU) puts "a" before "B"; code points do not."""
    match dialect:
        case "postgresql":
            return collate(value, "C")
        case "sqlite":
            return value
        case _:
            assert_never(dialect)


class ContactField:
    """One field of the contacts in `contacts` (the table or an alias of it)."""

    def __init__(self, dialect: Dialect, contacts: FromClause, name: str) -> None:
        self.dialect, self.name = dialect, name
        self.column = contacts.c[name] if name in CONTACT_COLUMNS else None
        self.fields = contacts.c.fields
        self.path = f'$."{name}"'  # SQLite's JSON path; the schema keeps quotes out of names

    def _typeof(self) -> ColumnElement[Any]:
        """The JSON type's name (PostgreSQL's or SQLite's words), NULL when absent."""
        match self.dialect:
            case "postgresql":
                return func.json_typeof(self.fields[self.name])
            case "sqlite":
                return func.json_type(self.fields, self.path)
            case _:
                assert_never(self.dialect)

    def _is(self, postgresql: tuple[str, ...], sqlite: tuple[str, ...]) -> ColumnElement[bool]:
        match self.dialect:
            case "postgresql":
                return sure(self._typeof().in_(postgresql))
            case "sqlite":
                return sure(self._typeof().in_(sqlite))
            case _:
                assert_never(self.dialect)

    def present(self) -> ColumnElement[bool]:
        """There, and not null."""
        if self.column is not None:
            return self.column.is_not(None)
        return sure(and_(self._typeof().is_not(None), self._typeof() != "null"))

    def is_text(self) -> ColumnElement[bool]:
        if self.column is not None:
            return self.column.is_not(None)
        return self._is(("string",), ("text",))

    def text(self) -> ColumnElement[Any]:
        """The value as text (meaningful where is_text holds)."""
        if self.column is not None:
            return self.column
        match self.dialect:
            case "postgresql":
                text: ColumnElement[Any] = self.fields[self.name].as_string()
                return text
            case "sqlite":
                return func.json_extract(self.fields, self.path)
            case _:
                assert_never(self.dialect)

    def is_bool(self, value: bool) -> ColumnElement[bool]:
        if self.column is not None:
            return false()
        match self.dialect:
            case "postgresql":
                word = "true" if value else "false"
                return and_(self._is(("boolean",), ()), sure(self.text() == word))
            case "sqlite":
                return self._is((), ("true",) if value else ("false",))
            case _:
                assert_never(self.dialect)

    def _numeric_text(self) -> ColumnElement[bool]:
        text = self.text()
        match self.dialect:
            case "postgresql":
                return and_(self.is_text(), sure(text.op("~")(_PG_NUMERIC_TEXT)))
            case "sqlite":
                # NUMERIC_TEXT without regular expressions (SQLite has none built in): after an
                # optional "-", only digits and dots, at most one dot, not first, not last.
                bare = case((func.substr(text, 1, 1) == "-", func.substr(text, 2)), else_=text)
                return and_(
                    self.is_text(),
                    sure(
                        and_(
                            bare != "",
                            bare.op("NOT GLOB")("*[^0-9.]*"),
                            bare.op("NOT GLOB")("*.*.*"),
                            bare.op("NOT GLOB")(".*"),
                            bare.op("NOT GLOB")("*."),
                        )
                    ),
                )
            case _:
                assert_never(self.dialect)

    def number(self) -> ColumnElement[Any]:
        """The value as a number: a JSON number, or a text holding a decimal; else NULL."""
        match self.dialect:
            case "postgresql":
                as_number: Any = Numeric()
            case "sqlite":
                as_number = Float()
            case _:
                assert_never(self.dialect)
        if self.column is not None:
            return case((self._numeric_text(), cast(self.text(), as_number)))
        return case(
            (self._is(("number",), ("integer", "real")), cast(self.text(), as_number)),
            (self._numeric_text(), cast(self.text(), as_number)),
        )

    def equals(self, value: bool | int | float | str) -> ColumnElement[bool]:
        if isinstance(value, bool):  # before int: True is an int too
            return self.is_bool(value)
        if isinstance(value, int | float):
            return sure(self.number() == number_literal(self.dialect, value))
        return and_(self.is_text(), sure(self.text() == value))

    def one_of(self, values: list[bool | int | float | str]) -> ColumnElement[bool]:
        texts = [v for v in values if isinstance(v, str)]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        tests = [self.is_bool(v) for v in dict.fromkeys(v for v in values if isinstance(v, bool))]
        if texts:
            tests.append(and_(self.is_text(), sure(self.text().in_(texts))))
        if numbers:
            literals = [number_literal(self.dialect, v) for v in numbers]
            tests.append(sure(self.number().in_(literals)))
        return or_(*tests)

    def at_least(self, bound: int | float | str) -> ColumnElement[bool]:
        if isinstance(bound, str):
            ordered = text_order(self.dialect, self.text())
            return and_(self.is_text(), sure(ordered >= bound))
        return sure(self.number() >= number_literal(self.dialect, bound))

    def at_most(self, bound: int | float | str) -> ColumnElement[bool]:
        if isinstance(bound, str):
            ordered = text_order(self.dialect, self.text())
            return and_(self.is_text(), sure(ordered <= bound))
        return sure(self.number() <= number_literal(self.dialect, bound))
