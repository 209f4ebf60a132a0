"""The dashboard's parts on their own: tables as HTML cells and CSV, the SVG bar chart, and the
Temporal UI links."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from sopflow.errors import SopflowError
from sopflow.gateway.dashboard.charts import HEIGHT, stacked_bars
from sopflow.gateway.dashboard.error_pages import add_error_pages
from sopflow.gateway.dashboard.tables import Column, Table, display, raw, wanted_export
from sopflow.gateway.dashboard.temporal_ui import TemporalUi

from .page_reader import read

AT = datetime(2026, 11, 3, 14, 5, 9, tzinfo=UTC)


def test_a_table_as_cells_and_as_csv() -> None:
    table = Table(
        "people",
        "People",
        [Column("name", "Name", href=lambda r: f"/p/{r['name']}"), Column("score", "Score", numeric=True),
         Column("at", "At"), Column("late", "Late by"), Column("ok", "OK")],
        [{"name": "ana", "score": 92.5, "at": AT, "late": timedelta(hours=26, minutes=3), "ok": True},
         {"name": "=HYPERLINK(\"http://x\")", "score": None, "at": None, "late": None, "ok": False}],
    )  # fmt: skip
    first, second = list(table.cells())
    assert [(c.text, c.href, c.numeric) for c in first] == [
        ("ana", "/p/ana", False), ("92.5", None, True), ("2026-11-03 14:05", None, False),
        ("1d 2h 3m", None, False), ("yes", None, False),
    ]  # fmt: skip
    assert [c.text for c in second][1:] == ["", "", "", "no"]
    rows = list(csv.reader(io.StringIO(table.csv())))
    assert rows == [
        ["Name", "Score", "At", "Late by", "OK"],
        ["ana", "92.5", "2026-11-03T14:05:09+00:00", "93780.0", "true"],
        # A cell a spreadsheet would run as a formula is written as text.
        ['\'=HYPERLINK("http://x")', "", "", "", "false"],
    ]


def test_cells_keep_negative_numbers_and_make_text_safe() -> None:
    assert raw(-5) == -5 and raw("-5") == "'-5" and raw("@sum") == "'@sum" and raw("a=b") == "a=b"
    assert display(timedelta(seconds=-90)) == "-1m" and display(timedelta(seconds=5)) == "5s"


def test_which_table_an_export_asks_for() -> None:
    tables = [Table("a", "A", [], []), Table("b", "B", [], [])]
    assert wanted_export({}, tables) is None
    assert wanted_export({"format": "csv"}, tables) is tables[0]
    assert wanted_export({"format": "csv", "table": "b"}, tables) is tables[1]
    with pytest.raises(ValueError, match="table 'c': this page has a, b"):
        wanted_export({"format": "csv", "table": "c"}, tables)
    with pytest.raises(ValueError, match="format 'pdf': the export format is csv"):
        wanted_export({"format": "pdf"}, tables)


def test_stacked_bars_scale_to_the_busiest_day() -> None:
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    values = {("2026-11-01", "sms"): 10, ("2026-11-01", "email"): 10, ("2026-11-03", "sms"): 40}
    chart = stacked_bars(days, ["email", "sms"], values, lambda d, s: f"/e?day={d}&ch={s}")
    assert [(s.series, s.value, s.href) for s in chart.segments] == [
        ("email", 10, "/e?day=2026-11-01&ch=email"),
        ("sms", 10, "/e?day=2026-11-01&ch=sms"),
        ("sms", 40, "/e?day=2026-11-03&ch=sms"),
    ]
    email, sms, spike = chart.segments
    assert spike.height == pytest.approx(2 * (email.height + sms.height), abs=0.2)
    assert spike.y + spike.height == chart.baseline == HEIGHT - 24  # on the axis
    assert sms.y + sms.height == pytest.approx(email.y, abs=0.1)  # stacked on email
    assert [t.text for t in chart.ticks] == ["0", "12", "25", "37", "50"]  # axis top: 50
    assert [d.text for d in chart.days] == ["11-01", "11-02", "11-03"]
    assert stacked_bars(days, [], {}, lambda d, s: "").empty


def test_temporal_ui_links() -> None:
    ui = TemporalUi.for_server(None, "temporal.internal:7233")
    assert ui.base == "http://temporal.internal:8233"
    assert TemporalUi.for_server(None, "[::1]:7233").base == "http://[::1]:8233"
    assert TemporalUi.for_server(None, "127.0.0.1", ui_port=9233).base == "http://127.0.0.1:9233"
    assert (
        TemporalUi.for_server("https://ui.example/", "x:7233", "prod").base == "https://ui.example"
    )
    prod = TemporalUi("https://ui.example", "prod")
    assert prod.history("sop:a b:c/1", "run-1") == (
        "https://ui.example/namespaces/prod/workflows/sop%3Aa%20b%3Ac%2F1/run-1/history"
    )
    assert prod.runs('sop:"x"') == (
        "https://ui.example/namespaces/prod/workflows?query=WorkflowId%3D%22sop%3A%22x%22%22"
    )


def test_column_groups_and_marked_cells() -> None:
    table = Table(
        "steps",
        "Steps",
        [Column("step", "Step"),
         Column("a", "Entries", group="v1", href=lambda r: "/a",
                hint=lambda r: "more" if r["a"] else None),
         Column("b", "Exits", group="v1"), Column("c", "Entries", group="v2")],
        [{"step": "s", "a": 2, "b": 1, "c": 0}, {"step": "t", "a": 0, "b": 0, "c": 1}],
    )  # fmt: skip
    assert table.groups() == [(None, 1), ("v1", 2), ("v2", 1)]
    assert Table("x", "X", [Column("a", "A")], []).groups() == []
    first, second = list(table.cells())
    assert (first[1].href, first[1].hint, second[1].hint) == ("/a", "more", None)
    # The CSV keeps each column's group in its heading.
    assert table.csv().splitlines()[0] == "Step,v1 Entries,v1 Exits,v2 Entries"


async def test_errors_under_dashboard_are_pages_and_elsewhere_the_apps_own() -> None:
    app = FastAPI()

    @app.exception_handler(SopflowError)
    async def as_json(_: object, exc: SopflowError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    for prefix in ("/dashboard", "/api"):

        @app.get(f"{prefix}/count")
        async def count(n: int) -> dict[str, int]:
            return {"n": n}

        @app.get(f"{prefix}/fails")
        async def fails() -> None:
            raise SopflowError("the plan is wrong")

    add_error_pages(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        page = await http.get("/dashboard/count", params={"n": "many"})
        assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
        shown = read(page.text)
        assert shown.heading == "422 · Unprocessable Entity"
        assert shown.errors == [
            "n: Input should be a valid integer, unable to parse string as an integer"
        ]
        assert '<span class="who">' not in page.text  # nobody signed in: no user shown
        failed = await http.get("/dashboard/fails")
        assert failed.status_code == 422 and read(failed.text).errors == ["the plan is wrong"]
        assert (
            (await http.get("/dashboard/nowhere")).headers["content-type"].startswith("text/html")
        )
        api = await http.get("/api/count", params={"n": "many"})
        assert api.status_code == 422 and api.json()["detail"][0]["loc"] == ["query", "n"]
        api_failed = await http.get("/api/fails")
        assert api_failed.json() == {"detail": "the plan is wrong"}
        assert (await http.get("/api/nowhere")).json() == {"detail": "Not Found"}
