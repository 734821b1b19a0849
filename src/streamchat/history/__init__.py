"""Conversation history: one store interface, two backends.

SQLite (:class:`HistoryStore`, the embedded default: one file, nothing to run) and PostgreSQL
(:class:`~.postgres.PostgresStore`, for replicas that share one history). :func:`open_store`
picks by the target: a ``postgresql://`` URL or a file path.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import (
    EXPORT_FORMAT,
    HistoryUnavailableError,
    Store,
    data_dir,
    db_path,
    db_target,
    is_postgres,
    now,
    private_dir,
    redact,
    turns_for_model,
)
from .sqlite import MIGRATIONS, SCHEMA_VERSION, HistoryStore

__all__ = [
    "EXPORT_FORMAT",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "HistoryStore",
    "HistoryUnavailableError",
    "Store",
    "data_dir",
    "db_path",
    "db_target",
    "describe",
    "is_postgres",
    "now",
    "open_store",
    "private_dir",
    "redact",
    "turns_for_model",
]


def open_store(target: str | os.PathLike[str], *, readonly: bool = False) -> Store:
    """The store at ``target``: PostgreSQL for a ``postgresql://`` URL, else a SQLite file."""
    if is_postgres(target):
        from .._extras import require

        require("postgres", "a postgresql:// history")
        from .postgres import PostgresStore  # psycopg is imported only when it is used

        return PostgresStore(str(target), readonly=readonly)
    return HistoryStore(Path(target), readonly=readonly)


def describe(target: str | os.PathLike[str]) -> str:
    """The target fit to print (a URL's password hidden)."""
    return redact(str(target)) if is_postgres(target) else str(target)
