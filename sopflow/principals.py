"""Who is asking: the authenticated user behind a request, and what their role lets them see.

The gateway's authentication (API tokens, browser sessions) puts a Principal in the request's
ASGI scope under PRINCIPAL_KEY; routes read it with `sopflow.gateway.who.principal`. The actor of
every outcome and control is `Principal.actor`, never a field of the request body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

PRINCIPAL_KEY = "sopflow.principal"


class Role(StrEnum):
    ops = "ops"  # SOPs, rules, teams, users; sees everything (the configured API token is ops)
    supervisor = "supervisor"  # everything on their teams: runs, tasks, reps, controls
    rep = "rep"  # their own tasks only


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: Role
    rep_id: str | None = None  # the rep this user works as (reps; supervisors who take tasks)
    teams: frozenset[str] = field(default_factory=frozenset)  # a supervisor's teams

    @property
    def actor(self) -> str:
        """The name outcomes and controls are recorded under."""
        return self.rep_id or self.user_id

    @property
    def sees_everything(self) -> bool:
        return self.role is Role.ops

    def may_see_team(self, team_id: str | None) -> bool:
        return self.sees_everything or (self.role is Role.supervisor and team_id in self.teams)

    def may_act_on_task(self, holder: str | None, holder_team: str | None) -> bool:
        """Ops on any task, a supervisor on their teams' tasks, a rep on the tasks they hold."""
        if self.role is Role.rep:
            return holder is not None and holder == self.rep_id
        return self.may_see_team(holder_team) or (holder is not None and holder == self.rep_id)


# The configured single API token (settings `api_token`): ops, with every team in sight.
ADMIN = Principal(user_id="admin", role=Role.ops)
