"""Load, validate and compile SOP files, collecting every problem with its file, line and column."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def validate_paths(paths: Iterable[Path]) -> tuple[dict[Path, Plan], list[Problem]]:
    """Validate every file; return the plans of the valid ones and all problems found."""
    files = expand(paths)
    parsed: dict[Path, tuple[Sop, LoadedYaml]] = {}
    problems: list[Problem] = []
    if not files:
        problems.append(Problem("-", 1, 1, "no SOP files given (expected .yaml or .yml files)"))
    for path in files:
        try:
            parsed[path] = _parse(path)
        except SopValidationError as exc:
            problems += exc.problems
    known = _sibling_ids(files) | {sop.id for sop, _ in parsed.values()}
    seen: dict[str, Path] = {}
    plans: dict[Path, Plan] = {}
    for path, (sop, doc) in parsed.items():
        found = [doc.problem(loc, message) for loc, message in check_sop(sop, known)]
        if sop.id in seen:
            found.append(doc.problem(("id",), f"SOP id {sop.id!r} is also used by {seen[sop.id]}"))
        seen.setdefault(sop.id, path)
        problems += found
        if not found:
            plans[path] = compile_plan(sop)
    return plans, sorted(set(problems))


def load_plan(path: Path) -> Plan:
    """Compile one SOP file, or raise SopValidationError listing every problem."""
    plans, problems = validate_paths([path])
    if problems:
        raise SopValidationError(problems)
    return plans[path]
