"""Users, their API tokens and their browser sessions, in the store.

A user has a role (ops, supervisor, rep). Reps and supervisors work as a rep of the teams file
(`rep_id`); a supervisor's teams are the teams whose `supervisor` is that rep, read at each
request, so a new teams file takes effect at once. Tokens and session ids are kept as SHA-256
digests only (sopflow/identity/hashing.py); a revoked token or a deleted session stops working
at its next request.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sopflow.errors import ConflictError, NotFoundError, SopflowError
from sopflow.identity.hashing import (
    digest,
    hash_password,
    new_token,
    password_matches,
    password_problem,
)
from sopflow.principals import Principal, Role
from sopflow.sop.protocol import SYSTEM_ACTORS
from sopflow.store.models import ApiToken, BrowserSession, Rep, Team, User

USER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# "admin": the configured API token's user; the others sign sopflow's own reports.
RESERVED = frozenset({"admin", *SYSTEM_ACTORS})
SESSION_TTL = timedelta(hours=12)  # a working day: sign in again the next morning
HINT = 4  # characters of a token kept in clear to tell tokens apart


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise SopflowError(
            f"unknown role {text!r}: one of {', '.join(r.value for r in Role)}"
        ) from None


@dataclass(frozen=True)
class TokenInfo:
    id: int
    hint: str  # the token's last characters
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class UserInfo:
    id: str
    role: Role
    rep_id: str | None
    has_password: bool
    created_at: datetime
    tokens: tuple[TokenInfo, ...] = ()


@dataclass(frozen=True)
class SignedIn:
    """A browser session as the gateway sees it: who, and the token its forms carry."""

    principal: Principal
    csrf: str


@dataclass(frozen=True)
class NewSession:
    cookie: str  # the random id, for the cookie only: the store keeps its digest
    expires_at: datetime
    signed_in: SignedIn


class UserBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ users
    def add(
        self,
        user_id: str,
        role: Role,
        rep_id: str | None = None,
        password: str | None = None,
        now: datetime | None = None,
    ) -> UserInfo:
        """A new user; SopflowError naming what is wrong (id, rep, password), ConflictError
        for an id taken."""
        if not USER_ID.fullmatch(user_id):
            raise SopflowError(f"user id {user_id!r}: 1 to 64 letters, digits, '.', '_' or '-'")
        if user_id in RESERVED:
            raise SopflowError(f"user id {user_id!r} is reserved for sopflow's own use")
        if role in (Role.rep, Role.supervisor) and rep_id is None:
            raise SopflowError(
                f"a {role.value} works as a rep of the teams file: give --rep REP_ID"
            )
        if password is not None and (why := password_problem(password)):
            raise SopflowError(why)
        created = now or datetime.now(UTC)
        with Session(self.engine) as session:
            if rep_id is not None and session.get(Rep, rep_id) is None:
                known = list(session.scalars(select(Rep.id).order_by(Rep.id).limit(20)))
                hint = f" (known: {', '.join(known)})" if known else " (no reps imported yet)"
                raise NotFoundError(
                    f"unknown rep {rep_id!r}: import it with `sopflow reps import`{hint}"
                )
            if session.get(User, user_id) is not None:
                raise ConflictError(f"user {user_id!r} exists already")
            hashed = hash_password(password) if password is not None else None
            session.add(
                User(
                    id=user_id,
                    role=role.value,
                    rep_id=rep_id,
                    password_hash=hashed,
                    created_at=created,
                )
            )
            try:
                session.commit()
            except IntegrityError:  # added meanwhile by another command
                raise ConflictError(f"user {user_id!r} exists already") from None
        return UserInfo(user_id, role, rep_id, password is not None, created)

    def users(self) -> list[UserInfo]:
        with Session(self.engine) as session:
            tokens: dict[str, list[TokenInfo]] = {}
            for row in session.scalars(select(ApiToken).order_by(ApiToken.id)):
                tokens.setdefault(row.user_id, []).append(
                    TokenInfo(row.id, row.hint, row.created_at, row.revoked_at)
                )
            return [
                UserInfo(
                    u.id,
                    Role(u.role),
                    u.rep_id,
                    u.password_hash is not None,
                    u.created_at,
                    tuple(tokens.get(u.id, ())),
                )
                for u in session.scalars(select(User).order_by(User.id))
            ]

    def set_password(self, user_id: str, password: str) -> None:
        """Set (or change) a user's password; their browsers are signed out."""
        if why := password_problem(password):
            raise SopflowError(why)
        with Session(self.engine) as session, session.begin():
            user = self._user(session, user_id)
            user.password_hash = hash_password(password)
            session.execute(delete(BrowserSession).where(BrowserSession.user_id == user_id))

    # ------------------------------------------------------------ API tokens
    def issue_token(self, user_id: str, now: datetime | None = None) -> tuple[int, str]:
        """A new token for the user: (its id, the token). Only its digest is stored."""
        token = new_token()
        with Session(self.engine) as session, session.begin():
            self._user(session, user_id)
            row = ApiToken(
                user_id=user_id,
                digest=digest(token),
                hint=token[-HINT:],
                created_at=now or datetime.now(UTC),
            )
            session.add(row)
            session.flush()
            return row.id, token

    def revoke_tokens(
        self, user_id: str, token_id: int | None = None, now: datetime | None = None
    ) -> int:
        """Revoke one token of the user (`token_id`) or all of them; how many were revoked."""
        with Session(self.engine) as session, session.begin():
            self._user(session, user_id)
            query = select(ApiToken).where(
                ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)
            )
            if token_id is not None:
                found = session.get(ApiToken, token_id)
                if found is None or found.user_id != user_id:
                    raise NotFoundError(f"user {user_id!r} has no token {token_id}")
                query = query.where(ApiToken.id == token_id)
            rows = list(session.scalars(query))
            for row in rows:
                row.revoked_at = now or datetime.now(UTC)
            return len(rows)

    def by_token(self, token: str) -> Principal | None:
        """The user a live token belongs to; None for an unknown or revoked one."""
        with Session(self.engine) as session:
            found = session.execute(
                select(User)
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.digest == digest(token), ApiToken.revoked_at.is_(None))
            ).scalar_one_or_none()
            return _principal(session, found) if found is not None else None

    # ------------------------------------------------------------ browser sessions
    def sign_in(
        self, user_id: str, password: str, now: datetime | None = None
    ) -> NewSession | None:
        """A new session when the password is the user's; None otherwise (an unknown user
        takes the same time: the password is checked against a dummy hash)."""
        now = now or datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            user = session.get(User, user_id) if USER_ID.fullmatch(user_id) else None
            if not password_matches(user.password_hash if user else None, password):
                return None
            assert user is not None
            session.execute(  # this user's expired sessions: gone while we are here
                delete(BrowserSession).where(
                    BrowserSession.user_id == user.id, BrowserSession.expires_at <= now
                )
            )
            cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            expires = now + SESSION_TTL
            session.add(
                BrowserSession(
                    digest=digest(cookie),
                    user_id=user.id,
                    csrf=csrf,
                    created_at=now,
                    expires_at=expires,
                )
            )
            return NewSession(cookie, expires, SignedIn(_principal(session, user), csrf))

    def session(self, cookie: str, now: datetime | None = None) -> SignedIn | None:
        """The live session of a cookie; None when unknown, signed out or expired."""
        now = now or datetime.now(UTC)
        with Session(self.engine) as session:
            row = session.get(BrowserSession, digest(cookie))
            if row is None or row.expires_at <= now:
                return None
            user = session.get(User, row.user_id)
            return SignedIn(_principal(session, user), row.csrf) if user is not None else None

    def sign_out(self, cookie: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(delete(BrowserSession).where(BrowserSession.digest == digest(cookie)))

    @staticmethod
    def _user(session: Session, user_id: str) -> User:
        user = session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"unknown user {user_id!r} (see `sopflow users list`)")
        return user


def _principal(session: Session, user: User) -> Principal:
    role = Role(user.role)
    teams: frozenset[str] = frozenset()
    if role is Role.supervisor and user.rep_id is not None:
        teams = frozenset(session.scalars(select(Team.id).where(Team.supervisor_id == user.rep_id)))
    return Principal(user_id=user.id, role=role, rep_id=user.rep_id, teams=teams)
