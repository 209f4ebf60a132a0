"""Segment files: one YAML file per segment in `segments/`, loaded with the SOP loader (line
numbers, duplicate keys, alias and size limits) and checked against the schema, every problem
reported as FILE:LINE:COL: error: message, as `sopflow sop validate` reports SOP files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from sopflow.errors import NotFoundError, Problem, SopValidationError
from sopflow.segmenting.schema import Segment
from sopflow.sop.loader import LoadedYaml, load_yaml, problems_from_validation_error
from sopflow.sop.validate import SOP_SUFFIXES, expand

SEGMENTS_DIR = Path("segments")
MAX_SEGMENT_BYTES = 64 * 1024  # a segment is a dozen lines; anything near this is a mistake
# The loader speaks of SOPs where a file as a whole is wrong; in a segment file, say segment.
_WORDING = {
    "the file is empty; an SOP is a mapping with id, version, steps…": (
        "the file is empty; a segment is a mapping with id, name, description, rules"
    ),
    "one SOP per file: found a second YAML document": (
        "one segment per file: found a second YAML document"
    ),
    "an SOP file must be a mapping (id: …, version: …, steps: …)": (
        "a segment file must be a mapping (id: …, name: …, description: …, rules: …)"
    ),
}


class SegmentValidationError(SopValidationError):
    """A segment file is malformed; `problems` lists every issue, located."""


class UnknownSegmentError(NotFoundError):
    def __init__(self, segment_id: str, known: Iterable[str], folder: Path, broken: int) -> None:
        self.segment_id = segment_id
        names = sorted(known)
        listed = f"known: {', '.join(names)}" if names else "it has no valid segment files"
        extra = (
            f"; {broken} file{'s' if broken != 1 else ''} there cannot be read: "
            f"`sopflow segments validate {folder}` says why"
            if broken
            else ""
        )
        super().__init__(f"unknown segment {segment_id!r} in {folder} ({listed}){extra}")


def _problem(source: str, message: str) -> SegmentValidationError:
    return SegmentValidationError([Problem(source, 1, 1, message)])


def load_document(path: Path) -> LoadedYaml:
    """One segment file, parsed with its positions; its size and encoding checked first."""
    source = str(path)
    if path.suffix not in SOP_SUFFIXES:
        raise _problem(source, "not a segment file: segment files end in .yaml or .yml")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _problem(source, "no such file") from None
    except IsADirectoryError:
        raise _problem(source, "is a directory, not a segment file") from None
    except OSError as exc:
        raise _problem(source, f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_SEGMENT_BYTES:
        limit = MAX_SEGMENT_BYTES // 1024
        raise _problem(source, f"file is {len(raw) // 1024} KiB; a segment file may be {limit} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SegmentValidationError(
            [Problem(source, line, 1, "the file is not UTF-8 text")]
        ) from None
    try:
        return load_yaml(text, source)
    except SopValidationError as exc:
        raise SegmentValidationError(
            [
                Problem(p.file, p.line, p.column, _WORDING.get(p.message, p.message))
                for p in exc.problems
            ]
        ) from None


def load_segment(path: Path) -> tuple[Segment, LoadedYaml]:
    """One segment file, validated; SegmentValidationError lists every problem."""
    doc = load_document(path)
    try:
        return Segment.model_validate(doc.data), doc
    except ValidationError as exc:
        raise SegmentValidationError(problems_from_validation_error(doc, exc, Segment)) from None


def validate_paths(paths: Iterable[Path]) -> tuple[dict[Path, Segment], list[Problem]]:
    """Every file (folders: their .yaml/.yml files) checked: the valid segments by file and
    every problem found, ids used by two files included."""
    given = list(paths)
    problems = [
        Problem(str(p), 1, 1, "no segment files in this folder (expected .yaml or .yml files)")
        for p in given
        if p.is_dir() and not expand([p])
    ]
    if not given:
        problems.append(Problem("-", 1, 1, "no segment files given (expected .yaml or .yml)"))
    problems += [Problem(str(p), 1, 1, "no such file or folder") for p in given if not p.exists()]
    valid: dict[Path, Segment] = {}
    first: dict[str, Path] = {}
    for path in expand(p for p in given if p.exists()):
        try:
            segment, doc = load_segment(path)
        except SegmentValidationError as exc:
            problems += exc.problems
            continue
        if segment.id in first:
            message = f"segment id {segment.id!r} is also used by {first[segment.id]}"
            problems.append(doc.problem(("id",), message))
            continue
        first[segment.id] = path
        valid[path] = segment
    return valid, sorted(set(problems))


def folder_segments(
    folder: Path, missing_ok: bool = False
) -> tuple[dict[str, Segment], list[Problem]]:
    """The valid segments of a folder by id, and the problems of the others. No folder: none
    if `missing_ok`, else NotFoundError."""
    if not folder.is_dir():
        if missing_ok:
            return {}, []
        raise NotFoundError(f"no segments folder {folder}: create it, one YAML file a segment")
    valid, problems = validate_paths([folder])
    return {segment.id: segment for segment in valid.values()}, problems


def find_segment(folder: Path, segment_id: str) -> Segment:
    """The segment `segment_id` of `folder`, or UnknownSegmentError naming the known ones."""
    found, problems = folder_segments(folder)
    if segment_id not in found:
        broken = len({p.file for p in problems if p.file != str(folder)})
        raise UnknownSegmentError(segment_id, found, folder, broken)
    return found[segment_id]
