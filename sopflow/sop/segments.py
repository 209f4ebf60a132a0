"""How many SMS segments a text takes, which is what carriers bill.

A text that fits the GSM 7-bit alphabet travels as GSM-7: 160 septets in one SMS, 153 per part
once it is split (each part carries a 7-septet concatenation header). One character outside the
alphabet (an emoji, Chinese, a curly quote) turns the whole text into UCS-2: 70 UTF-16 code units
in one SMS, 67 per part. So "回T退订" or a single "’" can double or triple the cost of a message.

National language shift tables (Turkish, Portuguese…) are not modelled: carriers rarely use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# 3GPP TS 23.038 §6.2.1, the GSM 7-bit default alphabet, in code order 0x00-0x7F (16 a row).
# 0x1B is the escape to the extension table below, not a character of its own: "\x1b" stands
# in for it here and is removed from the set.
_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASIC_TABLE) == 128
GSM_BASIC = frozenset(_BASIC_TABLE) - {"\x1b"}
# 3GPP TS 23.038 §6.2.1.1, the default extension table: each is sent as ESC + code (2 septets).
_EXTENSION_TABLE = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
GSM_EXTENSION = frozenset(_EXTENSION_TABLE)

GSM7_SINGLE, GSM7_PART = 160, 153  # septets
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class Segments:
    """A text's SMS encoding, its length in that encoding's units, and its segment count."""

    encoding: Encoding
    units: int  # GSM-7: septets (extension characters count 2); UCS-2: UTF-16 code units
    segments: int
    forced_by: str = ""  # UCS-2: the first character outside the GSM-7 alphabet

    def to_json(self) -> dict[str, str | int]:
        return {"encoding": self.encoding, "units": self.units, "segments": self.segments}

    def describe(self) -> str:
        """E.g. "66 chars, 1 segment, GSM-7" or "80 chars, 2 segments, UCS-2 because of '’'"."""
        why = f" because of {self.forced_by!r}" if self.forced_by else ""
        plural = "" if self.segments == 1 else "s"
        return f"{self.units} chars, {self.segments} segment{plural}, {self.encoding}{why}"


def count_segments(text: str) -> Segments:
    """The encoding, length and number of SMS segments of `text` (an empty text still takes one).

    A character is never split across two parts: a GSM-7 extension character (ESC + code) or
    a UCS-2 surrogate pair (an emoji) that would straddle a part boundary starts the next part,
    as phones and carriers do, so a part may hold one unit less than the maximum.
    """
    forced_by = next((c for c in text if c not in GSM_BASIC and c not in GSM_EXTENSION), "")
    encoding: Encoding
    if forced_by:
        widths = [2 if ord(c) > 0xFFFF else 1 for c in text]  # UTF-16 code units
        single, part, encoding = UCS2_SINGLE, UCS2_PART, "UCS-2"
    else:
        widths = [2 if c in GSM_EXTENSION else 1 for c in text]  # septets
        single, part, encoding = GSM7_SINGLE, GSM7_PART, "GSM-7"
    units = sum(widths)
    if units <= single:
        return Segments(encoding, units, 1, forced_by)
    parts, used = 1, 0
    for width in widths:
        if used + width > part:
            parts, used = parts + 1, 0
        used += width
    return Segments(encoding, units, parts, forced_by)
