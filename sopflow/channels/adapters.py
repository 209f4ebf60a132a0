"""One adapter per channel: where its address comes from, how it is parsed, which footers the
law wants in its text, and which inbound words mean stop / start / help.

`adapter(channel)` is an exhaustive match: a channel added to the SOP language without an adapter
fails mypy. The gate, preflight (so the simulator and the activity alike), the store's effects and
the gateway's webhooks ask the adapter instead of testing channel names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from sopflow.emails import email_address
from sopflow.phones import e164
from sopflow.sop.schema import Channel

AddressField = Literal["phone", "email"]
Keyword = Literal["stop", "start", "help"]

# Carrier and CTIA opt-out words (Twilio's defaults) plus China's 退订/TD/T; a whole message only.
_PHONE_KEYWORDS: Mapping[str, Keyword] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "CANCEL", "OPTOUT", "REVOKE",
         "退订", "TD", "T"),
        "stop",
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP"), "start"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}  # fmt: skip


@dataclass(frozen=True)
class ChannelAdapter:
    channel: Channel
    address_field: AddressField  # the contact field the touch goes to
    parse: Callable[[str], str | None] = field(repr=False)  # the address normalised, or None
    legal_footers: bool = False  # the rules table's footers go into this channel's text
    one_click_unsubscribe: bool = False  # every message carries a signed unsubscribe link
    footer_separator: str = " "  # between the text and each footer
    keywords: Mapping[str, Keyword] = field(default_factory=dict, repr=False)

    def address(self, contact: Mapping[str, Any]) -> str | None:
        """The contact's address on this channel, normalised; None when missing or invalid."""
        raw = contact.get(self.address_field)
        return None if raw in (None, "") else self.parse(str(raw))

    def missing_address(self, contact: Mapping[str, Any]) -> str:
        raw = contact.get(self.address_field)
        what = "an email address" if self.address_field == "email" else "a phone number"
        if raw in (None, ""):
            return f"the contact has no {self.address_field} ({self.channel} needs {what})"
        return f"the contact's {self.address_field} {raw!r} is not {what}"

    def keyword(self, body: str) -> Keyword | None:
        """What an inbound message means when it is one of the channel's keywords."""
        return self.keywords.get(body.strip().upper())

    def footers(self, legal: Sequence[str], unsubscribe_url: str | None) -> list[str]:
        """The lines appended to a message's text, in order."""
        lines = list(legal) if self.legal_footers else []
        if self.one_click_unsubscribe and unsubscribe_url:
            lines.append(f"Unsubscribe: {unsubscribe_url}")
        return lines


SMS = ChannelAdapter("sms", "phone", e164, legal_footers=True, keywords=_PHONE_KEYWORDS)
WHATSAPP = ChannelAdapter("whatsapp", "phone", e164, keywords=_PHONE_KEYWORDS)
CALL = ChannelAdapter("call", "phone", e164)
EMAIL = ChannelAdapter(
    "email", "email", email_address, one_click_unsubscribe=True, footer_separator="\n\n"
)


def adapter(channel: Channel) -> ChannelAdapter:
    match channel:
        case "sms":
            return SMS
        case "whatsapp":
            return WHATSAPP
        case "call":
            return CALL
        case "email":
            return EMAIL
        case _:
            assert_never(channel)
