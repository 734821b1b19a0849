"""What every benchmark script shares: the machine's description, JSON output, statistics, and
a baseline server run as a process."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from streamchat.testing.process import HOST, free_port

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """CPU, cores, Python and library versions, and the load when the run started."""
    import llama_cpp

    import streamchat

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "cpu_model": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "streamchat": streamchat.__version__,
        "platform": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(name: str, data: dict[str, Any], path: str | None = None) -> Path:
    """Write results (with the machine and a timestamp) to ``results/<name>.json`` or ``path``."""
    target = Path(path) if path else RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    payload.setdefault("machine", machine())
    target.write_text(json.dumps(payload, indent=2) + "\n")
    return target


@contextlib.contextmanager
def process_server(
    command: list[str],
    ready: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    pids: dict[str, int] | None = None,
) -> Iterator[str]:
    """A server process (``{port}`` in ``command`` becomes a free loopback port) until ``ready``
    answers 200; yields its URL (and records its pid in ``pids``), stops it on exit."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        url = f"http://{HOST}:{port}"
        if pids is not None:
            pids[url] = process.pid
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{command[0]} exited: {log.read()[-2000:]!r}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(url + ready, timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}{ready} did not answer within {timeout}s")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
