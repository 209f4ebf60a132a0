"""A provider and mailer that deliver into memory: for tests and for running without any phone
network or mail relay."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sopflow.providers.base import Template


@dataclass
class LoopbackProvider:
    sent: list[tuple[str, str, str, str]] = field(default_factory=list)  # (id, channel, to, text)
    keys: dict[str, str] = field(default_factory=dict)  # key → id

    async def send_message(
        self, channel: str, to: str, text: str, key: str, template: Template | None = None
    ) -> str:
        if template is not None:
            text = f"[template {template[0]}] {dict(template[1])}"
        provider_id = f"LB{len(self.sent) + 1:06d}"
        self.sent.append((provider_id, channel, to, text))
        self.keys[key] = provider_id
        return provider_id

    async def place_call(self, to: str, script: str, key: str) -> str:
        provider_id = f"LC{len(self.sent) + 1:06d}"
        self.sent.append((provider_id, "call", to, script))
        self.keys[key] = provider_id
        return provider_id

    async def click_to_call(self, rep_phone: str, lead_phone: str, key: str) -> str:
        return await self.place_call(rep_phone, f"bridge to {lead_phone}", key)

    async def send_email(
        self, to: str, subject: str, text: str, key: str, unsubscribe_url: str | None
    ) -> str:
        provider_id = f"<LE{len(self.sent) + 1:06d}@loopback>"
        self.sent.append((provider_id, "email", to, f"{subject}\n\n{text}"))
        self.keys[key] = provider_id
        return provider_id

    async def find_sent_email(self, to: str, key: str, since: datetime) -> str | None:
        return self.keys.get(key)

    async def find_sent(
        self, channel: str, to: str, text: str | None, key: str, since: datetime
    ) -> str | None:
        return self.keys.get(key)
