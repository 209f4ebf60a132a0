"""Signed ids in URLs (unsubscribe links, referral codes): unpadded base64url and a truncated
HMAC-SHA256 under the gateway's key, with a purpose label so a tag made for one use is never
valid for another."""

from __future__ import annotations

import base64
import hashlib
import hmac


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """ValueError (binascii.Error) for text that is not base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tag(key: bytes, purpose: bytes, value: str, length: int) -> str:
    """The first `length` bytes of HMAC-SHA256(key, purpose + value), in base64url."""
    return b64(hmac.new(key, purpose + value.encode(), hashlib.sha256).digest()[:length])
