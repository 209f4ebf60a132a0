"""The `sopflow` command, run for real: exit codes, output, and no tracebacks on bad input."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
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
    assert result.stdout.count("ok ") == 7  # with lead_triage and lead_nurture (layering)


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
        and f"version: {data['version']}" in CALLBACK.read_text()  # the file's, whatever it is
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
        (["--outcome", "first_call=maybe"], "'maybe' is not allowed for step 'first_call'"),
        (["--outcome", "first_call=booked"], "'first_call' needs appointment_at"),
        (["--outcome", "follow_up=connected"], "step 'follow_up' is a wait_for step"),
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


def test_simulate_and_compile_refuse_a_folder_in_one_line() -> None:
    for command in ("simulate", "compile"):
        result = sopflow("sop", command, str(SOPS))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip() == (
            f"error: sop {command} takes one SOP file; {SOPS} is a directory "
            f"(use `sopflow sop validate {SOPS}` to check a folder)"
        )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nope.yaml", None, "nope.yaml:1:1: error: no such file"),
        ("notes.md", "# Notes\n\nsome: text\n", "not an SOP file: SOP files end in .yaml or .yml"),
        ("binary.yaml", b"\xff\xfe\x00id", "the file is not UTF-8 text"),
    ],
)
def test_path_errors_are_one_line(
    tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for command in ("simulate", "compile", "validate"):
        result = sopflow("sop", command, str(path))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert message in result.stderr.splitlines()[0], result.stderr


def test_validate_a_folder_without_sop_files(tmp_path: Path) -> None:
    result = sopflow("sop", "validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path}:1:1: error: no SOP files in this folder" in result.stderr


def test_validate_estimates_sms_segments() -> None:
    result = sopflow("sop", "validate", str(SOPS / "store_visit_reminder.yaml"))
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"^   sms two_hours_sms: about \d+ chars, 1 segment, GSM-7$", result.stdout, re.M
    )
    whatsapp_only = sopflow("sop", "validate", str(SOPS / "script_pilot.yaml"))
    assert "sms " not in whatsapp_only.stdout


def test_simulate_shows_the_segments_of_each_sms() -> None:
    args = ["sop", "simulate", str(CALLBACK), "--start", "2026-12-01T09:10"]
    args += ["--phone", "+12125550123", "--outcome", "first_call=no_answer@12m"]
    text = sopflow(*args)
    assert text.returncode == 0, text.stderr
    sms_lines = [line for line in text.stdout.splitlines() if " sms " in line]
    assert sms_lines and all("segment" in line and "GSM-7" in line for line in sms_lines)
    data = json.loads(sopflow(*args, "--json").stdout)
    sms = [e for e in data["events"] if e["action"] == "sms"]
    assert sms and all(e["segments"]["encoding"] == "GSM-7" for e in sms)
    assert sms[0]["segments"]["units"] == len(sms[0]["detail"]["text"])
    assert sms[0]["segments"]["segments"] == 1
    assert all("segments" not in e for e in data["events"] if e["action"] != "sms")


DEPLOY_GOOD = """\
id: {id}
version: {version}
name: Demo
owner: ops@example.com
entry: {{events: [lead.created]}}
steps:
  - {{id: hello, kind: sms, body: "Hi from {{{{ sop.name }}}}"}}
  - {{id: done, kind: end, result: completed}}
