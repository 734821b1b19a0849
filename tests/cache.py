"""Folders the tests cache across runs (venvs, npm packages), built once even when xdist
workers ask for them together."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def building(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (a file beside it) while checking and building it: the other
    workers wait, then find it built."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
