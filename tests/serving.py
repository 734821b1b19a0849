"""Run ``streamchat serve`` for tests: as a real subprocess, or in-process when a test must see
the provider's counters. Loopback only, a free port each time, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvicorn

from streamchat.server.app import create_app
from streamchat.server.common import ServerConfig

HOST = "127.0.0.1"


def recording(record: Path, **options: object) -> str:
    """A scripted model spec that appends every request it receives to ``record``."""
    return "scripted?" + urlencode({**options, "record": str(record)})


def received(record: Path) -> list[dict]:
    """The requests a ``recording`` model received, oldest first."""
    return [json.loads(line) for line in record.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server exited during start-up")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url}/healthz did not answer within {timeout}s")


@contextlib.contextmanager
def serve(*args: str, timeout: float = 60) -> Iterator[Server]:
    """``streamchat serve --port <free> ARGS`` in a subprocess, until the block exits."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="streamchat-serve-", suffix=".log")[1])
    env = {
        k: v for k, v in os.environ.items() if k not in ("STREAMCHAT_API_KEY", "STREAMCHAT_MODEL")
    }
    command = [sys.executable, "-m", "streamchat.cli.main", "serve", "--host", HOST]
    command += ["--port", str(port), "--log-level", "warning", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://{HOST}:{port}", process, log)
    try:
        try:
            wait_healthy(server.url, lambda: process.poll() is None, timeout)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}; its output:\n{server.output()}") from None
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        log.unlink(missing_ok=True)


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
