"""The teams file: who works the tasks SOPs assign. Validated in full before the store changes.

teams:
  - id: inside_sales
    name: Inside sales
    supervisor: sam            # a rep of any team; gets notify_supervisor escalations
    max_tasks_per_day: 40      # optional workload cap per rep (a rep may set their own)
    timezone: America/New_York # optional IANA zone: due times in notices and the inbox
    reps:
      - {id: ana, name: Ana Lima, phone: "+12125550101", timezone: America/Chicago}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.orm import QueryableAttribute

from sopflow.errors import SopflowError, read_user_file
from sopflow.phones import E164_HINT, e164
from sopflow.sop.schema import ZoneName
from sopflow.store.models import Rep, Team
from sopflow.store.text import problem

Identifier = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")


def _storable(column: QueryableAttribute[Any]) -> AfterValidator:
    """Text `column` can keep (no NUL, no lone surrogate, not over its length), or the reason:
    PostgreSQL would refuse it halfway through the import."""

    def check(value: str) -> str:
        if why := problem(value, column):
            raise PydanticCustomError("unstorable", why)
        return value

    return AfterValidator(check)


class RepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Identifier
    name: Annotated[str, _storable(Rep.name)] = Field(min_length=1)
    phone: str | None = Field(None, description="E.164; task notices are texted here")
    email: Annotated[str, _storable(Rep.email)] | None = None
    active: bool = True
    max_tasks_per_day: int | None = Field(
        None, ge=1, description="at most this many tasks in any 24 hours (default: the team's)"
    )
    timezone: ZoneName | None = Field(None, description="IANA zone (default: the team's)")

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is None:
            return None
        number = e164(value)
        if number is None:
            raise ValueError(f"invalid phone number {value!r}: {E164_HINT}")
        return number


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Identifier
    name: Annotated[str, _storable(Team.name)] = ""
    supervisor: Annotated[str, _storable(Team.supervisor_id)] | None = None
    max_tasks_per_day: int | None = Field(None, ge=1, description="each rep's default cap")
    timezone: ZoneName | None = Field(None, description="IANA zone of its reps, e.g. Europe/Paris")
    reps: list[RepIn] = Field(default_factory=list)


class TeamsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teams: list[TeamIn] = Field(min_length=1)


def load_teams(path: Path) -> list[dict[str, Any]]:
    """The teams of a file, as RepDirectory.import_teams takes them, or one clear error."""
    text = read_user_file(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SopflowError(f"{path}: not valid YAML ({exc})") from None
    try:
        parsed = TeamsFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SopflowError(f"{path}: {where}: {first['msg']}") from None
    ids = [rep.id for team in parsed.teams for rep in team.reps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SopflowError(f"{path}: rep {duplicates[0]!r} is listed in more than one place")
    return [team.model_dump() for team in parsed.teams]
