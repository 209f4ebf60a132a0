"""Personal referral codes and links, the steps that ask for referrals, and the referral
funnel's arithmetic. Pure: keys, plans and counts come in as values.

A code is short, signed and the same for a contact every time: the contact id in base64url
followed by an 8-character tag, the first 6 bytes of HMAC-SHA256 over "referral:" and the id,
under the key that signs email unsubscribe links (SOPFLOW_UNSUBSCRIBE_KEY, which every worker and
gateway of a deployment shares; sopflow.channels.unsubscribe). The prefix keeps the two apart:
an unsubscribe token never passes as a referral code, nor the reverse. 48 bits of tag are
plenty against guessing through a landing page, and keep a text short.

Templates read `{{ referral_link }}` (the gateway's landing page for the contact's code) and
`{{ referral_code }}`. Both shells hand the links they sign unsubscribe links with to the
rendering (compliance.preflight.clear), so a preview shows what production sends, signed with
the preview's key.
"""

from __future__ import annotations

import binascii
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, assert_never

from jinja2 import StrictUndefined, TemplateSyntaxError, meta

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.signing import b64, tag, unb64
from sopflow.sop.schema import MAX_CONTACT_ID
from sopflow.sop.templates import environment

if TYPE_CHECKING:  # rendering imports this module: keep its imports light
    from sopflow.sop.plan import Plan

