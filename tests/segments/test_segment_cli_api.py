"""`sopflow segments validate|preview` and GET /api/v1/segments[/{id}/preview], on SQLite and
PostgreSQL: the real command (CliRunner) and the real app (ASGI), against a store with ten
customers whose scores run from (1, 1, 1) to (5, 5, 5), two by two."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from segment_helpers import AS_OF, Db
from sqlalchemy import Engine
from typer.testing import CliRunner

from sopflow.cli import app
from sopflow.gateway.app import create_app
from sopflow.settings import Secret
from sopflow.store import repository
from sopflow.store.repository import Store, connect

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "segments"
TOKEN = "segments-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = timedelta(days=1)
EVERYONE = "id: eur_buyers\nname: EUR buyers\ndescription: d\nrules:\n  rfm: {currency: EUR}\n"


@pytest.fixture
def shop(db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Db]:
    """Ten customers; the CLI's store is this one (its engines closed after the test, as the
    command's process would on exit)."""
    made: list[Engine] = []

    def connect_and_keep(url: str, connections: int = 20) -> Engine:
        made.append(connect(url, connections))
        return made[-1]

    monkeypatch.setattr(repository, "connect", connect_and_keep)
    for n in range(10):
        db.contact(f"c{n}", first_name=f"Ann{n}", tags=["vip"] if n > 7 else [])
        for k in range(n + 1):
            db.purchase(f"c{n}", AS_OF - (100 - n) * DAY - k * timedelta(hours=1), str(n + 1))
    db.contact("window_shopper", lifecycle_stage="lead")
    monkeypatch.setenv("SOPFLOW_DATABASE_URL", db.url)
    monkeypatch.setenv("SOPFLOW_DATA_DIR", str(tmp_path / "data"))
    yield db
    for engine in made:
        engine.dispose()


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["segments", *args])


def test_validate_prints_ok_per_file_and_every_problem(tmp_path: Path) -> None:
    done = run("validate", str(EXAMPLES))
    assert done.exit_code == 0, done.output
    assert f"ok {EXAMPLES / 'champions.yaml'}: champions" in done.stdout
    (tmp_path / "bad.yaml").write_text(EVERYONE.replace("EUR", "euro") + "  tagz: {}\n")
    failed = run("validate", str(tmp_path), str(tmp_path / "gone.yaml"))
    assert failed.exit_code == 1
    assert failed.stderr.splitlines() == [
        f"{tmp_path / 'bad.yaml'}:5:19: error: rules.rfm.currency: currency 'euro': an ISO "
        "4217 code in capitals, e.g. EUR",
        f"{tmp_path / 'bad.yaml'}:6:3: error: rules: unknown field 'tagz' (did you mean 'tags'?)",
        f"{tmp_path / 'gone.yaml'}:1:1: error: no such file or folder",
        "3 problems found",
    ]


def test_validate_reads_segments_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("validate").stderr.splitlines() == [
        "segments:1:1: error: no such file or folder",
        "1 problem found",
    ]
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "everyone.yaml").write_text(EVERYONE)
    assert run("validate").stdout == "ok segments/everyone.yaml: eur_buyers\n"


def test_preview_as_json(shop: Db) -> None:
    done = run(
        "preview",
        "champions",
        "--segments",
        str(EXAMPLES),
        "--as-of",
        "2026-03-01T12:00Z",
        "--json",
    )
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert (shown["segment"], shown["as_of"], shown["members"]) == (
        "champions",
        "2026-03-01T12:00:00+00:00",
        2,
    )
    assert shown["rfm"] == {"currency": "EUR", "segments": {"champions": 2}}
    assert [m["id"] for m in shown["sample"]] == ["c8", "c9"]
    assert shown["sample"][1] == {
        "id": "c9",
        "first_name": "Ann9",
        "last_name": None,
        "lifecycle_stage": None,
        "tags": ["vip"],
        "rfm": {
            "recency": 5,
            "frequency": 5,
            "monetary": 5,
            "segment": "champions",
            "purchases": 10,
            "total": "100.0000",
            "last_purchase_at": (AS_OF - 91 * DAY).isoformat(),
        },
    }