"""


def deploy(tmp_path: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOPFLOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("SOPFLOW_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", "from sopflow.cli import main; main()", "sop", "deploy"]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_deploy_is_all_or_nothing_and_names_the_bad_file(tmp_path: Path) -> None:
    folder = tmp_path / "sops"
    folder.mkdir()
    (folder / "a_good.yaml").write_text(DEPLOY_GOOD.format(id="good", version=1))
    bad = folder / "b_bad.yaml"
    bad.write_text(DEPLOY_GOOD.format(id="bad", version=1).replace("result: completed", ""))
    refused = deploy(tmp_path, folder)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"{bad}:8:5: error: steps[1]: missing required field 'result'" in refused.stderr
    assert "nothing deployed" in refused.stderr and refused.stdout == ""
    # Nothing was stored: once fixed, both are new versions.
    bad.write_text(DEPLOY_GOOD.format(id="bad", version=1))
    fixed = deploy(tmp_path, folder)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.count("deployed ") == 2 and "unchanged" not in fixed.stdout


def test_deploy_refuses_a_changed_file_with_the_same_version_and_stores_nothing(
    tmp_path: Path,
) -> None:
    first = tmp_path / "first.yaml"
    first.write_text(DEPLOY_GOOD.format(id="first", version=1))
    assert deploy(tmp_path, first).returncode == 0
    first.write_text(DEPLOY_GOOD.format(id="first", version=1).replace("Hi", "Hello"))
    second = tmp_path / "second.yaml"
    second.write_text(DEPLOY_GOOD.format(id="second", version=1))
    refused = deploy(tmp_path, second, first)
    assert refused.returncode == 1
    assert (
        f"{first}:2:10: error: version: first v1 is already deployed with different content: "
        "bump `version`" in refused.stderr
    )
    # `second` came first in the batch, yet it was not stored either.
    assert "deployed second" in deploy(tmp_path, second).stdout


def test_deploy_checks_enroll_against_what_is_deployed_or_given(tmp_path: Path) -> None:
    """A sibling file that is neither deployed nor given is no target for `enroll`."""
    folder = tmp_path / "sops"
    folder.mkdir()
    (folder / "visit.yaml").write_text(DEPLOY_GOOD.format(id="visit", version=1))
    enrolling = folder / "enrolling.yaml"
    enrolling.write_text(
        DEPLOY_GOOD.format(id="enrolling", version=1).replace(
            "  - {id: done",
            "  - {id: hand_over, kind: enroll, sop: visit}\n  - {id: done",
        )
    )
    refused = deploy(tmp_path, enrolling)
    assert refused.returncode == 1 and "unknown SOP 'visit'" in refused.stderr
    assert str(enrolling) in refused.stderr
    assert deploy(tmp_path, folder).returncode == 0
    assert deploy(tmp_path, enrolling).stdout.startswith("unchanged enrolling")


def test_every_runtime_import_is_a_declared_dependency() -> None:
    """`pip install .` must be enough to run sopflow: every third-party package imported by
    the code that ships is in [project].dependencies, not only in the dev extras."""
    declared = {
        _distribution(re.match(r"[A-Za-z0-9._-]+", requirement).group())  # type: ignore[union-attr]
        for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    }
    ours = {"sopflow", "workflows", "activities", "worker"}
    providers = importlib.metadata.packages_distributions()
    files = [ROOT / "worker.py"]
    for package in ("sopflow", "workflows", "activities"):
        files += sorted((ROOT / package).rglob("*.py"))
    undeclared: dict[str, str] = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ours:
                    continue
                if not {_distribution(d) for d in providers.get(top, [top])} & declared:
                    undeclared.setdefault(top, str(file.relative_to(ROOT)))
    assert undeclared == {}, f"imported but not in [project].dependencies: {undeclared}"


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalisation


def test_simulate_fails_when_a_scripted_outcome_is_not_applied() -> None:
    late = ("sop", "simulate", str(CALLBACK), "--start", "2026-12-01T10:00")
    result = sopflow(*late, "--outcome", "first_call=connected@5h")
    assert result.returncode == 1
    assert "warning: scripted outcome not applied: first_call=connected" in result.stderr
    assert "is not waiting for an outcome" in result.stderr
    assert "outcome_dropped" in result.stdout or "dropped" in result.stdout


def test_simulate_applies_the_law_of_the_contact_region() -> None:
    florida = ("sop", "simulate", str(CALLBACK), "--phone", "+13055550147")
    result = sopflow(*florida, "--start", "2026-12-03T19:50", "--json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    task = next(e for e in events if e["action"] == "assign")
    assert task["detail"]["due_at"] == "2026-12-04T14:20:00+00:00"  # 09:20 local, not 20:20
    china = SOPS / "referral_ask.yaml"
    result = sopflow("sop", "simulate", str(china), "--phone", "+8613800138000", "--json")
    assert result.returncode == 0, result.stderr
    texts = [
        e["detail"]["text"] for e in json.loads(result.stdout)["events"] if e["action"] == "sms"
    ]
    assert texts and all(t.endswith("回T退订") for t in texts)


# ---- `sop simulate --variant STEP=ARM`: an arm as production assigns it at enrolment
PILOT = SOPS / "script_pilot.yaml"
PREVIEW = ["sop", "simulate", str(PILOT), "--contact", "tags=pilot", "--start", "2026-12-01T10:00"]


def test_the_preview_takes_the_given_arm() -> None:
    result = sopflow(*PREVIEW, "--variant", "pick_script=script_c", "--default-outcome", "booked")
    assert result.returncode == 0, result.stderr
    assert "variant=script_c, method=balanced" in result.stdout
    assert "Pilot call, script C" in result.stdout


@pytest.mark.parametrize(
    "given, message",
    [
        (
            "pick_script=script_d",
            "error: split step 'pick_script' has no arm 'script_d' (arms: script_a, script_b, script_c)",
        ),
        ("call_a=script_a", "error: 'call_a' is not a split step of SOP 'script_pilot'"),
        ("pick_script", "error: invalid --variant value 'pick_script': write KEY=VALUE"),
    ],
)
def test_a_wrong_variant_is_one_line_and_exit_1(given: str, message: str) -> None:
    result = sopflow(*PREVIEW, "--variant", given)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
