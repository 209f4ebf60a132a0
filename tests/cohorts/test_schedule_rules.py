"""`entry.schedule` is checked like the rest of an SOP: every mistake is one located,
precise line of `sopflow sop validate`, and nothing else about the entry changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sopflow.sop.schema import ContactDateSchedule, CronSchedule
from sopflow.sop.validate import load_plan, validate_paths

ROOT = Path(__file__).resolve().parents[2]
SOP = """\
id: scheduled
version: 1
name: Scheduled
owner: ops@example.com
entry:
  schedule: {schedule}
contact_fields:
  member_since: {{type: date}}
  plan: {{type: string}}
steps:
  - {{id: hello, kind: sms, body: "Hello"}}
"""


def problems(tmp_path: Path, schedule: str) -> list[str]:
    path = tmp_path / "scheduled.yaml"
    path.write_text(SOP.format(schedule=schedule))
    _, found = validate_paths([path])
    return [str(p).removeprefix(f"{path}:") for p in found]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (
            '{cron: "0 25 * * MON", timezone: Europe/Paris}',
            "6:20: error: entry.schedule.cron: invalid cron '0 25 * * MON': hour 25 is out of "
            "range 0-23",
        ),
        (
            '{cron: "0 10 * * MOM", timezone: Europe/Paris}',
            "6:20: error: entry.schedule.cron: invalid cron '0 10 * * MOM': day of week 'MOM' "
            "is not a number 0-7 or a name SUN-SAT (did you mean MON?)",
        ),
        (
            '{cron: "0 10 * *", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '0 10 * *': 4 fields; write five: "
            "minute hour day-of-month month day-of-week, e.g. '0 10 * * MON' (Mondays at 10:00)",
        ),
        (
            '{cron: "0 0 10 * * MON", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '0 0 10 * * MON': 6 fields "
            "(sopflow's cron has no seconds or years field); write five: minute hour "
            "day-of-month month day-of-week, e.g. '0 10 * * MON' (Mondays at 10:00)",
        ),
        (
            '{cron: "0 10 31 2 *", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '0 10 31 2 *': never fires: no month "
            "it names has day 31",
        ),
        (
            '{cron: "*/0 10 * * *", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '*/0 10 * * *': step '0' in '*/0' "
            "must be a whole number from 1",
        ),
        (
            '{cron: "0 18-9 * * *", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '0 18-9 * * *': range '18-9' runs "
            "backwards: write the smaller end first",
        ),
        (
            '{cron: "0 10 L * *", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '0 10 L * *': 'L': ?, L, W and # are "
            "not supported; use numbers, ranges and steps",
        ),
        (
            '{cron: "@fortnightly", timezone: UTC}',
            "6:20: error: entry.schedule.cron: invalid cron '@fortnightly': unknown shortcut "
            "'@fortnightly' (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, "
            "@hourly)",
        ),
        (
            '{cron: "0 10 * * MON", timezone: Europe/Pariss}',
            "6:46: error: entry.schedule.timezone: unknown time zone 'Europe/Pariss': use an "
            "IANA name such as Europe/Paris",
        ),
        (
            '{cron: "0 10 * * MON"}',
            "6:13: error: entry.schedule: missing required field 'timezone'",
        ),
        (
            '{cron: "0 10 * * MON", timezone: UTC, segment: at_riks}',
            "6:60: error: entry.schedule.segment: unknown segment 'at_riks' (did you mean "
            "'at_risk'?); known segments: at_risk, champions, high_intent, lapsed_vip",
        ),
        (
            '{contact_date: member_sinc, annual: true, at: "10:00"}',
            "6:28: error: entry.schedule.contact_date: unknown contact field 'member_sinc' (did "
            "you mean 'member_since'?); declare it under contact_fields with type date or "
            "datetime",
        ),
        (
            '{contact_date: plan, at: "10:00"}',
            "6:28: error: entry.schedule.contact_date: contact field 'plan' is a string, not a "
            "date or datetime",
        ),
        (
            '{contact_date: phone, at: "10:00"}',
            "6:28: error: entry.schedule.contact_date: contact field 'phone' is a standard text "
            "field, not a date",
        ),
        (
            '{contact_date: member_since, at: "25:00"}',
            "6:46: error: entry.schedule.at: invalid clock time '25:00': use 24-hour HH:MM, "
            "e.g. 09:00 or 18:30",
        ),
        (
            '{contact_date: member_since, annual: true, timezone: UTC, at: "10:00"}',
            "6:13: error: entry.schedule: a contact date is read in each contact's own zone "
            "(policy.timezone); `timezone` is for cron schedules",
        ),
        (
            '{cron: "@weekly", timezone: UTC, contact_date: member_since}',
            "6:13: error: entry.schedule: a schedule names either `cron` (with `timezone`) or "
            "`contact_date` (with `at`)",
        ),
        (
            "{annual: true}",
            "6:13: error: entry.schedule: a schedule names either `cron` (with `timezone`) or "
            "`contact_date` (with `at`)",
        ),
        (
            '{cron: "0 10 * * MON", timezone: UTC, max_per_second: 0}',
            "6:67: error: entry.schedule.max_per_second: Input should be greater than or equal "
            "to 1",
        ),
    ],
)
def test_a_bad_schedule_is_one_precise_located_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str, expected: str
) -> None:
    monkeypatch.chdir(ROOT)  # segments/ of the repository: the ids a rule may name
    assert problems(tmp_path, schedule) == [expected]


def test_a_misspelt_field_is_named_with_the_one_meant(tmp_path: Path) -> None:
    assert problems(tmp_path, '{cron: "0 10 * * MON", timezon: UTC}') == [
        "6:13: error: entry.schedule: missing required field 'timezone'",
        "6:36: error: entry.schedule: unknown field 'timezon' (did you mean 'timezone'?)",
    ]


def test_an_entry_needs_events_or_a_schedule(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text(SOP.format(schedule="x").replace("  schedule: x\n", "  conditions: []\n"))
    _, found = validate_paths([path])
    assert [str(p).removeprefix(f"{path}:") for p in found] == [
        "6:3: error: entry: an entry needs `events`, a `schedule`, or both"
    ]


def test_a_segment_file_that_cannot_be_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "vips.yaml").write_text("id: vips\nname: [\n")
    monkeypatch.chdir(tmp_path)
    schedule = '{cron: "0 10 * * MON", timezone: UTC, segment: vips}'
    assert problems(tmp_path, schedule) == [
        "6:60: error: entry.schedule.segment: unknown segment 'vips'; known segments: none; 1 "
        "segment file cannot be read: `sopflow segments validate` says why"
    ]


def test_good_schedules_compile_and_keep_what_they_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert (
        problems(tmp_path, '{cron: "0 10 * * MON", timezone: Europe/Paris, segment: at_risk}') == []
    )
    cron = load_plan(tmp_path / "scheduled.yaml").sop.entry.schedule
    assert cron == CronSchedule(cron="0 10 * * MON", timezone="Europe/Paris", segment="at_risk")
    assert problems(tmp_path, '{contact_date: member_since, annual: true, at: "10:00"}') == []
    date_rule = load_plan(tmp_path / "scheduled.yaml").sop.entry.schedule
    assert isinstance(date_rule, ContactDateSchedule) and date_rule.annual
    assert date_rule.max_per_second == 100


def test_plans_without_a_schedule_keep_their_digest() -> None:
    """A new field of the entry is left out of the digest while unset: SOPs deployed before
    schedules existed keep their version."""
    plan = load_plan(ROOT / "sop_definitions" / "new_lead_callback.yaml")
    assert "schedule" not in plan.sop.entry.model_dump()
    assert plan.digest.startswith("sha256:230dc5b09700")


def test_the_seed_vip_sop_runs_from_its_membership_anniversary() -> None:
    plan = load_plan(ROOT / "sop_definitions" / "vip_six_touches.yaml")
    assert plan.sop.version == 4
    assert plan.sop.entry.schedule == ContactDateSchedule(
        contact_date="member_since", annual=True, at="10:00"
    )
    validated = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sopflow.cli import main; main()",
            "sop",
            "validate",
            "sop_definitions",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stderr
    assert "ok sop_definitions/vip_six_touches.yaml: vip_six_touches v4" in validated.stdout
