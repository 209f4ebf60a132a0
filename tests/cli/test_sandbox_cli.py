"""`sopflow sandbox …` run for real against a sandbox: it sends the sandbox's credential, read from
the data dir as `sopflow up` keeps it, and says in one line when it has none or a wrong one."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sopflow.asgi import free_port, start_server
from sopflow.sandbox.mail import MailSandbox
from sopflow.sandbox.server import SANDBOX_ACCOUNT, SANDBOX_FROM, Sandbox

ROOT = Path(__file__).resolve().parents[2]
TOKEN, ANN = "sandbox-secret", "+12125550123"


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[Sandbox, str]]:
    phones, port = Sandbox({SANDBOX_ACCOUNT: TOKEN}), free_port()
    app = phones.app()
    app.include_router(MailSandbox().router(phones.auth))
    server, task = await start_server(app, port)
    yield phones, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def sopflow(data: Path, *args: str) -> tuple[int, str, str]:
    """The real command, without blocking the loop the sandbox is served on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from sopflow.cli import main; main()", *args,
        cwd=ROOT, env=os.environ | {"SOPFLOW_DATA_DIR": str(data)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_commands_send_the_kept_token(
    sandbox: tuple[Sandbox, str], tmp_path: Path
) -> None:
    phones, url = sandbox
    data = tmp_path / "data"
    code, _, err = await sopflow(data, "sandbox", "inbox", ANN, "--url", url)
    assert (code, err.strip()) == (
        2,
        f"error: no sandbox token in {data / 'sandbox_token'}: run `sopflow up` once with this "
        "data dir (SOPFLOW_DATA_DIR)",
    )
    assert not data.exists()  # read, never made: a made-up token would only be refused
    data.mkdir()
    (data / "sandbox_token").write_text("guess\n")
    code, _, err = await sopflow(data, "sandbox", "reply", "--from", ANN, "STOP", "--url", url)
    assert (code, err.strip()) == (
        1,
        "error: the sandbox said 401: wrong account SID or auth token for this sandbox",
    )
    assert phones.resources == {}  # the forged STOP went nowhere
    (data / "sandbox_token").write_text(TOKEN + "\n")
    code, out, err = await sopflow(data, "sandbox", "reply", "--from", ANN, "STOP", "--url", url)
    assert code == 0 and out.startswith(f"sent 'STOP' from {ANN} (SM"), err
    (stop,) = phones.resources.values()
    assert (stop.from_, stop.to, stop.body, stop.direction) == (
        ANN,
        SANDBOX_FROM,
        "STOP",
        "inbound",
    )
    code, out, _ = await sopflow(data, "sandbox", "inbox", ANN, "--url", url)
    assert code == 0 and "STOP" in out and ANN in out
    code, out, _ = await sopflow(data, "sandbox", "mail", "ann@example.com", "--url", url)
    assert (code, out.strip()) == (0, "no email for ann@example.com")
    code, _, err = await sopflow(data, "sandbox", "unsubscribe", "99", "--url", url)
    assert (code, err.strip()) == (1, "error: the sandbox said 404: no message 99 in the sandbox")
