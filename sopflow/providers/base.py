"""What sopflow needs from a provider. Implementations raise sopflow errors, never SDK ones."""

from __future__ import annotations

from typing import Protocol


class Provider(Protocol):
    async def send_message(self, channel: str, to: str, text: str, key: str) -> str:
        """Send an SMS or WhatsApp message; return the provider's message id."""
        ...

    async def place_call(self, to: str, script: str, key: str) -> str:
        """Start an automated call; return the provider's call id."""
        ...
