"""What the teams file accepts, the store keeps: its longest values import on both databases."""

from __future__ import annotations

from pathlib import Path

from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory
from sopflow.teams import load_teams

LONGEST = f"""
teams:
  - id: {"t" * 64}
    name: {"n" * 200}
    supervisor: {"s" * 64}
    reps:
      - {{id: {"s" * 64}, name: {"é" * 200}, email: {"e" * 200}, phone: "+12125550101"}}
"""


def test_the_longest_values_the_teams_file_accepts_are_stored(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "teams.yaml"
    path.write_text(LONGEST, encoding="utf-8")
    reps = RepDirectory(store.engine)
    assert reps.import_teams(load_teams(path)) == (1, 1)
    (rep,) = reps.reps()
    assert (rep.name, rep.email, rep.team_id) == ("é" * 200, "e" * 200, "t" * 64)
    supervisor = reps.supervisor_of(rep.id)
    assert supervisor is not None and supervisor.id == "s" * 64
