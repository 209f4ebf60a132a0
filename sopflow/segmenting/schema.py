"""The segment file format (pydantic v2): one YAML file per segment in `segments/`, unknown keys
are errors, as in SOP files. Every rule present must hold (AND); a rule's own lists say how its
values combine.

```yaml
id: lapsed_vip
name: Lapsed VIPs
description: VIP customers who have not bought for three months.
rules:
  tags: {all: [vip], none: [do_not_market]}
  attributes: [{field: country, in: [FR, BE]}, {field: lifetime_value, gte: 1000}]
  lifecycle_stage: {in: [customer]}
  last_activity: {kind: purchase, days_since: {gte: 90}}
  rfm: {currency: EUR, segments: [at_risk, cant_lose_them], monetary: {gte: 4}}
```
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sopflow.segmenting.rfm import RFM_NAMES, RfmName
from sopflow.sop.schema import Identifier, Strict

# A contact field a rule reads: a key of the contact's `fields`, or one of the columns the store
# keeps apart (phone, timezone, owner). Letters, digits, `_` and `-`: the name goes into a JSON
# path on SQLite, where quotes and dots would mean something else.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_TEXT = 2000  # a contact's text cap (sopflow/gateway/inputs.py)


def _field_name(value: Any) -> str:
    if not isinstance(value, str) or not _FIELD_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a field name: letters, digits, _ and -, starting with a letter "
            "or _, at most 64 characters"
        )
    return value


def _scalar(value: Any) -> bool | int | float | str:
    """One value a field is compared with: a text, a number or true/false."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number a field can hold")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise ValueError(f"{value} is beyond what a database integer holds")  # SQLite: 64 bits
    if isinstance(value, str) and not 1 <= len(value) <= MAX_TEXT:
        raise ValueError(f"a text of 1 to {MAX_TEXT} characters, got {len(value)}")
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"a text, a number or true/false, got {_shown(value)}")


def _bound(value: Any) -> int | float | str:
    if isinstance(value, bool):
        raise ValueError("gte/lte take a number or a text (an ISO date…), not true/false")
    checked = _scalar(value)
    assert not isinstance(checked, bool)
    return checked


def _rfm_name(value: Any) -> Any:
    if isinstance(value, str) and value not in RFM_NAMES:
        close = difflib.get_close_matches(value, RFM_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown RFM segment {value!r}{hint}; the named segments are {', '.join(RFM_NAMES)}"
        )
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


FieldName = Annotated[str, PlainValidator(_field_name), WithJsonSchema({"type": "string"})]
Scalar = Annotated[
    bool | int | float | str,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
Bound = Annotated[
    int | float | str, PlainValidator(_bound), WithJsonSchema({"type": ["string", "number"]})
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Score = Annotated[int, Field(strict=True, ge=1, le=5)]
Days = Annotated[float, Field(strict=True, ge=0, le=36_500, allow_inf_nan=False)]
Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$"}),
]
NamedRfm = Annotated[RfmName, BeforeValidator(_rfm_name)]
LastActivityKind = Literal["purchase", "visit", "any"]  # any: either
# Fields the other rules own: an attribute rule on them would not do what it says.
OWNED_ELSEWHERE = {
    "tags": "tags are a list: use the `tags` rule",
    "lifecycle_stage": "use the `lifecycle_stage` rule",
    "id": "a segment is chosen by rules, not by contact ids",
}


def _distinct(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)


class TagRule(Strict):
    """Tags (the contact's `tags` list): all of `all`, at least one of `any`, none of `none`."""

    all: list[Tag] | None = Field(None, min_length=1)
    any: list[Tag] | None = Field(None, min_length=1)
    none: list[Tag] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> TagRule:
        lists = [self.all, self.any, self.none]
        if all(values is None for values in lists):
            raise ValueError("a tags rule needs `all`, `any` or `none` (a list of tags)")
        for values in lists:
            _distinct(values or [], "tag")
        both = set(self.all or []) & set(self.none or [])
        if both:
            raise ValueError(f"tag {sorted(both)[0]!r} is in both `all` and `none`: nobody matches")
        return self


class AttributeRule(Strict):
    """A test on one contact field. Text equals text exactly; a number matches a JSON number or
    a text holding a decimal number (CSV imports keep every value as text), compared as numbers;
    true/false match JSON booleans. `gte`/`lte` with a number compare numbers; with a text they
    compare texts character by character (so ISO dates and times compare as dates). `exists:
    true` holds when the field is there and not null. A value of another kind never matches."""

    field: FieldName
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1, max_length=1000)
    gte: Bound | None = None
    lte: Bound | None = None
    exists: Annotated[bool, Field(strict=True)] | None = None

    @model_validator(mode="after")
    def _one_test(self) -> AttributeRule:
        if self.field in OWNED_ELSEWHERE:
            raise ValueError(f"field {self.field!r}: {OWNED_ELSEWHERE[self.field]}")
        used = [name for name in ("equals", "in_", "gte", "lte", "exists") if self.given(name)]
        if not used:
            raise ValueError("an attribute rule needs one test: equals, in, gte, lte or exists")
        if len(used) > 1 and set(used) != {"gte", "lte"}:
            shown = ", ".join("in" if name == "in_" else name for name in used)
            raise ValueError(f"one test per attribute rule (gte with lte is a range); got {shown}")
        if self.gte is not None and self.lte is not None:
            if isinstance(self.gte, str) != isinstance(self.lte, str):
                raise ValueError("gte and lte must both be numbers or both be texts")
            if self.gte > self.lte:  # type: ignore[operator]  # same kind, checked above
                raise ValueError(f"gte {self.gte!r} is above lte {self.lte!r}: nobody matches")
        return self

    def given(self, name: str) -> bool:
        return getattr(self, name) is not None


