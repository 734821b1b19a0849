"""One store per database for a long-running process (the server's routes and its recording
share it), so that a database is opened once and its group commit is one thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import HistoryError
from . import Store, is_postgres, open_store

_shared: dict[Path | str, Store | HistoryError] = {}
_shared_lock = threading.RLock()


def shared_store(target: str | os.PathLike[str]) -> Store:
    """One store per database (file or PostgreSQL URL) for a long-running server; an unusable
    one is tried once, its error raised again (cheaply) on every later call."""
    key = str(target) if is_postgres(target) else Path(target).expanduser().resolve()
    with _shared_lock:
        if key not in _shared:
            try:
                _shared[key] = open_store(key)
            except HistoryError as error:
                _shared[key] = error
        found = _shared[key]
    if isinstance(found, HistoryError):
        raise found
    return found
