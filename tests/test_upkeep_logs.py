"""The upkeep's repeated problems are news once: an invalid SOP file is logged at error the first
pass, at debug while it stays invalid, and at error again if it breaks again after a fix."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
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


async def test_a_stop_lets_a_running_pass_finish_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """APScheduler's shutdown cancels a running pass and logs it as a failed job with a
    traceback (a clean `sopflow up` stop printed one); the upkeep's stop waits for it."""
    from sopflow.upkeep import UpkeepJobs

    began, finished = asyncio.Event(), asyncio.Event()

    async def slow_pass() -> None:
        began.set()
        await asyncio.sleep(0.3)
        finished.set()

    jobs = UpkeepJobs()
    jobs.add(slow_pass, "slow", seconds=10, next_run_time=datetime.now(UTC))
    jobs.scheduler.start()
    await asyncio.wait_for(began.wait(), 10)
    await jobs.stop()
    assert finished.is_set() and not jobs.running
    await asyncio.sleep(0.1)  # the scheduler's shutdown runs on the loop
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not jobs.scheduler.running


async def test_a_pass_that_outlasts_the_stop_is_cancelled() -> None:
    from sopflow.upkeep import UpkeepJobs

    began = asyncio.Event()

    async def stuck_pass() -> None:
        began.set()
        await asyncio.sleep(60)

    jobs = UpkeepJobs()
    jobs.add(stuck_pass, "stuck", seconds=10, next_run_time=datetime.now(UTC))
    jobs.scheduler.start()
    await asyncio.wait_for(began.wait(), 10)
    await asyncio.wait_for(jobs.stop(seconds=0.2), 10)  # bounded: a stop never hangs on a pass
    await asyncio.sleep(0.1)
    assert not jobs.scheduler.running
