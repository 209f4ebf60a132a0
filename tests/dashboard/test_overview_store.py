"""The overview's queries find step events through the runs alive in the period: a long run
enrolled long before the period still counts its touches in it; one finished before does not."""

from __future__ import annotations

from datetime import timedelta

from sopflow.store.overview import Overview, Period
from sopflow.store.repository import Store

from .world import A1, BASE, Writer


def test_touches_of_runs_enrolled_long_before_the_period(sqlite_store: Store) -> None:
    store = sqlite_store
    store.deploy(A1)
    week = Period(BASE, BASE + timedelta(days=7))
    old = Writer(store, A1, "old-but-running", BASE - timedelta(days=90))
    old.sms(BASE + timedelta(days=2))  # a nurture touch, three months in
    old.note("blocked", BASE + timedelta(days=3), rule="frequency_cap", reason="3 a week")
    done = Writer(store, A1, "done-before", BASE - timedelta(days=10))
    done.sms(BASE - timedelta(days=10))
    done.finish(BASE - timedelta(days=9))
    overview = Overview(store.engine)
    assert overview.touches(week, None) == [("2026-11-05", "sms", 1)]
    assert overview.held(week, None) == [("blocked", "frequency_cap", 1)]
    page = overview.events("touch", week, None, 10, None)
    assert [row["run_id"] for row in page.items] == [old.run_id]
    earlier = Period(BASE - timedelta(days=11), BASE - timedelta(days=9))
    assert overview.touches(earlier, None) == [("2026-10-24", "sms", 1)]
