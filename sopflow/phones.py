"""The one phone-number parser: E.164 in, the library's number out (or None when invalid)."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumber

E164_HINT = "use E.164, e.g. +12125550123"


def parse_phone(text: str, valid_only: bool = True) -> PhoneNumber | None:
    """The number, or None when it cannot be parsed (or, by default, is not a valid number)."""
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if valid_only and not phonenumbers.is_valid_number(parsed):
        return None
    return parsed


def e164(text: str) -> str | None:
    """The number in E.164 (+12125550123), or None when it is not a valid number."""
    parsed = parse_phone(text)
    return (
        None
        if parsed is None
        else phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    )
