"""The error tree: what a caller does with an error is on its class (HTTP status, exit code,
whether a retry can help), and the CLI, the API and the worker read it from there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sopflow.errors import (
    ConfigurationError,
    ConflictError,
    InvalidContactError,
    NotFoundError,
    SopflowError,
    SopValidationError,
    TemplateRenderError,
    UnknownSopError,
)
from sopflow.providers.base import ProviderError
from sopflow.store.repository import DeployConflicts, VersionConflictError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "error, status, code, retryable",
    [
        (SopValidationError([]), 422, 1, False),
        (InvalidContactError("no phone"), 422, 1, False),
        (TemplateRenderError("hi", "undefined"), 422, 1, False),
        (UnknownSopError("nope"), 404, 1, False),
        (VersionConflictError("x", 1), 409, 1, False),
        (DeployConflicts([(0, VersionConflictError("x", 1))]), 409, 1, False),
        (ConfigurationError("SOPFLOW_RULES: not valid YAML"), 503, 2, True),
    ],
)
def test_each_error_says_how_callers_answer_it(
    error: SopflowError, status: int, code: int, retryable: bool
) -> None:
    assert (error.http_status, error.exit_code, error.retryable) == (status, code, retryable)


def test_the_tree_has_one_root() -> None:
    for kind in (NotFoundError, ConflictError, ConfigurationError, ProviderError):
        assert issubclass(kind, SopflowError)
    assert issubclass(UnknownSopError, NotFoundError)
    assert issubclass(VersionConflictError, ConflictError)


def test_a_configuration_error_ends_the_cli_with_exit_code_2(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{id: x}]\n")
    result = subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", "sop", "simulate",
         str(ROOT / "sop_definitions" / "new_lead_callback.yaml"), "--rules", str(rules)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {rules}:") and "Traceback" not in result.stderr
