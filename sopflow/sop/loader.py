"""Load SOP YAML while remembering where every node is, so errors name FILE:LINE:COL.

We compose the YAML node graph ourselves (libyaml when present) instead of `safe_load`, which
(1) keeps positions, (2) reports duplicate keys that PyYAML silently overwrites, and
(3) lets us measure what aliases expand to before expanding anything: PyYAML's graph shares one
node per anchor, so sizes computed once per node cost as much as the file, not the expansion.
That refuses "billion laughs" (many small values) and long-string bombs (one long text referenced
through nested aliases: 200 KiB of YAML that expands to gigabytes) in milliseconds.
"""

from __future__ import annotations

import difflib
import pathlib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sopflow.errors import Problem, SopValidationError

MAX_SOP_BYTES = 256 * 1024
# Limits on the document once aliases are expanded. Generous: the seed SOPs use a few hundred
# nodes and a few KiB of text; a handful of reused anchors (`outcomes: &o [...]`) stays far below.
MAX_NODES = 50_000
MAX_TEXT = 1024 * 1024  # characters of scalar text (keys and values)
# Deeper nesting would exhaust Python's recursion limit (no SOP nests beyond ~10 levels).
MAX_DEPTH = 100
_SHOWN = 80  # characters of a bad value quoted back in a message

Path = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


@dataclass(frozen=True)
class LoadedYaml:
    source: str
    data: Any
    positions: dict[Path, tuple[int, int]]
    key_positions: dict[Path, tuple[int, int]]

    def _walk(self, loc: Sequence[str | int]) -> Path:
        """The longest prefix of real keys/indices in `loc` (pydantic adds union tags to locs)."""
        current: Any = self.data
        path: Path = ()
        for part in loc:
            # Two branches, not one `or`: mypy narrows `part` per container type.
            if isinstance(current, dict) and isinstance(part, str) and part in current:  # noqa: SIM114
                current = current[part]
            elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
                current = current[part]
            else:
                continue  # a union tag or member name: not a node of the document
            path = (*path, part)
        return path

    def locate(self, loc: Sequence[str | int]) -> tuple[int, int]:
        return self.positions.get(self._walk(loc), (1, 1))

    def problem(self, loc: Sequence[str | int], message: str) -> Problem:
        """A Problem at the node `loc` reaches, its message prefixed by that node's path."""
        where = self._walk(loc)
        line, column = self.positions.get(where, (1, 1))
        return Problem(
            self.source, line, column, f"{_dotted(where)}: {message}" if where else message
        )


