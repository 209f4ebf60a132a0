"""`sopflow report referrals` (a Rich table, --json) and `sopflow contacts import` converting
referrals and asking the gateway to tell the referrers' runs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from referral_support import TOKEN
from typer.testing import CliRunner

from sopflow.cli import app
from sopflow.gateway.app import create_app
from sopflow.settings import Secret
from sopflow.sop.validate import load_plan
from sopflow.store.referrals import ReferralBook
from sopflow.store.repository import Store, connect

ROOT = Path(__file__).resolve().parents[2]
MARCH = datetime(2026, 3, 9, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The CLI's store: the embedded SQLite default in a fresh data dir."""
    monkeypatch.delenv("SOPFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("SOPFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOPFLOW_API_TOKEN", TOKEN)
    (tmp_path / "data").mkdir()
    found = Store(connect(f"sqlite:///{tmp_path / 'data' / 'sopflow.db'}"))
    found.migrate()
    yield found
    found.engine.dispose()


def sopflow(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def known_funnel(store: Store) -> ReferralBook:
    """March: ann and bob asked; ann's link visited by 2, one signed up and bought."""
    plan = load_plan(ROOT / "sop_definitions" / "referral_ask.yaml")
    store.deploy(plan)
    book = ReferralBook(store.engine)
    for person in ("ann", "bob"):
        store.upsert_contact({"id": person})
        workflow_id = f"sop:referral_ask:{person}:k"
        store.start_run(workflow_id, "r", "referral_ask", 3, plan.digest, person, MARCH)
        with store.engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO step_events (workflow_id, temporal_run_id, key, step, kind, action,"
                " executed_at, detail) VALUES (?, 'r', 'ask_sms:1', 'ask_sms', 'sms', 'sms', ?,"
                " '{}')",
                (workflow_id, MARCH.isoformat(sep=" ")),
            )
    for visitor in ("a" * 22, "b" * 22):
        book.visit("ann", visitor, None, MARCH)
    book.sign_up("ann", {"id": "eve", "phone": "+12125550188"}, "a" * 22, MARCH)
    book.convert("eve", MARCH + timedelta(days=1))
    return book


def test_the_report_as_json_and_as_a_table(store: Store) -> None:
    known_funnel(store)
    result = sopflow("report", "referrals", "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    (march,) = view["rows"]
    assert {k: march[k] for k in ("period", "loyal", "asked", "shared", "visits", "signed_up",
                                  "converted")} == {
        "period": "2026-03", "loyal": 2, "asked": 2, "shared": 1, "visits": 2,
        "signed_up": 1, "converted": 1,
    }  # fmt: skip
    assert (march["referral_rate"], march["page_conversion"]) == (0.5, 0.5)
    table = sopflow("report", "referrals", "--period", "week")
    assert table.exit_code == 0, table.output
    assert "Referral funnel by week" in table.output
    line = next(row for row in table.output.splitlines() if "2026-W11" in row)
    cells = [cell.strip() for cell in line.strip("│ \n").split("│")]
    assert cells == ["2026-W11", "2", "2", "1", "50.0%", "2", "2.00", "1", "1", "50.0%"]
    assert any(row.startswith("│ total") for row in table.output.splitlines())
    later = sopflow("report", "referrals", "--since", "2026-04-01", "--json")
    assert json.loads(later.output)["rows"] == []


def test_bad_options_say_what_to_use(store: Store) -> None:
    result = sopflow("report", "referrals", "--period", "year")
    assert result.exit_code == 1
    assert "--period 'year': use one of day, week, month" in result.output
    result = sopflow("report", "referrals", "--since", "someday")
    assert result.exit_code == 1 and "since 'someday': use an ISO date" in result.output
    empty = sopflow("report", "referrals")
    assert empty.exit_code == 0
    assert "no contact was enrolled in an SOP that asks for referrals" in empty.output


def purchases_file(tmp_path: Path) -> Path:
    path = tmp_path / "orders.jsonl"
    purchase = {"at": "2026-12-02T10:00:00+00:00", "amount": "30.00", "order_id": "o-1"}
    path.write_text(json.dumps({"id": "eve", "purchases": [purchase]}) + "\n")
    return path


def test_an_import_converts_and_warns_when_no_gateway_can_tell_the_runs(
    store: Store, tmp_path: Path
) -> None:
    store.upsert_contact({"id": "ann"})
    book = ReferralBook(store.engine)
    book.sign_up(
        "ann", {"id": "eve", "phone": "+12125550188"}, None, datetime(2026, 12, 1, tzinfo=UTC)
    )
    result = CliRunner().invoke(
        app, ["contacts", "import", "--api", "http://127.0.0.1:9", str(purchases_file(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    assert "1 referral converted" in result.output
    assert (
        "warning: the referrers' runs are not told yet (cannot reach the gateway" in result.output
    )
    referral = book.referral_of("eve")
    assert referral is not None and referral.converted_at is not None
    assert [n.news for n in book.pending()] == ["signed_up", "converted"]  # kept for later


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_import_asks_the_gateway_to_tell_the_runs(store: Store, tmp_path: Path) -> None:
    store.upsert_contact({"id": "ann"})
    book = ReferralBook(store.engine)
    book.sign_up(
        "ann", {"id": "eve", "phone": "+12125550188"}, None, datetime(2026, 12, 1, tzinfo=UTC)
    )

    async def no_temporal() -> Any:
        raise AssertionError("no SOP listens: the intake refuses before Temporal")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, no_temporal, Secret(TOKEN), "q"), port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
            time.sleep(0.05)
        result = CliRunner().invoke(
            app, ["contacts", "import", "--api", f"http://127.0.0.1:{port}",
                  str(purchases_file(tmp_path))]
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(10)
    assert result.exit_code == 0, result.output
    assert "referrers' runs told: 2, still pending: 0" in result.output  # sign-up, purchase
    assert book.pending() == []
