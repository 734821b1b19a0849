"""One store per database for a long-running process (the server's routes and its recording
share it), so that a database is opened once and its group commit is one thread."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..errors import HistoryError
from . import HistoryUnavailableError, Store, is_postgres, open_store

RETRY_SECONDS = 1.0  # an unreachable database is tried again after this long

_shared: dict[Path | str, Store | tuple[HistoryError, float]] = {}
_shared_lock = threading.RLock()


def shared_key(target: str | os.PathLike[str]) -> Path | str:
    """What names one database: a PostgreSQL URL as given, a SQLite file's resolved path."""
    return str(target) if is_postgres(target) else Path(target).expanduser().resolve()


def shared_store(target: str | os.PathLike[str]) -> Store:
    """One store per database (file or PostgreSQL URL) for a long-running server. An unusable
    one raises its error again (cheaply) on later calls; an unreachable one
    (:class:`HistoryUnavailableError`: PostgreSQL down) is tried again after
    :data:`RETRY_SECONDS`."""
    key = shared_key(target)
    with _shared_lock:
        found = _shared.get(key)
        if found is None or (
            isinstance(found, tuple)
            and isinstance(found[0], HistoryUnavailableError)
            and time.monotonic() - found[1] >= RETRY_SECONDS
        ):
            try:
                found = _shared[key] = open_store(key)
            except HistoryError as error:
                found = _shared[key] = (error, time.monotonic())
    if isinstance(found, tuple):
        raise found[0]
    return found
