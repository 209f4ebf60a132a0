"""The one error tree of sopflow. What a caller does with an error is on its class: the HTTP
status the API answers, the exit code the CLI and the worker end with, and whether trying the
same thing again later can succeed.

    SopflowError                  bad input (422, exit 1, retrying cannot help)
    ├── SopValidationError        an SOP file is invalid; carries every Problem found
    ├── InvalidContactError       a contact the SOP cannot run for (bad phone, missing field)
    ├── InvalidEventError         an event the engine cannot accept (unknown step/outcome)
    ├── TemplateRenderError       a message template failed to render for a contact
    ├── NotFoundError             what was named does not exist (404)
    │   └── UnknownSopError       a reference to an SOP that is not known
    ├── ConflictError             it exists already, otherwise (409)
    │                             (store: VersionConflictError, DeployConflicts)
    ├── ConfigurationError        ops must fix a setting or a file (503, exit 2; retry later)
    └── ProviderError             the phone network said no (providers.base; retry by kind)

Errors build their message in ``__init__`` so every raise site reads the same way, and
carry the context (file, line, field, contact) a person needs to fix the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an SOP file, located at a YAML node."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: error: {self.message}"


class SopflowError(Exception):
    """Base of every error sopflow raises on purpose; by default the input was wrong."""

    http_status: ClassVar[int] = 422
    exit_code: ClassVar[int] = 1
    retryable: ClassVar[bool] = False


class NotFoundError(SopflowError):
    """A run, SOP, plan or entry that was named does not exist."""

    http_status = 404


class ConflictError(SopflowError):
    """The request collides with what exists (a version deployed with other content)."""

    http_status = 409


class ConfigurationError(SopflowError):
    """A setting or a configuration file is wrong or missing: nothing a caller can fix; the
    same call can succeed once ops have fixed it."""

    http_status = 503
    exit_code = 2
    retryable = True


class SopValidationError(SopflowError):
    """An SOP file is malformed or inconsistent; ``problems`` lists every issue found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UnknownSopError(NotFoundError):
    def __init__(self, sop_id: str, known: list[str] | None = None) -> None:
        self.sop_id = sop_id
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown SOP {sop_id!r}{hint}")


class InvalidContactError(SopflowError):
    def __init__(self, reason: str, contact_id: str | None = None) -> None:
        self.contact_id = contact_id
        who = f"contact {contact_id!r}: " if contact_id else ""
        super().__init__(f"{who}{reason}")


class InvalidEventError(SopflowError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class TemplateRenderError(SopflowError):
    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        super().__init__(f"step {step!r}: template failed to render: {reason}")


def read_user_file(path: Path) -> str:
    """A text file an ops person gave us (teams, rules, lists), or one clear SopflowError."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SopflowError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SopflowError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
