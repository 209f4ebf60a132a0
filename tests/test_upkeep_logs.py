"""The upkeep's repeated problems are news once: an invalid SOP file is logged at error the first
pass, at debug while it stays invalid, and at error again if it breaks again after a fix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sopflow.store.repository import Store, connect
from sopflow.upkeep import Upkeep

BROKEN = "id: broken\nversion: 1\nsteps: [\n"
GOOD = Path(__file__).parents[1] / "sop_definitions" / "store_visit_reminder.yaml"


def levels(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r.levelname for r in caplog.records if "not deployed" in r.getMessage()]
    caplog.clear()
    return found


def test_an_invalid_sop_file_is_logged_once_until_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    folder = tmp_path / "sops"
    folder.mkdir()
    (folder / "broken.yaml").write_text(BROKEN)
    upkeep = Upkeep(store, None, folder)
    caplog.set_level(logging.DEBUG, logger="sopflow.upkeep")
    upkeep.redeploy()
    assert levels(caplog) == ["ERROR"]
    upkeep.redeploy()
    upkeep.redeploy()
    assert levels(caplog) == ["DEBUG", "DEBUG"]
    (folder / "broken.yaml").write_text(GOOD.read_text())  # fixed: nothing to say
    upkeep.redeploy()
    assert levels(caplog) == []
    (folder / "broken.yaml").write_text(BROKEN)  # broken again: news again
    upkeep.redeploy()
    assert levels(caplog) == ["ERROR"]
    store.engine.dispose()
