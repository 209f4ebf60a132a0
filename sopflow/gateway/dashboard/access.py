"""Who may open the dashboard and what they see. Supervisors and ops use it; a rep is sent to
their inbox, but for their own row of the reps report (`reader`, the reports API's rules). A supervisor's scope is their teams (the store's queries take it:
sopflow/store/listing.py, sopflow/store/overview.py), ops see everything. Sign-in
(gateway/auth.py) has put the user in the scope, and refuses a form POST without the session's
CSRF token (the forms carry it: `csrf_token`)."""

from __future__ import annotations

from typing import assert_never

from fastapi import HTTPException, Request

from sopflow.gateway.who import principal
from sopflow.principals import Principal, Role
from sopflow.store.overview import Scope

REP_HOME = "/inbox"  # the rep inbox (sign-in's pages)
PREFIX = "/dashboard"


def viewer(request: Request) -> Principal:
    """The signed-in supervisor or ops user; a rep is redirected to their inbox."""
    who = principal(request)
    if who.role is Role.rep:
        raise HTTPException(303, "reps work from their inbox", headers={"Location": REP_HOME})
    return who


def scope_of(who: Principal) -> Scope:
    match who.role:
        case Role.ops:
            return None
        case Role.supervisor:
            return frozenset(who.teams)
        case Role.rep:  # viewer() turned them away; a rep's tasks are their inbox's
            return frozenset()
        case _:
            assert_never(who.role)


def reader(request: Request) -> Principal:
    """Anyone signed in: the report pages narrow what they show as the reports API does."""
    return principal(request)


def ops_only(who: Principal, what: str) -> None:
    """A report no team scope narrows (the API keeps its route for ops)."""
    if not who.sees_everything:
        raise HTTPException(403, f"{what} counts every team's contacts: ops see it")
