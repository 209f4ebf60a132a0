"""The touch gate: the last check before a message or call leaves, in the activity.

The engine already schedules touches inside their windows; the gate re-checks at the moment of
sending, because an activity can run late (retries, a worker backlog, a paused worker) and an
opt-out can arrive after the touch was planned. Pure: time and consent come in as values.

Rules now: opt-out, then the SOP's contact window in every candidate zone. The regional legal
windows and frequency caps of the compliance issue join here as more rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sopflow.sop import clock
from sopflow.sop.schema import ContactPolicy

Rule = Literal["opt_out", "window"]


@dataclass(frozen=True)
class Verdict:
    """allowed, or the rule that blocked the touch, why, and when it could go (None: never)."""

    allowed: bool
    rule: Rule | None = None
    reason: str = ""
    retry_at: datetime | None = None


ALLOWED = Verdict(allowed=True)


def check_touch(
    channel: str,
    at: datetime,
    zones: Sequence[str],
    policy: ContactPolicy | None,
    opted_out_at: datetime | None,
) -> Verdict:
    if opted_out_at is not None:
        return Verdict(
            False, "opt_out", f"the contact opted out at {opted_out_at.isoformat()}", None
        )
    window = policy.windows.get(channel) if policy else None  # type: ignore[call-overload]
    if policy is None or window is None or not zones:
        return ALLOWED
    calendar = clock.Calendar.from_policy(policy)
    allowed = clock.next_allowed(at, zones, window, calendar)
    if allowed == at:
        return ALLOWED
    reason = clock.why_blocked(at, zones, channel, window, calendar)
    return Verdict(False, "window", reason, allowed)