PATH = "/r/"  # the gateway's landing pages: PATH + code
TAG_LENGTH = 8  # base64url characters of the tag (6 bytes)
TEMPLATE_NAMES = ("referral_link", "referral_code")
# The longest code: a contact id of MAX_CONTACT_ID bytes in base64url, then the tag.
MAX_CODE = -(-MAX_CONTACT_ID * 4 // 3) + TAG_LENGTH
_CODE = re.compile(r"[A-Za-z0-9_-]+")
NO_LINKS = (
    "referral links need the gateway's public URL and key "
    "(SOPFLOW_PUBLIC_URL, SOPFLOW_UNSUBSCRIBE_KEY)"
)


@dataclass(frozen=True)
class ReferralLinks:
    public_url: str  # the gateway as the people a link is forwarded to reach it
    key: bytes

    @classmethod
    def sharing(cls, links: UnsubscribeLinks) -> ReferralLinks:
        """Referral links to the same gateway, under the same key as unsubscribe links."""
        return cls(links.public_url, links.key)

    def _tag(self, contact_id: str) -> str:
        return tag(self.key, b"referral:", contact_id, 6)

    def code(self, contact_id: str) -> str:
        return b64(contact_id.encode()) + self._tag(contact_id)

    def url(self, contact_id: str) -> str:
        return f"{self.public_url.rstrip('/')}{PATH}{self.code(contact_id)}"

    def referrer(self, code: str) -> str | None:
        """The contact a code was made for; None when it is forged, cut or altered."""
        if not TAG_LENGTH < len(code) <= MAX_CODE or not _CODE.fullmatch(code):
            return None
        encoded, given = code[:-TAG_LENGTH], code[-TAG_LENGTH:]
        try:
            contact_id = unb64(encoded).decode()
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            return None
        # Base64 decoding forgives stray bits in the last character: only the one spelling
        # this module writes is a code, so no two codes name one contact.
        if not contact_id or b64(contact_id.encode()) != encoded:
            return None
        return contact_id if hmac.compare_digest(given, self._tag(contact_id)) else None


def template_values(contact_id: Any, links: UnsubscribeLinks | None) -> dict[str, Any]:
    """`referral_link` and `referral_code` for the templates of a run of `contact_id`. Without
    links both are undefined with the reason, so a template that uses them fails saying why
    (a step that does not use them renders as before)."""
    if links is None or contact_id is None:
        return {name: StrictUndefined(hint=NO_LINKS, name=name) for name in TEMPLATE_NAMES}
    referral = ReferralLinks.sharing(links)
    return {
        "referral_link": referral.url(str(contact_id)),
        "referral_code": referral.code(str(contact_id)),
    }


# ---------------------------------------------------------------------------- asking steps
def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _reads_a_referral_value(source: str) -> bool:
    if "referral_" not in source:  # most texts: no parsing
        return False
    try:
        names = meta.find_undeclared_variables(environment().parse(source))
    except TemplateSyntaxError:  # validation refuses it; not an ask
        return False
    return bool(names & set(TEMPLATE_NAMES))


def asking_steps(plan: Plan) -> frozenset[str]:
    """The steps of a plan whose texts carry the contact's referral link or code: sending one
    is asking the contact for a referral (the funnel's "asked")."""
    return frozenset(
        step.id
        for step in plan.sop.steps
        if any(_reads_a_referral_value(text) for text in _texts(step.model_dump()))
    )


# ---------------------------------------------------------------------------- the funnel
Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
NOT_ASKED = "(not asked)"


def period_of(at: datetime, period: Period) -> str:
    """The period an instant falls in, in UTC: 2026-04-03, 2026-W14 (ISO week), 2026-04."""
    at = at.astimezone(UTC)
    match period:
        case "day":
            return at.strftime("%Y-%m-%d")
        case "week":
            year, week, _ = at.isocalendar()
            return f"{year}-W{week:02d}"
        case "month":
            return at.strftime("%Y-%m")
        case _:
            assert_never(period)


@dataclass(frozen=True)
class ReferrerStats:
    """What one referrer's links brought: distinct visitors, sign-ups, conversions."""

    visits: int
    signed_up: int
    converted: int
    first_at: datetime | None = None  # the first visit or sign-up


@dataclass(frozen=True)
class Cohort:
    """A contact some SOP asks for referrals: when they were first enrolled in one (the
    cohort's period), and whether an ask actually reached them."""

    enrolled_at: datetime
    asked: bool


@dataclass
class FunnelRow:
    period: str
    loyal: int = 0  # enrolled in an SOP that asks: the loyal customers
    asked: int = 0  # an ask reached them: the reachable loyal customers
    shared: int = 0  # asked, and their link was visited
    visits: int = 0  # distinct visitors of those links
    signed_up: int = 0
    converted: int = 0  # referred contacts who bought

    def add(self, stats: ReferrerStats) -> None:
        self.shared += stats.visits > 0
        self.visits += stats.visits
        self.signed_up += stats.signed_up
        self.converted += stats.converted

    def view(self) -> dict[str, Any]:
        """The counts and the funnel's rates (None where nothing is there to divide by):
        asked × referral_rate × visits_per_sharer × page_conversion = converted."""

        def ratio(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return {
            **asdict(self),
            "referral_rate": ratio(self.shared, self.asked),
            "visits_per_sharer": ratio(self.visits, self.shared),
            "signup_rate": ratio(self.signed_up, self.visits),
            "page_conversion": ratio(self.converted, self.visits),
        }


@dataclass(frozen=True)
class Funnel:
    rows: list[FunnelRow]  # one per period with loyal customers, oldest first
    total: FunnelRow  # the rows added up
    not_asked: FunnelRow  # referrers no ask reached (a link passed on by hand): outside the funnel


def funnel(
    cohorts: Mapping[str, Cohort],
    stats: Mapping[str, ReferrerStats],
    period: Period,
    since: datetime | None = None,
) -> Funnel:
    """The funnel per period of first enrolment: each asked contact's links count in their
    cohort's row; the links of everyone else (never enrolled, or never reached) in `not_asked`.
    `since`: cohorts enrolled from then on, and referrers outside them first visited from then."""
    rows: dict[str, FunnelRow] = {}
    total, not_asked = FunnelRow("total"), FunnelRow(NOT_ASKED)
    for contact_id, cohort in cohorts.items():
        if since is not None and cohort.enrolled_at < since:
            continue
        label = period_of(cohort.enrolled_at, period)
        row = rows.setdefault(label, FunnelRow(label))
        row.loyal += 1
        total.loyal += 1
        if cohort.asked:
            row.asked += 1
            total.asked += 1
            if (found := stats.get(contact_id)) is not None:
                row.add(found)
                total.add(found)
    for referrer, found in stats.items():
        if (known := cohorts.get(referrer)) is not None and known.asked:
            continue  # in its cohort's row (or before `since`)
        if since is None or (found.first_at is not None and found.first_at >= since):
            not_asked.add(found)
    return Funnel([rows[label] for label in sorted(rows)], total, not_asked)


def funnel_view(found: Funnel, period: Period, since: datetime | None) -> dict[str, Any]:
    """The funnel as the API and `sopflow report referrals --json` answer it."""
    return {
        "period": period,
        "since": since.isoformat() if since else None,
        "rows": [row.view() for row in found.rows],
        "total": found.total.view(),
        "not_asked": found.not_asked.view(),
    }
