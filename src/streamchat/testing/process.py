"""``streamchat serve`` as a subprocess: loopback only, a free port, ready once ``/healthz``
answers, stopped by its PID. The one place that starts servers, for streamchat's own tests and
for the pytest plugin that other projects' tests use."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

HOST = "127.0.0.1"
START_ATTEMPTS = 3  # another process may take the free port between our probe and the bind
_PORT_TAKEN = ("address already in use", "errno 98", "errno 48")
# Set by the caller's own environment, these would change what a test's server does.
_PRIVATE_ENV = ("STREAMCHAT_API_KEY", "STREAMCHAT_MODEL")


def recording(record: Path, **options: object) -> str:
    """A scripted model spec that appends every request it receives to ``record``."""
    return "scripted?" + urlencode({**options, "record": str(record)})


def received(record: Path) -> list[dict]:
    """The requests a ``recording`` model received, oldest first."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running ``streamchat serve``: its base URL, process and combined stdout/stderr."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


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


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful shutdown), SIGKILL if it is still there after 15 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def _start(
    command: Sequence[str], args: Sequence[str], env: Mapping[str, str], timeout: float
) -> Server:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="streamchat-serve-", suffix=".log")[1])
    argv = [*command, "serve", "--host", HOST, "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen([*argv, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://{HOST}:{port}", process, log)
    try:
        wait_healthy(server.url, lambda: process.poll() is None, timeout)
    except (RuntimeError, TimeoutError) as error:
        stop(process)
        output = server.output()
        log.unlink(missing_ok=True)
        raise RuntimeError(f"{error}; its output:\n{output}") from None
    return server


@contextlib.contextmanager
def serve(
    *args: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[Server]:
    """``streamchat serve --port <free> ARGS`` in a subprocess, until the block exits.

    ``env`` adds variables to this process's environment; ``command`` replaces
    ``python -m streamchat.cli.main`` (the plugin's launcher adds a fault log to the same CLI).
    """
    environment = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
    environment.update(env or {})
    command = list(command or [sys.executable, "-m", "streamchat.cli.main"])
    for attempt in range(START_ATTEMPTS):
        try:
            server = _start(command, args, environment, timeout)
            break
        except RuntimeError as error:
            taken = any(sign in str(error).lower() for sign in _PORT_TAKEN)
            if not taken or attempt == START_ATTEMPTS - 1:
                raise
    try:
        yield server
    finally:
        stop(server.process)
        server.log.unlink(missing_ok=True)
