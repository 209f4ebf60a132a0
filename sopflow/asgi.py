"""Serving ASGI apps (the gateway, the sandbox) under uvicorn inside a running event loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_server(
    app: Any, port: int, log_level: str = "warning"
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve `app` on 127.0.0.1:port; returns once it accepts connections. Stop it with
    `server.should_exit = True` and await the task."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises what stopped it (e.g. the port is taken)
            raise RuntimeError(f"the server on port {port} stopped before it started")
        await asyncio.sleep(0.01)
    return server, task
