"""Referrals on the gateway: the landing page personal links lead to, and telling referrers'
runs what their links brought.

- `GET /r/{code}` (public, like every page a link leads to): a forged, cut or altered code, or
  one whose contact the store does not know, gets a 404 page saying which, and nothing is
  recorded. Otherwise the visit is counted, once per visitor (a random id in the
  `sopflow_visitor` cookie and in the form), with the page it came from, and the sign-up form
  is shown: name, mobile number, optional email.
- `POST /r/{code}`: the person is checked as the events API checks a contact
  (normalise_contact: E.164 phone, email; the store's budget), created or filled in as the
  referred contact, and the referrer recorded (sopflow/store/referrals.py). A bad form, or the
  referrer's own number, gets a 422 page; a person another referrer brought first a 409 page;
  either way nothing is recorded. The same sign-up again is a no-op with the same thanks.
- The referrer's runs hear of a sign-up as `referral.signed_up` and of the referred contact's
  first purchase (an `order.created` event, imported purchases) as `referral.converted`, sent
  through the events API's own intake (`Tell`): its idempotency, its contact event to every
  running run of the referrer. What could not be told (Temporal down) stays pending and is told
  at the next sign-up, order, import or `POST /api/v1/referrals/announce`.
- `GET /api/v1/reports/referrals?period=month&since=…`: the funnel (sopflow/referrals.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from sopflow.enrolment import normalise_contact
from sopflow.errors import InvalidContactError, SopflowError
from sopflow.gateway.inputs import Clean
from sopflow.referrals import PATH, Period, ReferralLinks, funnel_view
from sopflow.store.referrals import Announcement, ReferralBook, new_contact_id
from sopflow.store.reports import parse_since
from sopflow.store.text import unstorable

log = logging.getLogger("sopflow.gateway.referrals")
MAX_BODY = 4096  # the sign-up form is a few hundred bytes; the gateway's BodyLimit enforces it
VISITOR_COOKIE = "sopflow_visitor"
VISITOR_DAYS = 365
MAX_NAME = 100
# Tell the referrer's runs: (event type, the referrer's contact id, event data, idempotency key),
# through the gateway's event intake (app.py). Raises what the intake raises.
Tell = Callable[[str, str, dict[str, Any], str], Awaitable[Any]]

_pages = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=StrictUndefined,
)


@dataclass(frozen=True)
class Announced:
    told: int  # sign-ups and conversions told to (or with no run listening for) the referrers
    pending: int  # left to tell: the intake failed (Temporal down) or another gateway is on it


class ReferralDesk:
    """Conversions and the telling of referrers' runs, for the routes and the events API."""

    def __init__(self, book: ReferralBook, tell: Tell) -> None:
        self.book, self.tell = book, tell
        self.lock = asyncio.Lock()  # one sweep at a time in this process

    async def purchased(self, contact_id: str) -> bool:
        """The contact bought (an order.created event): their referral converts (the first
        time) and the referrer's runs are told. True when it converted now."""
        converted = await asyncio.to_thread(self.book.convert, contact_id, datetime.now(UTC))
        if converted:
            await self.announce()
        return converted

    async def imported(self) -> int:
        """Purchases were imported: referrals they convert, and the telling. How many did."""
        converted = await asyncio.to_thread(self.book.convert_purchases)
        if converted:
            await self.announce()
        return converted

    async def announce(self, limit: int = 100) -> Announced:
        """Tell the referrers' runs every sign-up and conversion not told yet (up to `limit`).
        Never raises: what fails stays pending for the next time."""
        told = 0
        async with self.lock:
            pending = await asyncio.to_thread(self.book.pending, limit)
            for index, news in enumerate(pending):
                try:
                    await self._tell(news)
                except HTTPException as exc:  # 409: another attempt holds the key right now
                    log.info("referral %s: %s", news.idempotency_key, exc.detail)
                    continue
                except Exception:  # Temporal or the store: the rest waits with it
                    log.warning(
                        "could not tell the runs of %s about %s; %d left for later",
                        news.referrer_id,
                        news.idempotency_key,
                        len(pending) - index,
                        exc_info=True,
                    )
                    return Announced(told, len(pending) - index)
                await asyncio.to_thread(self.book.told, news, datetime.now(UTC))
                told += 1
        return Announced(told, 0)

    async def _tell(self, news: Announcement) -> None:
        try:
            await self.tell(news.event_type, news.referrer_id, news.data(), news.idempotency_key)
        except SopflowError as exc:
            if exc.retryable:  # configuration (Temporal unreachable): tell it later
                raise
            # No deployed SOP uses the event, or the referrer cannot be a run's contact:
            # nothing is listening, now or later (events are not kept for SOPs to come).
            log.info("nobody to tell about %s: %s", news.idempotency_key, exc)


def referral_api_router(desk: ReferralDesk) -> APIRouter:
    """The report and the telling, under /api/ (the bearer token guards them)."""
    router = APIRouter()

    @router.get("/api/v1/reports/referrals")
    async def get_referral_report(
        period: Period = "month",
        since: Annotated[Clean | None, Query(max_length=40)] = None,
    ) -> dict[str, Any]:
        """The referral funnel per period of first enrolment in an SOP that asks: loyal
        customers, those an ask reached, those who shared (their link was visited), distinct
        visitors, sign-ups, conversions, and the rates between them."""
        start = parse_since(since, datetime.now(UTC))
        found = await asyncio.to_thread(desk.book.funnel, period, start)
        return funnel_view(found, period, start)

    @router.post("/api/v1/referrals/announce")
    async def post_announce() -> dict[str, int]:
        """Tell referrers' runs the sign-ups and conversions they have not heard of yet (after
        `sopflow contacts import`, which records conversions but cannot reach Temporal)."""
        done = await desk.announce(limit=1000)
        return {"told": done.told, "pending": done.pending}

    return router


