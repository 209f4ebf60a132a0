"""The `sopflow` command, run for real: exit codes, output, and no tracebacks on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOPS = ROOT / "sop_definitions"
CALLBACK = SOPS / "new_lead_callback.yaml"


def sopflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_validate_all_seed_sops() -> None:
    result = sopflow("sop", "validate", str(SOPS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == 5


def test_validate_reports_file_line_col_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CALLBACK.read_text().replace("due_within: 30m", "due_witin: 30m"))
    result = sopflow("sop", "validate", str(bad))
    assert result.returncode == 1
    assert (
        f"{bad}:46:5: error: steps[0]: unknown field 'due_witin' (did you mean 'due_within'?)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_schema_is_json_schema_with_every_step_kind() -> None:
    result = sopflow("sop", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    text = json.dumps(schema)
    for kind in (
        "sms",
        "whatsapp",
        "call",
        "task",
        "ladder",
        "wait",
        "wait_for",
        "branch",
        "split",
        "enroll",
        "end",
    ):
        assert f'"{kind}"' in text
    assert schema["additionalProperties"] is False


def test_compile_prints_the_plan_with_its_digest() -> None:
    result = sopflow("sop", "compile", str(CALLBACK))
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    assert plan["digest"].startswith("sha256:") and plan["sop"]["id"] == "new_lead_callback"


def test_simulate_json_timeline() -> None:
    result = sopflow(
        "sop",
        "simulate",
        str(CALLBACK),
        "--start",
        "2026-12-01T09:10",
        "--phone",
        "+12125550123",
        "--outcome",
        "first_call=no_answer@12m",
        "--outcome",
        "retry_calls=busy",
        "--outcome",
        "retry_calls=no_answer",
        "--outcome",
        "retry_calls=booked@3m:appointment_at=2026-12-05T11:00,store_name=Downtown,store_address=1 Main St",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (
        data["sop"] == "new_lead_callback"
        and data["version"] == 1
        and data["result"] == "converted"
    )
    assert data["digest"].startswith("sha256:")
    first = data["events"][0]
    assert first["at"] == "2026-12-01T09:10:00-05:00" and first["step"] == "first_call"
    assert {e["action"] for e in data["events"]} >= {"assign", "outcome", "sms", "enroll", "end"}


def test_simulate_text_timeline_explains_deferrals() -> None:
    result = sopflow(
        "sop",
        "simulate",
        str(CALLBACK),
        "--start",
        "2026-12-05T22:30",
        "--contact-tz",
        "America/Chicago",
        "--default-outcome",
        "connected",
    )
    assert result.returncode == 0, result.stderr
    assert "outside the call window 09:00-20:00" in result.stdout
    assert "deferred to Mon 07 Dec 09:00" in result.stdout
    assert "result: lost" in result.stdout  # connected, then no booking within 7 days


@pytest.mark.parametrize(
    "args, message",
    [
        (["--outcome", "nostep=connected"], "unknown step 'nostep'"),
        (["--outcome", "garbage"], "invalid --outcome 'garbage'"),
        (["--phone", "+1555"], "invalid phone number '+1555'"),
        (["--start", "yesterday"], "invalid --start 'yesterday'"),
        (["--contact-tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        (["--event", "visited"], "invalid --event 'visited'"),
        (["--contact", "nokey"], "invalid --contact value 'nokey'"),
    ],
)
def test_simulate_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    result = sopflow("sop", "simulate", str(CALLBACK), *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_simulate_missing_required_contact_field() -> None:
    result = sopflow(
        "sop", "simulate", str(SOPS / "store_visit_reminder.yaml"), "--contact", "appointment_at="
    )
    assert result.returncode == 1
    assert "missing required field(s) appointment_at" in result.stderr


def test_simulate_an_invalid_sop_prints_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\n")
    result = sopflow("sop", "simulate", str(bad))
    assert result.returncode == 1 and "bad.yaml:1:1: error:" in result.stderr
    assert "Traceback" not in result.stderr
