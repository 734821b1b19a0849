"""What every benchmark script shares: the one function that writes a result file (with its
provenance), statistics, A/B alternation, and a baseline server run as a process.

Every script declares the keys it writes (a module-level ``RESULT_KEYS``) and writes its JSON
only through :func:`write_result`, which refuses any other key and stamps the provenance: git
commit (and which files were dirty), package versions, every external baseline's version,
binary and flags, threads, CPU, cores, load average at start and end, dates and the command
line. Nothing else writes or edits ``results/*.json``; ``report.py`` only reads them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from streamchat.testing.process import HOST, free_port

__all__ = ["HOST", "free_port"]

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent
# Keys write_result adds itself; no script may declare them.
STAMPED = ("benchmark", "when", "provenance")
ALWAYS_PACKAGES = ("streamchat", "llama-cpp-python")
# The script's start, for the provenance: this module is imported before any measurement.
_STARTED = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg": os.getloadavg()}
_BASELINES: dict[str, dict[str, Any]] = {}
T = TypeVar("T")


def record_baseline(name: str, **facts: Any) -> None:
    """Note an external baseline this run measured (version, binary, flags...): the result
    file's provenance lists it, so a reader can rebuild the same side."""
    _BASELINES[name] = {k: v for k, v in facts.items() if v is not None}


def git_state() -> dict[str, Any]:
    """The commit measured and the files that differed from it (other work in the tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    status = git("status", "--porcelain", "--untracked-files=no").splitlines()
    dirty = [line[3:] for line in status if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(dirty), "dirty_files": dirty}


def package_versions(names: Collection[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in [*ALWAYS_PACKAGES, *names]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return model or platform.processor()


def provenance(packages: Collection[str], threads: Any) -> dict[str, Any]:
    """Everything a skeptic needs to know about where and how a result was measured."""
    return {
        "git": git_state(),
        "command": shlex.join([sys.executable, *sys.argv]),
        "started": _STARTED["date"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_start": list(_STARTED["loadavg"]),
        "loadavg_end": list(os.getloadavg()),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": threads,
        "packages": package_versions(packages),
        "baselines": dict(_BASELINES),
        **llama_cpp_build(),
    }


def llama_cpp_build() -> dict[str, str]:
    """The CPU features llama-cpp-python's llama.cpp was built with, when the run used it."""
    llama_cpp = sys.modules.get("llama_cpp")
    if llama_cpp is None:
        return {}
    return {"llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip()}


def write_result(
    name: str,
    data: dict[str, Any],
    *,
    keys: Collection[str],
    packages: Collection[str] = (),
    threads: Any = None,
    path: str | Path | None = None,
) -> Path:
    """Write ``data`` to ``results/<name>.json`` (or ``path``) with its provenance.

    ``keys`` is the script's ``RESULT_KEYS``: a key it did not declare is refused, so what a
    result file holds is what its script writes. ``threads`` says how many threads each side
    ran (an int, or a mapping per side); ``packages`` the SDKs and servers the script used.
    """
    undeclared = sorted(set(data) - set(keys))
    reserved = sorted(set(keys) & set(STAMPED))
    if undeclared or reserved:
        raise ValueError(f"{name}: undeclared keys {undeclared}, reserved keys {reserved}")
    target = Path(path) if path else RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provenance": provenance(packages, threads),
        **data,
    }
    target.write_text(json.dumps(payload, indent=2) + "\n")
    return target


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min and max of repeated measurements, and how many there were."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": median(values), "min": min(values), "max": max(values), "n": len(values)}


def rotation(names: Sequence[T], i: int) -> list[T]:
    """Round ``i``'s order of the sides: A B C, then B C A, then C A B..., so no side always
    runs first or right after the same other side."""
    turn = i % len(names) if names else 0
    return [*names[turn:], *names[:turn]]


def alternating(names: Sequence[T], repeat: int) -> Iterator[tuple[int, T]]:
    """``(round, side)`` for ``repeat`` rounds over every side in :func:`rotation` order."""
    for i in range(repeat):
        for name in rotation(names, i):
            yield i, name


def compare(
    metric: str,
    unit: str,
    baseline: str,
    base: Sequence[float],
    streamchat: str,
    ours: Sequence[float],
    better: str,
    **extra: Any,
) -> dict[str, Any]:
    """A ``comparisons`` row for RESULTS.md from the repeated samples of both sides: medians,
    min–max and the ratio of medians. ``unit`` says what is measured (e.g. ``"ms wall"``)."""
    b, o = spread(base), spread(ours)
    return {
        "metric": metric,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": b["median"],
        "baseline_range": [b["min"], b["max"]],
        "streamchat": streamchat,
        "streamchat_value": o["median"],
        "streamchat_range": [o["min"], o["max"]],
        "repeats": min(b["n"], o["n"]),
        "ratio": o["median"] / b["median"] if b["median"] else float("nan"),
        "better": better,
        **extra,
    }


def tool_version(command: Sequence[str]) -> str:
    """The first line a tool prints for its version flag (stdout or stderr)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({type(error).__name__})"
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "unknown"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def process_server(
    command: list[str],
    ready: str,
    *,
    name: str,
    version: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    pids: dict[str, int] | None = None,
) -> Iterator[str]:
    """A baseline server process (``{port}`` in ``command`` becomes a free loopback port) until
    ``ready`` answers 200; yields its URL (and records its pid in ``pids``), stops it on exit.
    Its binary, command line and ``version`` go into the result's provenance as ``name``."""
    record_baseline(name, version=version, binary=shutil.which(command[0]) or command[0],
                    command=shlex.join(command), env=env)  # fmt: skip
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


# What a baseline built on llama-cpp-python's ``Llama`` needs on a machine whose llama.cpp has AMX
# kernels: its models loaded without the "extra" buffers that crash any prompt there, as
# streamchat's own are (``streamchat.providers.local.use_extra_buffers``). Python source, so a
# baseline's own process (``llm``) can run it first; elsewhere it changes nothing.
WITHOUT_AMX_CRASH = """
import llama_cpp.llama_cpp as _low
if b"AMX_INT8 = 1" in _low.llama_print_system_info():
    _defaults = _low.llama_model_default_params
    def _without_extra_buffers():
        params = _defaults()
        params.use_extra_bufts = False
        return params
    _low.llama_model_default_params = _without_extra_buffers
"""


def llama_without_amx_crash() -> None:
    """:data:`WITHOUT_AMX_CRASH` in this process, before any ``llama_cpp.Llama`` is made."""
    exec(WITHOUT_AMX_CRASH, {})
