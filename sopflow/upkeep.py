"""Process-local upkeep, run by APScheduler inside a worker (and `sopflow up`): every job is
idempotent, so any number of workers can run them side by side.

- reconcile_outbox: claims left pending with no attempt for a while (an activity that gave up
  in doubt, a gateway that died during a click-to-call) are looked up at the provider: found →
  marked done with the provider's id (and logged: the run may have recorded the touch failed);
  still not found after ABANDON_AFTER → marked failed, so nobody waits on them.
- redeploy: SOP files in the watched folder are validated and deployed when their digest
  changes (a reused version number with other content is refused and logged, as with deploy).
- sync_cohorts: Temporal's cohort schedules follow the deployed plans, whatever deployed them
  (sopflow/cohorts/schedules.py); at start, then every 10 seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from sopflow.errors import SopflowError
from sopflow.providers.base import Provider, ProviderError
from sopflow.sop.validate import validate_paths
from sopflow.store.repository import Store

if TYPE_CHECKING:
    from sopflow.cohorts.schedules import CohortSchedules

log = logging.getLogger("sopflow.upkeep")
IDLE_BEFORE_LOOKUP = timedelta(minutes=5)  # longer than an activity attempt may run
ABANDON_AFTER = timedelta(hours=1)
STOP_SECONDS = 10.0  # a pass running at a stop may finish within this, else it is cancelled


class Repeats:
    """Says a problem at `level` the first pass it is seen, then at debug while it lasts: an
    invalid SOP file or an unreachable Temporal is news once, not every 10 seconds. A problem
    that went away and comes back is news again."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.seen: set[str] = set()
        self.now: set[str] = set()

    def say(self, message: str) -> None:
        log.log(logging.DEBUG if message in self.seen else self.level, "%s", message)
        self.now.add(message)

    def pass_done(self) -> None:
        self.seen, self.now = self.now, set()


class Upkeep:
    def __init__(
        self,
        store: Store,
        provider: Provider | None,
        sop_dir: Path | None = None,
        cohorts: CohortSchedules | None = None,
    ) -> None:
        """`provider` None (touches go to the in-memory loopback): no outbox reconciliation."""
        self.store, self.provider, self.sop_dir = store, provider, sop_dir
        self.cohorts = cohorts
        self.deploy_problems = Repeats(logging.ERROR)
        self.sync_problems = Repeats(logging.WARNING)

    async def reconcile_outbox(self, now: datetime | None = None) -> dict[str, int]:
        now = now or datetime.now(UTC)
        counts = {"found": 0, "abandoned": 0, "waiting": 0}
        if self.provider is None:
            return counts
        for claim in await asyncio.to_thread(self.store.outbox_stale, now - IDLE_BEFORE_LOOKUP):
            recipient = claim.result.get("recipient") or {}
            since = claim.created_at or now
            found = None
            if recipient.get("to") and recipient.get("channel"):
                try:
                    found = await self.provider.find_sent(
                        recipient["channel"], recipient["to"], recipient.get("text"),
                        claim.key, since,
                    )  # fmt: skip
                except ProviderError as exc:
                    log.warning("cannot look up %s at the provider: %s", claim.key, exc)
                    counts["waiting"] += 1
                    continue
            if found is not None:
                await asyncio.to_thread(
                    self.store.outbox_finish, claim.key, "done", found, {"reconciled": True}
                )
                log.warning(
                    "touch %s had gone out as %s although no attempt saw it", claim.key, found
                )
                counts["found"] += 1
            elif now - since > ABANDON_AFTER:
                reason = f"not found at the provider {ABANDON_AFTER} after the claim: never sent"
                await asyncio.to_thread(
                    self.store.outbox_finish, claim.key, "failed", None, {"reason": reason}
                )
                counts["abandoned"] += 1
            else:
                counts["waiting"] += 1
        return counts

    def redeploy(self) -> list[str]:
        """Deploy changed SOPs of the watched folder; the ids deployed as new versions."""
        if self.sop_dir is None:
            return []
        plans, problems = validate_paths([self.sop_dir])
        for problem in problems:
            self.deploy_problems.say(f"not deployed: {problem}")
        created = []
        for plan in plans.values():
            try:
                if self.store.deploy(plan).created:
                    created.append(f"{plan.sop.id} v{plan.sop.version}")
            except SopflowError as exc:
                self.deploy_problems.say(f"not deployed: {exc}")
        self.deploy_problems.pass_done()
        for name in created:
            log.info("deployed %s", name)
        return created

    async def sync_cohorts(self) -> None:
        """One pass of the cohort schedules' reconciler; a failure waits for the next pass."""
        if self.cohorts is None:
            return
        try:
            await self.cohorts.sync()
        except Exception as exc:  # Temporal or the store away: said once, not a traceback
            self.sync_problems.say(f"cohort schedules not synced, retrying every 10 s: {exc}")
        self.sync_problems.pass_done()

    async def redeploy_pass(self) -> None:
        await asyncio.to_thread(self.redeploy)

    def schedule(self, jobs: UpkeepJobs) -> None:
        if self.provider is not None:
            jobs.add(self.reconcile_outbox, "reconcile_outbox", minutes=1)
        if self.cohorts is not None:
            jobs.add(self.sync_cohorts, "sync_cohorts", seconds=10, next_run_time=datetime.now(UTC))
        if self.sop_dir is not None:
            jobs.add(self.redeploy_pass, "redeploy", seconds=10)


class UpkeepJobs:
    """The upkeep's jobs on an APScheduler, and the passes running now. `stop` lets a running
    pass finish (up to STOP_SECONDS) before shutting the scheduler down: APScheduler's own
    shutdown cancels it, and logs the cancelled pass as a failed job with a traceback."""

    def __init__(self) -> None:
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.running: set[asyncio.Task[Any]] = set()

    def add(self, job: Callable[[], Awaitable[object]], name: str, **interval: Any) -> None:
        async def tracked() -> None:
            task = asyncio.current_task()
            assert task is not None  # APScheduler runs a coroutine job as a task
            self.running.add(task)
            try:
                await job()
            finally:
                self.running.discard(task)

        self.scheduler.add_job(
            tracked, "interval", id=name, max_instances=1, coalesce=True, **interval
        )

    async def stop(self, seconds: float = STOP_SECONDS) -> None:
        self.scheduler.pause()  # no new pass starts
        if self.running:
            await asyncio.wait(set(self.running), timeout=seconds)
        self.scheduler.shutdown(wait=False)


def start_upkeep(upkeep: Upkeep) -> UpkeepJobs:
    """Start the jobs on the running event loop; `await jobs.stop()` stops them."""
    jobs = UpkeepJobs()
    upkeep.schedule(jobs)
    jobs.scheduler.start()
    return jobs
