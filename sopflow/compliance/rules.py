"""The contact rules table (legal rules shipped in rules.yaml, plus an organisation's own file)
and how one rule judges one moment. Pure: facts and time come in as values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import phonenumbers
import yaml
from phonenumbers import geocoder
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sopflow.errors import ConfigurationError, SopflowError, read_user_file
from sopflow.phones import parse_phone
from sopflow.sop import clock
from sopflow.sop.schema import (
    WEEKDAYS,
    Channel,
    Identifier,
    TimeRange,
    Weekday,
    WindowSpec,
)
from sopflow.sop.values import Duration

Purpose = Literal["marketing", "service"]
_PURPOSES: tuple[Purpose, ...] = ("marketing", "service")
BUILTIN_RULES = "rules.yaml"
_CHECK_YEARS = range(2024, 2031)  # holiday names are checked against these years


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Where(_Strict):
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    subdivision: str | None = Field(None, description="e.g. FL; needs country")


class RuleWindow(_Strict):
    hours: list[TimeRange] = Field(min_length=1)
    days: Literal["all", "business"] | list[Weekday] = "all"
    no_call_holidays: bool | list[str] = Field(
        False,
        description="true: never on the region's public holidays; a list: only on these "
        "(names as the `holidays` package gives them), since not every observance is a no-call day",
    )


class Cap(_Strict):
    max: int = Field(ge=0)
    per: Duration
    scope: Literal["contact", "subject"] = Field(
        "contact", description="subject: only touches of the same SOP count"
    )


class Rule(_Strict):
    id: Identifier
    title: str
    source: str = ""
    where: Where = Field(default_factory=Where)
    channels: list[Channel] = Field(min_length=1)
    purposes: list[Purpose] = Field(default_factory=lambda: list(_PURPOSES))
    window: RuleWindow | None = None
    cap: Cap | None = None
    footer: str | None = Field(None, description="SMS only: appended when the text lacks it")
    consent_required: bool = False
    exempt_min_priority: int | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _does_something(self) -> Rule:
        if not (self.window or self.cap or self.footer or self.consent_required):
            raise ValueError("a rule needs a window, a cap, a footer or consent_required")
        if self.where.subdivision and not self.where.country:
            raise ValueError("where.subdivision needs where.country")
        names = self.window.no_call_holidays if self.window else False
        if names is not False and not self.where.country:
            raise ValueError("window.no_call_holidays needs where.country")
        if isinstance(names, list) and self.where.country:
            known = clock.holiday_names(self.where.country, self.where.subdivision, _CHECK_YEARS)
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(
                    f"no_call_holidays: {unknown[0]!r} is not a holiday of {self.where.country}; "
                    f"known: {', '.join(sorted(known))}"
                )
        return self

    def applies(self, regions: Iterable[Region], channel: str, purpose: str, priority: int) -> bool:
        if channel not in self.channels or purpose not in self.purposes:
            return False
        if self.exempt_min_priority is not None and priority >= self.exempt_min_priority:
            return False
        return any(region.within(self.where) for region in regions) or self.where == Where()

    @cached_property
    def _window(self) -> tuple[WindowSpec, clock.Calendar] | None:
        spec = self.window
        if spec is None:
            return None
        days = (
            frozenset(range(7))
            if spec.days in ("all", "business")
            else frozenset(WEEKDAYS.index(d) for d in spec.days)
        )
        if spec.days == "business":
            days = frozenset(range(5))
        closed = spec.no_call_holidays
        restricted = days != frozenset(range(7)) or closed is not False
        # The region's calendar when holidays close the window or days are its business days
        # (weekdays less public holidays, plus make-up working days such as China's).
        country = self.where.country if closed is not False or spec.days == "business" else None
        calendar = clock.Calendar(
            days,
            country,
            self.where.subdivision if country else None,
            frozenset(closed) if isinstance(closed, list) else None,
        )
        return WindowSpec(hours=spec.hours, days="business" if restricted else "all"), calendar

    @property
    def window_calendar(self) -> tuple[WindowSpec, clock.Calendar] | None:
        """The rule's window as the clock evaluates it (hours, days, calendar)."""
        return self._window

    def window_next(self, at: datetime, zones: Sequence[str]) -> datetime | None:
        """The earliest moment >= at inside this rule's window in every zone."""
        if self._window is None:
            return at
        spec, calendar = self._window
        return clock.next_allowed(at, zones, spec, calendar)

    def window_reason(self, at: datetime, zones: Sequence[str], channel: str) -> str:
        assert self._window is not None
        spec, calendar = self._window
        return clock.why_blocked(at, zones, channel, spec, calendar)


