"""Load, validate and compile SOP files, collecting every problem with its file, line and column."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from sopflow.errors import Problem, SopValidationError
from sopflow.sop.checks import check_sop
from sopflow.sop.loader import LoadedYaml, load_yaml_file, problems_from_validation_error
from sopflow.sop.plan import Plan, compile_plan
from sopflow.sop.schema import Sop

SOP_SUFFIXES = (".yaml", ".yml")


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories as their *.yaml / *.yml files, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in SOP_SUFFIXES)
        else:
            files.append(path)
    return files


def _parse(path: Path) -> tuple[Sop, LoadedYaml]:
    if path.suffix not in SOP_SUFFIXES and path.is_file():
        # Parsing a README or a CSV as YAML yields a page of confusing schema errors.
        raise SopValidationError(
            [Problem(str(path), 1, 1, "not an SOP file: SOP files end in .yaml or .yml")]
        )
    doc = load_yaml_file(path)
    try:
        return Sop.model_validate(doc.data), doc
    except ValidationError as exc:
        raise SopValidationError(problems_from_validation_error(doc, exc, Sop)) from None


def _sibling_ids(files: Sequence[Path]) -> set[str]:
    """SOP ids next to the given files, so `enroll: other_sop` resolves when one file is checked."""
    ids: set[str] = set()
    for folder in {f.parent for f in files}:
        if not folder.is_dir():
            continue
        for sibling in folder.iterdir():
            if sibling.suffix not in SOP_SUFFIXES:
                continue
            try:
                data = load_yaml_file(sibling).data
            except SopValidationError:
                continue
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                ids.add(data["id"])
    return ids


def segments_beside(file: Path) -> Path:
    """Where an SOP file's segments are by default: `segments/` beside its folder, as
    `segments/` sits beside `sop_definitions/`."""
    return file.parent.resolve().parent / "segments"


def _segment_ids(folder: Path) -> set[str]:
    from sopflow.segmenting.files import folder_segments  # it imports this module

    return set(folder_segments(folder, missing_ok=True)[0])


def validate_paths(
    paths: Iterable[Path],
    known_sops: Collection[str] | None = None,
    segments: Path | None = None,
) -> tuple[dict[Path, Plan], list[Problem]]:
    """Validate every file (folders: their .yaml/.yml files); the plans of the valid ones and
    all problems found.

    `known_sops`: the SOP ids `enroll` steps may name besides the given files' own (deploy
    passes the ids already deployed); default: the ids of SOP files next to the given ones.
    `segments`: the folder whose segment files segment conditions may name; default: the
    `segments/` folder beside each file's folder, else the working directory's `segments/`.
    """
    given = list(paths)
    problems = [
        Problem(str(p), 1, 1, "no SOP files in this folder (expected .yaml or .yml files)")
        for p in given
        if p.is_dir() and not expand([p])
    ]
    files = expand(given)
    if not given:
        problems.append(Problem("-", 1, 1, "no SOP files given (expected .yaml or .yml files)"))
    plans, found = _validate(files, known_sops, segments)
    return plans, sorted(set(problems + found))


def _validate(
    files: Sequence[Path], known_sops: Collection[str] | None, segments: Path | None = None
) -> tuple[dict[Path, Plan], list[Problem]]:
    parsed: dict[Path, tuple[Sop, LoadedYaml]] = {}
    problems: list[Problem] = []
    for path in files:
        try:
            parsed[path] = _parse(path)
        except SopValidationError as exc:
            problems += exc.problems
    others = _sibling_ids(files) if known_sops is None else set(known_sops)
    known = others | {sop.id for sop, _ in parsed.values()}
    seen: dict[str, Path] = {}
    plans: dict[Path, Plan] = {}
    segment_ids: dict[Path, set[str] | None] = {}  # by folder; None: the working directory's
    for path, (sop, doc) in parsed.items():
        folder = segments or segments_beside(path)
        if folder not in segment_ids:
            given = segments is not None or folder.is_dir()
            segment_ids[folder] = _segment_ids(folder) if given else None
        found = [
            doc.problem(loc, message) for loc, message in check_sop(sop, known, segment_ids[folder])
        ]
        if sop.id in seen:
            found.append(doc.problem(("id",), f"SOP id {sop.id!r} is also used by {seen[sop.id]}"))
        seen.setdefault(sop.id, path)
        problems += found
        if not found:
            plans[path] = compile_plan(sop)
    return plans, problems


def load_plan(path: Path) -> Plan:
    """Compile one SOP file, or raise SopValidationError listing every problem.

    `path` must be a file: a folder is a problem ("is a directory"), never its files.
    """
    plans, problems = _validate([path], None)
    if problems:
        raise SopValidationError(problems)
    return plans[path]
