"""The teams file: text the store cannot keep is refused with the file and the field, before the
store changes (PostgreSQL would fail the import halfway with a database error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopflow.errors import SopflowError
from sopflow.teams import load_teams

TEAM = """
teams:
  - id: inside_sales
    name: {team_name}
    supervisor: {supervisor}
    reps:
      - {{id: ana, name: Ana Lima, phone: "+12125550101"}}
      - {{id: sam, name: {rep_name}, email: {email}}}
"""
GOOD = {
    "team_name": "Inside sales",
    "supervisor": "sam",
    "rep_name": "Sam Lee",
    "email": "sam@example.com",
}


def teams_file(tmp_path: Path, **changes: str) -> Path:
    path = tmp_path / "teams.yaml"
    path.write_text(TEAM.format(**(GOOD | changes)), encoding="utf-8")
    return path


def test_a_valid_file_loads_with_its_longest_values(tmp_path: Path) -> None:
    longest = {"team_name": "t" * 200, "rep_name": "r" * 200, "email": "e" * 200}
    (team,) = load_teams(teams_file(tmp_path, **longest))
    assert team["name"] == "t" * 200 and team["reps"][1]["email"] == "e" * 200


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rep_name": '"Sam\\0Lee"'}, "teams.0.reps.1.name: contains a NUL character (\\u0000)"),
        ({"rep_name": "r" * 201}, "teams.0.reps.1.name: is longer than 200 characters"),
        ({"email": '"sam\\0@example.com"'}, "teams.0.reps.1.email: contains a NUL character"),
        ({"email": "e" * 201}, "teams.0.reps.1.email: is longer than 200 characters"),
        ({"team_name": '"Inside\\0sales"'}, "teams.0.name: contains a NUL character"),
        ({"team_name": "t" * 201}, "teams.0.name: is longer than 200 characters"),
        ({"supervisor": '"sam\\0"'}, "teams.0.supervisor: contains a NUL character"),
        ({"supervisor": "s" * 65}, "teams.0.supervisor: is longer than 64 characters"),
        ({"rep_name": '"\\uD800"'}, "teams.0.reps.1.name: Input should be a valid string"),
    ],
)
def test_text_the_store_cannot_keep_is_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, str], message: str
) -> None:
    path = teams_file(tmp_path, **changes)
    with pytest.raises(SopflowError) as refused:
        load_teams(path)
    assert str(refused.value).startswith(f"{path}: {message}")


def test_time_zones_of_teams_and_reps_must_be_iana_names(tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    zoned = (
        "teams:\n  - id: a\n    timezone: {team}\n    reps: [{{id: x, name: X, timezone: {rep}}}]\n"
    )
    path.write_text(zoned.format(team="Europe/Paris", rep="America/Chicago"))
    (team,) = load_teams(path)
    assert team["timezone"] == "Europe/Paris" and team["reps"][0]["timezone"] == "America/Chicago"
    for team_zone, rep_zone, where, bad in (
        ("Europe/Pariss", "UTC", "teams.0.timezone", "Europe/Pariss"),
        ("UTC", "CST6", "teams.0.reps.0.timezone", "CST6"),
    ):
        path.write_text(zoned.format(team=team_zone, rep=rep_zone))
        with pytest.raises(SopflowError) as caught:
            load_teams(path)
        assert f"{where}: Value error, unknown time zone {bad!r}" in str(caught.value)
        assert "use an IANA name such as Europe/Paris" in str(caught.value)
