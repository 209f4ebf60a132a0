"""One table, two renderings: HTML in a dashboard page (templates/dashboard/_table.html) and CSV
for export. A page builds `Table`s from plain rows (dicts) and `Column`s; `?format=csv` (with
`&table=NAME` when a page has several) answers the named table as a CSV file instead of the page.

    people = Table("reps", "Reps", [Column("rep", "Rep", href=lambda r: f"/x?rep={r['rep']}"),
                                    Column("score", "Score")], rows)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi.responses import Response

Row = Mapping[str, Any]
CSV_PARAMS = ("format", "table")  # the export's own query parameters, not a page's filters
# A cell a spreadsheet would run as a formula (CSV injection): written with a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def display(value: Any) -> str:
    """A cell as the page shows it: times in UTC to the minute, durations as 1d 2h 3m."""
    match value:
        case None:
            return ""
        case bool():
            return "yes" if value else "no"
        case datetime():
            return value.strftime("%Y-%m-%d %H:%M")
        case timedelta():
            return span(value)
        case float():
            return f"{value:g}"
        case _:
            return str(value)


def raw(value: Any) -> Any:
    """A cell as the CSV file holds it: ISO times, seconds for durations, text made safe."""
    match value:
        case None:
            return ""
        case bool():
            return "true" if value else "false"
        case datetime():
            return value.isoformat()
        case timedelta():
            return value.total_seconds()
        case int() | float():
            return value
        case _:
            text = str(value)
            return "'" + text if text.startswith(_FORMULA_STARTS) else text


def span(delta: timedelta) -> str:
    sign, seconds = ("-" if delta < timedelta(0) else ""), abs(int(delta.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return sign + (" ".join(parts) or f"{secs}s")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    href: Callable[[Row], str | None] | None = None  # the link of a cell, from its row
    numeric: bool = False  # right-aligned on the page
    # A cell's caveat, shown on the page as a marked link with this title (a report's count
    # whose listing holds more rows than were counted); not in the CSV.
    hint: Callable[[Row], str | None] | None = None
    group: str | None = None  # a heading over adjacent columns (a funnel's version)

    @property
    def heading(self) -> str:
        """The CSV's header: the group's name kept with the column's."""
        return f"{self.group} {self.title}" if self.group else self.title


@dataclass(frozen=True)
class Cell:
    text: str
    href: str | None
    numeric: bool
    hint: str | None = None


@dataclass(frozen=True)
class Table:
    name: str  # its anchor on the page, its `table=` in an export, its CSV file's name
    title: str
    columns: Sequence[Column]
    rows: Sequence[Row]
    empty: str = "Nothing in this period or with these filters."
    row_id: Callable[[Row], str] | None = None  # a row's anchor (a link can point at it)

    def cells(self) -> Iterable[list[Cell]]:
        for row in self.rows:
            yield [
                Cell(
                    display(row.get(c.key)),
                    c.href(row) if c.href else None,
                    c.numeric,
                    c.hint(row) if c.hint else None,
                )
                for c in self.columns
            ]

    def anchored(self) -> Iterable[tuple[str | None, list[Cell]]]:
        """Each row's anchor (None without `row_id`) and its cells."""
        for row, cells in zip(self.rows, self.cells(), strict=True):
            yield (self.row_id(row) if self.row_id else None), cells

    def groups(self) -> list[tuple[str | None, int]]:
        """Runs of adjacent columns under one group: (group, how many); none without groups."""
        if not any(c.group for c in self.columns):
            return []
        found: list[tuple[str | None, int]] = []
        for column in self.columns:
            if found and found[-1][0] == column.group:
                found[-1] = (column.group, found[-1][1] + 1)
            else:
                found.append((column.group, 1))
        return found

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.heading for c in self.columns])
        for row in self.rows:
            writer.writerow([raw(row.get(c.key)) for c in self.columns])
        return out.getvalue()


def csv_response(table: Table, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        table.csv(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{table.name}.csv"',
            **(headers or {}),
        },
    )


def wanted_export(params: Mapping[str, str], tables: Sequence[Table]) -> Table | None:
    """The table `?format=csv&table=NAME` asks for (the page's first without `table`); None for
    the page itself. An unknown name is a ValueError naming the page's tables."""
    given = params.get("format")
    if given is None:
        return None
    if given != "csv":
        raise ValueError(f"format {given!r}: the export format is csv")
    name = params.get("table") or tables[0].name
    for table in tables:
        if table.name == name:
            return table
    raise ValueError(f"table {name!r}: this page has {', '.join(t.name for t in tables)}")
