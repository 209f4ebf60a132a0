"""What the referral tests share besides fixtures (conftest.py): the deployment's links and
token, and the stack the `referral_gateway` fixture yields. Test folders are not packages:
pytest puts this folder on sys.path, so the tests import this module by its name."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from sopflow.channels.unsubscribe import UnsubscribeLinks
from sopflow.providers.loopback import LoopbackProvider
from sopflow.store.repository import Store

LINKS = UnsubscribeLinks("http://sopflow", b"referral-test-key")  # the gateway's and the worker's
TOKEN = "referral-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Stack:
    http: httpx.AsyncClient
    store: Store
    provider: LoopbackProvider  # what the worker sent


Gateway = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]
