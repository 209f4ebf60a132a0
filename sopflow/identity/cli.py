"""`sopflow users`: add users with a role, give them API tokens and passwords, revoke tokens.
The store is the one of SOPFLOW_DATABASE_URL (as `sopflow reps`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer

from sopflow.errors import SopflowError

users_app = typer.Typer(
    help="Users (ops, supervisor, rep), their API tokens and browser passwords.",
    no_args_is_help=True,
)
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """sopflow.cli's one-line errors (imported late: sopflow.cli imports this module)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sopflow.cli import user_errors

        return user_errors(func)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _book() -> Any:
    from sopflow.cli import _store
    from sopflow.identity.users import UserBook

    return UserBook(_store().engine)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


PASSWORD_STDIN = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from the first line of stdin")
]


@users_app.command("add")
@_user_errors
def users_add_cmd(
    user_id: Annotated[str, typer.Argument(metavar="ID", help="the name they sign in with")],
    role: Annotated[str, typer.Option(help="ops, supervisor or rep")],
    rep: Annotated[
        str | None,
        typer.Option(help="the rep of the teams file they work as (reps and supervisors)"),
    ] = None,
    password_stdin: PASSWORD_STDIN = False,
) -> None:
    """Add a user. A supervisor's teams are those whose `supervisor` is their rep. Without
    --password-stdin they use API tokens only, until `sopflow users password ID`."""
    from sopflow.identity.users import parse_role

    parsed = parse_role(role)
    password = _password(True) if password_stdin else None
    user = _book().add(user_id, parsed, rep, password)
    works_as = f" as rep {user.rep_id}" if user.rep_id else ""
    signs_in = "with a password" if user.has_password else "with API tokens only"
    typer.echo(f"added {user.role.value} {user.id}{works_as}, signing in {signs_in}")


@users_app.command("list")
@_user_errors
def users_list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every user with their role, rep, and live tokens (never the tokens themselves)."""
    users = _book().users()
    if as_json:
        rows = [
            {
                "id": u.id,
                "role": u.role.value,
                "rep": u.rep_id,
                "password": u.has_password,
                "tokens": [
                    {
                        "id": t.id,
                        "ends_with": t.hint,
                        "created_at": t.created_at.isoformat(),
                        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                    }
                    for t in u.tokens
                ],
            }
            for u in users
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    for u in users:
        live = [f"#{t.id} …{t.hint}" for t in u.tokens if t.revoked_at is None]
        password = "password" if u.has_password else "no password"
        tokens = ", ".join(live) or "no token"
        typer.echo(f"{u.id:<16} {u.role.value:<10} {u.rep_id or '-':<16} {password:<12} {tokens}")
    if not users:
        typer.echo("no users: add one with `sopflow users add ID --role rep --rep REP_ID`")


@users_app.command("token")
@_user_errors
def users_token_cmd(
    user_id: Annotated[str, typer.Argument(metavar="ID")],
) -> None:
    """Create an API token for the user and print it, once: only its hash is kept."""
    token_id, token = _book().issue_token(user_id)
    typer.echo(token)
    typer.echo(
        f"token #{token_id} for {user_id}: shown this once; send it as "
        "`Authorization: Bearer <token>`",
        err=True,
    )


@users_app.command("revoke-token")
@_user_errors
def users_revoke_token_cmd(
    user_id: Annotated[str, typer.Argument(metavar="ID")],
    token: Annotated[
        int | None, typer.Option("--token", help="the token's number (`sopflow users list`)")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="every token of the user")] = False,
) -> None:
    """Revoke one token of the user (--token N) or all of them (--all): refused at once."""
    if (token is None) == (not every):
        raise SopflowError("give --token N or --all")
    count = _book().revoke_tokens(user_id, token)
    typer.echo(f"revoked {count} token{'s' if count != 1 else ''} of {user_id}")


@users_app.command("password")
@_user_errors
def users_password_cmd(
    user_id: Annotated[str, typer.Argument(metavar="ID")],
    password_stdin: PASSWORD_STDIN = False,
) -> None:
    """Set the user's browser password (asked twice, or read from stdin); signs their
    browsers out."""
    _book().set_password(user_id, _password(password_stdin))
    typer.echo(f"password of {user_id} set; their browser sessions were ended")
