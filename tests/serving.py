"""Run ``streamchat serve`` for tests: as a real subprocess, or in-process when a test must see
the provider's counters. Loopback only, a free port each time, stopped by PID."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn

from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig
from streamchat.testing.process import (  # the one place that starts server processes
    HOST,
    Server,
    free_port,
    received,
    recording,
    serve,
    wait_healthy,
)

__all__ = [
    "HOST",
    "Server",
    "free_port",
    "received",
    "recording",
    "serve",
    "serve_in_thread",
    "wait_healthy",
]


@contextlib.contextmanager
def serve_in_thread(config: ServerConfig, timeout: float = 30) -> Iterator[str]:
    """The app under uvicorn in a thread of this process; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host=HOST, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, thread.is_alive, timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
