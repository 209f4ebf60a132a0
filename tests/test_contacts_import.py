"""`sopflow contacts import` and `POST /api/v1/contacts/import`: CSV and JSONL files, every bad
line reported as FILE:LINE: field: why with nothing written, --skip-invalid, idempotent
re-imports, and 100k contacts in one go."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from sopflow.cli import app
from sopflow.contact_files import read_file
from sopflow.contacts_import import Progress, Stage, import_contacts
from sopflow.gateway.app import create_app
from sopflow.gateway.guards import MAX_API_BODY
from sopflow.limits import CONTACT_BUDGET, json_size
from sopflow.settings import Secret
from sopflow.sop.plan import compile_plan
from sopflow.sop.schema import Sop
from sopflow.store.models import Contact, ContactActivity
from sopflow.store.repository import Store, connect

TOKEN = "import-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD_CSV = """\
id,phone,email,first_name,last_name,timezone,owner,tags,plan
c-1,+1 212 555 0123,Ann@Example.COM,Ann,Lee,America/New_York,ana,vip;new,gold
c-2,+12125550124,,Bob,"Stone, Jr.",,,,
"""
PURCHASES = [
    {"at": "2026-03-01T10:30:00Z", "amount": "120.50", "currency": "EUR", "order_id": "o-1"},
    {"at": "2026-03-02T09:00:00+01:00", "amount": 15},
]
GOOD_JSONL = "\n".join(
    json.dumps(line)
    for line in [
        {"id": "j-1", "phone": "+12125550125", "purchases": PURCHASES,
         "visits": [{"at": "2026-03-03T18:00:00Z", "store": "paris-1"}]},
        {"id": "j-2", "first_name": "Jo", "tags": ["lead"], "member_since": "2020-05-01"},
    ]
)  # fmt: skip
# A deployed SOP reads `birthday` as a date: the import checks it as an enrolment would.
SOP: dict[str, Any] = {
    "id": "birthday_note",
    "version": 1,
    "name": "Birthday note",
    "owner": "qa",
    "entry": {"events": ["lead.created"]},
    "contact_fields": {"birthday": {"type": "date"}},
    "steps": [{"id": "done", "kind": "end", "result": "completed"}],
}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's store: the embedded SQLite default in a fresh data dir, one SOP deployed."""
    monkeypatch.delenv("SOPFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("SOPFLOW_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    store = Store(connect(f"sqlite:///{tmp_path / 'data' / 'sopflow.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    store.engine.dispose()
    return tmp_path / "data"


def run_import(path: Path, *options: str) -> Any:
    return CliRunner().invoke(app, ["contacts", "import", *options, str(path)])


def stored(data_dir: Path) -> tuple[dict[str, Contact], list[ContactActivity]]:
    engine = connect(f"sqlite:///{data_dir / 'sopflow.db'}")
    with Session(engine) as session:
        contacts = {c.id: c for c in session.scalars(select(Contact))}
        activity = list(session.scalars(select(ContactActivity).order_by(ContactActivity.id)))
    engine.dispose()
    return contacts, activity


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_file_is_imported_with_normalised_fields(data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "crm.csv", GOOD_CSV)
    result = run_import(path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"imported 2 contacts (2 new, 0 updated), 0 purchases, 0 visits from {path}"
    )
    contacts, _ = stored(data_dir)
    ann = contacts["c-1"]
    assert (ann.phone, ann.timezone, ann.owner) == ("+12125550123", "America/New_York", "ana")
    assert ann.fields == {
        "email": "Ann@example.com",  # the domain lower-cased, as at intake
        "first_name": "Ann",
        "last_name": "Lee",
        "tags": ["vip", "new"],
        "plan": "gold",
    }
    # Empty cells are not fields: they would blank what the CRM sent before.
    assert contacts["c-2"].fields == {"first_name": "Bob", "last_name": "Stone, Jr."}


def test_a_jsonl_file_brings_purchases_and_visits(data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "crm.jsonl", GOOD_JSONL)
    result = run_import(path)
    assert result.exit_code == 0, result.output
    assert "imported 2 contacts (2 new, 0 updated), 2 purchases, 1 visits" in result.stdout
    contacts, activity = stored(data_dir)
    assert contacts["j-2"].fields == {
        "first_name": "Jo",
        "tags": ["lead"],
        "member_since": "2020-05-01",
    }
    rows = [(a.contact_id, a.kind, a.at.isoformat(), a.amount, a.currency, a.order_id, a.store)
            for a in activity]  # fmt: skip
    assert rows == [
        ("j-1", "purchase", "2026-03-01T10:30:00+00:00", Decimal("120.5"), "EUR", "o-1", None),
        ("j-1", "purchase", "2026-03-02T08:00:00+00:00", Decimal("15"), None, None, None),
        ("j-1", "visit", "2026-03-03T18:00:00+00:00", None, None, None, "paris-1"),
    ]


def test_importing_again_updates_and_adds_no_duplicate_activity(
    data_dir: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, "crm.jsonl", GOOD_JSONL)
    assert run_import(path).exit_code == 0
    changed = GOOD_JSONL.replace('"120.50"', '"99.90"').replace('"Jo"', '"Joanna"')
    again = run_import(write(tmp_path, "crm.jsonl", changed))
    assert again.exit_code == 0, again.output
    assert "imported 2 contacts (0 new, 2 updated), 2 purchases, 1 visits" in again.stdout
    contacts, activity = stored(data_dir)
    assert len(activity) == 3
    assert activity[0].amount == Decimal("99.9")  # the same order: its amount updated
    assert contacts["j-2"].fields["first_name"] == "Joanna"
    assert contacts["j-1"].phone == "+12125550125"


BIG = {"id": "c-1", "notes": ["n" * 2000] * 40}  # each text fits; all of them do not
BAD_LINES = [
    pytest.param(
        "x.csv",
        "id,phone\nc-1,+12125550123\nc-2,555\n",
        ["x.csv:3: phone: invalid phone number '555': use E.164, e.g. +12125550123"],
        id="invalid-phone",
    ),
    pytest.param(
        "x.csv",
        "id,first_name\nc-1,A\x00nn\n",
        ["x.csv:2: first_name: contains a NUL character (\\u0000)"],
        id="nul-byte",
    ),
    pytest.param(
        "x.csv",
        "id,birthday\nc-1,1990-02-30\n",
        [
            "x.csv:2: birthday: field 'birthday' is '1990-02-30', not an ISO 8601 date "
            "(e.g. 2026-03-01 or 2026-03-01T09:30:00+01:00)"
        ],
        id="bad-contact-date",
    ),
    pytest.param(
        "x.jsonl",
        '{"id": "c-1", "purchases": [{"at": "0001-01-01T00:00:00Z", "amount": 1}]}\n'
        '{"id": "c-2", "visits": [{"at": "2026-03-01"}]}\n',
        [
            "x.jsonl:1: purchases[0].at: 0001-01-01T00:00:00+00:00: the year must be 1900 to 2200",
            "x.jsonl:2: visits[0].at: needs a UTC offset, e.g. 2026-03-01T10:30:00Z or …+01:00",
        ],
        id="bad-activity-dates",
    ),
    pytest.param(
        "x.jsonl",
        '{"id": "c-1", "purchases": [{"at": "2026-03-01T10:00:00Z", "amount": true}, '
        '{"at": "2026-03-02T10:00:00Z", "amount": "ten"}]}\n',
        [
            "x.jsonl:1: purchases[0].amount: a number such as 12.50, not a bool",
            "x.jsonl:1: purchases[1].amount: Input should be a valid decimal",
        ],
        id="amount-type",
    ),
    pytest.param(
        "x.jsonl",
        json.dumps(BIG) + "\n",
        [
            f"x.jsonl:1: contact: with these fields the contact would be {json_size(BIG)} bytes as JSON, "
            f"more than the {CONTACT_BUDGET} (64 KiB) allowed"
        ],
        id="over-budget",
    ),
    pytest.param(
        "x.csv",
        "id,phone\nc-1,+12125550123\nc-2,+12125550124\nc-1,+12125550125\n",
        ["x.csv:4: id: 'c-1' is also on line 2"],
        id="duplicate-id",
    ),
    pytest.param(
        "x.jsonl",
        '{"id": "c-1"}\n{"id": "c-2",}\n[1]\n',
        [
            "x.jsonl:2: json: not valid JSON: Expecting property name enclosed in double quotes "
            "(column 14)",
            "x.jsonl:3: json: a line must be one JSON object, not a list",
        ],
        id="malformed-json",
    ),
    pytest.param(
        "x.csv",
        "id,phone\n,+12125550123\n",
        ["x.csv:2: id: `id` is required (the contact's unique id in your CRM)"],
        id="missing-id",
    ),
    pytest.param(
        "x.csv",
        b"id,first_name\nc-1,Ren\xe9\n",
        ["x.csv:2: encoding: not UTF-8 text (byte 8 of the line): save the file as UTF-8"],
        id="not-utf8",
    ),
    pytest.param(
        "x.csv",
        "id,phone\nc-1,+12125550123,extra\n",
        ["x.csv:2: row: 3 cells, more than the 2 columns of the header"],
        id="extra-cells",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_LINES)
def test_each_bad_line_is_named_and_nothing_is_written(
    data_dir: Path, tmp_path: Path, name: str, text: str | bytes, expected: list[str]
) -> None:
    path = write(tmp_path, name, text)
    result = run_import(path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[:-1] == [line.replace(name, str(path), 1) for line in expected]
    assert (
        lines[-1]
        == f"{len(expected)} problem{'s' if len(expected) != 1 else ''} found: nothing imported"
    )
    assert stored(data_dir) == ({}, [])


def test_every_problem_of_a_line_is_reported(data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "id,phone,email,timezone\nc-1,555,nobody,Mars/Base\n")
    result = run_import(path)
    assert result.stderr.splitlines() == [
        f"{path}:2: email: invalid email 'nobody': use an address such as ann@example.com",
        f"{path}:2: phone: invalid phone number '555': use E.164, e.g. +12125550123",
        f"{path}:2: timezone: unknown time zone 'Mars/Base'",
        "3 problems found: nothing imported",
    ]


def test_the_listing_stops_at_50_and_counts_the_rest(data_dir: Path, tmp_path: Path) -> None:
    rows = "".join(f"c-{n},555\n" for n in range(120))
    result = run_import(write(tmp_path, "x.csv", "id,phone\n" + rows))
    lines = result.stderr.splitlines()
    assert len(lines) == 52
    assert lines[-2:] == ["… and 70 more problems", "120 problems found: nothing imported"]


def test_skip_invalid_imports_the_good_lines_and_reports_the_bad(
    data_dir: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, "x.csv", "id,phone\nc-1,+12125550123\nc-2,555\nc-3,+12125550124\n")
    result = run_import(path, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"{path}:3: phone: invalid phone number '555': use E.164, e.g. +12125550123",
        "1 problem: those lines were skipped",
    ]
    assert "imported 2 contacts (2 new, 0 updated)" in result.stdout
    assert sorted(stored(data_dir)[0]) == ["c-1", "c-3"]


def test_on_a_terminal_a_progress_bar_runs_through_both_passes(
    data_dir: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, "crm.csv", GOOD_CSV)
    leader, follower = pty.openpty()
    command = [sys.executable, "-c", "from sopflow.cli import main; main()"]
    with subprocess.Popen(
        [*command, "contacts", "import", str(path)], stdout=follower, stderr=subprocess.PIPE
    ) as process:
        os.close(follower)
        output = b""
        with contextlib.suppress(OSError):  # EIO: the command has ended
            while chunk := os.read(leader, 4096):
                output += chunk
        os.close(leader)
        assert process.wait(timeout=60) == 0
    text = output.decode()
    assert "checking" in text and "importing" in text  # rich's bar, both tasks
    assert "imported 2 contacts (2 new, 0 updated), 0 purchases, 0 visits" in text


def test_progress_hears_every_line_and_every_contact(data_dir: Path, tmp_path: Path) -> None:
    heard: list[tuple[str, int]] = []

    class Heard(Progress):
        def start(self, stage: Stage, total: int) -> None:
            heard.append((f"start {stage}", total))

        def advance(self, stage: Stage, count: int) -> None:
            heard.append((stage, count))

    engine = connect(f"sqlite:///{data_dir / 'sopflow.db'}")
    path = write(tmp_path, "x.csv", "id\nc-1\n\nc-2\nc-3\n")
    import_contacts(engine, read_file(path), str(path), [], progress=Heard())
    engine.dispose()
    checked = sum(n for stage, n in heard if stage == "check")
    assert checked == 5  # the header (line 1) to the last contact's line
    assert [h for h in heard if h[0] != "check"] == [("start write", 3), ("write", 3)]


def test_a_header_without_id_and_an_unknown_file_type_are_refused(
    data_dir: Path, tmp_path: Path
) -> None:
    result = run_import(write(tmp_path, "x.csv", "phone\n+12125550123\n"))
    assert result.exit_code == 1
    assert "x.csv:1: header: no `id` column" in result.stderr
    result = run_import(write(tmp_path, "x.txt", "id\nc-1\n"))
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("x.txt: a .txt file: give a .csv or .jsonl file")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_100k_row_csv_imports_in_one_go(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("id,phone,email,first_name,last_name,timezone,owner,tags,plan\n")
        for n in range(100_000):
            out.write(
                f"c-{n},+1212555{n % 10_000:04d},u{n}@example.com,First{n},Last{n},"
                f"America/New_York,ana,vip;new,gold\n"
            )
    started = time.monotonic()
    result = run_import(path)
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "imported 100000 contacts (100000 new, 0 updated)" in result.stdout
    # About 30 s on this shared 2-core machine; the bound leaves room for a busy neighbour.
    assert took < 100, f"100k contacts took {took:.0f} s"
    contacts, _ = stored(data_dir)
    assert len(contacts) == 100_000


# ----------------------------------------------------------------------------- the API
async def no_temporal() -> Any:
    raise AssertionError("an import never reaches Temporal")


@pytest.fixture
def api_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(connect(f"sqlite:///{tmp_path / 'store.db'}"))
    store.migrate()
    store.deploy(compile_plan(Sop.model_validate(SOP)))
    yield store
    store.engine.dispose()


@pytest.fixture
async def http(api_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_store, no_temporal, Secret(TOKEN), "q")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sopflow") as client:
        yield client


def activity_count(store: Store) -> int:
    with Session(store.engine) as session:
        return session.scalar(select(func.count()).select_from(ContactActivity)) or 0


async def test_the_api_needs_the_token(http: httpx.AsyncClient, api_store: Store) -> None:
    answer = await http.post("/api/v1/contacts/import", json={"contacts": [{"id": "c-1"}]})
    assert answer.status_code == 401
    assert api_store.contact("c-1") is None


async def test_the_api_answers_422_with_every_bad_item_and_writes_nothing(
    http: httpx.AsyncClient, api_store: Store
) -> None:
    contacts = [
        {"id": "c-1", "phone": "+12125550123"},
        {"id": "c-2", "phone": "555", "birthday": "soon"},
        {"id": "c-3", "purchases": [{"at": "2026-03-01T10:00:00Z", "amount": [1]}]},
    ]
    answer = await http.post("/api/v1/contacts/import", json={"contacts": contacts}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json() == {
        "count": 3,
        "detail": [
            {"loc": ["body", "contacts", 1, "birthday"], "type": "contact_import",
             "msg": "field 'birthday' is 'soon', not an ISO 8601 date "
                    "(e.g. 2026-03-01 or 2026-03-01T09:30:00+01:00)"},
            {"loc": ["body", "contacts", 1, "phone"], "type": "contact_import",
             "msg": "invalid phone number '555': use E.164, e.g. +12125550123"},
            {"loc": ["body", "contacts", 2, "purchases[0].amount"], "type": "contact_import",
             "msg": "a number such as 12.50, not a list"},
        ],
    }  # fmt: skip
    assert api_store.contact("c-1") is None


async def test_the_api_imports_and_counts(http: httpx.AsyncClient, api_store: Store) -> None:
    contacts = [json.loads(line) for line in GOOD_JSONL.splitlines()]
    for expected_new in (2, 0):  # the second time: updates, no duplicate activity
        answer = await http.post(
            "/api/v1/contacts/import", json={"contacts": contacts}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "contacts": 2, "new": expected_new, "updated": 2 - expected_new, "purchases": 2,
            "visits": 1, "skipped": [], "skipped_count": 0,
        }  # fmt: skip
    assert activity_count(api_store) == 3


async def test_the_api_skips_invalid_items_when_asked(
    http: httpx.AsyncClient, api_store: Store
) -> None:
    body = {"contacts": [{"id": "c-1"}, {"id": "c-1"}, {"phone": "x"}], "skip_invalid": True}
    answer = await http.post("/api/v1/contacts/import", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert (out["contacts"], out["skipped_count"]) == (1, 3)
    assert [(p["loc"][2], p["loc"][3], p["msg"]) for p in out["skipped"]] == [
        (1, "id", "'c-1' is also on item 0"),
        (2, "id", "`id` is required (the contact's unique id in your CRM)"),
        (2, "phone", "invalid phone number 'x': use E.164, e.g. +12125550123"),
    ]


async def test_the_api_body_cap_bounds_an_import(http: httpx.AsyncClient) -> None:
    contacts = [{"id": f"c-{n}", "notes": "n" * 1000} for n in range(MAX_API_BODY // 1000)]
    answer = await http.post("/api/v1/contacts/import", json={"contacts": contacts}, headers=AUTH)
    assert answer.status_code == 413