def test_preview_as_tables(shop: Db, tmp_path: Path) -> None:
    (tmp_path / "everyone.yaml").write_text(EVERYONE)
    done = run(
        "preview",
        "eur_buyers",
        "--segments",
        str(tmp_path),
        "--sample",
        "3",
        "--as-of",
        "2026-03-01T12:00Z",
    )
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == "eur_buyers (EUR buyers) at 2026-03-01T12:00:00+00:00: 10 members"
    text = done.stdout
    for name in ("lost", "hibernating", "need_attention", "loyal_customers", "champions"):
        assert f"│ {name} " in text
    assert "20.0 %" in text
    assert "first 3 by id" in text
    row = next(line for line in lines if "│ c1 " in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [
        "c1", "Ann1", "", "", "1", "1", "1", "lost", "2", "4.00", "2025-11-22 12:00"
    ]  # fmt: skip
    earlier = run(
        "preview", "eur_buyers", "--segments", str(tmp_path), "--as-of", "2025-11-22", "--json"
    )
    assert json.loads(earlier.stdout)["members"] == 1  # only c0 had bought by then


def test_preview_refusals(shop: Db, tmp_path: Path) -> None:
    unknown = run("preview", "nope", "--segments", str(EXAMPLES))
    assert unknown.exit_code == 1
    assert unknown.stderr == (
        f"error: unknown segment 'nope' in {EXAMPLES} "
        "(known: at_risk, champions, high_intent, lapsed_vip)\n"
    )
    bad_date = run("preview", "champions", "--segments", str(EXAMPLES), "--as-of", "yesterday")
    assert bad_date.stderr == (
        "error: as_of 'yesterday': use an ISO date (2026-03-01, from 00:00 UTC) or date-time "
        "(2026-03-01T18:00:00+01:00)\n"
    )
    old = run("preview", "champions", "--segments", str(EXAMPLES), "--as-of", "0001-01-01")
    assert old.stderr == "error: as_of '0001-01-01': the year must be 1900 to 2200\n"
    too_many = run("preview", "champions", "--segments", str(EXAMPLES), "--sample", "101")
    assert too_many.stderr == "error: sample 101: show 0 to 100 contacts\n"
    nowhere = run("preview", "champions", "--segments", str(tmp_path / "none"))
    assert nowhere.stderr == (
        f"error: no segments folder {tmp_path / 'none'}: create it, one YAML file a segment\n"
    )


# ----------------------------------------------------------------------------- the API
async def no_temporal() -> Any:
    raise AssertionError("segments never reach Temporal")


@pytest.fixture
async def http(shop: Db, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    folder = tmp_path / "segments"
    folder.mkdir()
    for example in EXAMPLES.glob("*.yaml"):
        (folder / example.name).write_text(example.read_text())
    (folder / "everyone.yaml").write_text(EVERYONE)
    (folder / "broken.yaml").write_text("id: [\n")
    gateway = create_app(Store(shop.engine), no_temporal, Secret(TOKEN), "q", segments=folder)
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
        yield client


async def test_the_routes_need_the_token(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/segments")).status_code == 401
    assert (await http.get("/api/v1/segments/champions/preview")).status_code == 401


async def test_listing_the_segments(http: httpx.AsyncClient, tmp_path: Path) -> None:
    answer = await http.get("/api/v1/segments", headers=AUTH)
    assert answer.status_code == 200
    listed = answer.json()
    assert [s["id"] for s in listed["segments"]] == [
        "at_risk",
        "champions",
        "eur_buyers",
        "high_intent",
        "lapsed_vip",
    ]
    assert listed["segments"][2] == {
        "id": "eur_buyers",
        "name": "EUR buyers",
        "description": "d",
        "rules": {"rfm": {"currency": "EUR"}},
    }
    assert listed["problems"] == [
        f"{tmp_path / 'segments' / 'broken.yaml'}:2:1: error: invalid YAML: did not find "
        "expected node content"
    ]


async def test_previewing_a_segment(http: httpx.AsyncClient) -> None:
    answer = await http.get(
        "/api/v1/segments/eur_buyers/preview",
        params={"as_of": "2026-03-01T12:00:00Z", "sample": 2},
        headers=AUTH,
    )
    assert answer.status_code == 200
    shown = answer.json()
    assert shown["members"] == 10
    assert shown["rfm"]["segments"] == {
        "champions": 2,
        "loyal_customers": 2,
        "need_attention": 2,
        "hibernating": 2,
        "lost": 2,
    }
    assert [m["id"] for m in shown["sample"]] == ["c0", "c1"]
    vips = await http.get(
        "/api/v1/segments/lapsed_vip/preview", params={"as_of": "2026-03-01"}, headers=AUTH
    )
    assert vips.json()["members"] == 0  # c8, c9 are VIPs but have no phone
    assert vips.json()["rfm"] is None


async def test_preview_refusals_over_the_api(http: httpx.AsyncClient, tmp_path: Path) -> None:
    unknown = await http.get("/api/v1/segments/nope/preview", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": f"unknown segment 'nope' in {tmp_path / 'segments'} (known: at_risk, "
        "champions, eur_buyers, high_intent, lapsed_vip); 1 file there cannot be read: "
        f"`sopflow segments validate {tmp_path / 'segments'}` says why"
    }
    bad = await http.get(
        "/api/v1/segments/champions/preview", params={"as_of": "soon"}, headers=AUTH
    )
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("as_of 'soon': use an ISO date")
    many = await http.get(
        "/api/v1/segments/champions/preview", params={"sample": 1000}, headers=AUTH
    )
    assert many.status_code == 422
    assert many.json()["detail"][0]["loc"] == ["query", "sample"]
