"""`sopflow users`: the real command (CliRunner) on the embedded SQLite store: users with a role
and a rep, a token printed once and usable at once, revoked at once, precise one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopflow.cli import app
from sopflow.identity.users import UserBook
from sopflow.store.repository import Store, connect
from sopflow.store.reps import RepDirectory

TEAMS = [{"id": "north", "supervisor": "sam", "reps": [{"id": "ana"}, {"id": "sam"}]}]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv("SOPFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("SOPFLOW_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    found = Store(connect(f"sqlite:///{tmp_path / 'data' / 'sopflow.db'}"))
    found.migrate()
    RepDirectory(found.engine).import_teams(TEAMS)
    yield found
    found.engine.dispose()


def sopflow(*args: str, given: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=given)


def test_users_tokens_and_passwords_from_the_command_line(store: Store) -> None:
    added = sopflow("users", "add", "ana", "--role", "rep", "--rep", "ana")
    assert added.exit_code == 0, added.output
    assert "added rep ana as rep ana, signing in with API tokens only" in added.output
    sam = sopflow(
        "users", "add", "sam", "--role", "supervisor", "--rep", "sam", "--password-stdin",
        given="a long passphrase\n",
    )  # fmt: skip
    assert sam.exit_code == 0 and "with a password" in sam.output
    issued = sopflow("users", "token", "ana")
    assert issued.exit_code == 0
    token = issued.stdout.strip()
    assert token.startswith("sft_") and "shown this once" in issued.stderr
    book = UserBook(store.engine)
    assert (found := book.by_token(token)) is not None and found.rep_id == "ana"
    listed = sopflow("users", "list").stdout
    assert "ana" in listed and "#1 …" + token[-4:] in listed and token not in listed
    assert book.sign_in("sam", "a long passphrase") is not None
    changed = sopflow("users", "password", "sam", "--password-stdin", given="another passphrase\n")
    assert changed.exit_code == 0 and book.sign_in("sam", "another passphrase") is not None
    revoked = sopflow("users", "revoke-token", "ana", "--token", "1")
    assert revoked.exit_code == 0 and "revoked 1 token of ana" in revoked.output
    assert book.by_token(token) is None


@pytest.mark.parametrize(
    "args, given, message",
    [
        (("users", "add", "x", "--role", "boss"), None, "unknown role 'boss': one of ops"),
        (("users", "add", "x", "--role", "rep", "--rep", "ghost"), None, "unknown rep 'ghost'"),
        (("users", "add", "x", "--role", "rep"), None, "give --rep REP_ID"),
        (("users", "add", "ana", "--role", "ops"), None, "user 'ana' exists already"),
        (("users", "token", "nobody"), None, "unknown user 'nobody'"),
        (("users", "revoke-token", "ana"), None, "give --token N or --all"),
        (("users", "revoke-token", "ana", "--token", "9"), None, "user 'ana' has no token 9"),
        (("users", "password", "ana", "--password-stdin"), "short\n", "shorter than 10"),
    ],
)
def test_mistakes_get_one_precise_line(
    store: Store, args: tuple[str, ...], given: str | None, message: str
) -> None:
    assert sopflow("users", "add", "ana", "--role", "rep", "--rep", "ana").exit_code == 0
    result = sopflow(*args, given=given)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().startswith("error: ") and message in result.stderr
