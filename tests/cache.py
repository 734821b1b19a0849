"""Folders the tests cache across runs (venvs, npm packages), built once even when xdist
workers ask for them together."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest


@contextlib.contextmanager
def building(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (a file beside it) while checking and building it: the other
    workers wait, then find it built."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def npm_folder(folder: Path, packages: Sequence[str], needed_for: str) -> Path:
    """``folder`` with ``packages`` installed from the npm registry (npm runs only when they
    changed); skips, saying what needs them, where node or npm is missing."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip(f"node and npm are needed {needed_for}")
    marker = folder / ".installed"
    with building(folder):
        folder.mkdir(exist_ok=True)
        if not marker.exists() or marker.read_text() != " ".join(packages):
            command = ["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                       *packages]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, timeout=280)
            assert result.returncode == 0, f"npm install failed:\n{result.stderr}"
            marker.write_text(" ".join(packages))
    return folder