class RuleFile(_Strict):
    rules: list[Rule]


@dataclass(frozen=True)
class Region:
    country: str
    subdivision: str | None = None

    def within(self, where: Where) -> bool:
        if where.country is None:
            return True
        if where.country != self.country:
            return False
        return where.subdivision is None or where.subdivision == self.subdivision


_US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ",
    "New Mexico": "NM", "New York": "NY", "North Carolina": "NC", "North Dakota": "ND",
    "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI",
    "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT",
    "Vermont": "VT", "Virginia": "VA", "Washington": "WA", "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Washington D.C.": "DC",
}  # fmt: skip


def phone_region(phone: str) -> Region | None:
    """Country from the number; for US numbers the state of the area code (geocoder data)."""
    parsed = parse_phone(phone, valid_only=False)
    if parsed is None:
        return None
    country = phonenumbers.region_code_for_number(parsed)
    if not country:
        return None
    if country != "US":
        return Region(country)
    place = geocoder.description_for_number(parsed, "en")  # "Florida" or "Miami, FL"
    state = _US_STATES.get(place) or (place.rsplit(", ", 1)[-1] if ", " in place else None)
    return Region(country, state if state in _US_STATES.values() else None)


def contact_regions(contact: Mapping[str, Any]) -> list[Region]:
    """Every region whose rules protect this contact: the address (country/state fields) and the
    phone number's. Both apply: state laws reach residents and area codes alike."""
    regions = []
    country = str(contact.get("country") or "").upper()
    if country:
        state = str(contact.get("state") or "").upper() or None
        regions.append(Region(country, state))
    if contact.get("phone"):
        found = phone_region(str(contact["phone"]))
        if found is not None and found not in regions:
            regions.append(found)
    return regions


def _parse(text: str, origin: str) -> list[Rule]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{origin}: not valid YAML ({exc})") from None
    try:
        rules = RuleFile.model_validate(raw).rules
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        raise ConfigurationError(f"{origin}: " + "; ".join(problems[:5])) from None
    ids = [r.id for r in rules]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigurationError(f"{origin}: rule id {repeated[0]!r} is used twice")
    return rules


def load_rules(organisation_file: Path | None = None) -> list[Rule]:
    """The shipped legal rules (each with its source), plus the organisation's own."""
    builtin = resources.files("sopflow.compliance").joinpath(BUILTIN_RULES).read_text("utf-8")
    rules = _parse(builtin, BUILTIN_RULES)
    missing = [r.id for r in rules if not r.source]
    assert not missing, f"legal rules need a source: {missing}"
    if organisation_file is not None:
        try:
            text = read_user_file(organisation_file)
        except SopflowError as exc:  # the organisation's rules are configuration
            raise ConfigurationError(str(exc)) from None
        extra = _parse(text, str(organisation_file))
        clash = {r.id for r in rules} & {r.id for r in extra}
        if clash:
            raise ConfigurationError(
                f"{organisation_file}: rule id {sorted(clash)[0]!r} is already a legal rule"
            )
        rules += extra
    return rules


def cap_next(rule: Rule, at: datetime, touches: Sequence[datetime]) -> datetime | None:
    """When `rule`'s cap allows one more of `touches` (already filtered to the rule's channels
    and the cap's scope); None: never (max 0)."""
    assert rule.cap is not None
    return next_free(at, touches, rule.cap.max, rule.cap.per)


def next_free(
    at: datetime, times: Iterable[datetime], limit: int, period: timedelta
) -> datetime | None:
    """The earliest moment >= at when fewer than `limit` of `times` fall in the trailing
    `period` (a sliding-window cap); None: never (limit 0)."""
    recent = sorted(t for t in times if at - period < t <= at)
    if len(recent) < limit:
        return at
    if limit == 0:
        return None
    # One slot frees when the (len - limit + 1)-th oldest touch leaves the period.
    return recent[len(recent) - limit] + period