def _fail(source: str, line: int, column: int, message: str) -> SopValidationError:
    return SopValidationError([Problem(source, line, column, message)])


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[Path, tuple[int, int]] = {}
        self.key_positions: dict[Path, tuple[int, int]] = {}
        self.constructor = yaml.SafeLoader("")  # only its scalar constructors are used

    def build(self, node: yaml.Node, path: Path) -> Any:
        """The Python value of `node`; only call it on a graph `_Sizes.check` accepted."""
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == _TIMESTAMP_TAG:  # keep dates as text: the schema parses them
            return node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _fail(
                self.source,
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                f"invalid value: {exc}",
            ) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _fail(
                    self.source,
                    line,
                    column,
                    "YAML merge keys (<<) are not supported; write the keys out",
                )
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                raise _fail(self.source, line, column, f"mapping keys must be text, got {shown!r}")
            key = key_node.value
            if key in first_seen:
                raise _fail(
                    self.source,
                    line,
                    column,
                    f"duplicate key {key!r} (first defined at line {first_seen[key]})",
                )
            first_seen[key] = line
            self.key_positions[(*path, key)] = (line, column)
            result[key] = self.build(value_node, (*path, key))
        return result


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class _Sizes:
    """What each node expands to (nodes, characters of text), computed once per node.

    An alias is the very node its anchor names, so a node reached twice is measured once:
    the work is proportional to the file, whatever the aliases would expand to.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[int, tuple[int, int]] = {}
        self.open: set[int] = set()  # nodes being measured: met again means an alias cycle

    def check(self, root: yaml.Node) -> None:
        """Raise a located SopValidationError if the expanded document is over the limits."""
        if not self._over(self._size(root, 0)):
            return
        node = root
        # Point at the innermost value over the limit: where the expansion happens.
        while (
            inner := next((c for c in _children(node) if self._over(self._of(c))), None)
        ) is not None:
            node = inner
        nodes, text = self._of(node)
        what = (
            f"{text:,} characters of text (at most {MAX_TEXT:,})"
            if text > MAX_TEXT
            else f"{nodes:,} values (at most {MAX_NODES:,})"
        )
        raise self._fail(
            node,
            f"this value expands to {what} once YAML aliases (*name) are expanded; "
            "write it out, or reuse anchors less",
        )

    def _of(self, node: yaml.Node) -> tuple[int, int]:
        return self.sizes[id(node)]

    @staticmethod
    def _over(size: tuple[int, int]) -> bool:
        return size[0] > MAX_NODES or size[1] > MAX_TEXT

    def _size(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise self._fail(node, "this value contains an alias to itself (&name … *name)")
        if depth > MAX_DEPTH:
            raise self._fail(node, f"nested more than {MAX_DEPTH} levels deep; flatten the file")
        if isinstance(node, yaml.ScalarNode):
            size = (1, len(node.value))
        else:
            self.open.add(key)
            nodes, text = 1, 0
            for child in _children(node):
                child_nodes, child_text = self._size(child, depth + 1)
                nodes, text = nodes + child_nodes, text + child_text
            self.open.discard(key)
            size = (nodes, text)
        self.sizes[key] = size
        return size

    def _fail(self, node: yaml.Node, message: str) -> SopValidationError:
        mark = node.start_mark
        return _fail(self.source, mark.line + 1, mark.column + 1, message)


def load_yaml(text: str, source: str) -> LoadedYaml:
    """Parse one YAML document; raise SopValidationError with a located Problem if it is bad."""
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise _fail(source, line, column, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise _fail(source, 1, 1, f"invalid YAML: {exc}") from None
    except RecursionError:  # the pure-Python composer recurses per nesting level
        raise _fail(
            source, 1, 1, f"nested more than {MAX_DEPTH} levels deep; flatten the file"
        ) from None
    if not documents or documents[0] is None:
        raise _fail(source, 1, 1, "the file is empty; an SOP is a mapping with id, version, steps…")
    if len(documents) > 1:
        mark = documents[1].start_mark
        raise _fail(
            source, mark.line + 1, mark.column + 1, "one SOP per file: found a second YAML document"
        )
    root = documents[0]
    if not isinstance(root, yaml.MappingNode):
        mark = root.start_mark
        raise _fail(
            source,
            mark.line + 1,
            mark.column + 1,
            "an SOP file must be a mapping (id: …, version: …, steps: …)",
        )
    _Sizes(source).check(root)
    builder = _Builder(source)
    data = builder.build(root, ())
    return LoadedYaml(source, data, builder.positions, builder.key_positions)


def load_yaml_file(path: pathlib.Path) -> LoadedYaml:
    """Read and parse an SOP file; size and encoding are checked before parsing."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(source, 1, 1, "no such file") from None
    except IsADirectoryError:
        raise _fail(source, 1, 1, "is a directory, not an SOP file") from None
    except OSError as exc:
        raise _fail(source, 1, 1, f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_SOP_BYTES:
        size = (
            f"{len(raw) / (1024 * 1024):.1f} MB"
            if len(raw) >= 1024 * 1024
            else f"{len(raw) // 1024} KiB"
        )
        raise _fail(
            source, 1, 1, f"file is {size}; an SOP file may be at most {MAX_SOP_BYTES // 1024} KiB"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(source, line, 1, "the file is not UTF-8 text") from None
    return load_yaml(text, source)


# ---------------------------------------------------------------- pydantic errors -> Problems
def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Annotated/Optional/Union flattened)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _models_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[type[BaseModel]]:
    """The models that could own the mapping at `loc` (walking fields, lists, dicts and unions)."""
    current: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        tag_matches = [
            c
            for c in current
            if isinstance(c, type)
            and issubclass(c, BaseModel)
            and isinstance(part, str)
            and (c.__name__ == part or _literal_kind(c) == part)
        ]
        if tag_matches:  # a discriminator tag or union member name in the loc
            current = tag_matches
            continue
        for candidate in current:
            if (
                isinstance(candidate, type)
                and issubclass(candidate, BaseModel)
                and isinstance(part, str)
            ):
                fields = {info.alias or name: info for name, info in candidate.model_fields.items()}
                if part in fields:
                    following += _unwrap(fields[part].annotation)
            else:
                origin, args = typing.get_origin(candidate), typing.get_args(candidate)
                if origin in (list, tuple) and isinstance(part, int) and args:
                    following += _unwrap(args[0])
                elif origin is dict and isinstance(part, str) and len(args) == 2:
                    following += _unwrap(args[1])
        if not following:
            return []
        current = following
    return [c for c in current if isinstance(c, type) and issubclass(c, BaseModel)]


def _literal_kind(model: type[BaseModel]) -> str | None:
    info = model.model_fields.get("kind")
    if info is None:
        return None
    args = typing.get_args(info.annotation)
    return (
        args[0] if typing.get_origin(info.annotation) is typing.Literal and len(args) == 1 else None
    )


def _all_field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(_field_names(model))
    for info in model.model_fields.values():
        stack = _unwrap(info.annotation)
        while stack:
            item = stack.pop()
            if isinstance(item, type) and issubclass(item, BaseModel):
                names |= _all_field_names(item, seen)
            else:
                stack += [t for arg in typing.get_args(item) for t in _unwrap(arg)]
    return names


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _shown(value: Any) -> str:
    """A value quoted back to the author, cut short: the input may be a whole section."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _hint(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def problems_from_validation_error(
    doc: LoadedYaml, exc: ValidationError, model: type[BaseModel]
) -> list[Problem]:
    """One located Problem per pydantic error, worded for the person editing the YAML."""
    problems: set[Problem] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        kind, ctx = error["type"], error.get("ctx") or {}
        if kind == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            where = doc._walk(parent)
            owners = _models_at(model, parent)
            allowed = sorted({n for m in owners for n in _field_names(m)}) or sorted(
                _all_field_names(model)
            )
            line, column = doc.key_positions.get((*where, key), doc.locate(parent))
            label = f"{_dotted(where)}: " if where else ""
            problems.add(
                Problem(
                    doc.source, line, column, f"{label}unknown field {key!r}{_hint(key, allowed)}"
                )
            )
            continue
        where = doc._walk(loc)
        if kind == "missing":
            field = str(loc[-1])
            line, column = doc.locate(loc[:-1])
            label = f"{_dotted(doc._walk(loc[:-1]))}: " if doc._walk(loc[:-1]) else ""
            problems.add(
                Problem(doc.source, line, column, f"{label}missing required field {field!r}")
            )
            continue
        if kind == "union_tag_invalid":
            tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            tag = str(ctx.get("tag", ""))
            tag_loc = (*where, str(ctx.get("discriminator", "'kind'")).strip("'"))
            line, column = doc.positions.get(tag_loc, doc.locate(loc))
            problems.add(
                Problem(
                    doc.source,
                    line,
                    column,
                    f"{_dotted(tag_loc)}: unknown step kind {tag!r} "
                    f"(expected one of: {', '.join(tags)}){_hint(tag, tags)}",
                )
            )
            continue
        if kind == "union_tag_not_found":
            line, column = doc.locate(loc)
            problems.add(
                Problem(
                    doc.source, line, column, f"{_dotted(where)}: missing required field 'kind'"
                )
            )
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind.endswith("_type") or kind.endswith("_parsing"):
            message += f", got {_shown(error.get('input'))}"
        line, column = doc.locate(loc)
        label = f"{_dotted(where)}: " if where else ""
        problems.add(Problem(doc.source, line, column, f"{label}{message}"))
    return sorted(problems)