class StageRule(Strict):
    """The contact's `lifecycle_stage` field: one of `in`, or not one of `not_in` (a contact
    without a stage is not in any list, so it matches `not_in`)."""

    in_: list[Text] | None = Field(None, alias="in", min_length=1)
    not_in: list[Text] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_list(self) -> StageRule:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError("a lifecycle_stage rule needs `in` or `not_in` (one of them)")
        _distinct(self.in_ or self.not_in or [], "stage")
        return self


class DayRange(Strict):
    gte: Days | None = None
    lte: Days | None = None

    @model_validator(mode="after")
    def _bounded(self) -> DayRange:
        if self.gte is None and self.lte is None:
            raise ValueError("days_since needs `gte` (at least N days ago) or `lte` (at most)")
        if self.gte is not None and self.lte is not None and self.gte > self.lte:
            raise ValueError(f"gte {self.gte:g} is above lte {self.lte:g}: nobody matches")
        return self


class LastActivityRule(Strict):
    """Days from the contact's last purchase or visit (`kind`; any: either) to `as_of`, in
    24-hour days: `lte: 30` = within the last 30 days, `gte: 90` = nothing for 90 days. A contact
    with no such activity at all never matches (lapsed means they were active once)."""

    kind: LastActivityKind = "any"
    days_since: DayRange


class ScoreRange(Strict):
    gte: Score | None = None
    lte: Score | None = None

    @model_validator(mode="after")
    def _bounded(self) -> ScoreRange:
        if self.gte is None and self.lte is None:
            raise ValueError("a score range needs `gte` or `lte` (scores are 1 to 5)")
        if self.gte is not None and self.lte is not None and self.gte > self.lte:
            raise ValueError(f"gte {self.gte} is above lte {self.lte}: nobody matches")
        return self


class RfmRule(Strict):
    """Recency, frequency and monetary quintile scores (1-5, 5 best) of the contact's purchases
    in `currency`, ranked against every contact with such purchases (sopflow/segmenting/rfm.py).
    A contact without purchases in that currency has no scores and never matches. `segments`:
    the named RFM segments to keep; the score ranges narrow further."""

    currency: Currency = Field(
        description="ISO 4217: only purchases in this currency count, for all three scores"
    )

    @field_validator("currency", mode="before")
    @classmethod
    def _iso_code(cls, value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"currency {_shown(value)}: an ISO 4217 code in capitals, e.g. EUR")
        return value

    segments: list[NamedRfm] | None = Field(None, min_length=1)
    recency: ScoreRange | None = None
    frequency: ScoreRange | None = None
    monetary: ScoreRange | None = None

    @model_validator(mode="after")
    def _distinct_names(self) -> RfmRule:
        _distinct(list(self.segments or []), "RFM segment")
        return self


class Rules(Strict):
    tags: TagRule | None = None
    attributes: list[AttributeRule] | None = Field(None, min_length=1, max_length=50)
    lifecycle_stage: StageRule | None = None
    last_activity: LastActivityRule | None = None
    rfm: RfmRule | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> Rules:
        if all(value is None for _, value in self):
            raise ValueError(
                "a segment needs at least one rule: tags, attributes, lifecycle_stage, "
                "last_activity or rfm"
            )
        return self


class Segment(Strict):
    id: Identifier
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=2000)]
    rules: Rules