def _page(
    title: str,
    status: int = 200,
    message: str = "",
    problems: list[str] | None = None,
    form: Mapping[str, str] | None = None,
    action: str = "",
    visitor: str = "",
) -> HTMLResponse:
    html = _pages.get_template("referral.html").render(
        title=title,
        message=message,
        problems=problems or [],
        show_form=form is not None,
        form={"name": "", "phone": "", "email": "", **(form or {})},
        action=action,
        visitor=visitor,
    )
    return HTMLResponse(html, status_code=status)


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""  # a file upload is no answer


def _problems_of(name: str, phone: str, email: str) -> tuple[dict[str, Any], list[str]]:
    """The person as normalise_contact leaves them (without an id yet), and what is wrong."""
    problems = []
    if not name:
        problems.append("name: please give your name")
    elif len(name) > MAX_NAME:
        problems.append(f"name: {len(name)} characters, more than the {MAX_NAME} allowed")
    elif why := unstorable(name):
        problems.append(f"name: {why}")
    person: dict[str, Any] = {}
    if not phone:
        problems.append("phone: please give your mobile number, e.g. +12125550123")
    else:
        try:  # the events API's checks: E.164 phones, email addresses
            person = normalise_contact({"id": "-", "phone": phone, "email": email})
        except InvalidContactError as exc:
            problems.append(str(exc).removeprefix("contact '-': "))
    first, _, last = name.partition(" ")
    person |= {"first_name": first, "last_name": last.strip()}
    return person, problems


def referral_page_router(desk: ReferralDesk, links: ReferralLinks) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    secure = links.public_url.startswith("https://")

    async def referrer_of(code: str, request: Request) -> str | HTMLResponse:
        """The referrer's contact id, or the 404 page saying why there is none."""
        referrer = links.referrer(code)
        client = request.client.host if request.client else "?"
        if referrer is None:
            log.warning("refused a forged or damaged referral code from %s", client)
            return _page(
                "This link is not valid",
                404,
                "This referral link was cut or changed on its way to you. "
                "Ask your friend to send it again.",
            )
        if not await asyncio.to_thread(desk.book.known, referrer):
            log.warning("referral code of unknown contact %r from %s", referrer, client)
            return _page(
                "This link is not valid",
                404,
                "This referral link belongs to nobody we know any more.",
            )
        return referrer

    async def title_for(referrer: str) -> str:
        name = await asyncio.to_thread(desk.book.first_name, referrer)
        return f"{name} invited you" if name else "A friend invited you"

    @router.get(PATH + "{code}", response_class=HTMLResponse)
    async def landing(code: str, request: Request) -> HTMLResponse:
        found = await referrer_of(code, request)
        if isinstance(found, HTMLResponse):
            return found
        visit = await asyncio.to_thread(
            desk.book.visit,
            found,
            request.cookies.get(VISITOR_COOKIE),
            request.headers.get("referer"),
            datetime.now(UTC),
        )
        page = _page(
            await title_for(found),
            message="Leave your name and number and we will be in touch.",
            form={},
            action=PATH + code,
            visitor=visit.visitor,
        )
        page.set_cookie(
            VISITOR_COOKIE,
            visit.visitor,
            max_age=VISITOR_DAYS * 86400,
            path=PATH,
            httponly=True,
            samesite="lax",
            secure=secure,
        )
        return page

    @router.post(PATH + "{code}", response_class=HTMLResponse)
    async def sign_up(code: str, request: Request) -> HTMLResponse:
        found = await referrer_of(code, request)
        if isinstance(found, HTMLResponse):
            return found
        given = await request.form()
        name, phone, email = (_text(given, n) for n in ("name", "phone", "email"))
        visitor = request.cookies.get(VISITOR_COOKIE) or _text(given, "visitor") or None
        person, problems = _problems_of(name, phone, email)

        def refused(status: int, reasons: list[str]) -> HTMLResponse:
            form = {"name": name, "phone": phone, "email": email}
            return _page(
                "Please check the form", status, problems=reasons, form=form,
                action=PATH + code, visitor=visitor or "",
            )  # fmt: skip

        if problems:
            return refused(422, problems)
        known = await asyncio.to_thread(desk.book.contact_with_phone, person["phone"])
        try:
            contact = normalise_contact({**person, "id": known or new_contact_id(person["phone"])})
            done = await asyncio.to_thread(
                desk.book.sign_up, found, contact, visitor, datetime.now(UTC)
            )
        except SopflowError as exc:  # self-referral, another referrer first, over budget
            return refused(exc.http_status, [str(exc)])
        if done.new:
            log.info("contact %s signed up, referred by %s", done.referred_id, found)
            await desk.announce()
        return _page(
            f"Thank you, {person['first_name']}!",
            message="You are signed up. We will be in touch soon.",
        )

    return router
