"""Signed one-click unsubscribe links for email (RFC 8058, CAN-SPAM, Gmail/Yahoo sender rules).

A link names the contact and carries an HMAC of it, so nobody can unsubscribe someone else by
guessing ids. The same link goes in the `List-Unsubscribe` header (mail clients POST to it) and
in the footer of the text (people click it). Pure: the key comes in as bytes.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sopflow.signing import b64, tag, unb64

PATH = "/unsubscribe/"


@dataclass(frozen=True)
class UnsubscribeLinks:
    public_url: str  # the gateway as mail clients reach it, e.g. https://sopflow.example.com
    key: bytes

    def _mac(self, contact_id: str) -> str:
        return tag(self.key, b"unsubscribe:email:", contact_id, 16)

    def token(self, contact_id: str) -> str:
        return f"{b64(contact_id.encode())}.{self._mac(contact_id)}"

    def url(self, contact_id: str) -> str:
        return f"{self.public_url.rstrip('/')}{PATH}{self.token(contact_id)}"

    def contact_for(self, token: str) -> str | None:
        """The contact a token was signed for; None when it is forged, cut or not ours."""
        encoded, _, mac = token.partition(".")
        try:
            contact_id = unb64(encoded).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not contact_id or not hmac.compare_digest(mac, self._mac(contact_id)):
            return None
        return contact_id
