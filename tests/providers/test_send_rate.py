"""TWILIO_SEND_RATE: the per-sender pace of creates (Twilio queues and fails what a sender
cannot carry), read from the environment and refused in one line when it is not a rate."""

from __future__ import annotations

import asyncio
import time

import pytest

from sopflow.providers.base import ProviderError
from sopflow.providers.twilio import TwilioProvider, provider_config

ENV = {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+15005550006"}


def test_the_rate_defaults_to_ten_per_second_and_zero_means_no_limit() -> None:
    assert (config := provider_config(ENV, "https://x")) and config.rate_per_sender == 10
    unlimited = provider_config(ENV | {"TWILIO_SEND_RATE": "0"}, "https://x")
    assert unlimited is not None and unlimited.rate_per_sender == 0


@pytest.mark.parametrize("rate", ["fast", "-1", "1e9", "nan", ""])
def test_a_bad_rate_is_a_configuration_error_naming_the_variable(rate: str) -> None:
    with pytest.raises(ProviderError) as refused:
        provider_config(ENV | {"TWILIO_SEND_RATE": rate}, "https://x")
    assert refused.value.kind == "configuration"
    assert str(refused.value).startswith(f"TWILIO_SEND_RATE={rate!r}: sends per second")


async def test_the_limiter_spaces_creates_by_the_configured_rate() -> None:
    config = provider_config(ENV | {"TWILIO_SEND_RATE": "20"}, "https://x")
    assert config is not None
    provider = TwilioProvider(config)  # no event loop needed to build it (a gateway's case)
    began = time.monotonic()
    await asyncio.gather(*(provider.limiter.wait("+15005550006") for _ in range(5)))
    assert time.monotonic() - began >= 4 / 20 - 0.01  # 5 creates: 4 gaps of 50 ms
    await provider.close()  # never used: nothing to close, and no error


def test_a_provider_is_built_without_a_running_event_loop() -> None:
    """`sopflow gateway` builds its app (and provider) to check its configuration before
    uvicorn runs a loop; aiohttp's session, which needs one, comes with the first request."""
    config = provider_config(ENV, "https://x")
    assert config is not None
    provider = TwilioProvider(config)
    assert provider.callback_url("status", "k").startswith("https://x/twilio/status?key=k")
