"""Users, API tokens and browser sessions in the store, on SQLite and PostgreSQL: secrets are
kept as hashes only, a revoked token or an ended session stops working, roles come with the
teams a supervisor supervises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from sopflow.errors import ConflictError, NotFoundError, SopflowError
from sopflow.identity.hashing import digest
from sopflow.identity.users import SESSION_TTL, UserBook, parse_role
from sopflow.principals import Principal, Role
from sopflow.store.models import ApiToken, BrowserSession, User
from sopflow.store.repository import Store
from sopflow.store.reps import RepDirectory

PASSWORD = "correct horse battery"
TEAMS = [
    {"id": "north", "supervisor": "sam", "reps": [{"id": "ana"}, {"id": "sam"}]},
    {"id": "south", "supervisor": "sam", "reps": [{"id": "ben"}]},
    {"id": "west", "supervisor": "wes", "reps": [{"id": "wes"}, {"id": "cho"}]},
]


@pytest.fixture
def book(store: Store) -> UserBook:
    RepDirectory(store.engine).import_teams(TEAMS)
    return UserBook(store.engine)


def every_text(store: Store) -> str:
    """Every value of the identity tables, as text: what a stolen copy would hold."""
    with Session(store.engine) as session:
        rows = [
            *session.execute(select(User.__table__)),
            *session.execute(select(ApiToken.__table__)),
            *session.execute(select(BrowserSession.__table__)),
        ]
    return " ".join(str(value) for row in rows for value in row)


def test_tokens_are_kept_as_hashes_and_revoked_ones_refused(store: Store, book: UserBook) -> None:
    book.add("ana", Role.rep, "ana")
    first_id, first = book.issue_token("ana")
    _, second = book.issue_token("ana")
    assert first.startswith("sft_") and len(first) > 40 and first != second
    kept = every_text(store)
    assert first not in kept and second not in kept  # the store never holds a token
    assert digest(first) in kept
    assert book.by_token(first) == Principal("ana", Role.rep, "ana")
    assert book.revoke_tokens("ana", first_id) == 1
    assert book.by_token(first) is None  # revoked: refused at its next use
    assert book.by_token(second) is not None  # the other still works
    assert book.revoke_tokens("ana") == 1 and book.by_token(second) is None
    assert book.by_token("sft_" + "x" * 43) is None
    with pytest.raises(NotFoundError, match="user 'ana' has no token 99"):
        book.revoke_tokens("ana", 99)


def test_a_password_signs_in_and_a_wrong_one_or_user_does_not(store: Store, book: UserBook) -> None:
    book.add("ana", Role.rep, "ana", password=PASSWORD)
    assert PASSWORD not in every_text(store)
    assert book.sign_in("ana", "wrong password!") is None
    assert book.sign_in("nobody", PASSWORD) is None
    assert book.sign_in("ana\x00", PASSWORD) is None
    started = book.sign_in("ana", PASSWORD)
    assert started is not None
    assert started.cookie not in every_text(store)  # the session is kept by its digest
    found = book.session(started.cookie)
    assert found is not None and found.principal.user_id == "ana"
    assert found.csrf == started.signed_in.csrf and len(found.csrf) >= 32
    book.sign_out(started.cookie)
    assert book.session(started.cookie) is None


def test_sessions_expire(store: Store, book: UserBook) -> None:
    book.add("ana", Role.rep, "ana", password=PASSWORD)
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    started = book.sign_in("ana", PASSWORD, now)
    assert started is not None and started.expires_at == now + SESSION_TTL
    assert book.session(started.cookie, now + SESSION_TTL - timedelta(seconds=1)) is not None
    assert book.session(started.cookie, now + SESSION_TTL) is None
    # The next sign-in clears the user's expired sessions.
    assert book.sign_in("ana", PASSWORD, now + timedelta(days=1)) is not None
    with Session(store.engine) as session:
        assert session.scalar(text("SELECT count(*) FROM browser_sessions")) == 1


def test_a_new_password_ends_the_users_sessions(book: UserBook) -> None:
    book.add("ana", Role.rep, "ana", password=PASSWORD)
    started = book.sign_in("ana", PASSWORD)
    assert started is not None
    book.set_password("ana", "another long password")
    assert book.session(started.cookie) is None
    assert book.sign_in("ana", PASSWORD) is None
    assert book.sign_in("ana", "another long password") is not None


def test_a_supervisor_sees_the_teams_they_supervise(book: UserBook) -> None:
    book.add("sam", Role.supervisor, "sam")
    _, token = book.issue_token("sam")
    assert book.by_token(token) == Principal(
        "sam", Role.supervisor, "sam", frozenset({"north", "south"})
    )
    book.add("olga", Role.ops)
    _, ops = book.issue_token("olga")
    found = book.by_token(ops)
    assert found is not None and found.sees_everything and found.actor == "olga"


@pytest.mark.parametrize(
    "user_id, role, rep, password, error, message",
    [
        ("ana", Role.rep, None, None, SopflowError, "a rep works as a rep of the teams file"),
        ("ana", Role.rep, "ghost", None, NotFoundError, "unknown rep 'ghost'"),
        ("admin", Role.ops, None, None, SopflowError, "user id 'admin' is reserved"),
        ("carrier", Role.ops, None, None, SopflowError, "user id 'carrier' is reserved"),
        ("a b", Role.ops, None, None, SopflowError, "user id 'a b': 1 to 64 letters"),
        ("ana", Role.rep, "ana", "short", SopflowError, "shorter than 10 characters"),
    ],
)
def test_bad_users_are_refused_with_the_reason(
    book: UserBook,
    user_id: str,
    role: Role,
    rep: str | None,
    password: str | None,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        book.add(user_id, role, rep, password)
    assert book.users() == []


def test_duplicates_and_unknown_roles_are_refused(book: UserBook) -> None:
    book.add("ana", Role.rep, "ana")
    with pytest.raises(ConflictError, match="user 'ana' exists already"):
        book.add("ana", Role.ops)
    with pytest.raises(SopflowError, match="unknown role 'boss': one of ops, supervisor, rep"):
        parse_role("boss")
    with pytest.raises(NotFoundError, match="unknown user 'bob'"):
        book.issue_token("bob")
