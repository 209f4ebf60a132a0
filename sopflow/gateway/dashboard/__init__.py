"""The supervisors' dashboard under /dashboard: Jinja2 pages rendered by the gateway, plain CSS
and server-drawn SVG charts served from the package (nothing from a CDN). Sign-in puts the
Principal in the request's scope (sopflow/gateway/who.py); supervisors see their teams' runs,
ops everything, reps are sent to their inbox.

    pages.py     overview, runs, tasks, the step events behind an overview figure
    run_page.py  one run's timeline, score, consent and controls
    report_pages.py, report_tables.py  reps and teams, SOP funnel, pilots, referral funnel
    error_pages.py  404, 403 and 422 under /dashboard as HTML pages
    tables.py    any table as HTML and as CSV (`?format=csv`)
    charts.py    SVG bar charts
    access.py    who may open it, and what they see
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from sopflow.gateway.dashboard.error_pages import add_error_pages
from sopflow.gateway.dashboard.pages import pages_router
from sopflow.gateway.dashboard.render import STATIC, STATIC_URL
from sopflow.gateway.dashboard.report_pages import report_router
from sopflow.gateway.dashboard.run_page import ClientFactory, run_router
from sopflow.gateway.dashboard.temporal_ui import TemporalUi
from sopflow.store.listing import Listing
from sopflow.store.overview import Overview
from sopflow.store.reports import Scores
from sopflow.store.repository import Store

__all__ = ["TemporalUi", "add_dashboard"]


def add_dashboard(
    app: FastAPI,
    store: Store,
    scores: Scores,
    temporal: ClientFactory,
    ui: TemporalUi,
) -> None:
    """Serve the dashboard's pages and assets on `app` (sign-in guards them: gateway/auth.py).
    Add it after the app's exception handlers: its error pages wrap them."""
    overview = Overview(store.engine, scores)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="dashboard-static")
    app.include_router(pages_router(Listing(store.engine, scores), overview))
    app.include_router(run_router(store, overview, scores, temporal, ui))
    app.include_router(report_router(store, scores))
    add_error_pages(app)
