"""A Twilio-compatible phone network on loopback: the test double and the demo's phone network.

It speaks the parts of Twilio's REST API that sopflow uses (2010-04-01 Messages and Calls:
create, fetch, list, cancel) with Basic auth and Twilio's error JSON, so the real `twilio` SDK
talks to it unchanged (only the base URL differs). Behaviour per destination number:
- Twilio's magic test numbers: +15005550001 invalid (21211), +15005550002 unroutable (21612),
  +15005550003 no international permission (21408), +15005550004 unsubscribed (21610),
  +15005550009 not a mobile number (21614);
- rules set through `POST /sandbox/numbers/{number}`: `deliver` (default), `fail` with a code,
  `reply` with a text after a delay, and for calls `answer` (default), `voicemail`,
  `no_answer`, `busy`;
- faults for the next create requests (`POST /sandbox/faults`): `429`, `500` (nothing created),
  `lost` (created, then a 500: the response is lost), `slow` (created, the response comes after
  `slow_seconds`, later than a client's timeout).
Status callbacks follow Twilio's state machines, are signed with the account's auth token
(X-Twilio-Signature), and can be duplicated and delivered out of order (`chaos`). Inbound
messages (`POST /sandbox/inbound`) are signed webhooks to the configured inbound URL.

Every route, the Twilio API's and the `/sandbox/...` controls alike, asks for the same Basic
credential (`auth.AccountAuth`): a control route open to anyone on the machine would sign a
forged STOP for them. Messages and calls are written to the `Keep` it is given (`sopflow up`:
<data dir>/sandbox.db) as they are created and as they change, and read back on start, so a
restart of the stack loses none of them and SIDs keep counting up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import itertools
import logging
import random
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from twilio.request_validator import RequestValidator

from sopflow.sandbox.auth import AccountAuth
from sopflow.sandbox.keep import Keep

log = logging.getLogger("sopflow.sandbox")
API = "/2010-04-01/Accounts/{account}"
SANDBOX_ACCOUNT = "AC" + "5a" * 16  # the embedded default's account on the sandbox
SANDBOX_FROM = "+15005550006"  # Twilio's magic "valid sender" test number
KEPT_RESOURCES = "twilio"  # the keep's kind for messages and calls, in one creation order
MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number: {to}, is not currently reachable."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MESSAGE_STEPS = {
    "deliver": ["sent", "delivered"],
    "fail": ["failed"],
    "undelivered": ["sent", "undelivered"],
}
_DIAL = re.compile(r'<Dial[^>]*action="(?P<action>[^"]+)"[^>]*>(?P<number>[^<]+)</Dial>')
CALL_END = {
    "answer": ("completed", "human", 42),
    "voicemail": ("completed", "machine_start", 18),
    "no_answer": ("no-answer", None, 0),
    "busy": ("busy", None, 0),
    "fail": ("failed", None, 0),
}


class NumberRule(BaseModel):
    message: Literal["deliver", "fail", "undelivered"] = "deliver"
    error_code: int | None = Field(None, description="for fail / undelivered, e.g. 30006")
    reply: str | None = Field(None, description="text the number replies after delivery")
    reply_after: float = Field(1.0, ge=0, le=3600, description="seconds")
    call: Literal["answer", "voicemail", "no_answer", "busy", "fail"] = "answer"


class Faults(BaseModel):
    next: list[Literal["429", "500", "lost", "slow"]] = Field(default_factory=list)
    slow_seconds: float = Field(5.0, ge=0, le=600)


class Chaos(BaseModel):
    duplicate: float = Field(0.0, ge=0, le=1, description="chance a callback is sent twice")
    shuffle: bool = Field(False, description="deliver a resource's callbacks in random order")
    step_seconds: float = Field(0.05, ge=0, le=60, description="delay between state changes")


class InboundIn(BaseModel):
    from_: str = Field(alias="from")
    to: str
    body: str = Field(max_length=1600)


@dataclass
class Resource:
    kind: Literal["message", "call"]
    sid: str
    account: str
    to: str
    from_: str
    body: str
    status: str
    created: datetime
    callback: str | None
    direction: str = "outbound-api"
    error_code: int | None = None
    answered_by: str | None = None
    duration: int | None = None
    # The callbacks still to walk through and post; kept, so a restarted sandbox goes on.
    plan: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        """As the keep stores it."""
        return {**dataclasses.asdict(self), "created": self.created.isoformat()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Resource:
        return cls(**{**doc, "created": datetime.fromisoformat(doc["created"])})

    def view(self) -> dict[str, Any]:
        stamp = format_datetime(self.created)
        base = API.format(account=self.account)
        if self.kind == "message":
            return {
                "sid": self.sid, "account_sid": self.account, "to": self.to, "from": self.from_,
                "body": self.body, "status": self.status, "direction": self.direction,
                "date_created": stamp, "date_updated": stamp, "date_sent": stamp,
                "error_code": self.error_code, "error_message": None, "num_segments": "1",
                "num_media": "0", "price": None, "price_unit": "USD", "api_version": "2010-04-01",
                "messaging_service_sid": None, "uri": f"{base}/Messages/{self.sid}.json",
                "subresource_uris": {},
            }  # fmt: skip
        return {
            "sid": self.sid, "account_sid": self.account, "to": self.to, "from": self.from_,
            "status": self.status, "direction": self.direction, "answered_by": self.answered_by,
            "duration": None if self.duration is None else str(self.duration),
            "date_created": stamp, "date_updated": stamp, "start_time": stamp, "end_time": None,
            "api_version": "2010-04-01", "uri": f"{base}/Calls/{self.sid}.json",
            "subresource_uris": {},
        }  # fmt: skip


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
         "status": status},
        status_code=status,
    )  # fmt: skip


def _status(params: Mapping[str, str]) -> str:
    return params.get("MessageStatus") or params.get("CallStatus") or ""


def sign(token: str, url: str, params: Mapping[str, str]) -> str:
    return str(RequestValidator(token).compute_signature(url, dict(params)))


class Sandbox:
    """The network's state; `app()` serves it."""

    def __init__(
        self,
        accounts: Mapping[str, str],
        inbound_url: str | None = None,
        seed: int = 0,
        callbacks: bool = True,
        keep: Keep | None = None,
    ) -> None:
        self.auth = AccountAuth(accounts)  # the one check of every route
        self.accounts = self.auth.accounts  # account sid → auth token
        self.callbacks = callbacks  # False: no status callbacks (benchmarks of the API alone)
        self.inbound_url = inbound_url
        self.keep = keep or Keep(None)  # not ours to close: `sopflow up` (or a test) owns it
        self.resources = {r.sid: r for r in map(Resource.from_doc, self.keep.load(KEPT_RESOURCES))}
        self.rules: dict[str, NumberRule] = {}
        self.faults: deque[str] = deque()
        self.slow_seconds = 5.0
        self.chaos = Chaos()
        self.rng = random.Random(seed)
        self.callbacks_sent: list[tuple[str, dict[str, str]]] = []
        self.whatsapp_inbound: dict[str, datetime] = {}  # number → when it last wrote
        for kept in self.resources.values():  # a restart does not close a 24-hour window
            if kept.direction == "inbound" and kept.from_.startswith("whatsapp:"):
                self.whatsapp_inbound[kept.from_.removeprefix("whatsapp:")] = kept.created
        # Every SID taken is a kept resource: counting on from them keeps SIDs in creation order.
        self._counter = itertools.count(len(self.resources) + 1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.http = httpx.AsyncClient(timeout=10)

    # ------------------------------------------------------------ helpers
    def _sid(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter):06d}{secrets.token_hex(13)}"

    def _record(self, resource: Resource) -> None:
        """A new or changed resource, kept before anyone is told of it."""
        self.resources[resource.sid] = resource
        self.keep.put(KEPT_RESOURCES, resource.sid, resource.doc())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, token: str, url: str, params: dict[str, str]) -> None:
        copies = 2 if self.rng.random() < self.chaos.duplicate else 1
        for _ in range(copies):
            self.callbacks_sent.append((url, params))
            try:
                await self.http.post(
                    url, data=params, headers={"X-Twilio-Signature": sign(token, url, params)}
                )
            except httpx.HTTPError as exc:  # Twilio logs and moves on; so do we
                log.warning("callback to %s failed: %s", url, exc)

    async def _progress(
        self,
        resource: Resource,
        steps: list[dict[str, str]],
        token: str,
        last: bool = True,
        posts: list[dict[str, str]] | None = None,
    ) -> None:
        """Walk a resource through its states, posting a callback for each (maybe shuffled);
        `posts`: other callbacks to post than the steps' (a resumed walk posts them all);
        `last`: the walk ends the resource's plan."""
        order = list(steps if posts is None else posts)
        if self.chaos.shuffle:
            self.rng.shuffle(order)
        for params in steps:  # the resource's own state advances in order
            await asyncio.sleep(self.chaos.step_seconds)
            resource.status = _status(params) or resource.status
            self._record(resource)
        for params in order:
            if resource.callback and self.callbacks:
                await self._post(token, resource.callback, params)
        if last:
            resource.plan = []
            self._record(resource)

    def resume(self) -> int:
        """Go on with the walks a stopped sandbox left unfinished (kept plans): the states not
        reached yet, then every callback of the plan: some may go a second time, as Twilio's
        own retries do, and sopflow takes each (sid, status) once. A click-to-call resumes
        without its dialled leg. The number of walks resumed."""
        unfinished = [r for r in self.resources.values() if r.plan and r.account in self.accounts]
        for resource in unfinished:
            statuses = [_status(params) for params in resource.plan]
            reached = statuses.index(resource.status) + 1 if resource.status in statuses else 0
            token = self.accounts[resource.account]
            walk = resource.plan[reached:]
            self._spawn(self._progress(resource, walk, token, posts=list(resource.plan)))
        return len(unfinished)

    # ------------------------------------------------------------ messages
    async def create_message(self, account: str, token: str, form: Mapping[str, str]) -> Any:
        to, sender = form.get("To", ""), form.get("From") or form.get("MessagingServiceSid", "")
        body = form.get("Body") or f"[content {form.get('ContentSid', '')}]"
        if not to or not sender:
            return twilio_error(400, 21604 if not to else 21603, "A 'To' and 'From' are required")
        if not form.get("Body") and not form.get("ContentSid"):
            return twilio_error(400, 21602, "Message body is required.")
        fault = self.faults.popleft() if self.faults else None
        if fault == "429":
            return twilio_error(429, 20429, "Too Many Requests")
        if fault == "500":
            return twilio_error(500, 20500, "Internal Server Error")
        bare = to.removeprefix("whatsapp:")
        if bare in MAGIC_TO:
            code, text = MAGIC_TO[bare]
            return twilio_error(400, code, text.format(to=to))
        if to.startswith("whatsapp:") and not form.get("ContentSid"):
            wrote = self.whatsapp_inbound.get(bare)
            if wrote is None or (datetime.now(UTC) - wrote).total_seconds() > 24 * 3600:
                return twilio_error(
                    400, 63016, "Failed to send freeform message because you are outside the "
                    "allowed window. Please use a Template.",
                )  # fmt: skip
        if form.get("ContentSid"):
            body = f"[content {form['ContentSid']}] {form.get('ContentVariables', '{}')}"
        message = Resource(
            "message", self._sid("SM"), account, to, sender, body, "queued", datetime.now(UTC),
            form.get("StatusCallback"),
        )  # fmt: skip
        rule = self.rules.get(bare, NumberRule())
        steps = []
        for status in MESSAGE_STEPS[rule.message]:
            params = {"MessageSid": message.sid, "SmsSid": message.sid, "AccountSid": account,
                      "From": sender, "To": to, "MessageStatus": status, "SmsStatus": status,
                      "ApiVersion": "2010-04-01"}  # fmt: skip
            if status in ("failed", "undelivered"):
                params["ErrorCode"] = str(rule.error_code or 30006)
                message.error_code = rule.error_code or 30006
            steps.append(params)
        message.plan = steps
        self._record(message)
        self._spawn(self._progress(message, steps, token))
        if rule.reply and rule.message == "deliver":
            self._spawn(self._reply_later(account, to, sender, rule))
        if fault == "lost":
            return twilio_error(500, 20500, "Internal Server Error")
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        return JSONResponse(message.view(), status_code=201)

    async def _reply_later(self, account: str, person: str, us: str, rule: NumberRule) -> None:
        """The person answers on the channel we wrote on (whatsapp:+1… or +1…)."""
        await asyncio.sleep(rule.reply_after)
        await self.inbound(account, person, us, rule.reply or "")

    async def inbound(self, account: str, sender: str, to: str, body: str) -> Resource:
        message = Resource(
            "message", self._sid("SM"), account, to, sender, body, "received", datetime.now(UTC),
            None, direction="inbound",
        )  # fmt: skip
        if sender.startswith("whatsapp:"):
            self.whatsapp_inbound[sender.removeprefix("whatsapp:")] = message.created
        self._record(message)
        if self.inbound_url:
            params = {"MessageSid": message.sid, "SmsSid": message.sid, "AccountSid": account,
                      "From": sender, "To": to, "Body": body, "NumMedia": "0",
                      "ApiVersion": "2010-04-01"}  # fmt: skip
            await self._post(self.accounts[account], self.inbound_url, params)
        return message

    # ------------------------------------------------------------ calls
    async def create_call(self, account: str, token: str, form: Mapping[str, str]) -> Any:
        to, sender = form.get("To", ""), form.get("From", "")
        if not to or not sender:
            return twilio_error(400, 21201 if not to else 21213, "A 'To' and 'From' are required")
        if not form.get("Twiml") and not form.get("Url"):
            return twilio_error(400, 21205, "Url or Twiml is required")
        fault = self.faults.popleft() if self.faults else None
        if fault == "429":
            return twilio_error(429, 20429, "Too Many Requests")
        if fault == "500":
            return twilio_error(500, 20500, "Internal Server Error")
        if to in MAGIC_TO:
            code, text = MAGIC_TO[to]
            return twilio_error(400, 21211 if code == 21614 else code, text.format(to=to))
        call = Resource(
            "call", self._sid("CA"), account, to, sender, form.get("Twiml", form.get("Url", "")),
            "queued", datetime.now(UTC), form.get("StatusCallback"),
        )  # fmt: skip
        final, answered_by, duration = CALL_END[self.rules.get(to, NumberRule()).call]
        call.answered_by, call.duration = answered_by, duration
        statuses = ["initiated", "ringing"]
        if final == "completed":
            statuses.append("in-progress")
        statuses.append(final)
        steps = []
        for sequence, status in enumerate(statuses):
            params = {"CallSid": call.sid, "AccountSid": account, "From": sender, "To": to,
                      "CallStatus": status, "Direction": "outbound-api", "ApiVersion": "2010-04-01",
                      "SequenceNumber": str(sequence), "Timestamp": format_datetime(datetime.now(UTC))}  # fmt: skip
            if status in ("in-progress", "completed") and answered_by:
                params["AnsweredBy"] = answered_by
            if status == final:
                params["CallDuration"] = str(duration)
            steps.append(params)
        call.plan = steps
        self._record(call)
        dial = _DIAL.search(call.body)
        if dial and final == "completed" and answered_by == "human":  # the callee bridges on
            self._spawn(self._progress_then_dial(call, steps, token, dial))
        else:
            self._spawn(self._progress(call, steps, token))
        if fault == "lost":
            return twilio_error(500, 20500, "Internal Server Error")
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        return JSONResponse(call.view(), status_code=201)

    async def _progress_then_dial(
        self, call: Resource, steps: list[dict[str, str]], token: str, dial: re.Match[str]
    ) -> None:
        """A call whose TwiML <Dial>s another number (click-to-call: the rep answers, then the
        lead's phone rings): the dialled leg follows the lead's number rule, and its result goes
        to the <Dial action> URL before the first leg completes."""
        await self._progress(call, steps[:-1], token, last=False)
        action, number = html.unescape(dial.group("action")), dial.group("number").strip()
        final, _, duration = CALL_END[self.rules.get(number, NumberRule()).call]
        leg = Resource("call", self._sid("CA"), call.account, number, call.to, "", "in-progress",
                       datetime.now(UTC), None, direction="outbound-dial")  # fmt: skip
        leg.status, leg.duration = final, duration
        self._record(leg)
        await asyncio.sleep(self.chaos.step_seconds)
        await self._post(token, action, {
            "CallSid": call.sid, "AccountSid": call.account, "From": call.from_, "To": call.to,
            "DialCallSid": leg.sid, "DialCallStatus": final, "DialCallDuration": str(duration),
            "ApiVersion": "2010-04-01",
        })  # fmt: skip
        await self._progress(call, steps[-1:], token)

    # ------------------------------------------------------------ reads
    def listing(
        self, account: str, kind: str, query: Mapping[str, str], key: str
    ) -> dict[str, Any]:
        found = [
            r.view()
            for r in reversed(list(self.resources.values()))  # newest first, as Twilio lists
            if r.account == account and r.kind == kind
            and (not query.get("To") or r.to == query["To"])
            and (not query.get("From") or r.from_ == query["From"])
        ]  # fmt: skip
        size = int(query.get("PageSize", 50))
        base = f"{API.format(account=account)}/{key.capitalize()}.json"
        return {
            key: found[:size], "page": 0, "page_size": size, "start": 0, "end": min(size, len(found)) - 1,
            "uri": base, "first_page_uri": base, "next_page_uri": None, "previous_page_uri": None,
        }  # fmt: skip

    def app(self) -> FastAPI:
        sandbox = self

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            if resumed := sandbox.resume():
                log.info("the sandbox goes on with %d unfinished messages and calls", resumed)
            yield
            for task in list(sandbox._tasks):
                task.cancel()
            await sandbox.http.aclose()

        api = FastAPI(title="sopflow sandbox phone network", lifespan=lifespan)

        @api.exception_handler(HTTPException)
        async def _error(_: Request, exc: HTTPException) -> JSONResponse:
            code = 20003 if exc.status_code == 401 else 20404
            answer = twilio_error(exc.status_code, code, str(exc.detail))
            answer.headers.update(exc.headers or {})  # 401: the WWW-Authenticate challenge
            return answer

        async def as_account(account: str, request: Request) -> None:
            """The Twilio API's check: Basic auth as the account in the path."""
            sandbox.auth.check(request, account)

        # On the router, so no route can forget it; a route reads the token of its (checked)
        # account from `sandbox.accounts`.
        twilio = APIRouter(prefix=API, dependencies=[Depends(as_account)])

        async def form(request: Request) -> dict[str, str]:
            data = await request.form()
            return {k: str(v) for k, v in data.items()}

        @twilio.post("/Messages.json")
        async def create_message(account: str, request: Request) -> Any:
            token = sandbox.accounts[account]
            return await sandbox.create_message(account, token, await form(request))

        @twilio.post("/Calls.json")
        async def create_call(account: str, request: Request) -> Any:
            token = sandbox.accounts[account]
            return await sandbox.create_call(account, token, await form(request))

        def resource(account: str, sid: str, kind: str) -> Resource:
            found = sandbox.resources.get(sid)
            if found is None or found.account != account or found.kind != kind:
                raise HTTPException(404, f"The requested resource {sid} was not found")
            return found

        @twilio.get("/Messages/{sid}.json")
        async def fetch_message(account: str, sid: str) -> Any:
            return resource(account, sid, "message").view()

        @twilio.get("/Calls/{sid}.json")
        async def fetch_call(account: str, sid: str) -> Any:
            return resource(account, sid, "call").view()

        @twilio.post("/Messages/{sid}.json")
        async def update_message(account: str, sid: str, request: Request) -> Any:
            message = resource(account, sid, "message")
            if (await form(request)).get("Status") == "canceled":
                if message.status not in ("queued", "scheduled", "accepted"):
                    return twilio_error(400, 30409, "Message cannot be canceled")
                message.status = "canceled"
                sandbox._record(message)
            return message.view()

        @twilio.post("/Calls/{sid}.json")
        async def update_call(account: str, sid: str, request: Request) -> Any:
            call = resource(account, sid, "call")
            wanted = (await form(request)).get("Status")
            if wanted in ("canceled", "completed") and call.status in (
                "queued",
                "ringing",
                "initiated",
                "in-progress",
            ):
                call.status = wanted
                sandbox._record(call)
            return call.view()

        @twilio.get("/Messages.json")
        async def list_messages(account: str, request: Request) -> Any:
            return sandbox.listing(account, "message", dict(request.query_params), "messages")

        @twilio.get("/Calls.json")
        async def list_calls(account: str, request: Request) -> Any:
            return sandbox.listing(account, "call", dict(request.query_params), "calls")

        api.include_router(twilio)
        api.include_router(sandbox.control_router())
        return api

    def control_router(self) -> APIRouter:
        """The `/sandbox/...` controls, behind the same credential as the API (any account's)."""
        sandbox = self
        controls = APIRouter(prefix="/sandbox", dependencies=[Depends(self.auth)])

        @controls.post("/numbers/{number}")
        async def set_rule(number: str, rule: NumberRule) -> dict[str, Any]:
            sandbox.rules[number] = rule
            return {"number": number, **rule.model_dump()}

        @controls.post("/faults")
        async def set_faults(faults: Faults) -> dict[str, Any]:
            sandbox.faults.extend(faults.next)
            sandbox.slow_seconds = faults.slow_seconds
            return {"pending": list(sandbox.faults)}

        @controls.post("/chaos")
        async def set_chaos(chaos: Chaos) -> Chaos:
            sandbox.chaos = chaos
            return chaos

        @controls.post("/inbound", status_code=201)
        async def post_inbound(message: InboundIn, request: Request) -> dict[str, Any]:
            """A text from a person's phone to the caller's account: a webhook signed with its
            token."""
            account = sandbox.auth.check(request)  # checked already; asked again for whose
            sent = await sandbox.inbound(account, message.from_, message.to, message.body)
            return sent.view()

        @controls.get("/numbers/{number}/messages")
        async def inbox(number: str) -> list[dict[str, Any]]:
            """Every message to or from the number, SMS and WhatsApp (the gateway's page and
            `sopflow sandbox inbox` show it)."""
            return [
                r.view()
                for r in sandbox.resources.values()
                if r.kind == "message"
                and number in (r.to.removeprefix("whatsapp:"), r.from_.removeprefix("whatsapp:"))
            ]

        return controls
