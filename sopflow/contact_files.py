"""Contact files as records: a CSV with a header row or JSON Lines, each record with the number
of the line it starts on, and what is wrong with a line that holds no record. The lines' fields are
checked by sopflow/contacts_import.py; every problem reads `FILE:LINE: field: why`.

CSV: a header row; columns id, phone, email, first_name, last_name, timezone, owner, tags
(separated by `;`); any other column becomes a contact field. An empty cell is no value.
JSONL: one object per line with the same keys, plus optional `purchases: [{at, amount, currency,
order_id}]` and `visits: [{at, store}]`.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sopflow.errors import SopflowError

SHOWN = 50  # problems listed; the rest are counted


@dataclass(frozen=True, order=True)
class LineProblem:
    source: str
    line: int
    field: str
    why: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.why}"


class ContactImportError(SopflowError):
    """Lines are invalid and nothing was written; `problems` lists every one."""

    def __init__(self, problems: list[LineProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(listing(problems)))


def listing(problems: list[LineProblem], shown: int = SHOWN) -> list[str]:
    """The first `shown` problems, one a line, and how many more there are."""
    lines = [str(p) for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"… and {len(problems) - shown} more problems")
    return lines


@dataclass(frozen=True)
class Unreadable:
    """A line that is no record at all (not JSON, not UTF-8, too many cells)."""

    field: str
    why: str


Raw = tuple[int, dict[str, Any] | Unreadable]  # a line's number and what it holds


def read_file(path: Path) -> Iterator[Raw]:
    """The records of a .csv or .jsonl file, by line number."""
    match path.suffix.lower():
        case ".csv":
            return read_csv(path)
        case ".jsonl" | ".ndjson":
            return read_jsonl(path)
        case other:
            kind = f"a {other} file" if other else "a file without an extension"
            raise SopflowError(f"{path}: {kind}: give a .csv or .jsonl file")


def count_lines(path: Path) -> int:
    """Lines in the file (the progress bar's total), counted without decoding them."""
    with _open(path) as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def read_jsonl(path: Path) -> Iterator[Raw]:
    with _open(path) as handle:
        for number, data in enumerate(handle, 1):
            text, bad = _decoded(data, number == 1)
            if bad:
                yield number, bad
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, Unreadable("json", f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                kind = type(value).__name__
                yield number, Unreadable("json", f"a line must be one JSON object, not a {kind}")
                continue
            yield number, value


def read_csv(path: Path) -> Iterator[Raw]:
    bad: dict[int, Unreadable] = {}

    def lines(handle: IO[bytes]) -> Iterator[str]:
        for number, data in enumerate(handle, 1):
            text, problem_ = _decoded(data, number == 1)
            if problem_:
                bad[number] = problem_
            yield text

    with _open(path) as handle:
        reader = csv.reader(lines(handle))
        header = _header(path, next(reader, None))
        end = reader.line_num
        while True:
            start = end + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a cell over csv's size limit, an open quote at the end
                yield start, Unreadable("csv", f"cannot be read ({exc}); nothing after it was read")
                return
            end = reader.line_num
            if unreadable := next((bad[n] for n in range(start, end + 1) if n in bad), None):
                yield start, unreadable
            elif len(row) > len(header):
                why = f"{len(row)} cells, more than the {len(header)} columns of the header"
                yield start, Unreadable("row", why)
            elif any(cell.strip() for cell in row):  # a blank line is no contact
                record: dict[str, Any] = dict(zip(header, row, strict=False))
                if record.get("tags"):  # an empty cell keeps the stored tags, as any empty cell
                    record["tags"] = [t.strip() for t in record["tags"].split(";") if t.strip()]
                yield start, record


def _header(path: Path, row: list[str] | None) -> list[str]:
    if not row:
        raise _file_problem(path, "header", "no header row: the first line names the columns")
    header = [name.strip() for name in row]
    for index, name in enumerate(header):
        if not name:
            raise _file_problem(path, "header", f"column {index + 1} has no name")
        if name in header[:index]:
            raise _file_problem(path, "header", f"column {name!r} appears twice")
    if "id" not in header:
        raise _file_problem(path, "header", "no `id` column (the contact's unique id in your CRM)")
    return header


def _file_problem(path: Path, name: str, why: str) -> ContactImportError:
    return ContactImportError([LineProblem(str(path), 1, name, why)])


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise SopflowError(f"{path}: cannot read ({exc.strerror})") from None


def _decoded(data: bytes, first: bool) -> tuple[str, Unreadable | None]:
    if first:
        data = data.removeprefix(codecs.BOM_UTF8)  # spreadsheets save CSV with one
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text (byte {exc.start + 1} of the line): save the file as UTF-8"
        return data.decode("utf-8", "replace"), Unreadable("encoding", why)
